"""Write a fitted profile: new numbers, their sources, and what they were fitted on."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from simplan.calibrate.fit import FREE_PARAMETERS, FitResult
from simplan.calibrate.runs import MeasuredRun
from simplan.report.accuracy import summarize

SPLIT_RULE = ("rows sorted by (gpus, layers, hidden, heads, seq_len, global_batch, tp, pp, dp, micro_batch, row); "
              "even positions fitted, odd positions held out (simplan.calibrate.fit.split_rows)")


def _number(x: float, digits: int) -> float | None:
    """Rounded, or None where a figure is undefined (Spearman of a group under 3 rows)."""
    return None if math.isnan(x) else round(float(x), digits)


def figures(runs: list[MeasuredRun], fit: FitResult, rows: list[int]) -> dict:
    """Error figures of ``rows`` under the fitted profile (``simplan.report.accuracy``)."""
    if not rows:
        return {"rows": 0}
    s = summarize(runs, fit.predicted_s, rows)
    return {"rows": s.rows, "mape": _number(s.mape, 5), "median_error": _number(s.median_error, 5),
            "max_error": _number(s.max_error, 5), "max_error_row": s.max_row,
            "spearman_median": _number(s.spearman_median, 4), "regret_median": _number(s.regret_median, 5)}


def calibrated_profile(fit: FitResult, runs: list[MeasuredRun], data_name: str, name: str,
                       description: str, base_name: str, extra: dict | None = None):
    """``fit.profile`` renamed, with each fitted number's source and a ``calibration``
    section: the data, the fitted and held-out rows, and the error on each."""
    sources = dict(fit.profile.sources)
    held = figures(runs, fit, fit.held_out_rows) if fit.held_out_rows else None
    for p in fit.parameters:
        key = FREE_PARAMETERS[p].source_key
        sources[key] = (f"fitted by simplan calibrate --from-runs on {len(fit.fitted_rows)} rows of {data_name} "
                        f"(least squares on log step time); held-out MAPE "
                        f"{100 * held['mape']:.2f}% on {held['rows']} rows" if held else
                        f"fitted by simplan calibrate --from-runs on {len(fit.fitted_rows)} rows of {data_name}")
    calibration = {
        "method": "scipy.optimize.least_squares (trf) on log(predicted) - log(measured), "
                  "after a coarse coordinate search; parameters bounded to physical ranges",
        "base_profile": base_name,
        "data": data_name,
        "rows": len(runs),
        "split": SPLIT_RULE,
        "fitted_rows": len(fit.fitted_rows),
        "held_out_rows": len(fit.held_out_rows),
        "parameters": {p: {"initial": float(f"{fit.initial[p]:.6g}"), "fitted": float(f"{v:.6g}")}
                       for p, v in fit.parameters.items()},
        "parameters_at_bound": list(fit.at_bound),
        "fitted_error": figures(runs, fit, fit.fitted_rows),
        "held_out_error": held,
        "simulator_evaluations": fit.evaluations,
    }
    if extra:
        calibration.update(extra)
    return replace(fit.profile, name=name, description=description, sources=sources, calibration=calibration)


def default_name(out: Path) -> str:
    return Path(out).stem
