"""Accuracy of predicted step times against measured runs: the figures a planner needs.

Per set of rows: mean absolute percentage error (MAPE), median and maximum absolute
error; within each *group* (rows that share model, GPU count and global batch, the
configurations a planner chooses between) the Spearman rank correlation of predicted vs
measured time and the *regret*: how much slower the measured time of the row the
prediction ranks fastest is than the measured fastest row of the group.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from simplan.calibrate.runs import MeasuredRun


@dataclass(frozen=True, slots=True)
class Summary:
    rows: int
    mape: float
    median_error: float
    """Median absolute relative error."""
    max_error: float
    max_row: int
    """Row index (in the file) of the largest error."""
    groups: int
    """Groups with at least 3 rows (Spearman needs them)."""
    spearman_median: float
    spearman_min: float
    regret_median: float
    regret_max: float

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def relative_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(predicted - measured) / measured, signed."""
    return np.asarray(predicted) / np.asarray(measured) - 1.0


def groups_of(runs: list[MeasuredRun], rows: list[int]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = defaultdict(list)
    for i in rows:
        out[runs[i].group].append(i)
    return dict(out)


def group_spearman(predicted: np.ndarray, measured: np.ndarray, rows: list[int]) -> float:
    """Spearman's rho of predicted vs measured over ``rows`` (nan for fewer than 3 rows or ties only)."""
    if len(rows) < 3:
        return float("nan")
    p, m = predicted[rows], measured[rows]
    if np.ptp(p) == 0 or np.ptp(m) == 0:
        return float("nan")
    return float(spearmanr(p, m).statistic)


def group_regret(predicted: np.ndarray, measured: np.ndarray, rows: list[int]) -> float:
    """measured time of the predicted-fastest row / measured fastest - 1 (ties in the
    prediction: the first row in file order)."""
    r = sorted(rows)
    chosen = r[int(np.argmin(predicted[r]))]
    return float(measured[chosen] / np.min(measured[r]) - 1.0)


def summarize(runs: list[MeasuredRun], predicted: np.ndarray, rows: list[int] | None = None) -> Summary:
    """The figures over ``rows`` (default: all). Groups are formed inside ``rows``."""
    predicted = np.asarray(predicted, dtype=float)
    measured = np.array([r.measured_s for r in runs])
    rows = list(range(len(runs))) if rows is None else list(rows)
    err = np.abs(relative_errors(predicted[rows], measured[rows]))
    worst = int(np.argmax(err))
    rhos, regrets = [], []
    for members in groups_of(runs, rows).values():
        if len(members) >= 2:
            regrets.append(group_regret(predicted, measured, members))
        rho = group_spearman(predicted, measured, members)
        if not np.isnan(rho):
            rhos.append(rho)
    nan = float("nan")
    return Summary(
        rows=len(rows), mape=float(np.mean(err)), median_error=float(np.median(err)), max_error=float(err[worst]),
        max_row=runs[rows[worst]].index, groups=len(rhos),
        spearman_median=float(np.median(rhos)) if rhos else nan, spearman_min=float(np.min(rhos)) if rhos else nan,
        regret_median=float(np.median(regrets)) if regrets else nan,
        regret_max=float(np.max(regrets)) if regrets else nan,
    )


def worst_rows(runs: list[MeasuredRun], predicted: np.ndarray, rows: list[int] | None = None,
               n: int = 10) -> list[dict]:
    """The ``n`` rows with the largest absolute error, each with its configuration."""
    measured = np.array([r.measured_s for r in runs])
    rows = list(range(len(runs))) if rows is None else list(rows)
    err = relative_errors(np.asarray(predicted)[rows], measured[rows])
    order = np.argsort(-np.abs(err))[:n]
    out = []
    for k in order:
        r = runs[rows[k]]
        out.append({"row": r.index, "gpus": r.gpus, "model": r.model_label, "global_batch": r.global_batch,
                    "micro_batch": r.micro_batch, "tp": r.tp, "dp": r.dp, "pp": r.pp,
                    "measured_ms": r.measured_s * 1e3, "predicted_ms": float(predicted[rows[k]]) * 1e3,
                    "error": float(err[k])})
    return out


def error_by(runs: list[MeasuredRun], predicted: np.ndarray, rows: list[int], attr: str) -> dict:
    """MAPE and mean signed error of ``rows`` per value of a run attribute (tp, pp, micro_batch...):
    which part of the plan space the error comes from."""
    measured = np.array([r.measured_s for r in runs])
    buckets: dict = defaultdict(list)
    for i in rows:
        buckets[getattr(runs[i], attr)].append(i)
    out = {}
    for value in sorted(buckets):
        idx = buckets[value]
        e = relative_errors(np.asarray(predicted)[idx], measured[idx])
        out[value] = {"rows": len(idx), "mape": float(np.mean(np.abs(e))), "bias": float(np.mean(e))}
    return out


def file_report(runs: list[MeasuredRun], predicted: np.ndarray, held_out: list[int] | None = None) -> dict:
    """The figures of one file: all rows, the held-out rows (if a fit used part of the
    file) and each GPU count, plus the largest errors and the error by plan axis."""
    rows = list(range(len(runs)))
    sets = {"all rows": rows}
    if held_out is not None:
        sets["held-out rows"] = list(held_out)
    per_gpus: dict[int, list[int]] = defaultdict(list)
    target = list(held_out) if held_out is not None else rows
    for i in target:
        per_gpus[runs[i].gpus].append(i)
    label = "held-out" if held_out is not None else "all"
    for g in sorted(per_gpus):
        sets[f"{g} GPUs ({label})"] = per_gpus[g]
    return {
        "summaries": {name: summarize(runs, predicted, idx).to_json() for name, idx in sets.items()},
        "worst_rows": worst_rows(runs, predicted, target),
        "by": {attr: error_by(runs, predicted, target, attr) for attr in ("tp", "pp", "dp", "micro_batch", "hidden")},
    }


def format_report(title: str, report: dict) -> str:
    """Plain-text tables of :func:`file_report`."""
    lines = [title, ""]
    head = (f"  {'rows':<22}{'n':>5}{'MAPE':>8}{'median':>8}{'max':>8}{'(row)':>7}"
            f"{'groups':>8}{'rho med':>9}{'rho min':>9}{'regret med':>12}{'regret max':>12}")
    lines.append(head)
    for name, s in report["summaries"].items():
        lines.append(f"  {name:<22}{s['rows']:>5}{100 * s['mape']:>7.2f}%{100 * s['median_error']:>7.2f}%"
                     f"{100 * s['max_error']:>7.1f}%{s['max_row']:>7}{s['groups']:>8}{s['spearman_median']:>9.3f}"
                     f"{s['spearman_min']:>9.3f}{100 * s['regret_median']:>11.2f}%{100 * s['regret_max']:>11.2f}%")
    lines += ["", "  error by plan axis (MAPE / mean signed error):"]
    for attr, values in report["by"].items():
        cells = "  ".join(f"{v}: {100 * x['mape']:.1f}%/{100 * x['bias']:+.1f}% ({x['rows']})" for v, x in values.items())
        lines.append(f"    {attr:<12}{cells}")
    lines += ["", "  largest errors:"]
    for w in report["worst_rows"]:
        lines.append(f"    row {w['row']:>4}: {w['gpus']:>3} GPUs {w['model']:<16} gb {w['global_batch']:>4} "
                     f"mb {w['micro_batch']:>2} tp {w['tp']} dp {w['dp']:>2} pp {w['pp']:>2}: "
                     f"measured {w['measured_ms']:9.1f} ms, predicted {w['predicted_ms']:9.1f} ms ({100 * w['error']:+.1f}%)")
    return "\n".join(lines)
