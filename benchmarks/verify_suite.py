"""The executor's verify suite (issue 6): every plan of examples/verify on the torch
executor (gloo, 2 ranks, one thread per rank) against the simulator.

    python benchmarks/verify_suite.py [--hardware hardware_profiles/local.yaml] [--steps 20] [--warmup 5] [--rounds 3]

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
from pathlib import Path

from simplan.execute.launch import RunOptions
from simplan.execute.verify import format_table, verify

SUITE = sorted((Path(__file__).resolve().parents[1] / "examples" / "verify").glob("*.yaml"))
LOSS_TOLERANCE = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default=None, help="profile replacing the scenarios' (e.g. local.yaml)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="launches per plan, a round through the suite "
                                                                "at a time (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    opts = RunOptions(steps=args.steps, warmup=args.warmup)
    summary = verify([str(p) for p in SUITE], opts, args.hardware, rounds=args.rounds,
                     progress=lambda r: print(f"  {Path(r['scenario']).stem}: measured "
                                              f"{r['measured_step_time_s']:.4f} s", file=sys.stderr, flush=True))
    print(format_table(summary))
    same = summary["first_step_loss_spread"] <= LOSS_TOLERANCE
    print(f"first-step loss identical across plans (tolerance {LOSS_TOLERANCE:g}): {'yes' if same else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
