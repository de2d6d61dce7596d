"""Micro-batch folding (simplan.sim.fold): a long step simulated from two short ones
against the full simulation, over schedules, ZeRO stages, context/expert/tensor
parallelism, recomputation and overlap switches."""

from __future__ import annotations

import itertools

import pytest

from simplan.plan.validate import problems
from simplan.scenario import load_scenario
from simplan.sim import simulate
from simplan.sim.fold import extrapolate, fold_counts

TOLERANCE = 1e-3
"""Measured on this grid: equal to rounding (1e-13); the steady state is periodic only
approximately where flows share links, up to 0.1% seen on full-size models (sim/fold.py)."""


def scenario(model: str, plan: dict, gpus: int = 32):
    return load_scenario({"model": {"preset": model, "seq_len": 512, "layers": 8}, "hardware": "h100-sxm-80gb",
                          "cluster": {"nodes": gpus // 8, "gpus_per_node": 8}, "plan": plan})


def grid():
    for model, pp, schedule, zero, cp, ep, tp, recompute, sp in itertools.product(
            ("llama3-8b", "mixtral-8x7b"), (2, 4), ("1f1b", "gpipe", "zero-bubble", "interleaved-1f1b"), (0, 1),
            (1, 2), (1, 2), (1, 4), ("none", "full"), (False, True)):
        if (ep > 1) != (model == "mixtral-8x7b") or (sp and tp == 1) or (cp > 1 and ep > 1):
            continue
        dp = 32 // (pp * cp * tp)
        yield model, {"tp": tp, "pp": pp, "dp": dp, "cp": cp, "ep": ep, "micro_batch": 1,
                      "global_batch": 16 * pp * dp, "schedule": schedule,
                      "virtual_stages": 2 if schedule == "interleaved-1f1b" else 1, "recompute": recompute,
                      "zero_stage": zero, "sequence_parallel": sp}


CASES = [c for c in grid()]


@pytest.mark.parametrize("model,plan", CASES[::3], ids=lambda x: str(x) if isinstance(x, str) else
                         "-".join(f"{k}{v}" for k, v in x.items() if k in ("tp", "pp", "cp", "ep", "schedule",
                                                                              "zero_stage", "recompute")))
def test_folded_step_matches_the_full_simulation(model, plan):
    sc = scenario(model, plan)
    assert not problems(sc.plan, sc.model, sc.gpus)
    assert fold_counts(sc.plan) is not None
    folded = simulate(sc)
    full = simulate(sc, fold=False)
    assert folded.step_time_s == pytest.approx(full.step_time_s, rel=TOLERANCE)
    # the extrapolated breakdown still adds up to the step (of the critical stage)
    assert sum(folded.breakdown_s.values()) == pytest.approx(folded.step_time_s, rel=TOLERANCE)


def test_exclusive_links_fold_exactly():
    sc = scenario("llama3-8b", {"tp": 8, "pp": 4, "dp": 1, "micro_batch": 1, "global_batch": 256})
    folded, full = simulate(sc), simulate(sc, fold=False)
    assert folded.step_time_s == pytest.approx(full.step_time_s, rel=1e-12)
    assert folded.events < full.events / 4


def test_short_steps_and_traces_are_not_folded():
    short = scenario("llama3-8b", {"tp": 8, "pp": 4, "dp": 1, "micro_batch": 1, "global_batch": 16})
    assert fold_counts(short.plan) is None  # 3 (6 + 7) > 2 x 16
    long = scenario("llama3-8b", {"tp": 8, "pp": 4, "dp": 1, "micro_batch": 1, "global_batch": 64})
    traced = simulate(long, trace=True)
    assert traced.events == simulate(long, fold=False).events


def test_interleaved_folds_whole_rounds_and_extrapolation_is_affine():
    sc = scenario("llama3-8b", {"tp": 8, "pp": 4, "dp": 1, "micro_batch": 1, "global_batch": 128,
                                "schedule": "interleaved-1f1b", "virtual_stages": 2})
    m1, m2 = fold_counts(sc.plan)
    assert (m1, m2) == (8, 12)  # pp + one round, one round more
    assert extrapolate(1.0, 3.0, 4, 8, 16) == pytest.approx(7.0)
