"""Model side of the data flow: a spec (sizes) becomes a LayerGraph (costs per layer)."""

from simplan.model.graph import LayerGraph
from simplan.model.layer import Layer, Op
from simplan.model.spec import ModelSpec
from simplan.model.load import build_graph, load_model, model_names

__all__ = ["Layer", "LayerGraph", "ModelSpec", "Op", "build_graph", "load_model", "model_names"]
