"""Layer-to-stage partitioning: which layers each pipeline chunk runs.

With ``pp`` stages and ``v`` virtual stages there are ``pp * v`` model chunks; chunk
``c`` runs on stage ``c % pp`` (Megatron-LM's interleaved assignment, Narayanan et al.
2021, Section 2.2.2). ``uniform`` splits the transformer layers evenly (the embedding
joins the first chunk, the head the last), as Megatron-LM does.
"""

from __future__ import annotations

from simplan.model.graph import LayerGraph
from simplan.model.layer import Layer

Chunks = tuple[tuple[Layer, ...], ...]


def _blocks(graph: LayerGraph) -> list[list[Layer]]:
    return group_units(graph.order)


def group_units(layers) -> list[list[Layer]]:
    """Group a run of layers into units a pipeline may not cut (and FSDP wraps as one): a
    transformer layer is its attention node and its MLP/MoE node; every other node is a
    unit of its own."""
    units: list[list[Layer]] = []
    for layer in layers:
        if layer.kind in ("mlp", "moe") and units and units[-1][-1].kind == "attention":
            units[-1].append(layer)
        else:
            units.append([layer])
    return units


def uniform(graph: LayerGraph, chunks: int) -> Chunks:
    """Equal numbers of blocks per chunk; the remainder goes to the last chunks (the first
    already carries the embedding). Needs ``chunks <= `` the number of blocks (validation
    checks this: pp * virtual_stages <= layers + 2)."""
    units = _blocks(graph)
    first = units[0] if units[0][0].kind == "embedding" else []
    last = units[-1] if units[-1][0].kind == "head" else []
    body = units[len([first] if first else []): len(units) - (1 if last else 0)]
    if chunks > len(body):
        # fewer blocks than chunks: let embedding and head fill chunks of their own
        body = units
        first, last = [], []
        if chunks > len(body):
            raise ValueError(f"{chunks} chunks for {len(body)} blocks: validate the plan first")
    base, extra = divmod(len(body), chunks)
    sizes = [base + (1 if i >= chunks - extra else 0) for i in range(chunks)]
    out: list[tuple[Layer, ...]] = []
    start = 0
    for i, size in enumerate(sizes):
        layers = [layer for unit in body[start:start + size] for layer in unit]
        start += size
        if i == 0:
            layers = list(first) + layers
        if i == chunks - 1:
            layers = layers + list(last)
        out.append(tuple(layers))
    return tuple(out)


def plan_chunks(graph: LayerGraph, plan) -> Chunks:
    """The chunks a plan runs: its explicit ``partition`` if it has one, else uniform."""
    if plan.partition:
        return from_sizes(graph, plan.partition)
    return uniform(graph, plan.pp * plan.virtual_stages)


def stage_of_chunk(chunk: int, pp: int) -> int:
    return chunk % pp


# --- balanced partitions (the planner's layer-to-stage dynamic program) -------------------------

def units(graph: LayerGraph) -> list[list[Layer]]:
    """The layer order grouped into the units a pipeline cut may fall between."""
    return _blocks(graph)


def sizes_of(graph: LayerGraph, chunks: Chunks) -> tuple[int, ...]:
    """Units per chunk of a partition whose chunks are runs of whole units."""
    starts = {id(u[0]): i for i, u in enumerate(_blocks(graph))}
    firsts = [starts[id(chunk[0])] for chunk in chunks] + [len(starts)]
    return tuple(b - a for a, b in zip(firsts, firsts[1:]))


def from_sizes(graph: LayerGraph, sizes) -> Chunks:
    """The partition with ``sizes[c]`` consecutive units in chunk ``c``."""
    all_units = _blocks(graph)
    if sum(sizes) != len(all_units) or min(sizes, default=0) < 1:
        raise ValueError(f"chunk sizes {tuple(sizes)} do not cover the {len(all_units)} units once")
    out, start = [], 0
    for size in sizes:
        out.append(tuple(layer for unit in all_units[start:start + size] for layer in unit))
        start += size
    return tuple(out)


def balanced_sizes(unit_cost, chunks: int, fits=None) -> tuple[int, ...] | None:
    """Units per chunk minimizing the slowest chunk: the linear-partition dynamic program
    (Skiena, "The Algorithm Design Manual", Section 8.5; as PipeDream's optimizer splits
    layers over stages, Narayanan et al. 2019, Section 3.1):

        best[c][j] = min over i < j of max(best[c-1][i], cost(i, j)),   cost(i, j) = sum unit_cost[i:j]

    where chunk ``c`` may hold units i..j-1 only if ``fits(c, i, j)`` (a vectorized test:
    arrays of starts and ends in, booleans out; e.g. the stage's memory limit). Every
    chunk gets at least one unit. Ties go to the earliest cut, so the result is
    deterministic. None if no partition satisfies ``fits``.
    """
    import numpy as np

    cost = np.asarray(unit_cost, dtype=float)
    n = len(cost)
    if chunks > n:
        return None
    prefix = np.concatenate(([0.0], np.cumsum(cost)))
    i_idx, j_idx = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    segment = prefix[j_idx] - prefix[i_idx]
    valid = i_idx < j_idx
    inf = np.inf
    best = np.where(valid[0] & (fits(0, i_idx[0], j_idx[0]) if fits else True), segment[0], inf)
    choices = []
    for c in range(1, chunks):
        ok = valid if fits is None else valid & fits(c, i_idx, j_idx)
        candidate = np.where(ok, np.maximum(best[:, None], segment), inf)
        arg = candidate.argmin(axis=0)
        best = candidate[arg, np.arange(n + 1)]
        choices.append(arg)
    if not np.isfinite(best[n]):
        return None
    ends = [n]
    for arg in reversed(choices):
        ends.append(int(arg[ends[-1]]))
    ends.append(0)
    ends.reverse()
    return tuple(b - a for a, b in zip(ends, ends[1:]))
