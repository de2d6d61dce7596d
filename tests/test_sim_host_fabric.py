"""A host fabric (gloo on a CPU) reduces gradients on the rank's compute core, so the
data-parallel reduction cannot overlap backward (simplan.sim.lower.Program.comm_uses_compute_core)."""

from __future__ import annotations

import dataclasses

import pytest

from simplan.model import build_graph
from simplan.scenario import load_scenario
from simplan.search.estimate import Estimator
from simplan.sim import simulate
from simplan.sim.lower import lower


def scenario(hardware: str, dp_overlap: bool, model="gpt2-small", gpus_per_node=2):
    precision = "fp32" if hardware == "cpu-host" else "bf16"
    return load_scenario({"model": model, "hardware": hardware,
                          "cluster": {"nodes": 1, "gpus_per_node": gpus_per_node},
                          "plan": {"dp": gpus_per_node, "micro_batch": 2, "global_batch": 16,
                                   "dp_overlap": dp_overlap, "precision": precision}})


def test_host_fabric_program_says_collectives_use_the_compute_core():
    for hardware, expected in (("cpu-host", True), ("a100-sxm-80gb", False)):
        sc = scenario(hardware, True)
        assert lower(sc.graph, sc.plan, sc.cluster).comm_uses_compute_core is expected


def test_host_fabric_dp_reduction_is_not_overlapped():
    over, after = simulate(scenario("cpu-host", True)), simulate(scenario("cpu-host", False))
    assert over.breakdown_s["dp_comm_exposed"] > 0
    assert over.step_time_s == pytest.approx(after.step_time_s, rel=1e-12)
    assert over.breakdown_s["dp_comm_exposed"] == pytest.approx(after.breakdown_s["dp_comm_exposed"], rel=1e-12)


def test_gpu_fabric_still_overlaps_the_dp_reduction():
    # the same plan on a GPU profile hides part of the reduction behind the last backward
    over = simulate(scenario("a100-sxm-80gb", True, gpus_per_node=8))
    after = simulate(scenario("a100-sxm-80gb", False, gpus_per_node=8))
    assert over.step_time_s < after.step_time_s


def test_search_estimate_agrees_on_a_host_fabric():
    sc_over, sc_after = scenario("cpu-host", True), scenario("cpu-host", False)
    est = Estimator(build_graph(sc_over.model), sc_over.cluster)
    assert est.estimate(sc_over.plan).step_time_s == pytest.approx(
        est.estimate(sc_after.plan).step_time_s, rel=1e-12)
    assert dataclasses.replace(sc_over.plan, dp_overlap=False) == sc_after.plan
