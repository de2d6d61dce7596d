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
    """Group the layer order into units a pipeline may not cut: a transformer layer is its
    attention node and its MLP/MoE node; every other node is a unit of its own."""
    units: list[list[Layer]] = []
    for layer in graph.order:
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


def stage_of_chunk(chunk: int, pp: int) -> int:
    return chunk % pp
