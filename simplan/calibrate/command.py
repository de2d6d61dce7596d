"""``simplan calibrate --from-runs CSV --hardware PROFILE --out NEW_PROFILE``."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

from simplan.calibrate.fit import FREE_PARAMETERS, SINGLE_NODE_PARAMETERS, evaluations, fit_profile, split_rows
from simplan.calibrate.predict import Predictor
from simplan.calibrate.profile import figures, calibrated_profile
from simplan.calibrate.runs import NODE_GPUS, read_runs
from simplan.errors import require
from simplan.hardware.load import dump_hardware, load_hardware

DEFAULT_PARAMETERS = ("matmul_efficiency", "matmul_half_flops", "memory_efficiency", "kernel_overhead_s",
                      "intra_efficiency", "inter_efficiency")
"""With multi-node rows: the compute curve, memory-bound rate, launch gap, and the
bandwidth efficiency of NVLink and NIC collectives (latencies stay at their sources)."""


COARSE_ROUNDS = 2
"""Rounds of fit_profile's coarse grid search before least squares (its default)."""


def default_parameters(runs) -> tuple[str, ...]:
    if any(r.gpus > NODE_GPUS for r in runs):
        return DEFAULT_PARAMETERS
    return SINGLE_NODE_PARAMETERS


LOG_EVERY_S = 30.0
"""Without a terminal, a progress line (done, total, time left) at most this often."""


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


@contextmanager
def fit_progress(terminal: bool, log):
    """A ``progress(phase, done, total)`` callback: on a terminal a rich bar per phase with
    the total, elapsed and remaining time on stderr; otherwise a ``log`` line with the same
    numbers at most every LOG_EVERY_S seconds and when a phase ends."""
    if terminal:
        from simplan.report.table import progress_bar

        with progress_bar(True, eta=True) as update:
            yield update
        return
    started: dict[str, float] = {}
    last_call = last_line = time.monotonic()

    def line(phase: str, done: int, total: int) -> None:
        nonlocal last_call, last_line
        now = time.monotonic()
        t0 = started.setdefault(phase, last_call)  # a phase starts where the one before it ended
        last_call = now
        if done < total and now - last_line < LOG_EVERY_S:
            return
        last_line = now
        left = f", ~{_duration((now - t0) / done * (total - done))} left" if 0 < done < total else ""
        log(f"calibrate: {phase} {done}/{total} simulator passes, {_duration(now - t0)} elapsed{left}")

    yield line


def calibrate_from_runs(csv_paths, hardware: str, out: str | Path, *,
                        parameters: tuple[str, ...] | None = None, processes: int = 2,
                        max_iterations: int = 8, log=None) -> dict:
    """Fit ``hardware``'s free parameters on half the rows of each file in ``csv_paths``
    (the other half held out), write the calibrated profile to ``out`` and return its
    calibration section."""
    if isinstance(csv_paths, (str, Path)):
        csv_paths = [csv_paths]
    paths = [Path(p) for p in csv_paths]
    require(paths, "--from-runs: give at least one measured-runs CSV")
    published = [p for p in paths if p.suffix in (".yaml", ".yml")]
    if published:
        require(len(paths) == 1, "--from-runs: give one published-runs YAML file alone, not with other files")
        from simplan.calibrate.published_fit import calibrate_from_published

        return calibrate_from_published(paths[0], hardware, out, parameters=parameters, processes=processes,
                                        log=log)
    out = Path(out)
    require(out.suffix in (".yaml", ".yml", ".json"), f"--out: a profile file must end in .yaml, .yml or .json, got {out}")
    runs, fitted_rows, held_out, files = [], [], [], {}
    for path in paths:
        file_runs = read_runs(path)
        fit_part, held_part = split_rows(file_runs)
        fitted_rows += [len(runs) + i for i in fit_part]
        held_out += [len(runs) + i for i in held_part]
        files[path.name] = {"rows": len(file_runs), "fitted_rows": len(fit_part), "held_out_rows": len(held_part),
                            "first": len(runs)}
        runs += file_runs
    base = load_hardware(hardware)
    params = tuple(parameters) if parameters else default_parameters(runs)
    unknown = [p for p in params if p not in FREE_PARAMETERS]
    require(not unknown, f"--param: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(FREE_PARAMETERS)}")
    if log is None:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    names = ", ".join(files)
    coarse, most = evaluations(len(params), COARSE_ROUNDS, max_iterations)
    log(f"calibrate: {len(runs)} rows of {names}; fitting {', '.join(params)} on {len(fitted_rows)}, "
        f"holding out {len(held_out)}; {coarse} coarse-search passes, then at most {most} least-squares passes")
    with Predictor(runs, processes=processes) as predictor, fit_progress(sys.stderr.isatty(), log) as progress:
        fit = fit_profile(runs, base, params, fitted_rows=fitted_rows, held_out_rows=held_out,
                          predictor=predictor, max_iterations=max_iterations, coarse_rounds=COARSE_ROUNDS,
                          log=log, progress=progress)
    per_file = {}
    for name, info in files.items():
        lo, hi = info["first"], info["first"] + info["rows"]
        per_file[name] = {
            "rows": info["rows"], "fitted_rows": info["fitted_rows"], "held_out_rows": info["held_out_rows"],
            "fitted_error": figures(runs, fit, [i for i in fit.fitted_rows if lo <= i < hi]),
            "held_out_error": figures(runs, fit, [i for i in fit.held_out_rows if lo <= i < hi]),
        }
    profile = calibrated_profile(
        fit, runs, names, name=out.stem,
        description=f"{base.description}; calibrated on the measured runs of {names}",
        base_name=base.name, extra={"files": per_file})
    dump_hardware(profile, out)
    return profile.calibration
