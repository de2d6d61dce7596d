"""Planner regret on measured runs: does the planner pick a configuration that really was fast?

Data: ../shared/data/vtrain_a100_multi_node.csv (vTrain, MICRO 2024; see its README). Rows
are grouped by (model parameters, GPUs, global batch). For each group the planner is
restricted to the measured (tp, pp, dp, micro-batch) combinations and to how the runs were
made (Megatron-DeepSpeed: full recomputation, 1F1B, 16-bit (fp16 here; bf16 has the same
A100 rate), no ZeRO, gradient all-reduce after the backward, i.e. dp_overlap = False). Its
pick is the best simulated plan; the regret is the measured time of the pick over the
measured best, minus one (target <= 5%).

Assumptions, stated because the source does not: GPT with the row's hidden/heads/layers,
sequence 2048, vocabulary 51200, dropout, tied embeddings; the a100-sxm-80gb profile (the
A100 memory size is not stated: 80 GB is assumed, so a configuration that needs more is
left out); the NICs set to the 800 Gbit/s per node of vTrain's configuration (4 x 200 Gbit/s;
the DGX A100 profile has 8). Not a test: it prints.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from simplan.hardware.cluster import load_cluster
from simplan.hardware.load import load_hardware
from simplan.model import load_model
from simplan.search.search import search
from simplan.search.space import Constraints

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vtrain_a100_multi_node.csv"


def main() -> None:
    if not DATA.exists():
        print(f"skipped: {DATA.name} not found beside the project (expected at ../shared/data/)")
        return
    groups: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    shapes = {}
    with DATA.open() as f:
        for row in csv.DictReader(f):
            key = (row["Parameters (billion)"], int(row["# GPUs"]), int(row["global batch"]))
            layout = (int(row["tensor parallelism"]), int(row["pipeline parallelism"]),
                      int(row["data parallelism"]), int(row["micro batch"]))
            groups[key][layout].append(float(row["iteration time (ms)"]) / 1000)
            shapes[key] = (int(row["# layers"]), int(row["hidden size"]), int(row["attention heads"]),
                           int(row["sequence length"]))
    profile = load_hardware("a100-sxm-80gb")
    print(f"{'model':>7} {'GPUs':>5} {'batch':>6} {'configs':>7} {'fit':>4} {'pick (tp,pp,dp,mb)':>20} "
          f"{'measured pick s':>15} {'measured best s':>15} {'best (tp,pp,dp,mb)':>20} {'regret':>7}")
    regrets = []
    for key in sorted(groups, key=lambda k: (float(k[0]), k[1])):
        params, gpus, batch = key
        layers, hidden, heads, seq = shapes[key]
        measured = {layout: sum(t) / len(t) for layout, t in groups[key].items()}  # repeated runs averaged
        model = load_model({"family": "gpt", "layers": layers, "hidden": hidden, "heads": heads, "seq_len": seq,
                            "vocab": 51200, "dropout": True, "tied_embeddings": True, "name": f"gpt-{params}b"})
        cluster = load_cluster({"nodes": gpus // 8, "nics_per_node": 4}, profile)
        constraints = Constraints(layouts=tuple(measured), recompute="full", schedule="1f1b", zero_stage=0,
                                  dp_sync="allreduce", sequence_parallel=False, tp_inside_node=True,
                                  precision="fp16", dp_overlap=False, max_tp=64, max_cp=1)
        result = search(model, cluster, batch, constraints=constraints, top_k=len(measured))
        pick = result.best[0].plan
        pick_layout = (pick.tp, pick.pp, pick.dp, pick.micro_batch)
        best_layout = min(measured, key=measured.get)
        regret = measured[pick_layout] / measured[best_layout] - 1
        regrets.append(regret)
        print(f"{params + 'B':>7} {gpus:>5} {batch:>6} {len(measured):>7} {result.simulated:>4} "
              f"{str(pick_layout):>20} {measured[pick_layout]:>15.2f} {measured[best_layout]:>15.2f} "
              f"{str(best_layout):>20} {100 * regret:>6.1f}%")
    print(f"groups {len(regrets)}, mean regret {100 * sum(regrets) / len(regrets):.1f}%, "
          f"max {100 * max(regrets):.1f}%, within 5%: {sum(r <= 0.05 for r in regrets)}/{len(regrets)}")


if __name__ == "__main__":
    main()
