"""The executor's verify suite (issue 6): every plan of examples/verify on the torch
executor (gloo, 2 ranks, one thread per rank) against the simulator.

    python benchmarks/verify_suite.py [--hardware hardware_profiles/local.yaml] [--steps 20] [--warmup 5] [--rounds 3]
    python benchmarks/verify_suite.py --calibrate-each-round [--rounds 3] [--steps 10] [--warmup 3]
    python benchmarks/verify_suite.py --pool run1.json run2.json ...   (earlier runs' --json)

Run `simplan calibrate --local --out hardware_profiles/local.yaml` first on a quiet host:
the step times are wall-clock and another process on the cores distorts them. Prints the
table, the mean absolute step-time error, Kendall's tau, the worst activation error and
whether the first-step loss is the same for every plan. A benchmark: it prints figures,
it does not pass or fail on them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from simplan.execute.launch import RunOptions
from simplan.execute.calibrate_local import calibrate_local
from simplan.execute.verify import combine_rounds, format_table, split_rounds, summarize, verify

SUITE = sorted((Path(__file__).resolve().parents[1] / "examples" / "verify").glob("*.yaml"))
LOSS_TOLERANCE = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default=None, help="profile replacing the scenarios' (e.g. local.yaml)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="launches per plan, a round through the suite "
                                                                "at a time (median)")
    parser.add_argument("--calibrate-each-round", action="store_true",
                        help="run calibrate --local before each round and simulate that round under it "
                             "(instead of --hardware)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--pool", type=Path, nargs="+", default=None, metavar="JSON",
                        help="run nothing: combine the rounds of earlier runs' --json summaries (the median "
                             "over all their rounds per plan) and print that table and each round's figures")
    args = parser.parse_args()
    if args.pool:
        return pool(args.pool)
    opts = RunOptions(steps=args.steps, warmup=args.warmup)

    def progress(row: dict) -> None:
        print(f"  {Path(row['scenario']).stem}: predicted {row['predicted_step_time_s']:.4f} s, "
              f"measured {row['measured_step_time_s']:.4f} s", file=sys.stderr, flush=True)

    paths = [str(p) for p in SUITE]
    if args.calibrate_each_round:
        # each round simulated under a calibration taken right before it: a host whose speed
        # drifts over minutes is measured and predicted in the same spell
        rounds = []
        with tempfile.TemporaryDirectory() as d:
            for r in range(args.rounds):
                profile = Path(d) / f"round{r}.yaml"
                calibrate_local(profile, log=lambda line: print(f"  calibrate: {line}", file=sys.stderr, flush=True))
                order = paths[r % len(paths):] + paths[:r % len(paths)]
                rounds.append(verify(order, opts, str(profile), progress=progress)["rows"])
        summary = summarize(combine_rounds(rounds))
    else:
        summary = verify(paths, opts, args.hardware, rounds=args.rounds, progress=progress)
    print(format_table(summary))
    same = summary["first_step_loss_spread"] <= LOSS_TOLERANCE
    print(f"first-step loss identical across plans (tolerance {LOSS_TOLERANCE:g}): {'yes' if same else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def pool(paths: list[Path]) -> int:
    rounds = [r for path in paths for r in split_rounds(json.loads(path.read_text())["rows"])]
    for k, rows in enumerate(rounds):
        s = summarize(rows)
        print(f"round {k}: MAPE {100 * s['mape']:.1f}%  max |err| {100 * s['max_abs_step_time_error']:.1f}%  "
              f"Kendall tau {s['kendall_tau']:.3f}")
    print(f"pooled over {len(rounds)} rounds of {len(paths)} runs:")
    print(format_table(summarize(combine_rounds(rounds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
