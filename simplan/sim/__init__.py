"""The SimPy simulation of one training step: ``simulate(scenario) -> StepResult``."""

from simplan.sim.result import StepResult
from simplan.sim.step import simulate

__all__ = ["StepResult", "simulate"]
