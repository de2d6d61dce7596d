"""The fast estimate against the engine and the memory model it stands in for.

The planner ranks tens of thousands of plans with ``simplan.search.estimate`` and simulates
only the best; that is sound only if the estimate orders plans as the simulator does. Stated
target: Kendall tau >= 0.8 (and Spearman rho >= 0.9) between estimated and simulated step
times over a spread sample of plans. The memory estimate must equal
``simplan.cost.memory.memory_report`` (it prunes plans before anything is simulated).
"""

from dataclasses import replace

import pytest
from scipy.stats import kendalltau, spearmanr

from simplan.cost.memory import memory_report
from simplan.model import build_graph, load_model
from simplan.plan.partition import from_sizes, uniform
from simplan.scenario import Scenario
from simplan.search.estimate import Estimator, bounds_of
from simplan.search.inputs import cluster_from_flags
from simplan.search.space import Constraints, plans
from simplan.sim import simulate


@pytest.fixture(scope="module")
def setup():
    model = load_model("gpt3-1.3b")
    cluster = cluster_from_flags("a100-sxm-80gb", 16)
    candidates = plans(model, 16, 32, Constraints(max_cp=1))
    est = Estimator(build_graph(model), cluster)
    base = Scenario(model=model, cluster=cluster, plan=candidates[0], hardware_ref="a100-sxm-80gb")
    return model, cluster, candidates, est, base


def spread(items, n):
    step = max(1, len(items) // n)
    return items[::step][:n]


def test_memory_estimate_equals_the_memory_model(setup):
    model, cluster, candidates, est, _ = setup
    graph = build_graph(model)
    for plan in spread(candidates, 150):
        exact = memory_report(graph, plan, cluster.profile, uniform(graph, plan.pp * plan.virtual_stages))
        peak, _ = est.memory(plan, est.uniform_bounds(plan.pp * plan.virtual_stages))
        assert peak == pytest.approx(exact.peak_bytes_per_gpu, rel=1e-6), plan


def test_memory_estimate_follows_a_balanced_partition(setup):
    model, cluster, candidates, est, _ = setup
    graph = build_graph(model)
    plan = next(p for p in candidates if p.pp == 4 and p.virtual_stages == 1 and p.schedule == "1f1b")
    sizes = (3, 8, 8, 7)  # 26 units: embedding + 24 layers + head
    exact = memory_report(graph, plan, cluster.profile, from_sizes(graph, sizes))
    assert est.memory(plan, bounds_of(sizes))[0] == pytest.approx(exact.peak_bytes_per_gpu, rel=1e-6)


def test_estimate_ranks_plans_as_the_simulator_does(setup):
    _, _, candidates, est, base = setup
    fitting = [p for p in candidates if est.estimate(p).fits]
    sample = spread(sorted(fitting, key=lambda p: est.estimate(p).step_time_s), 40)
    estimated = [est.estimate(p).step_time_s for p in sample]
    simulated = [simulate(replace(base, plan=p)).step_time_s for p in sample]
    tau, rho = kendalltau(estimated, simulated)[0], spearmanr(estimated, simulated)[0]
    assert tau >= 0.8, f"Kendall tau {tau:.3f}"
    assert rho >= 0.9, f"Spearman rho {rho:.3f}"


def test_estimate_is_close_for_the_megatron_gpt3_configuration():
    """GPT-3 175B, tp 8 pp 16 dp 8, full recomputation, 1F1B (Narayanan et al. 2021, Table 1):
    the closed form within 5% of the engine (one 0.3 s simulation)."""
    from simplan.scenario import load_scenario
    from pathlib import Path

    s = load_scenario(Path(__file__).resolve().parents[1] / "examples" / "gpt3-175b-1024xa100.yaml")
    e = Estimator(s.graph, s.cluster).estimate(s.plan)
    assert e.step_time_s == pytest.approx(simulate(s).step_time_s, rel=0.05)
