"""Variability at scale: the step time of many data-parallel replicas from a sample of them.

Replicas run alone between the points where they meet: the gradient reduction (and, with
ZeRO-1/2, the parameter all-gather after the optimizer step). Each segment between
meetings ends when the slowest replica has finished it, so with per-operation jitter the
step is the sum over segments of the largest of dp replica segment times (a replica's own
step time would give max of sums, which the optimizer step after the reduction already
underestimates by ~2% at 32 replicas and jitter 0.2). Simulating every replica costs dp
replica simulations per step (GPT-3 175B on 16,384 GPUs at tp 8 pp 16: 128 replicas).
Instead a few replicas are simulated alone, each segment's time is taken as normal (it
sums many independent per-operation slowdowns: the central limit theorem), and each
step draws each segment's largest of n iid normals, the top order statistic: with U
uniform on (0, 1), max = mu + sigma Phi^-1(U^(1/n)) since P(max <= x) = Phi(x)^n (David &
Nagaraja, "Order Statistics", 3rd ed., Section 2.1); its mean grows as sigma sqrt(2 ln n),
the extreme-value (Gumbel) limit of the normal.

Replicas holding a slow rank are their own group (one replica each), simulated with their
slowdown; a segment ends with the slowest draw over all groups. Segments are those of the
critical pipeline stage (the one that ends the step). tests/test_sim_stragglers.py compares
this with the joint simulation of every replica where that is affordable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

JOINT_REPLICAS = 8
"""Up to this many data-parallel replicas are all simulated together (exact)."""
SAMPLES = 32
"""Replica simulations per group when sampling (the normal's mean and deviation)."""


@dataclass(frozen=True)
class Group:
    """Replicas that behave alike: ``count`` of them, simulated with ``slow_units``."""

    count: int
    slow_units: dict
    """{(0, stage): factor} for a replica simulated alone (replica index 0)."""


def groups(dp: int, slow_units: dict[tuple[int, int], float]) -> list[Group]:
    """The replicas without a slow rank (one group), and each replica with one."""
    slow_replicas = sorted({r for r, _ in slow_units})
    out = [Group(dp - len(slow_replicas), {})] if dp > len(slow_replicas) else []
    for r in slow_replicas:
        out.append(Group(1, {(0, s): f for (rr, s), f in slow_units.items() if rr == r}))
    return out


def max_of_normals(mean_s: float, std_s: float, n: int, u: float) -> float:
    """The largest of ``n`` iid normal(mean, std) draws, from one uniform ``u`` in (0, 1):
    the inverse of Phi(x)^n, computed as -Phi^-1(1 - u^(1/n)) to keep precision for large n."""
    tail = -np.expm1(np.log(u) / n)  # 1 - u^(1/n)
    return float(mean_s + std_s * -ndtri(tail))


def step_samples(groups_s: list[tuple[int, np.ndarray]], steps: int, seed: int) -> list[float]:
    """Per step, the last pipeline stage to finish, each stage's time the sum over its
    segments of the slowest replica's segment. ``groups_s``: per group (replicas in it, its
    simulated segment times, shape (samples, stages, segments)). A replica's stages move
    together (they pass each other its micro-batches), so one draw per group and segment
    serves every stage."""
    fitted = []
    for count, seg in groups_s:
        logs = np.log(np.maximum(seg, 1e-300))
        std = logs.std(axis=0, ddof=1) if len(seg) > 1 else np.zeros(seg.shape[1:])
        fitted.append((count, logs.mean(axis=0), std))
    rng = np.random.default_rng(seed)
    segments = fitted[0][1].shape[1]
    out = []
    for _ in range(steps):
        stage_s = 0.0
        for k in range(segments):
            z = [max_of_normals(0.0, 1.0, count, rng.uniform(1e-12, 1.0)) for count, _, _ in fitted]
            # the slowest replica of each stage's segment k, over the groups
            stage_s = stage_s + np.max([np.exp(mean[:, k] + std[:, k] * zg) for (_, mean, std), zg in zip(fitted, z)],
                                       axis=0)
        out.append(float(np.max(stage_s)))
    return out
