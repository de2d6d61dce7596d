"""Altair charts of a StepResult (altair ships with Streamlit). Inputs are the
``StepResult.to_json()`` objects and the blocks of ``simplan.dashboard.gantt``; the charts
only draw what the library computed. Every colour comes from ``simplan.dashboard.palette``
(:func:`color_scale`), so a component is the same colour in every chart.

No chart sets a title together with a height: Streamlit 1.67 then collapses the plot to
nothing. Heights are steps per band (``alt.Step``) or fixed pixels, titles go in the page."""

from __future__ import annotations

import altair as alt
import pandas as pd

from simplan.dashboard.gantt import KINDS, lane_order
from simplan.dashboard.palette import PALETTE, colors
from simplan.units import GIB

alt.data_transformers.disable_max_rows()  # a 1024-GPU GPT-3 step is ~10^4 merged blocks

PP_STRIPE_PX = 3
"""Pipeline sends last microseconds in a step of seconds: narrower than a pixel as bars.
They are drawn again as ticks this wide, in the palette's strong red, on top of the bars."""
STAGE_CHART_HEIGHT_PX = 260


def color_scale(names) -> alt.Scale:
    """The palette as an Altair scale over ``names`` (in that legend order)."""
    names = list(names)
    return alt.Scale(domain=names, range=colors(names))


def gantt_chart(blocks: pd.DataFrame) -> alt.Chart | alt.LayerChart:
    lanes = lane_order(blocks)
    present = [k for k in KINDS if k in set(blocks["kind"])]
    color = alt.Color("kind:N", scale=color_scale(present), title="block")
    y = alt.Y("lane:N", sort=lanes, title=None)
    tooltip = ["lane", "kind", "microbatch", "chunk", alt.Tooltip("start_ms:Q", format=".3f"),
               alt.Tooltip("end_ms:Q", format=".3f"), "events"]
    bars = alt.Chart(blocks).mark_bar(clip=True).encode(
        x=alt.X("start_ms:Q", title="time in the step (ms)"), x2="end_ms:Q", y=y, color=color, tooltip=tooltip)
    sends = blocks[blocks["kind"] == "pp comm"]
    if sends.empty:
        return bars.properties(height=alt.Step(24))
    stripes = alt.Chart(sends).mark_tick(clip=True, thickness=PP_STRIPE_PX, opacity=1.0).encode(
        x="start_ms:Q", y=y, color=color, tooltip=tooltip)
    return (bars + stripes).properties(height=alt.Step(24))


def breakdown_frame(result: dict) -> pd.DataFrame:
    """Step-time components (seconds) with a non-zero share."""
    rows = [(k, v) for k, v in result["breakdown_s"].items() if v > 0]
    return pd.DataFrame(rows, columns=["component", "seconds"])


def breakdown_chart(result: dict) -> alt.Chart:
    df = breakdown_frame(result)
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("seconds:Q", title="seconds of the step (critical stage)"),
        y=alt.Y("component:N", sort="-x", title=None),
        color=alt.Color("component:N", scale=color_scale(df["component"]), legend=None),
        tooltip=["component", alt.Tooltip("seconds:Q", format=".4f")],
    ).properties(height=alt.Step(22))


def memory_frame(result: dict) -> pd.DataFrame:
    """The peak stage's memory per GPU by kind, in GiB."""
    rows = [(k, v / GIB) for k, v in result["memory"]["breakdown"].items() if v > 0]
    return pd.DataFrame(rows, columns=["kind", "GiB"])


def capacity_label(result: dict) -> str:
    return f"HBM capacity {result['memory']['capacity_bytes'] / GIB:.0f} GiB"


def memory_chart(result: dict) -> alt.LayerChart:
    mem = result["memory"]
    df = memory_frame(result).assign(gpu="peak GPU")
    capacity = mem["capacity_bytes"] / GIB
    top = 1.08 * max(capacity, mem["peak_bytes_per_gpu"] / GIB)
    bars = alt.Chart(df).mark_bar(size=24).encode(
        x=alt.X("GiB:Q", title="GiB per GPU", scale=alt.Scale(domain=[0, top])),
        y=alt.Y("gpu:N", title=None),
        color=alt.Color("kind:N", scale=color_scale(df["kind"]), title="memory"),
        tooltip=["kind", alt.Tooltip("GiB:Q", format=".2f")],
    )
    line = pd.DataFrame({"GiB": [capacity], "label": [capacity_label(result)]})
    rule = alt.Chart(line).mark_rule(color=PALETTE["capacity"], strokeWidth=2).encode(x="GiB:Q", tooltip=["label"])
    # above the bar (a 24 px bar in a 56 px band), ending at the line
    text = alt.Chart(line).mark_text(align="right", baseline="top", dx=-4, y=1, color=PALETTE["capacity"],
                                     fontWeight="bold").encode(x="GiB:Q", text="label:N")
    return (bars + rule + text).properties(height=alt.Step(56))


def stage_memory_chart(result: dict) -> alt.LayerChart:
    """Peak memory per GPU of every pipeline stage against the capacity (a labeled line)."""
    mem = result["memory"]
    df = pd.DataFrame({"stage": list(range(len(mem["per_stage_peak_bytes"]))),
                       "GiB": [b / GIB for b in mem["per_stage_peak_bytes"]]})
    capacity = mem["capacity_bytes"] / GIB
    top = 1.15 * max(capacity, df["GiB"].max())  # room above the line for its label
    bars = alt.Chart(df).mark_bar(color=PALETTE["stage peak"]).encode(
        x=alt.X("stage:O", title="pipeline stage", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("GiB:Q", title="peak GiB per GPU", scale=alt.Scale(domain=[0, top]),
                axis=alt.Axis(titlePadding=10)),
        tooltip=["stage", alt.Tooltip("GiB:Q", format=".2f")])
    line = pd.DataFrame({"GiB": [capacity], "label": [capacity_label(result)]})
    rule = alt.Chart(line).mark_rule(color=PALETTE["capacity"], strokeWidth=2).encode(y="GiB:Q", tooltip=["label"])
    text = alt.Chart(line).mark_text(align="left", baseline="bottom", x=4, dy=-3, color=PALETTE["capacity"],
                                     fontWeight="bold").encode(y="GiB:Q", text="label:N")
    return (bars + rule + text).properties(height=STAGE_CHART_HEIGHT_PX, padding={"left": 8, "top": 8, "right": 8,
                                                                                   "bottom": 8})


def scaling_chart(df: pd.DataFrame, metric: str, axis_title: str, *, log: bool) -> alt.Chart:
    """``df``: columns gpus, mode (strong/weak), plan and ``metric``. Both axes log (base 2)
    or both linear: a log GPU axis against a linear throughput bends ideal scaling."""
    kind = "log" if log else "linear"
    xs = alt.Scale(type=kind, base=2) if log else alt.Scale(type=kind, zero=False)
    ys = alt.Scale(type=kind) if log else alt.Scale(type=kind, zero=True)
    modes = [m for m in ("strong", "weak") if m in set(df["mode"])]
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("gpus:Q", scale=xs, title="GPUs" + (" (log scale)" if log else "")),
        y=alt.Y(f"{metric}:Q", scale=ys, title=axis_title + (" (log scale)" if log else "")),
        color=alt.Color("mode:N", title="scaling", scale=color_scale(modes)),
        tooltip=["gpus", "mode", "plan", alt.Tooltip(f"{metric}:Q", format=".4g", title=axis_title)],
    ).properties(height=260)


def compare_breakdown_chart(a: dict, b: dict, labels: tuple[str, str]) -> alt.Chart:
    df = pd.concat([breakdown_frame(a).assign(plan=labels[0]), breakdown_frame(b).assign(plan=labels[1])])
    names = list(dict.fromkeys(df["component"]))
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("seconds:Q"), y=alt.Y("plan:N", title=None),
        color=alt.Color("component:N", scale=color_scale(names)),
        tooltip=["plan", "component", alt.Tooltip("seconds:Q", format=".4f")],
    ).properties(height=alt.Step(30))
