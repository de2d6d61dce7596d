"""Planner speed and quality on the issue's target: GPT-3 175B, 1024 A100-80GB, global batch 1536.

Prints candidates considered, plans simulated, end-to-end wall time (target: >= 5,000
considered, top 32 simulated, <= 30 s on the 2-core development machine), and the
simulated throughput of the planner's best plan against the hand-tuned Megatron-LM
configuration (tp 8, pp 16, micro-batch 1, full recomputation; Narayanan et al. 2021,
Table 1) with 1F1B and with interleaving, simulated by the same engine. Not a test: it prints.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from simplan.model import load_model
from simplan.plan.plan import Plan
from simplan.search.inputs import cluster_from_flags
from simplan.search.search import search
from simplan.sim import simulate


def main() -> None:
    model = load_model("gpt3-175b")
    cluster = cluster_from_flags("a100-sxm-80gb", 1024)
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    result = search(model, cluster, 1536, top_k=32)
    wall = time.perf_counter() - t0
    print(f"considered {result.considered:,}, fitting {result.fitting:,}, simulated {result.simulated}, "
          f"wall {wall:.1f} s (search_wall_s {result.search_wall_s:.1f}); "
          f"engine time summed over the simulated plans {sum(r.sim_wall_s for _, r in result.plans):.1f} s")
    best, r = result.best
    p = best.plan
    print(f"planner's best: tp {p.tp} pp {p.pp} dp {p.dp} mb {p.micro_batch} {p.schedule} v{p.virtual_stages} "
          f"recompute {p.recompute} sp {p.sequence_parallel} zero {p.zero_stage}: {r.step_time_s:.3f} s/step, "
          f"{r.tokens_per_s:,.0f} tokens/s, MFU {100 * r.mfu:.1f}%, {r.memory['peak_bytes_per_gpu'] / 2**30:.1f} GiB")
    for schedule, v in (("1f1b", 1), ("interleaved-1f1b", 2)):
        plan = Plan(tp=8, pp=16, dp=8, micro_batch=1, global_batch=1536, schedule=schedule, virtual_stages=v,
                    recompute="full", precision=p.precision)
        m = simulate(replace(best, plan=plan))
        print(f"Megatron-LM tp 8 pp 16 mb 1 full recompute {schedule} v{v}: {m.step_time_s:.3f} s/step, "
              f"{m.tokens_per_s:,.0f} tokens/s, fits {m.memory['fits']}; planner / Megatron throughput "
              f"{r.tokens_per_s / m.tokens_per_s:.3f}")


if __name__ == "__main__":
    main()
