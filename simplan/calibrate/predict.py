"""Predicted step times of many measured runs under one hardware profile.

The scenarios are read once (in each worker process); each call swaps in a profile and
simulates every row. A fit calls this a few hundred times with different free
parameters, so the rows are spread over a small process pool.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import replace

import numpy as np

from simplan.calibrate.runs import MeasuredRun, run_scenario
from simplan.hardware.cluster import Cluster
from simplan.hardware.profile import HardwareProfile

_SCENARIOS: list = []
"""The scenarios of the current Predictor, in this process (set by ``_init``)."""


def _init(scenario_dicts: list[dict]) -> None:
    from simplan.scenario import load_scenario

    _SCENARIOS.clear()
    _SCENARIOS.extend(load_scenario(d, where=f"run {i}") for i, d in enumerate(scenario_dicts))


def with_profile(scenario, profile: HardwareProfile):
    """``scenario`` on the same cluster shape with another profile's numbers."""
    cluster = Cluster(profile=profile, nodes=scenario.cluster.nodes, gpus_per_node=scenario.cluster.gpus_per_node)
    return replace(scenario, cluster=cluster)


def _step_times(scenarios: list, profile: HardwareProfile) -> list[float]:
    from simplan.sim import simulate

    return [simulate(with_profile(s, profile)).step_time_s for s in scenarios]


def _simulate(args: tuple[HardwareProfile, list[int]]) -> list[float]:
    profile, indices = args
    return _step_times([_SCENARIOS[i] for i in indices], profile)


def _cost(scenario: dict) -> float:
    """Rough simulation cost of a scenario: layers x micro-batches per pipeline."""
    m, p = scenario["model"], scenario["plan"]
    return m.get("layers", 1) * p["global_batch"] / max(1, p.get("dp", 1) * p.get("micro_batch", 1))


class Predictor:
    """``predictor(profile)`` -> predicted step time (s) of every run, in order.

    Use as a context manager (it owns a process pool when ``processes > 1``)."""

    def __init__(self, runs: list[MeasuredRun], processes: int = 1, hardware_ref: str = "a100-sxm-80gb"):
        self.runs = list(runs)
        # a published run carries its own scenario (simplan.calibrate.published); a CSV row is rebuilt
        dicts = [r.scenario if hasattr(r, "scenario") else run_scenario(r, hardware_ref) for r in self.runs]
        self.processes = max(1, min(processes, len(self.runs)))
        self._pool = None
        if self.processes > 1:
            # fork where there is one: no `if __name__ == "__main__"` guard needed in callers
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            ctx = multiprocessing.get_context(method)
            self._pool = ctx.Pool(self.processes, initializer=_init, initargs=(dicts,))
            self._scenarios = []
        else:
            from simplan.scenario import load_scenario

            self._scenarios = [load_scenario(d, where=f"run {i}") for i, d in enumerate(dicts)]
        # long rows first so the pool's last tasks are short (the big multi-node rows
        # take ~100x longer than the small single-node ones)
        cost = [_cost(d) for d in dicts]
        self._order = sorted(range(len(self.runs)), key=lambda i: -cost[i])

    def __call__(self, profile: HardwareProfile, rows: list[int] | None = None) -> np.ndarray:
        """Step times of ``rows`` (default: every run), in the order given."""
        rows = list(range(len(self.runs))) if rows is None else list(rows)
        wanted = set(rows)
        order = [i for i in self._order if i in wanted]
        n_tasks = self.processes * 8 if self._pool else 1
        tasks = [order[k::n_tasks] for k in range(n_tasks) if order[k::n_tasks]]
        if self._pool is None:
            results = [_step_times([self._scenarios[i] for i in t], profile) for t in tasks]
        else:
            results = self._pool.map(_simulate, [(profile, t) for t in tasks])
        times = {}
        for task, values in zip(tasks, results):
            times.update(zip(task, values))
        return np.array([times[i] for i in rows])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
