"""simplan: plan and simulate distributed training before renting the cluster."""

__version__ = "0.1.0"
