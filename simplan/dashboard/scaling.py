"""Scaling view: the planner's best plan at several GPU counts, with the global batch
fixed (strong scaling) or grown with the GPU count (weak scaling)."""

from __future__ import annotations

import copy
from typing import Callable

import pandas as pd

from simplan.dashboard.plan_edit import plain
from simplan.dashboard.planner import plan_label
from simplan.errors import SimplanError

COLUMNS = ("gpus", "nodes", "mode", "global_batch", "plan", "tokens_per_s", "mfu_pct", "step_time_s", "error")
"""The sweep table the page shows: MFU in percent, as everywhere on the page."""


def node_counts(nodes: int) -> list[int]:
    """Powers of two from a quarter to four times ``nodes`` (at least one node), and ``nodes``."""
    out = {nodes}
    for f in (0.25, 0.5, 2, 4):
        n = int(nodes * f)
        if n >= 1 and n == nodes * f:
            out.add(n)
    return sorted(out)


def scaling_rows(req: dict, counts: list[int], planner: Callable, *,
                 progress: Callable[[float, str], None] | None = None) -> list[dict]:
    """One row per (GPU count, mode): the best plan's tokens/s and MFU, or why there is none.
    ``planner(request)`` answers like ``simplan.dashboard.planner.run_planner`` (the page
    passes its cached one, so the current size is the ranked table's own best plan)."""
    base_nodes, base_batch = req["cluster"]["nodes"], req["global_batch"]
    jobs = []
    for n in counts:
        jobs.append(("strong", n, base_batch))
        weak = base_batch * n / base_nodes
        jobs.append(("weak", n, int(weak) if weak == int(weak) else None))
    rows = []
    for i, (mode, n, batch) in enumerate(jobs):
        if progress is not None:
            progress(i / len(jobs), f"{mode} scaling, {n} nodes")
        gpus = n * req["cluster"]["gpus_per_node"]
        row = {"gpus": gpus, "nodes": n, "mode": mode, "global_batch": batch, "plan": "", "tokens_per_s": None,
               "mfu": None, "step_time_s": None, "error": ""}
        if batch is None:
            row["error"] = f"global batch {base_batch} x {n}/{base_nodes} is not an integer"
        else:
            r = copy.deepcopy(req)
            r["cluster"]["nodes"], r["global_batch"] = n, batch
            try:
                run = planner(r)
            except SimplanError as e:
                row["error"] = str(e)
            else:
                if run.plans:
                    sc, res = run.plans[0].scenario, run.plans[0].result
                    row.update(plan=plan_label(1, sc), tokens_per_s=res["tokens_per_s"], mfu=res["mfu"],
                               step_time_s=res["step_time_s"])
                else:
                    row["error"] = "no plan found"
        rows.append(row)
    if progress is not None:
        progress(1.0, "done")
    return rows


def scaling_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows of :func:`scaling_rows` as the page's table: ``COLUMNS``, MFU in percent."""
    df = pd.DataFrame(rows)
    df["mfu_pct"] = [None if m is None else 100 * m for m in df["mfu"]]
    df["error"] = [plain(e) if e else e for e in df["error"]]  # in the page's words
    return df[list(COLUMNS)]
