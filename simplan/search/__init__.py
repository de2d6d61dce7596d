"""The planner: plan space, fast estimate, balanced partitions, simulated ranking, Pareto front."""

from simplan.search.search import SearchResult, search
from simplan.search.space import Constraints

__all__ = ["Constraints", "SearchResult", "search"]
