"""Pareto front of simulated plans: step time, memory per GPU and rental cost per step.

A plan is on the front when no other plan is at least as good on every axis and better on
one (all three are minimized). With one cluster the cost per step is GPUs x step time x
price, so it orders plans as time does; it is reported so plans on different GPU counts
can be compared by cost (``--price-per-gpu-hour``).
"""

from __future__ import annotations


def dominated(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """True when ``b`` is at least as good as ``a`` everywhere and better somewhere."""
    return all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b))


def front(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the non-dominated points, in input order."""
    return [i for i, p in enumerate(points) if not any(dominated(p, q) for j, q in enumerate(points) if j != i)]


def pareto_front(plans, price_per_gpu_hour: float | None) -> list[dict]:
    """``plans``: ranked (Scenario, StepResult) pairs. One row per plan on the front, in rank order."""
    rows = []
    for rank, (scenario, result) in enumerate(plans):
        cost = None
        if price_per_gpu_hour is not None:
            cost = scenario.plan.gpus * result.step_time_s * price_per_gpu_hour / 3600.0
        rows.append({"rank": rank, "step_time_s": result.step_time_s,
                     "peak_bytes_per_gpu": result.memory["peak_bytes_per_gpu"], "cost_per_step": cost})
    points = [(r["step_time_s"], r["peak_bytes_per_gpu"]) + ((r["cost_per_step"],) if price_per_gpu_hour is not None
                                                              else ()) for r in rows]
    return [rows[i] for i in front(points)]
