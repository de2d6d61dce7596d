"""Verify: run scenarios on the torch executor and through the simulator, and compare.

Per scenario: step time (the simulator's ``step_time_s`` against the executor's median
step time, slowest rank per step) and activation bytes saved for backward per micro-batch
(``simplan.cost.memory.activation_bytes_per_microbatch`` over each pipeline rank's layers
against the executor's ``saved_tensors_hooks`` count on that rank; the row keeps the rank
with the largest relative error). Over the set: the mean absolute step-time error and
Kendall's tau between predicted and measured step times (the ranking a planner relies on).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from simplan.errors import SimplanError, read_text, require
from simplan.execute.launch import RunOptions, run_plan


def load_for_verify(path: str | Path, hardware: str | None = None):
    """The scenario at ``path``; ``hardware`` (a profile name or file), when given, replaces
    the scenario's profile (``--hardware hardware_profiles/local.yaml`` after calibration)."""
    from simplan.scenario import load_scenario, parse_document

    if hardware is None:
        return load_scenario(path)
    text = read_text(path, str(path), "scenario file")
    data = parse_document(text, str(path), Path(path).suffix.lower() == ".json")
    if not isinstance(data, dict):
        raise SimplanError(f"{path}: expected a mapping with sections model, hardware, cluster, plan")
    data["hardware"] = hardware
    return load_scenario(data, where=str(path))


def predicted_activation_bytes(scenario) -> list[float]:
    """Memory-model bytes per micro-batch for each pipeline rank (its chunks' layers)."""
    from simplan.cost.memory import activation_bytes_per_microbatch
    from simplan.plan.partition import plan_chunks

    plan = scenario.plan
    chunks = plan_chunks(scenario.graph, plan)
    out = []
    for stage in range(plan.pp):
        layers = [layer for c, chunk in enumerate(chunks) if c % plan.pp == stage for layer in chunk]
        out.append(activation_bytes_per_microbatch(layers, plan))
    return out


def _rel(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured


def verify_one(path: str | Path, opts: RunOptions, hardware: str | None = None) -> dict:
    scenario = load_for_verify(path, hardware)
    return compare(path, scenario, run_plan(scenario.model, scenario.plan, opts))


def compare(path: str | Path, scenario, measured: dict) -> dict:
    """The verify row of ``scenario`` against an executor measurement of its model and plan
    (one measurement can be compared under several hardware profiles)."""
    from simplan.sim import simulate

    result = simulate(scenario)
    pred_stage = predicted_activation_bytes(scenario)
    per_rank = []
    for rank, (meas, stage) in enumerate(zip(measured["activation_bytes_per_rank"], measured["pp_rank_of_rank"])):
        per_rank.append({"rank": rank, "predicted": pred_stage[stage], "measured": meas,
                         "error": _rel(pred_stage[stage], meas)})
    worst = max(per_rank, key=lambda r: abs(r["error"]))
    return {
        "scenario": str(path),
        "predicted_step_time_s": result.step_time_s,
        "measured_step_time_s": measured["step_time_s"],
        "step_time_error": _rel(result.step_time_s, measured["step_time_s"]),
        "measured_step_time_iqr_s": measured["step_time_iqr_s"],
        "measured_step_time_per_launch_s": [measured["step_time_s"]],
        "predicted_activation_bytes": worst["predicted"],
        "measured_activation_bytes": worst["measured"],
        "activation_error": worst["error"],
        "activation_per_rank": per_rank,
        "first_step_loss": measured["first_step_loss"],
        "loss_per_step": measured["loss_per_step"],
        "hardware": scenario.hardware.name,
    }


def summarize(rows: list[dict]) -> dict:
    """MAPE of step time and Kendall's tau of the predicted vs measured ranking."""
    errors = [abs(r["step_time_error"]) for r in rows]
    out = {"rows": rows, "mape": sum(errors) / len(errors) if errors else None, "kendall_tau": None,
           "max_abs_step_time_error": max(errors) if errors else None,
           "max_abs_activation_error": max((abs(r["activation_error"]) for r in rows), default=None)}
    if len(rows) >= 2:
        try:
            from scipy.stats import kendalltau
        except ImportError:  # scipy is a dependency of simplan; a bare GPU image may lack it
            return {**out, "kendall_tau": None, "first_step_loss_spread": _spread(rows)}
        tau = kendalltau([r["predicted_step_time_s"] for r in rows], [r["measured_step_time_s"] for r in rows])
        out["kendall_tau"] = None if tau.statistic != tau.statistic else float(tau.statistic)
    out["first_step_loss_spread"] = _spread(rows)
    return out


def _spread(rows: list[dict]) -> float | None:
    losses = [r["first_step_loss"] for r in rows]
    return max(losses) - min(losses) if losses else None


def verify(paths: list[str | Path], opts: RunOptions = RunOptions(), hardware: str | None = None,
           progress=None, rounds: int = 1) -> dict:
    """Run and simulate every scenario; ``progress(row)`` is called after each launch.

    ``rounds`` > 1 launches every scenario that many times, a round through the whole set
    at a time, each round in the order of the one before rotated by one: a host whose
    speed drifts over minutes (a shared machine) then slows every scenario alike instead
    of the ones that happened to run in a slow spell; a scenario's step time is the median
    over its launches."""
    require(rounds >= 1, f"verify: rounds must be at least 1, got {rounds}")
    paths = list(paths)
    per_round = []
    for r in range(rounds):
        shift = r % len(paths) if paths else 0
        rows = []
        for path in paths[shift:] + paths[:shift]:
            rows.append(verify_one(path, opts, hardware))
            if progress is not None:
                progress(rows[-1])
        per_round.append(rows)
    return summarize(combine_rounds(per_round))


def combine_rounds(rounds: list[list[dict]]) -> list[dict]:
    """Verify rows of the same scenarios from several rounds (each simulated under its
    round's profile, the same one or a calibration right before the round) as one row per
    scenario, in the first round's order: the median predicted and the median measured
    step time over the rounds (each launch's own is the median over its steps), the error
    between them, the rest (activation bytes, losses: deterministic) from the first round."""
    by_scenario: dict[str, list[dict]] = {}
    for rows in rounds:
        for row in rows:
            by_scenario.setdefault(row["scenario"], []).append(row)
    out = []
    for scenario, rows in by_scenario.items():
        predicted = statistics.median(r["predicted_step_time_s"] for r in rows)
        measured = statistics.median(r["measured_step_time_s"] for r in rows)
        out.append({**rows[0], "predicted_step_time_s": predicted, "measured_step_time_s": measured,
                    "step_time_error": _rel(predicted, measured),
                    "predicted_step_time_per_round_s": [r["predicted_step_time_s"] for r in rows],
                    "measured_step_time_per_launch_s": [r["measured_step_time_s"] for r in rows]})
    return out


def split_rounds(rows: list[dict]) -> list[list[dict]]:
    """The rounds :func:`combine_rounds` combined, back as one list of rows per round (each
    row with that round's predicted and measured step time), scenarios keyed by file name
    so that rounds run from different checkouts combine again: to pool several suite runs."""
    rounds: list[list[dict]] = []
    for row in rows:
        predicted = row.get("predicted_step_time_per_round_s", [row["predicted_step_time_s"]])
        measured = row.get("measured_step_time_per_launch_s", [row["measured_step_time_s"]])
        for k, (pred, meas) in enumerate(zip(predicted, measured)):
            if k == len(rounds):
                rounds.append([])
            rounds[k].append({**row, "scenario": Path(row["scenario"]).name, "predicted_step_time_s": pred,
                              "measured_step_time_s": meas, "step_time_error": _rel(pred, meas)})
    return rounds


def format_table(summary: dict) -> str:
    lines = [f"{'scenario':<44} {'pred s':>9} {'meas s':>9} {'err':>7} {'pred act':>10} {'meas act':>10} "
             f"{'err':>7} {'loss0':>9}"]
    for r in summary["rows"]:
        lines.append(f"{Path(r['scenario']).stem:<44} {r['predicted_step_time_s']:9.4f} "
                     f"{r['measured_step_time_s']:9.4f} {100 * r['step_time_error']:+6.1f}% "
                     f"{r['predicted_activation_bytes']:10.0f} {r['measured_activation_bytes']:10.0f} "
                     f"{100 * r['activation_error']:+6.1f}% {r['first_step_loss']:9.6f}")
    tau = summary["kendall_tau"]
    lines.append(f"MAPE {100 * summary['mape']:.1f}%  max |err| {100 * summary['max_abs_step_time_error']:.1f}%  "
                 f"Kendall tau {'n/a' if tau is None else f'{tau:.3f}'}  "
                 f"max |activation err| {100 * summary['max_abs_activation_error']:.1f}%  "
                 f"first-step loss spread {summary['first_step_loss_spread']:.2e}")
    return "\n".join(lines)
