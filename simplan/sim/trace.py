"""Chrome / Perfetto trace of a simulated step (the Trace Event Format: "X" complete
events, "C" counters, "M" metadata naming processes and threads; opens in
ui.perfetto.dev and chrome://tracing). One process per simulated unit (a tensor-parallel
group of one stage of one replica), one thread per stream: compute, tp, pp, dp, ...
Times in microseconds, as the format requires."""

from __future__ import annotations

import json

TRACKS = ("compute", "tp", "cp", "ep", "pp", "dp", "memory")


def chrome_trace(engine, step_time_s: float) -> list[dict]:
    events: list[dict] = []
    for pid, u in enumerate(engine.units):
        events.append({"ph": "M", "pid": pid, "name": "process_name",
                       "args": {"name": f"replica {u.replica} stage {u.stage}"}})
        events.append({"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}})
        used = {track for _, track, _, _, _ in u.trace}
        for tid, track in enumerate(TRACKS):
            if track in used and track != "memory":
                events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": track}})
        for name, track, start, dur, args in u.trace:
            if track == "memory":
                events.append({"ph": "C", "pid": pid, "name": "activation bytes", "ts": start * 1e6,
                               "args": {"bytes": dur}})
                continue
            cat = "bubble" if name == "wait" else args.get("category", track)
            events.append({"ph": "X", "pid": pid, "tid": TRACKS.index(track), "name": name, "cat": cat,
                           "ts": start * 1e6, "dur": dur * 1e6, "args": args})
    return events


def write_trace(events: list[dict], path) -> None:
    with open(path, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
