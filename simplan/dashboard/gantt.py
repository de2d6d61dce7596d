"""The simulated step as Gantt blocks: one row per pipeline stage (and, on request, one
per communication stream), the way pipeline schedules are drawn in the GPipe and
Megatron-LM papers.

Input is the Chrome trace ``simulate(..., trace=True)`` returns (``simplan.sim.trace``):
"X" events with ``pid`` = simulated unit, ``tid`` = stream. On the compute stream one
event spans each schedule action, named after it ("F3.c0": forward of micro-batch 3 on
chunk 0; "R", "B", "I", "W" likewise), with its layers as events inside it (``args.step``
= the action), which the chart leaves out; "wait" events are bubbles. Communication events
carry the action in ``args.step`` where they belong to one.

A GPT-3 step on 1024 GPUs has ~10^4 actions and ~10^5 communication events; the chart
cannot draw them all, so events of one kind and action that follow each other closer than
``resolution_s`` are merged into one block. With the default resolution (the step time /
1500, below one pixel of a full-width chart) the picture is the same.
"""

from __future__ import annotations

import re

import pandas as pd

from simplan.sim.engine import GRADIENT_COPY
from simplan.sim.trace import TRACKS

PHASES = {"F": "forward", "B": "backward", "I": "backward (input)", "W": "backward (weights)",
          "R": "recompute"}
"""Schedule action letters (simplan.sim.schedules) to block kinds."""
KINDS = ("forward", "backward", "backward (input)", "backward (weights)", "recompute", "optimizer", "bubble",
         "tp comm", "cp comm", "ep comm", "pp comm", "dp comm")
"""Every block kind, in legend order (colours: ``simplan.dashboard.palette``)."""
_STEP = re.compile(r"^([A-Z])(\d+)\.c(\d+)$")
_UNIT = re.compile(r"^replica (\d+) stage (\d+)$")
COLUMNS = ("replica", "stage", "lane", "kind", "microbatch", "chunk", "start_ms", "end_ms", "events")


def _units(trace: list[dict]) -> dict[int, tuple[int, int]]:
    """pid -> (replica, stage), from the trace's process_name metadata."""
    out = {}
    for e in trace:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            m = _UNIT.match(e["args"]["name"])
            if m:
                out[e["pid"]] = (int(m.group(1)), int(m.group(2)))
    return out


def _kind(e: dict) -> tuple[str, int | None, int | None] | None:
    """Block kind, micro-batch and chunk of one "X" event; None for a layer inside an action."""
    if e.get("cat") == "bubble":
        return "bubble", None, None
    track = TRACKS[e["tid"]]
    args = e.get("args") or {}
    if track != "compute":
        m = _STEP.match(str(args.get("step", "")))
        return f"{track} comm", *((int(m.group(2)), int(m.group(3))) if m else (None, None))
    if "step" in args:
        return None
    m = _STEP.match(e["name"])
    if m and m.group(1) in PHASES:
        return PHASES[m.group(1)], int(m.group(2)), int(m.group(3))
    if e["name"] == "optimizer":
        return "optimizer", None, None
    if e["name"] == GRADIENT_COPY:  # FSDP2's post-backward copy into the reduce-scatter input
        return "backward", None, None
    raise ValueError(f"trace: unexpected compute event {e['name']!r}")


def gantt_blocks(trace: list[dict], step_time_s: float, *, replica: int = 0, comm_lanes: bool = False,
                 resolution_s: float | None = None) -> pd.DataFrame:
    """Blocks of one data-parallel replica: columns ``COLUMNS``; ``lane`` is "stage s"
    for the compute stream and "stage s · tp" (pp, dp, ...) for communication streams
    when ``comm_lanes``. Times in milliseconds from the start of the step."""
    if resolution_s is None:
        resolution_s = step_time_s / 1500
    units = _units(trace)
    rows: list[list] = []
    open_blocks: dict[tuple[int, int], list] = {}
    events = sorted((e for e in trace if e.get("ph") == "X" and units.get(e["pid"], (-1,))[0] == replica),
                    key=lambda e: (e["pid"], e["tid"], e["ts"]))
    for e in events:
        track = TRACKS[e["tid"]]
        if track != "compute" and not comm_lanes:
            continue
        kind = _kind(e)
        if kind is None:
            continue
        kind, mb, chunk = kind
        stage = units[e["pid"]][1]
        start_s, end_s = e["ts"] * 1e-6, (e["ts"] + e["dur"]) * 1e-6
        key = (e["pid"], e["tid"])
        cur = open_blocks.get(key)
        if cur is not None and cur[3] == kind and cur[4] == mb and cur[5] == chunk \
                and start_s - cur[7] <= resolution_s:
            cur[7] = max(cur[7], end_s)
            cur[8] += 1
            continue
        lane = f"stage {stage}" if track == "compute" else f"stage {stage} · {track}"
        cur = [replica, stage, lane, kind, mb, chunk, start_s, end_s, 1]
        open_blocks[key] = cur
        rows.append(cur)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["start_ms"] = df["start_ms"] * 1e3
    df["end_ms"] = df["end_ms"] * 1e3
    return df


def lane_order(blocks: pd.DataFrame) -> list[str]:
    """Lanes top to bottom: stage 0 first, its compute lane above its communication lanes."""
    def key(lane: str) -> tuple[int, int]:
        head, _, track = lane.partition(" · ")
        return int(head.split()[1]), (TRACKS.index(track) if track else -1)

    return sorted(blocks["lane"].unique(), key=key)
