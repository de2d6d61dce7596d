"""The first hour at frontier scale (issue 15): how long the answers take. Not a test: it prints.

Targets on the 2-core development machine:
* ``simplan plan --model llama3-405b --hardware h100-sxm-80gb --gpus 16384 --global-batch 2048``
  (the default search) <= 30 s;
* 20 steps of GPT-3 175B on 16,384 GPUs with ``--jitter 0.05`` <= 20 s (and Llama-3 405B);
* an absurd input (10^30 GPUs, a global batch given in tokens) answered within a second.

Also printed, for scale: the same plan at 98,304 GPUs, and the README examples.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from simplan.model import load_model
from simplan.scenario import load_scenario
from simplan.search.inputs import cluster_from_flags
from simplan.search.search import search
from simplan.sim import simulate


def plan(model: str, hardware: str, gpus: int, global_batch: int) -> None:
    t0 = time.perf_counter()
    result = search(load_model(model), cluster_from_flags(hardware, gpus), global_batch)
    wall = time.perf_counter() - t0
    best, r = result.best
    p = best.plan
    print(f"plan {model} on {gpus:,} x {hardware}, global batch {global_batch}: {wall:.1f} s wall; considered "
          f"{result.considered:,}, fitting {result.fitting:,}, simulated {result.simulated} "
          f"({sum(x.events for _, x in result.plans) / 1e6:.1f} M events); best tp {p.tp} pp {p.pp} dp {p.dp} "
          f"cp {p.cp} mb {p.micro_batch} {p.schedule} v{p.virtual_stages} {p.recompute} zero {p.zero_stage}: "
          f"{r.step_time_s:.3f} s/step, MFU {100 * r.mfu:.1f}%")


def jitter(model: str, hardware: str, nodes: int, plan_fields: dict, steps: int = 20) -> None:
    sc = load_scenario({"model": model, "hardware": hardware, "cluster": {"nodes": nodes, "gpus_per_node": 8},
                        "plan": plan_fields})
    t0 = time.perf_counter()
    r = simulate(sc, jitter=0.05, steps=steps)
    wall = time.perf_counter() - t0
    d = r.distribution
    base = simulate(sc).step_time_s
    print(f"jitter 0.05, {steps} steps of {model} on {sc.gpus:,} GPUs (dp {sc.plan.dp}): {wall:.1f} s wall; "
          f"mean {d['mean_s']:.4f} s (+{100 * (d['mean_s'] / base - 1):.2f}% over no jitter), "
          f"p99 {d['p99_s']:.4f} s, {r.events:,} events")


def absurd(args: list[str]) -> None:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "simplan.cli", *args], capture_output=True, text=True, timeout=60)
    print(f"{time.perf_counter() - t0:.2f} s, exit {out.returncode}: {out.stderr.strip()[:150]}")


def main() -> None:
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    plan("llama3-405b", "h100-sxm-80gb", 16384, 2048)
    jitter("gpt3-175b", "a100-sxm-80gb", 2048, {"tp": 8, "pp": 16, "dp": 128, "micro_batch": 1,
                                                "global_batch": 1536, "recompute": "full"})
    jitter("llama3-405b", "h100-sxm-80gb", 2048, {"tp": 8, "pp": 16, "dp": 128, "micro_batch": 1,
                                                  "global_batch": 2048, "schedule": "interleaved-1f1b",
                                                  "virtual_stages": 2, "recompute": "none",
                                                  "sequence_parallel": True})
    absurd(["plan", "--model", "gpt3-175b", "--hardware", "h100-sxm-80gb", "--gpus", str(10**30),
            "--global-batch", "8"])
    absurd(["plan", "--model", "llama3-8b", "--hardware", "h100-sxm-80gb", "--gpus", "64",
            "--global-batch", "3145728"])
    plan("llama3-405b", "h100-sxm-80gb", 98304, 2048 * 6)
    plan("gpt3-175b", "a100-sxm-80gb", 1024, 1536)
    plan("llama3-70b", "h100-sxm-80gb", 512, 1024)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
