"""The SimPy engine against closed forms: each test names the formula it checks."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import simpy

from simplan.cost import collectives as coll
from simplan.scenario import load_scenario
from simplan.sim import simulate
from simplan.sim.engine import Engine
from simplan.sim.lower import ChunkProgram, Program, Step, lower
from simplan.sim.network import Link, Network
from simplan.sim.result import BREAKDOWN_KEYS


def scenario(plan: dict, model="gpt2-medium", hardware="a100-sxm-80gb", nodes=2, gpus_per_node=8, **cluster):
    return load_scenario({"model": model, "hardware": hardware,
                          "cluster": {"nodes": nodes, "gpus_per_node": gpus_per_node, **cluster},
                          "plan": {"global_batch": 64, **plan}})


def with_profile(sc, **factors):
    cluster = dataclasses.replace(sc.cluster, profile=sc.cluster.profile.scaled(**factors))
    return dataclasses.replace(sc, cluster=cluster)


# ------------------------------------------------------------------ pipeline bubbles
def uniform_program(pp: int, v: int, schedule: str, m: int, tf: float, tb: float) -> Program:
    """A pipeline of identical stages with no communication at all."""
    from simplan.plan.plan import Plan

    plan = Plan(pp=pp, dp=1, micro_batch=1, global_batch=m, schedule=schedule, virtual_stages=v)
    chunks = tuple(
        ChunkProgram(chunk=c, stage=c % pp, fwd=(Step("f", tf / v),), bwd=(Step("b", tb / v),), wgrad=(),
                     recompute=(), send_bytes=0.0, act_bytes=0.0, grad_bytes=0.0, params=0.0)
        for c in range(pp * v))
    return Program(plan=plan, chunks=chunks, optimizer_s=(0.0,) * pp, dp_comm=None, bucket_bytes=1.0,
                   dp_after_optimizer=None, zero3=False, stage_node=(0,) * pp, intra_latency_s=0.0,
                   inter_latency_s=0.0, intra_bytes_per_s=1e12, inter_bytes_per_s=1e12, ps_bytes_per_s=1e12,
                   exclusive_links=True, step_overhead_s=0.0)


def run(program: Program, **kw) -> Engine:
    e = Engine(program, **kw)
    e.run()
    return e


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("pp,m", [(2, 4), (4, 8), (4, 16), (8, 8)])
def test_bubble_fraction_gpipe_and_1f1b_is_p_minus_1_over_m_plus_p_minus_1(schedule, pp, m):
    # Narayanan et al. 2021, Section 2.2.1: bubble fraction (p-1)/(m+p-1) of the step
    tf, tb = 1.0, 2.0
    e = run(uniform_program(pp, 1, schedule, m, tf, tb))
    step = max(u.end_s for u in e.units)
    assert step == pytest.approx((m + pp - 1) * (tf + tb), rel=1e-12)
    for u in e.units:
        assert u.acc["bubble"] / step == pytest.approx((pp - 1) / (m + pp - 1), rel=1e-12)


@pytest.mark.parametrize("pp,v,m", [(2, 2, 4), (4, 2, 8), (4, 3, 8), (4, 4, 16)])
def test_bubble_fraction_interleaved_is_p_minus_1_over_vm_plus_p_minus_1(pp, v, m):
    # Narayanan et al. 2021, Section 2.2.2: with v chunks per stage, (p-1)/(v m + p - 1)
    tf, tb = 1.0, 2.0
    e = run(uniform_program(pp, v, "interleaved-1f1b", m, tf, tb))
    step = max(u.end_s for u in e.units)
    assert step == pytest.approx(m * (tf + tb) + (pp - 1) * (tf + tb) / v, rel=1e-12)
    assert e.units[0].acc["bubble"] / step == pytest.approx((pp - 1) / (v * m + pp - 1), rel=1e-12)


def test_zero_bubble_h1_is_not_slower_than_1f1b_on_uniform_stages():
    # ZB-H1 (Qi et al. 2023) keeps 1F1B's memory and shortens its bubble
    tf, tb = 1.0, 2.0
    onef = max(u.end_s for u in run(uniform_program(4, 1, "1f1b", 8, tf, tb)).units)
    plan = uniform_program(4, 1, "zero-bubble", 8, tf, tb)
    chunks = tuple(dataclasses.replace(c, bwd=(Step("i", tb / 2),), wgrad=(Step("w", tb / 2),)) for c in plan.chunks)
    zb = max(u.end_s for u in run(dataclasses.replace(plan, chunks=chunks)).units)
    assert zb < onef


# ------------------------------------------------------------------ collectives and links
@pytest.mark.parametrize("n", [2, 4, 8])
def test_ring_allreduce_on_idle_ring_matches_alpha_beta(n):
    # Thakur et al. 2005: 2 (n-1)/n * S/B + 2 (n-1) alpha
    size, bw, alpha = 64e6, 100e9, 5e-6
    env = simpy.Environment()
    net = Network(env)
    link = Link("ring", bw)
    phases = coll.phases("allreduce", "ring", size, n, 1, alpha, alpha)

    def proc():
        for ph in phases:
            yield env.timeout(ph.latency_s)
            yield net.transfer((link,), ph.wire_bytes)

    env.process(proc())
    env.run()
    assert env.now == pytest.approx(2 * (n - 1) / n * size / bw + 2 * (n - 1) * alpha, rel=1e-12)


def test_two_flows_on_one_link_share_its_bandwidth():
    env = simpy.Environment()
    net = Network(env)
    link = Link("l", 10.0)
    done = {}

    def flow(name, nbytes, start):
        yield env.timeout(start)
        yield net.transfer((link,), nbytes)
        done[name] = env.now

    env.process(flow("a", 100.0, 0.0))
    env.process(flow("b", 50.0, 0.0))
    env.run()
    # together at 5 B/s until b ends at t=10 (50 B), then a alone: 50 B left at 10 B/s
    assert done["b"] == pytest.approx(10.0)
    assert done["a"] == pytest.approx(15.0)


def test_engine_dp_bucket_allreduce_matches_the_formula_on_an_idle_node():
    sc = scenario({"dp": 8, "micro_batch": 1}, nodes=1)
    prog = lower(sc.graph, sc.plan, sc.cluster)
    e = Engine(prog)
    u = e.units[0]
    t = {}

    def proc():
        yield from e._collective(u, prog.dp_comm, None)
        t["end"] = e.env.now

    e.env.process(proc())
    e.env.run()
    hw = sc.hardware
    bw = hw.intra_bytes_per_s * hw.intra_efficiency
    n, size = 8, prog.bucket_bytes
    expected = {"ring": 2 * (n - 1) / n * size / bw + 2 * (n - 1) * hw.intra_latency_s,
                "tree": 2 * size / bw + 2 * math.ceil(math.log2(n)) * hw.intra_latency_s}
    assert t["end"] == pytest.approx(min(expected.values()), rel=1e-9)


# ------------------------------------------------------------------ properties of whole steps
PLANS = [
    {"tp": 2, "pp": 2, "dp": 4, "micro_batch": 2},
    {"tp": 8, "pp": 2, "dp": 1, "micro_batch": 1, "sequence_parallel": True, "recompute": "full"},
    {"tp": 2, "pp": 4, "dp": 2, "micro_batch": 1, "schedule": "interleaved-1f1b", "virtual_stages": 2},
    {"tp": 1, "pp": 1, "dp": 16, "micro_batch": 4, "zero_stage": 3},
    {"tp": 1, "pp": 4, "dp": 4, "micro_batch": 2, "schedule": "gpipe", "recompute": "selective"},
    {"tp": 4, "pp": 1, "dp": 4, "micro_batch": 2, "dp_sync": "parameter-server"},
    {"tp": 2, "pp": 2, "dp": 4, "micro_batch": 1, "schedule": "zero-bubble", "zero_stage": 1},
]


@pytest.mark.parametrize("plan", PLANS)
def test_more_bandwidth_or_flops_never_makes_a_step_slower(plan):
    sc = scenario(plan)
    base = simulate(sc).step_time_s
    for factor in ("flops", "hbm_bw", "intra_bw", "nic_bw"):
        faster = simulate(with_profile(sc, **{factor: 2.0})).step_time_s
        assert faster <= base * (1 + 1e-12), factor


@pytest.mark.parametrize("plan", PLANS)
def test_breakdown_adds_up_to_the_step_time(plan):
    r = simulate(scenario(plan))
    assert set(BREAKDOWN_KEYS) <= set(r.breakdown_s)
    assert sum(r.breakdown_s.values()) == pytest.approx(r.step_time_s, rel=1e-9)
    assert all(v >= -1e-12 for v in r.breakdown_s.values())


def test_dp_1_has_no_dp_traffic_and_tp_1_has_no_tp_traffic():
    r = simulate(scenario({"tp": 1, "pp": 2, "dp": 8}))
    assert r.breakdown_s["tp_comm_exposed"] == 0.0
    r = simulate(scenario({"tp": 8, "pp": 2, "dp": 1}))
    assert r.breakdown_s["dp_comm_exposed"] == 0.0
    trace = simulate(scenario({"tp": 8, "pp": 2, "dp": 1}), trace=True).trace
    assert not [ev for ev in trace if ev.get("ph") == "X" and ev.get("cat") == "dp"]


@pytest.mark.parametrize("plan", PLANS)
def test_compute_is_conserved(plan):
    # total compute simulated = sum of layer costs x micro-batches, over all stages
    sc = scenario(plan)
    prog = lower(sc.graph, sc.plan, sc.cluster)
    e = run(prog)
    m = sc.plan.micro_batches
    expected = sum(m * (sum(s.compute_s for s in c.fwd) + sum(s.compute_s for s in c.bwd)
                        + sum(s.compute_s for s in c.wgrad)) for c in prog.chunks)
    expected += sum(prog.grad_copy_s[u.stage] for u in e.units) if prog.grad_copy_s else 0.0
    got = sum(u.acc["compute"] for u in e.units)
    assert got == pytest.approx(expected, rel=1e-9)
    rec = sum(m * sum(s.compute_s for s in c.recompute) for c in prog.chunks)
    assert sum(u.acc["recompute"] for u in e.units) == pytest.approx(rec, rel=1e-9)


@pytest.mark.parametrize("kw", [{}, {"jitter": 0.1, "seed": 7}, {"slow_ranks": {3: 1.5}, "steps": 3}])
def test_same_scenario_and_seed_same_result_to_the_last_bit(kw):
    sc = scenario(PLANS[0])
    a = simulate(sc, **kw).to_json()
    b = simulate(sc, **kw).to_json()
    for d in (a, b):
        d.pop("sim_wall_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("plan", PLANS)
def test_one_replica_stands_for_all_when_ranks_are_identical(plan):
    sc = scenario(plan)
    one = simulate(sc, replicas=1, fold=False)  # the symmetry alone (folding: test_sim_fold.py)
    full = simulate(sc, replicas=sc.plan.dp)
    assert full.step_time_s == pytest.approx(one.step_time_s, rel=1e-12)
    assert full.breakdown_s == pytest.approx(one.breakdown_s, rel=1e-9, abs=1e-15)


def test_a_slow_rank_slows_the_step_and_jitter_gives_a_distribution():
    sc = scenario(PLANS[0])
    base = simulate(sc).step_time_s
    slow = simulate(sc, slow_ranks={5: 2.0})
    assert slow.step_time_s > base * 1.2
    r = simulate(sc, jitter=0.2, steps=20, seed=3)
    d = r.distribution
    assert d["steps"] == 20 and d["min_s"] <= d["p50_s"] <= d["p99_s"] <= d["max_s"]
    assert d["max_s"] > d["min_s"]


def test_parameter_server_bottleneck_is_slower_than_allreduce_across_nodes():
    ring = simulate(scenario({"tp": 1, "pp": 1, "dp": 16, "micro_batch": 4})).step_time_s
    ps = simulate(scenario({"tp": 1, "pp": 1, "dp": 16, "micro_batch": 4, "dp_sync": "parameter-server"}))
    assert ps.step_time_s > ring
    assert ps.breakdown_s["dp_comm_exposed"] > 0


def test_trace_of_interleaved_4_stage_plan_has_stage_processes_and_tracks(tmp_path):
    from simplan.sim.trace import write_trace

    sc = scenario({"tp": 2, "pp": 4, "dp": 2, "micro_batch": 1, "schedule": "interleaved-1f1b",
                   "virtual_stages": 2})
    r = simulate(sc, trace=True)
    path = tmp_path / "t.json"
    write_trace(r.trace, path)
    events = json.loads(path.read_text())["traceEvents"]
    procs = {ev["args"]["name"] for ev in events if ev["name"] == "process_name"}
    assert procs == {f"replica 0 stage {s}" for s in range(4)}
    steps = {ev["args"].get("step", "")[:1] for ev in events if ev["ph"] == "X" and ev["tid"] == 0}
    assert {"F", "B"} <= steps
    assert any(ev["ph"] == "C" for ev in events)
    assert max(ev["ts"] + ev.get("dur", 0) for ev in events if ev["ph"] == "X") <= r.step_time_s * 1e6 * (1 + 1e-9)
