"""``verify --rounds``: every scenario launched once per round, rounds rotated, the median
over a scenario's launches compared with the simulator (the executor is replaced by a stub
that records the order and returns a step time per launch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplan.errors import SimplanError
from simplan.execute import verify as v

SUITE = sorted((Path(__file__).resolve().parents[1] / "examples" / "verify").glob("*.yaml"))[:3]


def fake_launches(monkeypatch, times: dict[str, list[float]]):
    order: list[str] = []

    def run_plan(model, plan, opts):
        name = next(n for n in times if len(order_of(order, n)) < len(times[n]) and matches(n, plan))
        order.append(name)
        t = times[name][len(order_of(order, name)) - 1]
        ranks = plan.tp * plan.pp * plan.dp
        return {"step_time_s": t, "step_time_iqr_s": 0.0, "activation_bytes_per_rank": [1] * ranks,
                "pp_rank_of_rank": [0] * ranks, "first_step_loss": 1.0, "loss_per_step": [1.0]}

    def order_of(seq, name):
        return [x for x in seq if x == name]

    plans = {p.stem: v.load_for_verify(p).plan for p in SUITE}

    def matches(name, plan):
        return plans[name] == plan

    monkeypatch.setattr(v, "run_plan", run_plan)
    return order


def test_rounds_rotate_the_order_and_take_the_median_per_scenario(monkeypatch):
    names = [p.stem for p in SUITE]
    times = {names[0]: [1.0, 9.0, 2.0], names[1]: [3.0, 3.5, 100.0], names[2]: [5.0, 4.0, 6.0]}
    order = fake_launches(monkeypatch, times)
    summary = v.verify([str(p) for p in SUITE], rounds=3)
    assert order == [names[0], names[1], names[2], names[1], names[2], names[0], names[2], names[0], names[1]]
    measured = {Path(r["scenario"]).stem: r["measured_step_time_s"] for r in summary["rows"]}
    assert measured == {names[0]: 2.0, names[1]: 3.5, names[2]: 5.0}
    per_launch = {Path(r["scenario"]).stem: r["measured_step_time_per_launch_s"] for r in summary["rows"]}
    assert per_launch == times


def test_one_round_is_one_launch_each(monkeypatch):
    names = [p.stem for p in SUITE]
    order = fake_launches(monkeypatch, {n: [1.0] for n in names})
    v.verify([str(p) for p in SUITE])
    assert order == names


def test_rounds_below_one_are_a_user_error():
    with pytest.raises(SimplanError, match="rounds must be at least 1, got 0"):
        v.verify([str(SUITE[0])], rounds=0)


def test_rounds_calibrated_apart_combine_to_the_medians_of_prediction_and_measurement():
    def row(name, predicted, measured):
        return {"scenario": name, "predicted_step_time_s": predicted, "measured_step_time_s": measured,
                "step_time_error": (predicted - measured) / measured, "activation_error": 0.0,
                "first_step_loss": 1.0}

    rounds = [[row("a", 1.0, 2.0), row("b", 5.0, 4.0)],
              [row("b", 6.0, 5.0), row("a", 3.0, 2.5)],
              [row("a", 2.0, 3.0), row("b", 7.0, 4.5)]]
    rows = {r["scenario"]: r for r in v.combine_rounds(rounds)}
    assert (rows["a"]["predicted_step_time_s"], rows["a"]["measured_step_time_s"]) == (2.0, 2.5)
    assert rows["a"]["step_time_error"] == pytest.approx(-0.2, rel=1e-12)
    assert rows["b"]["predicted_step_time_per_round_s"] == [5.0, 6.0, 7.0]
    assert rows["b"]["measured_step_time_per_launch_s"] == [4.0, 5.0, 4.5]
    assert v.summarize(list(rows.values()))["mape"] == pytest.approx((0.2 + 1.5 / 4.5) / 2, rel=1e-12)


def test_rounds_of_several_runs_pool_into_the_medians_over_all_their_rounds():
    def row(name, predicted, measured):
        return {"scenario": name, "predicted_step_time_s": predicted, "measured_step_time_s": measured,
                "step_time_error": (predicted - measured) / measured, "activation_error": 0.0,
                "first_step_loss": 1.0}

    # two runs from different checkouts (the same scenario files under other directories)
    run1 = v.combine_rounds([[row("/x/a.yaml", 1.0, 2.0)], [row("/x/a.yaml", 3.0, 2.5)]])
    run2 = v.combine_rounds([[row("/y/a.yaml", 2.0, 3.0)], [row("/y/a.yaml", 4.0, 3.5)], [row("/y/a.yaml", 5.0, 1.0)]])
    rounds = v.split_rounds(run1) + v.split_rounds(run2)
    assert [[r["predicted_step_time_s"] for r in rs] for rs in rounds] == [[1.0], [3.0], [2.0], [4.0], [5.0]]
    assert rounds[4][0]["step_time_error"] == pytest.approx(4.0, rel=1e-12)
    (pooled,) = v.combine_rounds(rounds)
    assert pooled["scenario"] == "a.yaml"
    assert (pooled["predicted_step_time_s"], pooled["measured_step_time_s"]) == (3.0, 2.5)
