"""Engine speed: GPT-3 175B on 1024 A100s (tp 8, pp 16, dp 8, micro-batch 1, global batch
1536, full recomputation, 1F1B: 192 micro-batches through 16 stages).

Prints engine wall time and events/s for (a) the symmetric simulation (one replica stands
for all), (b) with jitter, every one of the 128 stage groups of 8 replicas simulated,
and SimPy's own rate on this machine (a bare ``yield env.timeout`` loop) measured in the
same run. Targets (issue 3): (a) <= 1 s, (b) <= 60 s on one core. Not a test: it prints.
"""

from __future__ import annotations

import time
from pathlib import Path

import simpy

from simplan.scenario import load_scenario
from simplan.sim import simulate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gpt3-175b-1024xa100.yaml"


def bare_simpy_rate(n: int = 300_000) -> float:
    env = simpy.Environment()

    def loop():
        for _ in range(n):
            yield env.timeout(1.0)

    env.process(loop())
    t0 = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - t0)


def main() -> None:
    scenario = load_scenario(EXAMPLE)
    rate = bare_simpy_rate()
    print(f"SimPy bare timeout loop: {rate:,.0f} events/s")
    simulate(scenario)  # warm caches (layer costs), as a planner run would have them
    for label, kwargs in [("symmetric (1 replica)", {}),
                          ("jitter 5%, all 8 replicas x 16 stages", {"jitter": 0.05, "seed": 1})]:
        t0 = time.perf_counter()
        r = simulate(scenario, **kwargs)
        wall = time.perf_counter() - t0
        print(f"{label}: step {r.step_time_s:.3f} s simulated, engine wall {r.sim_wall_s:.3f} s "
              f"(total {wall:.3f} s), {r.events:,} events, {r.events / r.sim_wall_s:,.0f} events/s "
              f"= {r.events / r.sim_wall_s / rate:.2f} x bare SimPy")


if __name__ == "__main__":
    main()
