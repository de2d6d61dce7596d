"""search(): ranked, simulated, deterministic, independent of the worker count; bad input."""

import json
from dataclasses import replace

import pytest

from simplan.cli import main
from simplan.errors import SimplanError
from simplan.model import load_model
from simplan.scenario import load_scenario
from simplan.search.inputs import cluster_from_flags
from simplan.search.search import search
from simplan.search.space import Constraints
from simplan.sim import simulate

GPT2 = load_model("gpt2-small")


@pytest.fixture(scope="module")
def result():
    return search(GPT2, cluster_from_flags("a100-sxm-80gb", 8), 16, top_k=6, workers=1)


def test_plans_are_simulated_and_ranked(result):
    assert result.simulated == len(result.plans) == 6
    assert result.considered > 1000 and 0 < result.fitting <= result.considered
    times = [r.step_time_s for _, r in result.plans]
    assert times == sorted(times)
    for scenario, r in result.plans:
        assert r.engine == "simpy" and r.memory["fits"]
        assert r.scenario["plan"] == scenario.plan.to_dict()


def test_result_does_not_depend_on_the_number_of_workers(result):
    other = search(GPT2, cluster_from_flags("a100-sxm-80gb", 8), 16, top_k=6, workers=2)
    assert [s.plan for s, _ in other.plans] == [s.plan for s, _ in result.plans]
    assert [r.step_time_s for _, r in other.plans] == [r.step_time_s for _, r in result.plans]
    assert other.considered == result.considered and other.fitting == result.fitting


def test_winner_is_explained_against_the_runner_up(result):
    why = result.why
    assert why["margin_s"] == pytest.approx(result.plans[1][1].step_time_s - result.plans[0][1].step_time_s)
    assert set(why["breakdown_s"]) >= {"compute"}
    if why["margin_s"] > 1e-12 * result.plans[1][1].step_time_s:
        assert "wins by" in why["summary"]
    else:  # equal step times: the plan needing less memory is ranked first and the summary says so
        assert "ties with the runner-up" in why["summary"]
        if result.plans[0][1].memory["peak_bytes_per_gpu"] < result.plans[1][1].memory["peak_bytes_per_gpu"]:
            assert "ranked by memory per GPU" in why["summary"]


def test_equal_step_times_rank_the_smaller_memory_first(result):
    for (_, a), (_, b) in zip(result.plans, result.plans[1:]):
        if a.step_time_s == b.step_time_s:
            assert a.memory["peak_bytes_per_gpu"] <= b.memory["peak_bytes_per_gpu"]


def test_pareto_front_is_not_dominated(result):
    rows = result.pareto
    assert rows and rows[0]["rank"] == 0  # the fastest plan is always on the front
    for row in rows:
        for _, r in result.plans:
            assert not (r.step_time_s < row["step_time_s"] and
                        r.memory["peak_bytes_per_gpu"] < row["peak_bytes_per_gpu"])


def test_constraints_reach_the_simulated_plans():
    c = Constraints(tp=2, schedule="1f1b", recompute="full")
    r = search(GPT2, cluster_from_flags("a100-sxm-80gb", 8), 16, constraints=c, top_k=3, workers=1)
    assert all(s.plan.tp == 2 and s.plan.recompute == "full" for s, _ in r.plans)


def test_best_plan_beats_a_hand_picked_one():
    """Within its own model, the search must not lose to a plausible hand-tuned plan."""
    cluster = cluster_from_flags("a100-sxm-80gb", 8)
    r = search(GPT2, cluster, 16, top_k=4, workers=1)
    hand = replace(r.best[0], plan=replace(r.best[0].plan, tp=4, pp=2, dp=1, micro_batch=1,
                                           schedule="1f1b", virtual_stages=1, recompute="full",
                                           sequence_parallel=False, zero_stage=0, dp_sync="allreduce",
                                           tp_inside_node=True))
    assert r.best[1].step_time_s <= simulate(hand).step_time_s


def test_a_model_that_fits_nowhere_says_by_how_much_and_what_helps():
    with pytest.raises(SimplanError, match=r"does not fit .* GiB more than .* more GPUs"):
        search(load_model("gpt3-175b"), cluster_from_flags("a100-sxm-80gb", 8), 8, top_k=2, workers=1)


def test_bad_arguments_are_user_errors():
    cluster = cluster_from_flags("a100-sxm-80gb", 8)
    with pytest.raises(SimplanError, match="--global-batch"):
        search(GPT2, cluster, 0)
    with pytest.raises(SimplanError, match="--precision"):
        search(GPT2, cluster, 16, constraints=Constraints(precision="fp8"))  # A100 has no fp8
    with pytest.raises(SimplanError, match="--gpus"):
        cluster_from_flags("a100-sxm-80gb", 12)


# --- the command line ------------------------------------------------------------------------------

PLAN = ["plan", "--model", "gpt2-small", "--hardware", "a100-sxm-80gb", "--gpus", "8", "--global-batch", "16",
        "--top-k", "3", "--workers", "1"]


def test_cli_json_is_the_contract_object(capsys, tmp_path):
    out = tmp_path / "best.yaml"
    assert main(PLAN + ["--json", "--out", str(out), "--price-per-gpu-hour", "2.5"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert {"plans", "considered", "simulated", "search_wall_s"} <= set(obj)
    assert obj["simulated"] == len(obj["plans"]) == 3
    first = obj["plans"][0]
    assert {"scenario", "result"} <= set(first) and first["result"]["step_time_s"] > 0
    assert first["cost_per_step"] == pytest.approx(8 * first["result"]["step_time_s"] * 2.5 / 3600)
    # the written scenario is taken back unchanged and simulates to the same step time
    again = simulate(load_scenario(out))
    assert again.scenario == first["scenario"]
    assert again.step_time_s == pytest.approx(first["result"]["step_time_s"], rel=1e-12)


def test_cli_table_and_errors(capsys):
    assert main(PLAN) == 0
    text = capsys.readouterr().out
    assert "tokens/s" in text and "considered" in text and "why #1" in text
    assert main(PLAN + ["--tp", "3"]) == 2
    assert "--tp 3" in capsys.readouterr().err
    assert main(PLAN + ["--tp", "x"]) == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_simulation_budget_stops_after_the_plan_that_spends_it(workers):
    # plan i is simulated when plans 0..i-1 took fewer events together: the same whatever the workers
    cluster = cluster_from_flags("a100-sxm-80gb", 8)
    one = search(GPT2, cluster, 16, top_k=6, workers=workers, sim_budget_events=1)
    assert one.simulated == len(one.plans) == 1
    assert any("simulation budget" in note and "--sim-budget" in note for note in one.notes)
    two = search(GPT2, cluster, 16, top_k=6, workers=workers, sim_budget_events=one.plans[0][1].events + 1)
    assert two.simulated == 2 and one.plans[0][0].plan in [s.plan for s, _ in two.plans]
    with pytest.raises(SimplanError, match="--sim-budget"):
        search(GPT2, cluster, 16, sim_budget_events=0)
