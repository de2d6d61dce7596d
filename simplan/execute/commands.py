"""Command logic of ``simplan run``, ``simplan verify`` and ``simplan calibrate --local``
(``simplan/cli.py`` registers them: parse there, work here, print there)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from simplan.errors import SimplanError
from simplan.execute.support import require_torch


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _options(steps: int, warmup: int, device: str, timeout_s: float, max_ranks: int | None, threads: int = 1,
             nnodes: int = 1, node_rank: int = 0, rdzv_endpoint: str | None = None):
    from simplan.execute.launch import RunOptions

    opts = RunOptions(steps=steps, warmup=warmup, device=device, timeout_s=timeout_s, max_ranks=max_ranks,
                      threads=threads, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    opts.check()
    return opts


def run_command(scenario: Path, out: Path | None, steps: int, warmup: int, device: str, timeout_s: float,
                max_ranks: int | None, threads: int = 1, nnodes: int = 1, node_rank: int = 0,
                rdzv_endpoint: str | None = None) -> dict:
    """``simplan run SCENARIO``: execute the scenario's plan; the measurement as a dict,
    also written to ``out`` when given."""
    require_torch()
    from simplan.execute.launch import run_plan
    from simplan.scenario import load_scenario, scenario_to_dict

    s = load_scenario(scenario)
    opts = _options(steps, warmup, device, timeout_s, max_ranks, threads, nnodes, node_rank, rdzv_endpoint)
    _log(f"running {scenario}: {s.plan.gpus} rank(s), {opts.device}, {warmup} warm-up + {steps} steps")
    result = _guard(lambda: run_plan(s.model, s.plan, opts))
    result = {"scenario": scenario_to_dict(s), **result}
    if out is not None:
        _write(out, result)
    return result


def verify_command(scenarios: list[Path], hardware: str | None, steps: int, warmup: int, device: str,
                   timeout_s: float, max_ranks: int | None, out: Path | None, rounds: int = 1) -> dict:
    """``simplan verify SCENARIO...``: predicted vs measured per scenario, MAPE, Kendall tau."""
    require_torch()
    from simplan.execute.verify import verify

    if not scenarios:
        raise SimplanError("verify: give at least one scenario file")
    opts = _options(steps, warmup, device, timeout_s, max_ranks)
    if rounds < 1:
        raise SimplanError(f"--rounds: must be at least 1, got {rounds}")

    from simplan.report.table import progress_bar

    launches = len(scenarios) * rounds
    done = 0
    with progress_bar(sys.stderr.isatty(), eta=True) as bar:
        def progress(row: dict) -> None:
            nonlocal done
            done += 1
            _log(f"[{done}/{launches}] {row['scenario']}: predicted {row['predicted_step_time_s']:.4g} s, measured "
                 f"{row['measured_step_time_s']:.4g} s ({100 * row['step_time_error']:+.1f}%), activations "
                 f"{100 * row['activation_error']:+.1f}%")
            if bar:
                bar("verify (launches)", done, launches)

        summary = _guard(lambda: verify([str(p) for p in scenarios], opts, hardware, progress, rounds))
    if out is not None:
        _write(out, summary)
    return summary


def calibrate_local_command(out: Path, model: str | None = None, base: str | None = None,
                            device: str = "cpu", allow_noisy: bool = False) -> dict:
    """``simplan calibrate --local --out FILE [--device cpu|cuda] [--base PROFILE]``;
    ``allow_noisy`` writes the profile even when repeated measurements scatter (--allow-noisy)."""
    require_torch()
    from simplan.execute.calibrate_local import calibrate_local

    if out.suffix not in (".yaml", ".yml", ".json"):
        raise SimplanError(f"--out: a profile file must end in .yaml, .yml or .json, got {out}")
    return calibrate_local(out, model_name=model, base=base, device=device, log=_log, allow_noisy=allow_noisy)


def _guard(fn):
    from simplan.execute.launch import RankFailure

    try:
        return fn()
    except RankFailure as e:
        _log(f"error: {e}")
        raise SystemExit(1) from None


def _write(path: Path, obj: dict) -> None:
    try:
        Path(path).write_text(json.dumps(obj, indent=2) + "\n")
    except OSError as e:
        raise SimplanError(f"--out: cannot write {path} ({e.strerror})") from None
