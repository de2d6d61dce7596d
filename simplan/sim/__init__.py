"""The SimPy simulation of one training step: ``simulate(scenario) -> StepResult``."""

from simplan.sim.result import StepResult


def simulate(scenario, **options) -> StepResult:
    """See :func:`simplan.sim.simulate.simulate`."""
    from simplan.sim.simulate import simulate as _simulate

    return _simulate(scenario, **options)


__all__ = ["StepResult", "simulate"]
