"""The balanced layer-to-stage partition (linear-partition dynamic program)."""

import itertools
import random

import numpy as np

from simplan.model import build_graph, load_model
from simplan.plan.partition import balanced_sizes, from_sizes, sizes_of, uniform, units


def brute_force(cost, chunks, fits=None):
    n = len(cost)
    best = None
    for cuts in itertools.combinations(range(1, n), chunks - 1):
        bounds = (0, *cuts, n)
        if fits and not all(fits(c, bounds[c], bounds[c + 1]) for c in range(chunks)):
            continue
        worst = max(sum(cost[a:b]) for a, b in zip(bounds, bounds[1:]))
        if best is None or worst < best:
            best = worst
    return best


def bottleneck(cost, sizes):
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    return max(sum(cost[a:b]) for a, b in zip(bounds, bounds[1:]))


def test_a_heavy_last_unit_gets_a_chunk_of_its_own():
    assert balanced_sizes([1, 1, 1, 1, 4], 2) == (4, 1)


def test_matches_brute_force_on_random_costs():
    rng = random.Random(1)
    for _ in range(30):
        n, chunks = rng.randint(3, 9), rng.randint(1, 3)
        cost = [rng.uniform(0.1, 5) for _ in range(n)]
        sizes = balanced_sizes(cost, chunks)
        assert len(sizes) == chunks and sum(sizes) == n and min(sizes) >= 1
        assert abs(bottleneck(cost, sizes) - brute_force(cost, chunks)) < 1e-12


def test_memory_limit_is_honoured():
    cost = [1.0] * 6
    # chunk 0 (like the first 1F1B stage, most micro-batches in flight) holds at most 2 units
    limit = lambda c, i, j: (np.asarray(j) - np.asarray(i)) <= (2 if c == 0 else 6)  # noqa: E731
    sizes = balanced_sizes(cost, 2, limit)
    assert sizes[0] <= 2 and sum(sizes) == 6
    assert bottleneck(cost, sizes) == brute_force(cost, 2, lambda c, i, j: bool(limit(c, i, j)))
    assert balanced_sizes(cost, 2, lambda c, i, j: np.zeros(np.shape(i), bool)) is None


def test_sizes_round_trip_with_the_uniform_partition():
    graph = build_graph(load_model("gpt2-small"))
    for chunks in (1, 2, 4, 7):
        parts = uniform(graph, chunks)
        sizes = sizes_of(graph, parts)
        assert sum(sizes) == len(units(graph))
        assert from_sizes(graph, sizes) == parts
