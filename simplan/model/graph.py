"""LayerGraph: a networkx DiGraph of Layer nodes, plus the order pipelines cut it in."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from simplan.model.layer import Layer
from simplan.model.spec import ModelSpec


@dataclass(frozen=True, eq=False)
class LayerGraph:
    """A model as a DAG of layers. ``order`` is a topological order; pipeline stages
    are contiguous slices of it (every model built here is a chain of blocks, and a
    block with internal branches, such as a residual, is one node)."""

    spec: ModelSpec
    graph: nx.DiGraph

    @classmethod
    def chain(cls, spec: ModelSpec, layers: list[Layer]) -> "LayerGraph":
        g = nx.DiGraph()
        for i, layer in enumerate(layers):
            g.add_node(layer.name, layer=layer, index=i)
            if i:
                g.add_edge(layers[i - 1].name, layer.name, bytes=layers[i - 1].output_bytes)
        return cls(spec, g)

    @cached_property
    def order(self) -> tuple[Layer, ...]:
        names = nx.lexicographical_topological_sort(self.graph, key=lambda n: self.graph.nodes[n]["index"])
        return tuple(self.graph.nodes[n]["layer"] for n in names)

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.order)

    @property
    def fwd_flops_per_sample(self) -> float:
        return sum(layer.fwd_flops for layer in self.order)

    @property
    def bwd_flops_per_sample(self) -> float:
        return sum(layer.bwd_flops for layer in self.order)

    @property
    def recomputable(self) -> tuple[Layer, ...]:
        """Layers that activation recomputation re-runs (the transformer / CNN blocks,
        not embeddings and heads, as in Megatron-LM's checkpointed layers)."""
        return tuple(layer for layer in self.order if layer.kind in RECOMPUTED_KINDS)


RECOMPUTED_KINDS = frozenset({"attention", "mlp", "moe", "conv"})
