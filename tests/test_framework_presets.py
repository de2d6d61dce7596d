"""Framework presets (scenario ``framework``) and fp32 main gradients: the defaults each
framework supplies, nothing typed replaced, and the memory, simulator and planner estimate
all charging the fp32 gradients alike."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simplan.cost.memory import memory_report, model_state_bytes
from simplan.errors import SimplanError
from simplan.plan.partition import uniform
from simplan.scenario import load_scenario, scenario_to_dict
from simplan.search.estimate import Estimator
from simplan.sim import simulate


def scenario(framework=None, **plan):
    data = {"model": "gpt3-1.3b", "hardware": "h100-sxm-80gb", "cluster": {"nodes": 2},
            "plan": {"tp": 2, "global_batch": 64, **plan}}
    if framework is not None:
        data["framework"] = framework
    return load_scenario(data)


def test_megatron_core_defaults_fill_only_what_is_left_out():
    s = scenario("megatron-core")
    assert (s.plan.sequence_parallel, s.plan.zero_stage, s.plan.main_grads_fp32) == (True, 1, True)
    typed = scenario("megatron-core", sequence_parallel=False, zero_stage=0, main_grads_fp32=False)
    assert (typed.plan.sequence_parallel, typed.plan.zero_stage, typed.plan.main_grads_fp32) == (False, 0, False)
    assert scenario("torchtitan").plan.zero_stage == 3
    assert scenario().plan == scenario("generic").plan
    assert scenario("generic").plan.main_grads_fp32 is False
    # the normalized scenario names the framework and loads back equal
    s2 = load_scenario(scenario_to_dict(s))
    assert s2 == s and s2.framework == "megatron-core"


def test_unknown_framework_is_one_line_naming_the_field():
    with pytest.raises(SimplanError, match=r"framework: 'megatron' is not one of generic, megatron-core"):
        scenario("megatron")


def test_fp32_main_grads_cost_memory_and_communication_alike_in_simulator_and_estimate():
    base = scenario(sequence_parallel=True, zero_stage=1)
    fp32 = replace(base, plan=replace(base.plan, main_grads_fp32=True))
    graph = base.graph
    chunks = uniform(graph, 1)
    m16 = memory_report(graph, base.plan, base.hardware, chunks)
    m32 = memory_report(graph, fp32.plan, fp32.hardware, chunks)
    per = model_state_bytes(1.0, "bf16", 1, 8, main_grads_fp32=True)
    assert per["gradients"] == 4 and per["weights"] == 2  # Megatron-Core: 6 + 12/d bytes per parameter
    assert m32.breakdown["gradients"] == pytest.approx(2 * m16.breakdown["gradients"])
    t16, t32 = simulate(base), simulate(fp32)
    # the gradient reduction moves fp32: more of it is exposed, and the optimizer reads 4-byte gradients
    assert t32.breakdown_s["dp_comm_exposed"] > 1.2 * t16.breakdown_s["dp_comm_exposed"] > 0
    assert t32.breakdown_s["optimizer"] > t16.breakdown_s["optimizer"]
    est = Estimator(graph, base.cluster)
    for s, t in ((base, t16), (fp32, t32)):
        e = est.estimate(s.plan)
        assert e.step_time_s == pytest.approx(t.step_time_s, rel=0.02)
        assert est.memory(s.plan, est.uniform_bounds(1))[0] == pytest.approx(
            memory_report(graph, s.plan, s.hardware, chunks).peak_bytes_per_gpu, rel=1e-6)
