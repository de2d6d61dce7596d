"""Calibrate a GPU profile on published runs, and judge it leave-one-source-out.

The published runs (``simplan.calibrate.published``) come from a handful of sources, each
with its own framework, cluster and way of measuring. A fit scored on its own rows says
little about a run from a source it never saw, so the accuracy that counts is
leave-one-source-out (LOSO): for each source, fit the profile's few physical parameters on
every other source's runs of the same GPU, then predict that source's runs. The fit on all
sources is the profile shipped; its LOSO residuals are the error band a prediction carries
(``step_time_band``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from simplan.calibrate.fit import FREE_PARAMETERS, FitResult, fit_profile
from simplan.calibrate.predict import Predictor
from simplan.calibrate.published import PublishedRun, read_published
from simplan.errors import require
from simplan.hardware.load import dump_hardware, load_hardware
from simplan.hardware.profile import HardwareProfile

PUBLISHED_PARAMETERS = ("matmul_efficiency", "fp8_matmul_efficiency")
"""What a fit on published runs moves: the sustained rates of dense matmuls, 16-bit and fp8,
in real training (clocks under a full node's power, real shapes, the SMs that overlapped
communication kernels take). One number each per GPU system, never a per-source or per-run
term. Left out on purpose: the network's efficiency (its nccl-tests source; left free, a fit
drives it to 10% to absorb compute the model misses) and the fused-attention rate (measured
on the GPU; the runs barely constrain it: left free, it went to 0.85 or 0.37 depending on
which source was held out)."""
PUBLISHED_BOUNDS = {
    "matmul_efficiency": (0.4, 0.9),
    "attention_efficiency": (0.2, 0.9),
    "fp8_matmul_efficiency": (0.3, 0.9),
}
"""Physical ranges of the fitted rates: from below the slowest kernels measured (FlashAttention-2
on an H200, 0.22 of peak; small GEMMs) to above the best (MAMF: 0.80-0.86 of peak)."""
MIN_RUNS = 5
"""A parameter is fitted only when at least this many fitted runs exercise it."""
BAND_QUANTILES = (0.1, 0.9)
"""The error band of a prediction: the 10th and 90th percentiles of the LOSO errors."""


def gpu_of(profile: HardwareProfile) -> str:
    """The GPU a profile is for, as the published records name it (``h100-sxm-80gb`` -> H100)."""
    return profile.name.split("-")[0].upper()


def timed(runs: list[PublishedRun]) -> list[PublishedRun]:
    """The runs with a measured step time (out-of-memory records have none)."""
    return [r for r in runs if not r.oom and np.isfinite(r.measured_step_s)]


def usable_parameters(runs: list[PublishedRun], rows: list[int], parameters: tuple[str, ...]) -> tuple[str, ...]:
    """``parameters`` less those the fitted rows cannot inform: fp8 matmuls without an fp8
    run, fused attention without a FlashAttention run, the NIC without a multi-node run."""
    def any_row(test) -> bool:
        return sum(1 for i in rows if test(runs[i].scenario)) >= MIN_RUNS
    keep = []
    for p in parameters:
        if p == "fp8_matmul_efficiency" and not any_row(lambda s: s["plan"]["precision"] == "fp8"):
            continue
        if p == "attention_efficiency" and not any_row(lambda s: s["model"].get("flash_attention")):
            continue
        if p == "inter_efficiency" and not any_row(lambda s: s["cluster"]["nodes"] > 1):
            continue
        keep.append(p)
    return tuple(keep)


def fit_rows(runs: list[PublishedRun], profile: HardwareProfile, rows: list[int], parameters: tuple[str, ...],
             predictor: Predictor, max_iterations: int = 6, log=None) -> FitResult:
    rows = [i for i in rows if not runs[i].not_fitted]
    params = usable_parameters(runs, rows, parameters)
    require(params, "calibrate: none of the parameters can be fitted on these runs")
    return fit_profile(runs, profile, params, fitted_rows=rows, held_out_rows=[], predictor=predictor,
                       max_iterations=max_iterations, coarse_rounds=0, log=log, bounds=PUBLISHED_BOUNDS)


@dataclass
class LosoResult:
    sources: list[str]
    predicted_s: np.ndarray
    """Each run predicted by the profile fitted without its source."""
    measured_s: np.ndarray
    parameters: dict[str, dict[str, float]]
    """Per held-out source, the parameters fitted on the others."""

    def errors(self) -> np.ndarray:
        return self.predicted_s / self.measured_s - 1.0

    def per_source(self, runs: list[PublishedRun]) -> dict[str, dict]:
        err = self.errors()
        out = {}
        for src in self.sources:
            e = np.array([err[i] for i, r in enumerate(runs) if r.source == src])
            out[src] = error_figures(e)
        return out


def error_figures(e: np.ndarray) -> dict:
    """MAPE, mean signed error and the worst error of relative errors ``e`` (pred/meas - 1)."""
    if len(e) == 0:
        return {"runs": 0}
    worst = int(np.argmax(np.abs(e)))
    return {"runs": int(len(e)), "mape": float(np.mean(np.abs(e))), "mean_signed": float(np.mean(e)),
            "max_abs": float(abs(e[worst]))}


def leave_one_source_out(runs: list[PublishedRun], profile: HardwareProfile,
                         parameters: tuple[str, ...] = PUBLISHED_PARAMETERS, *, processes: int = 2,
                         max_iterations: int = 6, log=None) -> LosoResult:
    """Fit on every source but one, predict that one; for each source of ``runs`` (all of one GPU)."""
    sources = sorted({r.source for r in runs})
    require(len(sources) >= 2, f"calibrate: leave-one-source-out needs runs from 2 sources, got {sources}")
    predicted = np.full(len(runs), np.nan)
    fitted: dict[str, dict[str, float]] = {}
    with Predictor(runs, processes=processes) as predictor:
        for src in sources:
            train = [i for i, r in enumerate(runs) if r.source != src]
            test = [i for i, r in enumerate(runs) if r.source == src]
            if log:
                log(f"LOSO: fitting without {src} on {len(train)} runs")
            fit = fit_rows(runs, profile, train, parameters, predictor, max_iterations=max_iterations)
            predicted[test] = fit.predicted_s[test]
            fitted[src] = fit.parameters
    measured = np.array([r.measured_step_s for r in runs])
    return LosoResult(sources=sources, predicted_s=predicted, measured_s=measured, parameters=fitted)


def band_quantiles(errors: np.ndarray) -> dict[str, float]:
    """The LOSO error quantiles a profile stores for the band (``calibration.step_time_error``)."""
    lo, hi = np.quantile(errors, BAND_QUANTILES)
    return {"p10": round(float(lo), 4), "p50": round(float(np.median(errors)), 4), "p90": round(float(hi), 4),
            "runs": int(len(errors))}


def calibrate_from_published(path, hardware: str, out, *, parameters: tuple[str, ...] | None = None,
                             processes: int = 2, max_iterations: int = 6, log=None) -> dict:
    """``simplan calibrate --from-runs published_runs.yaml --hardware PROFILE --out FILE``:
    fit ``hardware``'s few physical parameters on every published run of its GPU, judge
    them leave-one-source-out, and write the profile with both (its ``calibration`` section
    carries the LOSO error quantiles that the predictions' band uses)."""
    out = Path(out)
    require(out.suffix in (".yaml", ".yml", ".json"), f"--out: a profile file must end in .yaml, .yml or .json, got {out}")
    params = tuple(parameters) if parameters else PUBLISHED_PARAMETERS
    unknown = [p for p in params if p not in FREE_PARAMETERS]
    require(not unknown, f"--param: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(FREE_PARAMETERS)}")
    if log is None:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    base = load_hardware(hardware)
    gpu = gpu_of(base)
    runs, skipped = read_published(path)
    for s in skipped:
        log(f"skipped {s.id}: {s.reason}")
    mine = timed([r for r in runs if r.gpu == gpu])
    require(mine, f"--from-runs: {Path(path).name} has no timed run on {gpu} (the GPU of {base.name})")
    for r in mine:
        for a in r.assumptions:
            log(f"assumed for {r.id}: {a}")
    sources = sorted({r.source for r in mine})
    log(f"calibrate: {len(mine)} runs on {gpu} from {len(sources)} sources ({', '.join(sources)}); "
        f"fitting {', '.join(params)}")
    loso = leave_one_source_out(mine, base, params, processes=processes, max_iterations=max_iterations, log=log) \
        if len(sources) >= 2 else None
    with Predictor(mine, processes=processes) as predictor:
        fit = fit_rows(mine, base, list(range(len(mine))), params, predictor, max_iterations=max_iterations)
    errors = fit.predicted_s / fit.measured_s - 1.0
    note = (f"fitted by simplan calibrate --from-runs on {len(fit.fitted_rows)} published {gpu} runs of "
            f"{len(sources)} sources ({Path(path).name}; least squares on log step time)")
    if loso is not None:
        note += f"; leave-one-source-out MAPE {100 * error_figures(loso.errors())['mape']:.1f}%"
    sources_text = dict(fit.profile.sources)
    for p in fit.parameters:
        sources_text[FREE_PARAMETERS[p].source_key] = note
    calibration = {
        "method": "scipy.optimize.least_squares (trf) on log(predicted) - log(measured) over published runs; "
                  "judged leave-one-source-out (fit on every other source, predict the held-out one)",
        "base_profile": base.name,
        "data": Path(path).name,
        "runs": len(mine),
        "fitted_runs": len(fit.fitted_rows),
        "not_fitted": {r.id: r.not_fitted for r in mine if r.not_fitted},
        "skipped_records": len(skipped),
        "sources": sources,
        "parameters": {p: {"initial": float(f"{fit.initial[p]:.6g}"), "fitted": float(f"{v:.6g}")}
                       for p, v in fit.parameters.items()},
        "parameters_at_bound": list(fit.at_bound),
        "fitted_error": error_figures(errors),
    }
    if loso is not None:
        calibration["leave_one_source_out"] = {"all": error_figures(loso.errors()), **loso.per_source(mine)}
        calibration["step_time_error"] = band_quantiles(loso.errors())
    profile = replace(fit.profile, name=out.stem, sources=sources_text, calibration=calibration,
                      description=f"{base.description}; calibrated on published {gpu} training runs")
    dump_hardware(profile, out)
    return calibration
