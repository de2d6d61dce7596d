"""Fit a hardware profile's free parameters to measured runs (least squares on log time).

A few physical parameters of the profile, never per-row terms, are moved until the
simulated step times match the measured ones: the residual of a row is
log(predicted) - log(measured), so every row weighs by its relative error whatever its
length (the accuracy targets are relative). ``scipy.optimize.least_squares`` (trust
region reflective, Branch, Coleman and Li 1999) keeps each parameter inside its physical
bounds: efficiencies in (0, 1], latencies and overheads >= 0.

The optimizer works in normalized coordinates u in [0, 1] per parameter (u = (x - lo) /
(hi - lo)), so one finite-difference step (``DIFF_STEP``) means the same relative move
for every parameter; the simulator is piecewise smooth (max of compute and launch time,
of link shares), which a step of 1% of the range steps over.

Rows are split deterministically: sorted by configuration, every other row is fitted
and the rest are held out, so the reported error is on rows the fit never saw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import least_squares

from simplan.calibrate.predict import Predictor
from simplan.calibrate.runs import MeasuredRun
from simplan.errors import SimplanError, require
from simplan.hardware.profile import HardwareProfile


@dataclass(frozen=True, slots=True)
class FreeParameter:
    attr: str
    """HardwareProfile field."""
    source_key: str
    """Its key in a profile file's ``sources``."""
    lower: float
    upper: float
    """Bounds in SI units: physical limits, wide enough not to decide the answer."""
    unit: float = 1.0
    """Scale to the profile file's unit (for messages: 1e-6 shows microseconds)."""
    unit_name: str = ""


FREE_PARAMETERS: dict[str, FreeParameter] = {
    "matmul_efficiency": FreeParameter("matmul_efficiency", "gpu.matmul_efficiency", 0.05, 1.0),
    "matmul_half_flops": FreeParameter("matmul_half_flops", "gpu.matmul_half_gflop", 0.0, 50e9, 1e9, "GFLOP"),
    "memory_efficiency": FreeParameter("memory_efficiency", "gpu.memory_efficiency", 0.05, 1.0),
    "attention_efficiency": FreeParameter("attention_efficiency", "gpu.attention_efficiency", 0.05, 1.0),
    "fp8_matmul_efficiency": FreeParameter("fp8_matmul_efficiency", "gpu.fp8_matmul_efficiency", 0.05, 1.0),
    "kernel_overhead_s": FreeParameter("kernel_overhead_s", "gpu.kernel_overhead_us", 0.0, 500e-6, 1e-6, "us"),
    "intra_efficiency": FreeParameter("intra_efficiency", "node.intra_efficiency", 0.02, 1.0),
    "intra_latency_s": FreeParameter("intra_latency_s", "node.intra_latency_us", 0.0, 200e-6, 1e-6, "us"),
    "inter_efficiency": FreeParameter("inter_efficiency", "network.efficiency", 0.02, 1.0),
    "inter_latency_s": FreeParameter("inter_latency_s", "network.latency_us", 0.0, 500e-6, 1e-6, "us"),
    "step_overhead_s": FreeParameter("step_overhead_s", "software.step_overhead_ms", 0.0, 2.0, 1e-3, "ms"),
}
"""What a fit may move (``simplan.cost.compute`` and ``simplan.cost.collectives`` read them)."""

SINGLE_NODE_PARAMETERS = ("matmul_efficiency", "matmul_half_flops", "memory_efficiency", "kernel_overhead_s",
                          "intra_efficiency", "intra_latency_s")
"""The default fit on one node: compute curve, memory-bound rate, launch gap, NVLink collectives."""
DIFF_STEP = 1e-2
"""Finite-difference step in normalized coordinates (1% of a parameter's range)."""
COARSE_EVERY = 8
"""The coarse search simulates every 8th fitted row (it only has to find the basin)."""
COARSE_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)
"""Normalized values the coarse search tries per parameter."""


def evaluations(n_parameters: int, coarse_rounds: int, max_iterations: int) -> tuple[int, int]:
    """(coarse search, least squares) simulator passes of a fit: exactly 1 + rounds x
    parameters x grid values (the start, then each grid value), then at most ``max_iterations`` x (1 + parameters) (each
    iteration: the point and a forward difference per parameter) plus the final pass
    over every row."""
    coarse = 1 + coarse_rounds * n_parameters * len(COARSE_GRID)
    return coarse, max_iterations * (1 + n_parameters) + 1


def _coarse_start(objective, u0: np.ndarray, rounds: int) -> np.ndarray:
    """Coordinate search over ``COARSE_GRID``: each parameter in turn takes the grid
    value (or keeps its own) with the smallest sum of squared residuals. The simulator
    has flat regions (a launch gap hidden behind longer kernels has no effect at all),
    where a gradient is zero; the grid gets the start out of them."""
    u = u0.copy()
    best = float(np.sum(objective(u) ** 2))
    for _ in range(rounds):
        for k in range(u.size):
            for g in COARSE_GRID:
                v = u.copy()
                v[k] = g
                cost = float(np.sum(objective(v) ** 2))
                if cost < best:
                    best, u = cost, v
    return u


def split_rows(runs: list[MeasuredRun]) -> tuple[list[int], list[int]]:
    """(fitted, held out) row positions: sorted by configuration, even positions are
    fitted and odd ones held out, so both halves cover every model, GPU count and plan."""
    def key(i: int):
        r = runs[i]
        return (r.gpus, r.layers, r.hidden, r.heads, r.seq_len, r.global_batch, r.tp, r.pp, r.dp, r.micro_batch,
                r.index)
    order = sorted(range(len(runs)), key=key)
    return sorted(order[0::2]), sorted(order[1::2])


def set_parameters(profile: HardwareProfile, values: dict[str, float]) -> HardwareProfile:
    """``profile`` with free parameters replaced (checked against their bounds)."""
    changes = {}
    for name, value in values.items():
        require(name in FREE_PARAMETERS, f"calibrate: unknown parameter {name!r}; known: {', '.join(FREE_PARAMETERS)}")
        p = FREE_PARAMETERS[name]
        require(p.lower <= value <= p.upper and (value > 0 or p.lower == 0),
                f"calibrate: {name} = {value:g} is outside its bounds [{p.lower:g}, {p.upper:g}]")
        changes[p.attr] = float(value)
    return replace(profile, **changes)


def log_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.log(predicted) - np.log(measured)


@dataclass
class FitResult:
    profile: HardwareProfile
    """The input profile with the fitted parameters (calibration section not yet written)."""
    parameters: dict[str, float]
    initial: dict[str, float]
    fitted_rows: list[int]
    held_out_rows: list[int]
    predicted_s: np.ndarray
    """Every row under the fitted profile."""
    measured_s: np.ndarray
    evaluations: int
    wall_s: float
    at_bound: list[str] = field(default_factory=list)
    """Parameters that ended on a bound (the data pushes them past what is physical)."""

    def mape(self, rows: list[int]) -> float:
        r = np.asarray(rows, dtype=int)
        return float(np.mean(np.abs(self.predicted_s[r] / self.measured_s[r] - 1))) if len(r) else float("nan")


def fit_profile(runs: list[MeasuredRun], profile: HardwareProfile,
                parameters: tuple[str, ...] = SINGLE_NODE_PARAMETERS, *, fitted_rows: list[int] | None = None,
                held_out_rows: list[int] | None = None, processes: int = 2, max_iterations: int = 12, coarse_rounds: int = 2,
                predictor: Predictor | None = None, log=None,
                bounds: dict[str, tuple[float, float]] | None = None, progress=None) -> FitResult:
    """Fit ``parameters`` of ``profile`` on ``fitted_rows`` of ``runs`` (default: the
    first half of :func:`split_rows`) and predict every row with the result.

    ``coarse_rounds``: rounds of the coarse search before least squares (0: none).
    ``max_iterations``: least-squares iterations (each costs one simulator pass over the
    fitted rows per parameter, plus one).
    ``predictor``: a ready :class:`Predictor` over ``runs`` (saves starting a pool).
    ``log``: a callable taking one progress line (e.g. ``print`` to stderr).
    ``bounds``: narrower (lower, upper) of some parameters than FREE_PARAMETERS' own.
    ``progress``: ``progress(phase, done, total)`` after each simulator pass; phases
    "coarse search" (exact total) and "least squares" (an upper bound, completed at the end).
    """
    require(len(parameters) > 0, "calibrate: no parameters to fit")
    unknown = [p for p in parameters if p not in FREE_PARAMETERS]
    require(not unknown, f"calibrate: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(FREE_PARAMETERS)}")
    require(len(set(parameters)) == len(parameters), f"calibrate: a parameter is named twice in {parameters}")
    if fitted_rows is None:
        fitted_rows, default_held = split_rows(runs)
        held_out_rows = default_held if held_out_rows is None else held_out_rows
    held_out_rows = list(held_out_rows or [])
    require(len(fitted_rows) >= len(parameters),
            f"calibrate: {len(fitted_rows)} fitted rows for {len(parameters)} parameters; need at least as many rows")
    overlap = set(fitted_rows) & set(held_out_rows)
    require(not overlap, f"calibrate: {len(overlap)} row(s) are both fitted and held out")
    wall0 = time.perf_counter()
    specs = [FREE_PARAMETERS[p] for p in parameters]
    bounds = bounds or {}
    lo = np.array([bounds.get(p, (s.lower, s.upper))[0] for p, s in zip(parameters, specs)])
    hi = np.array([bounds.get(p, (s.lower, s.upper))[1] for p, s in zip(parameters, specs)])
    initial = {p: float(getattr(profile, s.attr)) for p, s in zip(parameters, specs)}
    x0 = np.array([initial[p] for p in parameters])
    outside = [f"{p}={initial[p]:g}" for p, a, b in zip(parameters, lo, hi) if not a <= initial[p] <= b]
    require(not outside, f"calibrate: starting value(s) outside the bounds: {', '.join(outside)}")
    u0 = (x0 - lo) / (hi - lo)

    measured = np.array([r.measured_s for r in runs])
    own = predictor is None
    if own:
        predictor = Predictor(runs, processes=processes)
    calls = [0]
    totals = dict(zip(("coarse search", "least squares"), evaluations(len(parameters), coarse_rounds, max_iterations)))
    phase = ["coarse search", 0]

    def tick() -> None:
        phase[1] += 1
        if progress is not None:
            name = phase[0]
            progress(name, min(phase[1], totals[name]), totals[name])

    def to_values(u: np.ndarray) -> dict[str, float]:
        x = lo + np.clip(u, 0.0, 1.0) * (hi - lo)
        # an efficiency of exactly its lower bound is still > 0 (lower bounds are > 0)
        return dict(zip(parameters, (float(v) for v in x)))

    def residuals(u: np.ndarray, rows: list[int]) -> np.ndarray:
        calls[0] += 1
        values = to_values(u)
        res = log_errors(predictor(set_parameters(profile, values), rows), measured[rows])
        if log is not None:
            shown = ", ".join(f"{p}={v / FREE_PARAMETERS[p].unit:.4g}{FREE_PARAMETERS[p].unit_name}"
                              for p, v in values.items())
            log(f"  eval {calls[0]} ({len(rows)} rows): MAPE {np.mean(np.abs(np.expm1(res))):.4f}  {shown}")
        tick()
        return res

    cache: dict[bytes, np.ndarray] = {}

    def cached(u: np.ndarray) -> np.ndarray:
        key = np.asarray(u, dtype=float).tobytes()
        if key not in cache:
            cache[key] = residuals(u, fitted_rows)
        return cache[key]

    coarse_rows = fitted_rows[::COARSE_EVERY]

    def jacobian(u: np.ndarray) -> np.ndarray:
        # forward differences of DIFF_STEP in normalized coordinates (backward at the upper
        # bound): the same relative move for every parameter, also next to a bound
        f0 = cached(u)
        jac = np.empty((f0.size, u.size))
        for k in range(u.size):
            step = DIFF_STEP if u[k] + DIFF_STEP <= 1.0 else -DIFF_STEP
            v = u.copy()
            v[k] += step
            jac[:, k] = (cached(v) - f0) / step
        return jac

    try:
        u = _coarse_start(lambda v: residuals(v, coarse_rows), u0, coarse_rounds)
        phase[:] = ["least squares", 0]
        sol = least_squares(cached, u, jac=jacobian, bounds=(np.zeros_like(u0), np.ones_like(u0)), method="trf",
                            x_scale=1.0, max_nfev=max_iterations, xtol=1e-4, ftol=1e-5)
        values = to_values(sol.x)
        fitted = set_parameters(profile, values)
        predicted = predictor(fitted)
        if progress is not None:  # least squares may converge before its bound
            progress("least squares", totals["least squares"], totals["least squares"])
    finally:
        if own:
            predictor.close()
    at_bound = [p for p, u in zip(parameters, sol.x) if u <= 1e-6 or u >= 1 - 1e-6]
    if not np.all(np.isfinite(predicted)):
        raise SimplanError("calibrate: the fitted profile gives non-finite step times")
    return FitResult(profile=fitted, parameters=values, initial=initial, fitted_rows=list(fitted_rows),
                     held_out_rows=held_out_rows, predicted_s=predicted,
                     measured_s=measured, evaluations=calls[0],
                     wall_s=time.perf_counter() - wall0, at_bound=at_bound)
