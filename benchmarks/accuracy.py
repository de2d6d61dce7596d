"""Accuracy of simplan's step-time predictions on real measured runs (``make accuracy``).

Simulates every row of the measured-runs CSVs in ``../shared/data/`` (beside the
repository; the vTrain A100 ground truth, see its README) with a hardware profile and
prints, per file and per GPU count: MAPE, median and maximum error, the Spearman rank
correlation within each group of rows sharing model, GPU count and global batch, the
regret of picking the predicted-fastest row of a group, and the rows with the largest
errors. With a calibrated profile, the figures that count are those on the held-out rows
(the rows its ``calibration`` section says were not fitted).

    python benchmarks/accuracy.py [--hardware a100-sxm-vtrain-calibrated] [--rows N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simplan.calibrate.fit import split_rows  # noqa: E402
from simplan.calibrate.predict import Predictor  # noqa: E402
from simplan.calibrate.runs import read_runs, shared_data_dir  # noqa: E402
from simplan.hardware.load import load_hardware  # noqa: E402
from simplan.report.accuracy import file_report, format_report  # noqa: E402

FILES = ("vtrain_a100_single_node.csv", "vtrain_a100_multi_node.csv")
DEFAULT_PROFILE = "a100-sxm-vtrain-calibrated"


def held_out_rows(profile, file_name: str, runs) -> list[int] | None:
    """The rows of ``file_name`` a calibrated profile did not fit (None: not fitted on it)."""
    files = profile.calibration.get("files", {})
    if file_name not in files:
        return None
    return split_rows(runs)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hardware", default=DEFAULT_PROFILE, help=f"profile name or file (default {DEFAULT_PROFILE})")
    ap.add_argument("--data", type=Path, default=None, help="folder of the CSVs (default ../shared/data)")
    ap.add_argument("--rows", type=int, default=None, help="only the first N rows of each file (a quick look)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    args = ap.parse_args(argv)
    data = args.data or shared_data_dir()
    if not data.is_dir() or not any((data / f).exists() for f in FILES):
        print(f"accuracy: no measured runs at {data} (expected {', '.join(FILES)} in shared/data beside the "
              f"repository); nothing to report")
        return 0
    profile = load_hardware(args.hardware)
    out = {"hardware": profile.name, "files": {}}
    for name in FILES:
        path = data / name
        if not path.exists():
            print(f"accuracy: {path} is missing; skipped", file=sys.stderr)
            continue
        runs = read_runs(path)
        held = held_out_rows(profile, name, runs)
        if args.rows is not None:
            runs = runs[:args.rows]
            held = None if held is None else [i for i in held if i < len(runs)]
        t0 = time.perf_counter()
        with Predictor(runs, processes=args.processes) as predict:
            predicted = predict(profile)
        report = file_report(runs, predicted, held)
        report["sim_wall_s"] = time.perf_counter() - t0
        out["files"][name] = report
        if not args.json:
            fitted = "" if held is None else f"; {len(runs) - len(held)} rows were fitted, figures below are held-out"
            print(format_report(f"{name}: {len(runs)} rows, profile {profile.name}{fitted} "
                                f"(simulated in {report['sim_wall_s']:.0f} s)", report))
            print()
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
