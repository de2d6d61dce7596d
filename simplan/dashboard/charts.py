"""Altair charts of a StepResult (altair ships with Streamlit). Inputs are the
``StepResult.to_json()`` objects and the blocks of ``simplan.dashboard.gantt``; the charts
only draw what the library computed.

No chart sets a title together with a height: Streamlit 1.67 then collapses the plot to
nothing. Heights are steps per band (``alt.Step``), titles go in the page."""

from __future__ import annotations

import altair as alt
import pandas as pd

from simplan.dashboard.gantt import COLORS, KINDS, lane_order
from simplan.units import GIB

alt.data_transformers.disable_max_rows()  # a 1024-GPU GPT-3 step is ~10^4 merged blocks


def gantt_chart(blocks: pd.DataFrame) -> alt.Chart:
    lanes = lane_order(blocks)
    present = [k for k in KINDS if k in set(blocks["kind"])]
    colors = [COLORS[KINDS.index(k)] for k in present]
    return alt.Chart(blocks).mark_bar(clip=True).encode(
        x=alt.X("start_ms:Q", title="time in the step (ms)"),
        x2="end_ms:Q",
        y=alt.Y("lane:N", sort=lanes, title=None),
        color=alt.Color("kind:N", scale=alt.Scale(domain=present, range=colors)),
        tooltip=["lane", "kind", "microbatch", "chunk", alt.Tooltip("start_ms:Q", format=".3f"),
                 alt.Tooltip("end_ms:Q", format=".3f"), "events"],
    ).properties(height=alt.Step(24))


def breakdown_frame(result: dict) -> pd.DataFrame:
    """Step-time components (seconds) with a non-zero share."""
    rows = [(k, v) for k, v in result["breakdown_s"].items() if v > 0]
    return pd.DataFrame(rows, columns=["component", "seconds"])


def breakdown_chart(result: dict) -> alt.Chart:
    df = breakdown_frame(result)
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("seconds:Q", title="seconds of the step (critical stage)"),
        y=alt.Y("component:N", sort="-x", title=None),
        tooltip=["component", alt.Tooltip("seconds:Q", format=".4f")],
    ).properties(height=alt.Step(22))


def memory_frame(result: dict) -> pd.DataFrame:
    """The peak stage's memory per GPU by kind, in GiB."""
    rows = [(k, v / GIB) for k, v in result["memory"]["breakdown"].items() if v > 0]
    return pd.DataFrame(rows, columns=["kind", "GiB"])


def memory_chart(result: dict) -> alt.LayerChart:
    mem = result["memory"]
    df = memory_frame(result).assign(gpu="peak GPU")
    capacity = mem["capacity_bytes"] / GIB
    bars = alt.Chart(df).mark_bar().encode(
        x=alt.X("GiB:Q", title="GiB per GPU", scale=alt.Scale(domainMax=max(capacity, mem["peak_bytes_per_gpu"] / GIB))),
        y=alt.Y("gpu:N", title=None),
        color=alt.Color("kind:N"),
        tooltip=["kind", alt.Tooltip("GiB:Q", format=".2f")],
    )
    rule = alt.Chart(pd.DataFrame({"GiB": [capacity], "label": [f"capacity {capacity:.0f} GiB"]})).mark_rule(
        color="red", strokeWidth=2).encode(x="GiB:Q", tooltip=["label"])
    return (bars + rule).properties(height=alt.Step(40))


def stage_memory_chart(result: dict) -> alt.LayerChart:
    """Peak memory per GPU of every pipeline stage against the capacity."""
    mem = result["memory"]
    df = pd.DataFrame({"stage": list(range(len(mem["per_stage_peak_bytes"]))),
                       "GiB": [b / GIB for b in mem["per_stage_peak_bytes"]]})
    capacity = mem["capacity_bytes"] / GIB
    bars = alt.Chart(df).mark_bar().encode(x=alt.X("stage:O", axis=alt.Axis(labelAngle=0)),
                                           y=alt.Y("GiB:Q", title="peak GiB per GPU"),
                                           tooltip=["stage", alt.Tooltip("GiB:Q", format=".2f")])
    rule = alt.Chart(pd.DataFrame({"GiB": [capacity]})).mark_rule(color="red", strokeWidth=2).encode(y="GiB:Q")
    return (bars + rule).properties(height=140)


def scaling_chart(df: pd.DataFrame, metric: str, axis_title: str) -> alt.Chart:
    """``df``: columns gpus, mode (strong/weak), and ``metric``."""
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("gpus:Q", scale=alt.Scale(type="log", base=2), title="GPUs"),
        y=alt.Y(f"{metric}:Q", title=axis_title),
        color=alt.Color("mode:N", title="scaling"),
        tooltip=["gpus", "mode", "plan", alt.Tooltip(f"{metric}:Q", format=".4g")],
    ).properties(height=260)


def compare_breakdown_chart(a: dict, b: dict, labels: tuple[str, str]) -> alt.Chart:
    df = pd.concat([breakdown_frame(a).assign(plan=labels[0]), breakdown_frame(b).assign(plan=labels[1])])
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("seconds:Q"), y=alt.Y("plan:N", title=None), color="component:N",
        tooltip=["plan", "component", alt.Tooltip("seconds:Q", format=".4f")],
    ).properties(height=alt.Step(30))
