"""Micro-batch folding: simulate a long pipeline step from two short ones.

Without variability every micro-batch of a step costs the same, and once every stage has
passed its schedule's warm-up the pipeline repeats one period per micro-batch (a round of
``pp`` micro-batches for interleaved 1F1B): the step time is affine in the micro-batch
count m from there on (for 1F1B with equal stages the closed form is (m + p - 1)(t_f + t_b),
Narayanan et al. 2021, Section 2.2.1; the gradient reduction, optimizer step, fill and
drain do not grow with m). So a step of m micro-batches is simulated at m1 = pp + 2
(interleaved: pp + one round) and m2 = m1 + period and extrapolated linearly; so is its
breakdown (how waiting splits between pipeline sends and bubble may shift by a few
percent of either).

What it costs in accuracy: where concurrent flows share links (context- or expert-parallel
traffic beside pipeline sends) the steady state is periodic only approximately. On the
288-plan grid of tests/test_sim_fold.py (schedules, ZeRO stages, cp, ep, tp,
recomputation, sequence parallelism) the folded step equals the full simulation to
rounding (1e-13). On Llama-3 405B at tp 2 pp 128 cp 16 (zero-bubble, NICs shared by the
context-parallel ring and the pipeline sends) the step grows by 0.01099 s from 128 to 129
micro-batches and by 0.010520-0.010525 s per micro-batch from 129 to 512: starting at
m1 = pp would be 2.9% off at 512, starting two past it is 1e-5 off; hence m1 = pp + 2.
Folding applies only where the two runs cover at most two thirds of the micro-batches.
"""

from __future__ import annotations

from dataclasses import replace

from simplan.plan.plan import Plan


def fold_counts(plan: Plan) -> tuple[int, int] | None:
    """The two micro-batch counts to simulate instead of ``plan.micro_batches``, or None
    when the step is too short for folding to pay."""
    period = plan.pp if plan.schedule == "interleaved-1f1b" else 1
    # past the first stage's warm-up (pp - 1 forwards) by two periods, or one round
    m1 = plan.pp + max(2, period)
    m2 = m1 + period
    if 3 * (m1 + m2) > 2 * plan.micro_batches:  # each run has fixed events too (gradient buckets)
        return None
    return m1, m2


def with_micro_batches(plan: Plan, m: int) -> Plan:
    """The plan with ``m`` micro-batches per step (the global batch scaled to match)."""
    return replace(plan, global_batch=m * plan.dp * plan.micro_batch)


def extrapolate(v1: float, v2: float, m1: int, m2: int, m: int) -> float:
    """The affine function through (m1, v1) and (m2, v2), at m."""
    return v1 + (v2 - v1) * (m - m1) / (m2 - m1)
