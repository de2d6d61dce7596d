"""Single-GPU verify (issue 6): run each scenario once on the torch executor (NCCL, GPU 0)
and compare the one measurement with the simulator under two profiles, the shipped one and
a `simplan calibrate --local --device cuda` one.

    python benchmarks/gpu_verify.py --stock h100-sxm-80gb [--calibrated FILE] [--steps 8] SCENARIO...

Prints one table per profile (scripts/gpu_verify.sh runs it). A benchmark: it prints
figures, it does not pass or fail on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simplan.errors import SimplanError
from simplan.execute.launch import RunOptions, run_plan
from simplan.execute.verify import compare, format_table, load_for_verify, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+", type=Path)
    parser.add_argument("--stock", required=True, help="shipped profile name (or file) of this GPU")
    parser.add_argument("--calibrated", default=None, help="profile written by calibrate --local --device cuda")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None, help="also write both summaries here")
    args = parser.parse_args(argv)
    opts = RunOptions(steps=args.steps, warmup=args.warmup, device=args.device, max_ranks=1, timeout_s=300.0)
    profiles = [args.stock] + ([args.calibrated] if args.calibrated else [])
    rows: dict[str, list[dict]] = {p: [] for p in profiles}
    for path in args.scenarios:
        scenario = load_for_verify(path, args.stock)
        measured = run_plan(scenario.model, scenario.plan, opts)
        print(f"  {path.stem}: measured {measured['step_time_s']:.4f} s", file=sys.stderr, flush=True)
        for p in profiles:
            rows[p].append(compare(path, load_for_verify(path, p), measured))
    summaries = {p: summarize(r) for p, r in rows.items()}
    for p, summary in summaries.items():
        print(f"\n== predicted with {p}")
        print(format_table(summary))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SimplanError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
