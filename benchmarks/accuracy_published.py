"""Accuracy on published large-model runs (``make accuracy``), leave-one-source-out.

Reads ``../shared/data/published_runs.yaml`` (simplan.calibrate.published) and, per GPU:
1. the stock profile's predictions, no fit (per source: MAPE, mean signed error, worst);
2. leave-one-source-out: for each source, the profile's few physical parameters
   (simplan.calibrate.published_fit.PUBLISHED_PARAMETERS) fitted on every other source of
   that GPU, then that source predicted; the overall figure pools these held-out errors;
3. peak memory against the published peaks (BLOOM), and whether every run that ran is
   predicted to fit and every out-of-memory record predicted not to.
Records that cannot be rebuilt are listed with the reason. A benchmark: it prints figures.

    python benchmarks/accuracy_published.py [--gpu H100] [--no-loso] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simplan.calibrate.predict import Predictor, with_profile  # noqa: E402
from simplan.calibrate.published import GPU_PROFILES, read_published  # noqa: E402
from simplan.calibrate.published_fit import (band_quantiles, error_figures, leave_one_source_out,  # noqa: E402
                                             timed)
from simplan.calibrate.runs import shared_data_dir  # noqa: E402
from simplan.hardware.load import load_hardware  # noqa: E402
from simplan.cost.memory import scenario_memory  # noqa: E402
from simplan.scenario import load_scenario  # noqa: E402

FILE = "published_runs.yaml"


def _line(name: str, f: dict) -> str:
    if not f.get("runs"):
        return f"  {name:22s} no runs"
    return (f"  {name:22s} runs {f['runs']:3d}  MAPE {100 * f['mape']:5.1f}%  signed {100 * f['mean_signed']:+6.1f}%"
            f"  worst {100 * f['max_abs']:5.1f}%")


def memory_rows(runs, profile) -> list[dict]:
    """Peak memory per GPU of each run under ``profile`` (the memory model alone: no simulation)."""
    out = []
    for r in runs:
        report = scenario_memory(with_profile(load_scenario(r.scenario, where=r.id), profile))
        out.append({"id": r.id, "source": r.source, "fits": report.fits, "oom": r.oom,
                    "peak_bytes": report.peak_bytes_per_gpu, "measured_bytes": r.measured_memory_bytes})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="the published-runs file (default ../shared/data/)")
    ap.add_argument("--gpu", action="append", default=None, help="only this GPU (A100, H100); repeatable")
    ap.add_argument("--profile", action="append", default=[], metavar="GPU=PROFILE",
                    help="profile to judge for a GPU (default the stock one, e.g. H100=h100-sxm-80gb)")
    ap.add_argument("--no-loso", action="store_true", help="only the profile's own predictions (fast)")
    ap.add_argument("--iterations", type=int, default=6, help="least-squares iterations per LOSO fit")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    path = args.data or shared_data_dir() / FILE
    if not path.exists():
        print(f"accuracy_published: no {FILE} at {path}; nothing to report")
        return 0
    runs, skipped = read_published(path)
    profiles = dict(GPU_PROFILES)
    for item in args.profile:
        gpu, _, name = item.partition("=")
        profiles[gpu.upper()] = name
    gpus = [g.upper() for g in args.gpu] if args.gpu else sorted({r.gpu for r in runs} & {"A100", "H100"})
    out: dict = {"file": str(path.name), "skipped": [{"id": s.id, "reason": s.reason} for s in skipped], "gpus": {}}
    if not args.json:
        print(f"{path.name}: {len(runs)} runs rebuilt, {len(skipped)} skipped")
        for s in skipped:
            print(f"  skipped {s.id}: {s.reason}")
    for gpu in gpus:
        profile = load_hardware(profiles[gpu])
        mine = [r for r in runs if r.gpu == gpu]
        t = timed(mine)
        t0 = time.perf_counter()
        with Predictor(t, processes=args.processes) as predict:
            stock = predict(profile)
        measured = np.array([r.measured_step_s for r in t])
        err = stock / measured - 1
        sources = sorted({r.source for r in t})
        report = {"profile": profile.name, "runs": len(t),
                  "own": {src: error_figures(np.array([e for e, r in zip(err, t) if r.source == src])) for src in sources},
                  "own_all": error_figures(err),
                  "own_band": band_quantiles(err)}
        mem = memory_rows(mine, profile)
        with_peak = [m for m in mem if m["measured_bytes"]]
        mem_err = np.array([m["peak_bytes"] / m["measured_bytes"] - 1 for m in with_peak])
        report["memory"] = {"published_peaks": error_figures(mem_err) if len(mem_err) else {"runs": 0},
                            "ran_but_predicted_not_to_fit": [m["id"] for m in mem if not m["oom"] and not m["fits"]],
                            "oom_but_predicted_to_fit": [m["id"] for m in mem if m["oom"] and m["fits"]]}
        if not args.no_loso:
            loso = leave_one_source_out(t, profile, processes=args.processes, max_iterations=args.iterations,
                                        log=None if args.json else lambda s: print("   ", s, file=sys.stderr))
            report["loso"] = loso.per_source(t)
            report["loso_all"] = error_figures(loso.errors())
            report["loso_band"] = band_quantiles(loso.errors())
            report["loso_parameters"] = loso.parameters
        report["wall_s"] = time.perf_counter() - t0
        out["gpus"][gpu] = report
        if args.json:
            continue
        print(f"\n== {gpu}: profile {profile.name}, {len(t)} timed runs ({report['wall_s']:.0f} s)")
        print(" step time, profile as is (no fit):")
        for src in sources:
            print(_line(src, report["own"][src]))
        print(_line("all", report["own_all"]))
        if "loso" in report:
            print(" step time, leave-one-source-out (fitted on the other sources):")
            for src in sources:
                fitted = ", ".join(f"{k}={v:.3g}" for k, v in report["loso_parameters"][src].items())
                print(_line(src, report["loso"][src]) + f"   [{fitted}]")
            print(_line("all", report["loso_all"]))
            b = report["loso_band"]
            print(f"  error band (LOSO p10..p90): {100 * b['p10']:+.1f}% .. {100 * b['p90']:+.1f}%")
        m = report["memory"]
        if m["published_peaks"].get("runs"):
            print(_line("peak memory", m["published_peaks"]))
        print(f"  ran but predicted not to fit: {m['ran_but_predicted_not_to_fit'] or 'none'}")
        print(f"  out of memory but predicted to fit: {m['oom_but_predicted_to_fit'] or 'none'}")
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
