"""Host-fabric physics added for the CPU verify suite: all-gather and reduce-scatter from
their own measured fits, sequence parallelism lowered as those two, FSDP gathered per
transformer layer (no prefetch on a host fabric, FSDP2's host work per gather), and the
norms' gradient all-reduce of sequence parallelism."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from simplan.cost import collectives as coll
from simplan.cost.compute import sharded_kernels
from simplan.errors import SimplanError
from simplan.hardware.load import PROFILE_DIR, dump_hardware, load_hardware
from simplan.scenario import load_scenario
from simplan.sim import simulate
from simplan.plan.partition import plan_chunks
from simplan.search.estimate import Estimator
from simplan.sim.lower import lower, tp_collectives

EXACT = 1e-12


def sc(plan: dict, hardware="cpu-host", model="tiny-gpt"):
    return load_scenario({"model": model, "hardware": hardware, "cluster": {"nodes": 1, "gpus_per_node": 2},
                          "plan": {"micro_batch": 2, "global_batch": 4, "precision": "fp32", **plan}})


def with_hw(scenario, **changes):
    return replace(scenario, cluster=replace(scenario.cluster, profile=replace(scenario.hardware, **changes)))


def test_measured_phase_takes_steps_alpha_plus_wire_over_its_own_bandwidth():
    for kind, steps in (("allgather", 3), ("reducescatter", 3)):
        ph = coll.measured_phases(kind, 8e6, 4, 1e-3, 2e8, 5e9)
        wire = coll.ring_wire_bytes(kind, 4, 8e6)
        assert coll.idle_time_s(ph, 5e9, 1e9) == pytest.approx(steps * 1e-3 + wire / 2e8, rel=EXACT)


def test_profile_without_measured_collectives_derives_them_from_the_all_reduce():
    p = load_hardware("cpu-host")
    assert p.measured_collective("allgather") is None and p.measured_collective("allreduce") is None
    q = replace(p, allgather_latency_s=1e-3, allgather_bytes_per_s=1e8)
    assert q.measured_collective("allgather") == (1e-3, 1e8) and q.measured_collective("reducescatter") is None


def test_sequence_parallel_lowers_to_reduce_scatter_and_all_gather_of_the_same_bytes():
    s = sc({"tp": 2, "sequence_parallel": True})
    layer = next(x for x in s.graph.order if x.name == "layer0.mlp")
    for backward in (False, True):
        pairs = tp_collectives(layer, s.plan, backward)
        assert [k for k, _ in pairs] == ["reducescatter", "allgather"]
        assert pairs[0][1] == pairs[1][1] == tp_collectives(layer, s.plan, backward, split_sp=False)[0][1]
    plain = sc({"tp": 2})
    assert [k for k, _ in tp_collectives(layer, plain.plan, False)] == ["allreduce"]


def test_on_the_ring_model_sequence_parallel_costs_what_the_all_reduce_did():
    # AR = RS + AG on a ring (Korthikanti et al. 2022, Section 4.2.2): with no measured fits
    # the split changes nothing but the names of the phases
    s = sc({"tp": 2, "sequence_parallel": True})
    layer = next(x for x in s.graph.order if x.name == "layer0.attention")
    prog = lower(s.graph, s.plan, s.cluster)
    step = next(st for st in prog.chunks[0].fwd if st.layer == layer.name)
    (kind_a, nbytes), _ = tp_collectives(layer, s.plan, False)
    hw = s.hardware
    ring_ar = 2 * hw.intra_latency_s + nbytes / (hw.intra_bytes_per_s * hw.intra_efficiency)
    assert sum(c.idle_s for c in step.comms) == pytest.approx(ring_ar, rel=1e-9)


def test_measured_all_gather_and_reduce_scatter_set_sequence_parallel_time():
    s = sc({"tp": 2, "sequence_parallel": True})
    slow = with_hw(s, allgather_latency_s=2e-3, allgather_bytes_per_s=1e8,
                   reducescatter_latency_s=3e-3, reducescatter_bytes_per_s=5e7)
    layer = next(x for x in s.graph.order if x.name == "layer0.attention")
    step = next(st for st in lower(slow.graph, slow.plan, slow.cluster).chunks[0].fwd if st.layer == layer.name)
    (_, nbytes), _ = tp_collectives(layer, s.plan, False)
    expected = 2e-3 + nbytes / 2 / 1e8 + 3e-3 + nbytes / 2 / 5e7
    assert sum(c.idle_s for c in step.comms) == pytest.approx(expected, rel=1e-9)
    assert simulate(slow).step_time_s > simulate(s).step_time_s
    # tensor parallelism without sequence parallelism all-reduces: the measured fits do not apply
    t = sc({"tp": 2})
    assert simulate(with_hw(t, allgather_bytes_per_s=1e6, allgather_latency_s=1.0)).step_time_s == \
        pytest.approx(simulate(t).step_time_s, rel=EXACT)


def test_fsdp_gathers_each_transformer_layer_once_per_pass():
    s = sc({"dp": 2, "zero_stage": 3, "micro_batch": 1})
    prog = lower(s.graph, s.plan, s.cluster)
    fwd = prog.chunks[0].fwd
    gathered = [st.layer for st in fwd if st.gather is not None]
    assert gathered == ["embedding"] + [f"layer{i}.attention" for i in range(s.model.layers)] + ["head"]
    bwd_gathered = [st.layer for st in prog.chunks[0].bwd if st.gather is not None]
    assert bwd_gathered == ["head"] + [f"layer{i}.mlp" for i in reversed(range(s.model.layers))] + ["embedding"]
    layer_bytes = sum(st.param_bytes for st in fwd if st.layer.startswith("layer0."))
    first = next(st for st in fwd if st.layer == "layer0.attention")
    n = 2
    hw = s.hardware
    assert first.gather.idle_s == pytest.approx(
        (n - 1) * hw.intra_latency_s + (n - 1) / n * layer_bytes / (hw.intra_bytes_per_s * hw.intra_efficiency),
        rel=1e-9)


def test_fsdp_on_a_host_fabric_exposes_every_gather_and_pays_its_host_work():
    s = sc({"dp": 2, "zero_stage": 3, "micro_batch": 1})
    prog = lower(s.graph, s.plan, s.cluster)
    gathers = sum(st.gather.idle_s for ch in prog.chunks for st in ch.fwd + ch.bwd if st.gather is not None)
    r = simulate(s)
    m = s.plan.micro_batches
    # no prefetch: the compute core waits for every gather (plus the gradient reduction)
    assert r.breakdown_s["dp_comm_exposed"] >= m * gathers * (1 - 1e-9)
    n_gathers = sum(st.gather is not None for ch in prog.chunks for st in ch.fwd + ch.bwd)
    extra = with_hw(s, fsdp_gather_overhead_s=1e-3)
    assert simulate(extra).step_time_s - r.step_time_s == pytest.approx(m * n_gathers * 1e-3, rel=1e-6)
    # a GPU fabric prefetches the next unit's gather behind the current unit's compute
    g = sc({"dp": 2, "zero_stage": 3, "micro_batch": 1, "precision": "bf16"}, hardware="a100-sxm-80gb")
    gp = lower(g.graph, g.plan, g.cluster)
    g_gathers = sum(st.gather.idle_s for ch in gp.chunks for st in ch.fwd + ch.bwd if st.gather is not None)
    assert simulate(g).breakdown_s["dp_comm_exposed"] < g.plan.micro_batches * g_gathers


def test_sequence_parallel_all_reduces_the_norm_gradients_once_per_step():
    s = sc({"tp": 2, "sequence_parallel": True})
    prog = lower(s.graph, s.plan, s.cluster)
    (comm,) = prog.norm_grad_allreduce
    norm_bytes = sum(layer.norm_params for layer in s.graph.order) * 4
    h = s.model.hidden
    assert norm_bytes == 4 * (2 * h * (2 * s.model.layers + 1))  # LayerNorm weight and bias, fp32 grads
    hw = s.hardware
    ring_bytes_per_s = hw.intra_bytes_per_s * hw.intra_efficiency
    assert comm.idle_s == pytest.approx(2 * hw.intra_latency_s + norm_bytes / ring_bytes_per_s, rel=1e-9)
    assert lower(s.graph, sc({"tp": 2}).plan, s.cluster).norm_grad_allreduce == (None,)


def _with_node(tmp_path, **node):
    data = yaml.safe_load((PROFILE_DIR / "cpu-host.yaml").read_text())
    data["node"].update(node)
    for key in node:
        data["sources"][f"node.{key}"] = "test"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_measured_collectives_round_trip_through_a_profile_file(tmp_path):
    p = load_hardware(_with_node(tmp_path, allgather_gbyte_per_s=0.75, allgather_latency_us=1600,
                                 reducescatter_gbyte_per_s=0.45, reducescatter_latency_us=2200))
    assert p.measured_collective("allgather") == pytest.approx((1.6e-3, 0.75e9), rel=EXACT)
    dump_hardware(p, tmp_path / "q.yaml")
    assert load_hardware(str(tmp_path / "q.yaml")).measured_collective("reducescatter") == \
        pytest.approx((2.2e-3, 0.45e9), rel=EXACT)


def test_bad_measured_collective_is_a_user_error(tmp_path):
    with pytest.raises(SimplanError, match=r"node.allgather_gbyte_per_s: must be >= 0, got -1"):
        load_hardware(_with_node(tmp_path, allgather_gbyte_per_s=-1))


def test_sequence_parallel_recovers_each_saved_input_shard_in_backward():
    # the column-parallel input saved as its sequence shard is all-gathered again for the
    # weight gradient: blocking on a host fabric, alongside the input-gradient GEMM on GPUs
    from simplan.sim.lower import sp_regather_bytes

    s = sc({"tp": 2, "sequence_parallel": True})
    layers = {x.name: x for x in s.graph.order}
    assert sp_regather_bytes(layers["embedding"], s.plan) == 0
    assert sp_regather_bytes(layers["layer0.mlp"], s.plan) == sp_regather_bytes(layers["head"], s.plan) > 0
    assert sp_regather_bytes(layers["layer0.mlp"], sc({"tp": 2}).plan) == 0
    host = lower(s.graph, s.plan, s.cluster).chunks[0]
    mlp = next(st for st in host.bwd if st.layer == "layer0.mlp")
    assert [c.name for c in mlp.comms] == ["tp"] * 3 and not mlp.overlapped
    g = sc({"tp": 2, "sequence_parallel": True, "precision": "bf16"}, hardware="a100-sxm-80gb")
    gpu = lower(g.graph, g.plan, g.cluster)
    mlp = next(st for st in gpu.chunks[0].bwd if st.layer == "layer0.mlp")
    assert len(mlp.comms) == 2 and len(mlp.overlapped) == 1 and not gpu.exclusive_links
    assert simulate(g).step_time_s > 0


@pytest.mark.parametrize("plan", [{"tp": 2}, {"tp": 2, "sequence_parallel": True}, {"tp": 2, "pp": 2, "micro_batch": 1},
                                  {"dp": 2}])
def test_dtensor_update_overhead_is_charged_once_per_step_per_sharded_kernel_of_the_stage(plan):

    ranks = plan.get("tp", 1) * plan.get("pp", 1) * plan.get("dp", 1)
    base = load_scenario({"model": "tiny-gpt", "hardware": "cpu-host", "cluster": {"nodes": 1, "gpus_per_node": ranks},
                          "plan": {"micro_batch": 2, "global_batch": 4, "precision": "fp32", **plan}})
    d = 1e-3
    extra = with_hw(base, dtensor_update_overhead_s=d)
    p0, p1 = lower(base.graph, base.plan, base.cluster), lower(extra.graph, extra.plan, extra.cluster)
    chunks = plan_chunks(base.graph, base.plan)
    per_stage = [d * sum(sharded_kernels(layer.ops, base.plan) for c, layers in enumerate(chunks)
                         if c % base.plan.pp == s for layer in layers) for s in range(base.plan.pp)]
    added = [b - a for a, b in zip(p0.optimizer_s, p1.optimizer_s)]
    assert added == pytest.approx(per_stage, rel=1e-9)
    if base.plan.tp == 1:  # no DTensor parameters
        assert added == [0.0] * base.plan.pp
        return
    assert min(added) > 0
    if base.plan.pp == 1:  # the step grows by exactly that, in the simulator and in the planner's estimate
        assert simulate(extra).step_time_s - simulate(base).step_time_s == pytest.approx(per_stage[0], rel=1e-6)
        e0 = Estimator(base.graph, base.cluster).estimate(base.plan).step_time_s
        e1 = Estimator(extra.graph, extra.cluster).estimate(extra.plan).step_time_s
        assert e1 - e0 == pytest.approx(per_stage[0], rel=1e-6)


def test_fsdp_copies_shards_in_the_gathered_units_out_and_the_gradients_into_the_reduce_scatter():
    # FSDP2 (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py): per gather the rank's
    # shard is copied into the all-gather input and the output into the unsharded parameters;
    # per step each unit's gradients into the reduce-scatter input; all memory traffic
    s = sc({"dp": 2, "zero_stage": 3, "micro_batch": 1})
    plain = sc({"dp": 2, "micro_batch": 1})
    hw = s.hardware
    bw = hw.hbm_bytes_per_s * hw.memory_efficiency
    p3, p0 = lower(s.graph, s.plan, s.cluster), lower(plain.graph, plain.plan, plain.cluster)
    params_bytes = sum(st.param_bytes for st in p3.chunks[0].fwd)
    for phase in ("fwd", "bwd"):
        a, b = getattr(p3.chunks[0], phase), getattr(p0.chunks[0], phase)
        n_gathers = sum(st.gather is not None for st in a)
        added = sum(x.compute_s - y.compute_s for x, y in zip(a, b)) - n_gathers * hw.fsdp_gather_overhead_s
        assert added == pytest.approx((2 / 2 + 2) * params_bytes / bw, rel=1e-9)
    assert p3.grad_copy_s == pytest.approx((2 * params_bytes / bw,), rel=1e-9)
    assert not any(p0.grad_copy_s)


def test_fsdp_copies_cost_the_simulator_and_the_planners_estimate_the_same(monkeypatch):
    import simplan.search.estimate as estimate_mod
    import simplan.sim.lower as lower_mod

    s = sc({"dp": 2, "zero_stage": 3, "micro_batch": 1})
    sim0, est0 = simulate(s).step_time_s, Estimator(s.graph, s.cluster).estimate(s.plan).step_time_s
    for mod in (lower_mod, estimate_mod):
        monkeypatch.setattr(mod, "fsdp_gather_copy_s", lambda *a: 0.0)
        monkeypatch.setattr(mod, "fsdp_reduce_copy_s", lambda *a: 0.0)
    sim1, est1 = simulate(s).step_time_s, Estimator(s.graph, s.cluster).estimate(s.plan).step_time_s
    assert sim0 - sim1 > 0
    assert est0 - est1 == pytest.approx(sim0 - sim1, rel=1e-6)
    # and FSDP2's host work per gather: every gather, in both
    extra = with_hw(s, fsdp_gather_overhead_s=s.hardware.fsdp_gather_overhead_s + 1e-3)
    n_gathers = sum(st.gather is not None for ch in lower(s.graph, s.plan, s.cluster).chunks for st in ch.fwd + ch.bwd)
    est2 = Estimator(extra.graph, extra.cluster).estimate(extra.plan).step_time_s
    assert est2 - est1 == pytest.approx(s.plan.micro_batches * n_gathers * 1e-3, rel=1e-6)


def test_a_recomputed_forward_under_fsdp_gathers_nothing():
    # FSDP2's pre-backward hook has unsharded the unit; the checkpoint's recomputed forward
    # runs on those parameters (torch/distributed/fsdp/_fully_shard/_fsdp_state.py, _pre_forward)
    s = sc({"dp": 2, "zero_stage": 3, "micro_batch": 1, "recompute": "full"})
    prog = lower(s.graph, s.plan, s.cluster)
    assert prog.chunks[0].recompute and all(st.gather is None for st in prog.chunks[0].recompute)
    assert sum(st.gather is not None for st in prog.chunks[0].bwd) == sum(st.gather is not None
                                                                           for st in prog.chunks[0].fwd)


@pytest.mark.parametrize("helper", ["sp_regather_bytes", "norm_grad_bytes"])
def test_sequence_parallel_regather_and_norm_gradients_cost_the_simulator_and_the_estimate_the_same(
        monkeypatch, helper):
    import simplan.search.estimate as estimate_mod
    import simplan.sim.lower as lower_mod

    s = sc({"tp": 2, "sequence_parallel": True})
    sim0, est0 = simulate(s).step_time_s, Estimator(s.graph, s.cluster).estimate(s.plan).step_time_s
    for mod in (lower_mod, estimate_mod):
        monkeypatch.setattr(mod, helper, lambda *a: 0.0)
    sim1, est1 = simulate(s).step_time_s, Estimator(s.graph, s.cluster).estimate(s.plan).step_time_s
    assert sim0 - sim1 > 0
    assert est0 - est1 == pytest.approx(sim0 - sim1, rel=1e-6)


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_planners_estimate_times_sequence_parallel_pairs_at_their_measured_rates(recompute):
    # gloo's all-gather and reduce-scatter measured apart (slower than the all-reduce's ring):
    # the estimate charges the pair as the simulator does, not as one all-reduce
    s = sc({"tp": 2, "sequence_parallel": True, "recompute": recompute})
    slow = with_hw(s, allgather_latency_s=2e-3, allgather_bytes_per_s=1e8,
                   reducescatter_latency_s=3e-3, reducescatter_bytes_per_s=5e7)
    est = Estimator(slow.graph, slow.cluster).estimate(slow.plan).step_time_s
    assert est == pytest.approx(simulate(slow).step_time_s, rel=1e-6)
    assert est > Estimator(s.graph, s.cluster).estimate(s.plan).step_time_s
