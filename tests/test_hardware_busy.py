"""``node.busy_slowdown``: a profile's compute figures are measured with every device of its
node busy; a cluster that runs fewer devices per node computes at the pace of fewer busy
cores (a CPU host), and a GPU profile (slowdown 1) is unchanged."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from simplan.cost.compute import layer_time
from simplan.errors import SimplanError
from simplan.hardware.cluster import Cluster
from simplan.hardware.load import PROFILE_DIR, apply_cluster_overrides, dump_hardware, load_hardware
from simplan.model import build_graph, load_model
from simplan.plan import Plan
from simplan.scenario import load_scenario
from simplan.sim import simulate

EXACT = 1e-9
PLAN = Plan(micro_batch=2, global_batch=2, precision="fp32")


def _host(slowdown: float, gpus_per_node: int = 2):
    base = load_hardware("cpu-host")
    sources = {**base.sources, "node.busy_slowdown": "test", "software.dtensor_op_overhead_us": "test",
               "software.fsdp_gather_overhead_us": "test"}
    return replace(base, busy_slowdown=slowdown, gpus_per_node=gpus_per_node, dtensor_op_overhead_s=2e-4,
                   fsdp_gather_overhead_s=3e-4, sources=sources)


def _layer():
    return next(layer for layer in build_graph(load_model("tiny-gpt")).order if layer.name == "layer0.mlp")


def test_one_device_of_two_runs_at_the_pace_of_one_busy_core():
    hw = _host(1.5)
    alone = apply_cluster_overrides(hw, gpus_per_node=1)
    assert alone.busy_slowdown == pytest.approx(1.0, rel=EXACT)
    for name in ("kernel_overhead_s", "step_overhead_s", "dtensor_op_overhead_s", "fsdp_gather_overhead_s"):
        assert getattr(alone, name) == pytest.approx(getattr(hw, name) / 1.5, rel=EXACT)
    busy, one = layer_time(_layer(), PLAN, hw), layer_time(_layer(), PLAN, alone)
    assert one.fwd_s == pytest.approx(busy.fwd_s / 1.5, rel=EXACT)
    assert one.bwd_s == pytest.approx(busy.bwd_s / 1.5, rel=EXACT)
    assert "node.busy_slowdown 1.500" in alone.sources["gpu.matmul_efficiency"]


def test_the_slowdown_is_linear_in_the_number_of_busy_devices():
    hw = _host(1.6, gpus_per_node=4)
    two = apply_cluster_overrides(hw, gpus_per_node=2)
    at_two = 1 + 0.6 * (2 - 1) / (4 - 1)
    assert two.busy_slowdown == pytest.approx(at_two, rel=EXACT)
    assert two.kernel_overhead_s == pytest.approx(hw.kernel_overhead_s * at_two / 1.6, rel=EXACT)
    # applied again from the rescaled profile, one device gets the same as straight from four
    assert apply_cluster_overrides(two, gpus_per_node=1).kernel_overhead_s == pytest.approx(
        apply_cluster_overrides(hw, gpus_per_node=1).kernel_overhead_s, rel=EXACT)


@pytest.mark.parametrize("profile, gpus", [(_host(1.5), 2), (_host(1.5), 4), (_host(1.0), 1)])
def test_all_devices_busy_more_devices_or_no_slowdown_leave_the_figures(profile, gpus):
    out = apply_cluster_overrides(profile, gpus_per_node=gpus)
    assert (out.kernel_overhead_s, out.matmul_efficiency, out.memory_efficiency) == (
        profile.kernel_overhead_s, profile.matmul_efficiency, profile.memory_efficiency)


def test_an_efficiency_stays_at_most_one():
    hw = replace(_host(3.0), memory_efficiency=0.5)
    assert apply_cluster_overrides(hw, gpus_per_node=1).memory_efficiency == 1.0


def test_gpu_profiles_do_not_slow_down_with_their_neighbours():
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        if path.stem != "local":
            assert load_hardware(path.stem).busy_slowdown == 1.0, path.stem


def test_a_one_device_cluster_simulates_faster_on_a_host_that_slows_when_busy(tmp_path):
    dump_hardware(_host(1.25), tmp_path / "host.yaml")
    assert yaml.safe_load((tmp_path / "host.yaml").read_text())["node"]["busy_slowdown"] == 1.25
    data = {"model": "tiny-gpt", "hardware": str(tmp_path / "host.yaml"), "cluster": {"nodes": 1, "gpus_per_node": 1},
            "plan": {"micro_batch": 2, "global_batch": 4, "precision": "fp32"}}
    dump_hardware(_host(1.0), tmp_path / "flat.yaml")
    fast = simulate(load_scenario(data)).breakdown_s["compute"]
    slow = simulate(load_scenario({**data, "hardware": str(tmp_path / "flat.yaml")})).breakdown_s["compute"]
    assert fast == pytest.approx(slow / 1.25, rel=1e-9)


@pytest.mark.parametrize("value, message", [(0, "node.busy_slowdown: must be > 0, got 0"),
                                            ("x", "node.busy_slowdown: expected a number")])
def test_bad_busy_slowdown_is_a_user_error(tmp_path, value, message):
    path = tmp_path / "p.yaml"
    dump_hardware(_host(1.5), path)
    data = yaml.safe_load(path.read_text())
    data["node"]["busy_slowdown"] = value
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SimplanError, match=message):
        load_hardware(str(path))


def test_the_cluster_rescales_when_the_scenario_puts_fewer_devices_on_a_node():
    cluster = Cluster(profile=_host(1.5), nodes=1, gpus_per_node=1)
    assert cluster.profile.busy_slowdown == pytest.approx(1.0, rel=EXACT)

