"""Plan side: how a model is split across the cluster."""

from simplan.plan.plan import Plan, load_plan

__all__ = ["Plan", "load_plan"]
