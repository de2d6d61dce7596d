"""The dashboard's charts and headline (issue 15): one palette for every chart, readable
per-stage memory with a labeled capacity line, scaling on log-log or linear-linear axes,
MFU in percent, visible pipeline sends, the heading, and the prediction's error band.

Chart checks read the Vega-Lite specs Altair builds (``chart.to_dict()``) and, for the
page, the specs Streamlit sends to the browser."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simplan.dashboard import charts
from simplan.dashboard.format import fmt_band, fmt_pct, fmt_s
from simplan.dashboard.gantt import gantt_blocks
from simplan.dashboard.palette import PALETTE
from simplan.dashboard.planner import heading, request
from simplan.dashboard.scaling import scaling_frame
from simplan.scenario import load_scenario
from simplan.sim import simulate

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PIPE = {"model": {"preset": "gpt2-small"}, "hardware": "a100-sxm-80gb", "cluster": {"nodes": 1},
        "plan": {"tp": 2, "pp": 2, "micro_batch": 1, "global_batch": 16, "recompute": "full"}}


@pytest.fixture(scope="module")
def pipe():
    r = simulate(load_scenario(PIPE), trace=True)
    return r, r.to_json()


def _layers(spec: dict) -> list[dict]:
    out = [spec]
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            out += _layers(sub)
    return out


def _colours(spec: dict) -> dict[str, str]:
    """{name: colour} of every colour scale in a chart spec."""
    out = {}
    for layer in _layers(spec):
        scale = layer.get("encoding", {}).get("color", {}).get("scale", {})
        out.update(zip(scale.get("domain", []), scale.get("range", [])))
    return out


def _axis_types(spec: dict) -> tuple[str, str]:
    enc = spec["encoding"]
    return enc["x"].get("scale", {}).get("type", "linear"), enc["y"].get("scale", {}).get("type", "linear")


# --- charts ------------------------------------------------------------------------------------

def test_one_palette_in_every_chart(pipe):
    r, result = pipe
    blocks = gantt_blocks(r.trace, r.step_time_s, comm_lanes=True)
    specs = {
        "breakdown": charts.breakdown_chart(result).to_dict(),
        "compare": charts.compare_breakdown_chart(result, result, ("a", "b")).to_dict(),
        "gantt": charts.gantt_chart(blocks).to_dict(),
        "memory": charts.memory_chart(result).to_dict(),
    }
    colours = {name: _colours(spec) for name, spec in specs.items()}
    assert colours["breakdown"]["compute"] == colours["compare"]["compute"] == PALETTE["compute"]
    assert colours["gantt"]["forward"] == PALETTE["compute"]  # forward blocks are compute
    for name in ("recompute", "bubble", "optimizer"):
        assert colours["breakdown"][name] == colours["gantt"][name] == PALETTE[name]
    assert colours["gantt"]["pp comm"] == colours["breakdown"]["pp_comm_exposed"]
    assert colours["memory"]["optimizer"] == colours["breakdown"]["optimizer"]
    for spec_colours in colours.values():  # every name drawn takes the palette's colour
        assert all(PALETTE[k] == v for k, v in spec_colours.items())


def test_pipeline_sends_are_drawn_as_wide_stripes(pipe):
    r, _ = pipe
    spec = charts.gantt_chart(gantt_blocks(r.trace, r.step_time_s, comm_lanes=True)).to_dict()
    ticks = [layer for layer in spec["layer"] if layer["mark"]["type"] == "tick"]
    assert len(ticks) == 1 and ticks[0]["mark"]["thickness"] >= 2
    assert _colours(ticks[0])["pp comm"] == PALETTE["pp comm"]
    assert PALETTE["pp comm"] not in {PALETTE[k] for k in ("forward", "backward", "recompute", "bubble")}


def test_stage_memory_chart_has_a_labeled_capacity_line_and_room(pipe):
    _, result = pipe
    spec = charts.stage_memory_chart(result).to_dict()
    assert spec["height"] >= 240
    texts = [layer for layer in spec["layer"] if layer["mark"]["type"] == "text"]
    assert len(texts) == 1
    data = spec["datasets"][texts[0]["data"]["name"]]
    assert data[0]["label"] == "HBM capacity 80 GiB"  # a100-sxm-80gb
    bars = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "bar")
    top = bars["encoding"]["y"]["scale"]["domain"][1]
    assert top > result["memory"]["capacity_bytes"] / 2**30  # the label fits above the line
    assert bars["encoding"]["y"]["title"] == "peak GiB per GPU"
    memory = charts.memory_chart(result).to_dict()
    label = next(layer for layer in memory["layer"] if layer["mark"]["type"] == "text")
    assert memory["datasets"][label["data"]["name"]][0]["label"] == "HBM capacity 80 GiB"


def test_scaling_chart_axes_are_both_log_or_both_linear():
    df = pd.DataFrame({"gpus": [8, 16, 32, 8, 16, 32], "mode": ["strong"] * 3 + ["weak"] * 3, "plan": [""] * 6,
                       "tokens_per_s": [1e5, 1.9e5, 3.5e5, 1e5, 2e5, 3.9e5], "mfu_pct": [50, 47, 44, 50, 49, 48]})
    assert _axis_types(charts.scaling_chart(df, "tokens_per_s", "tokens/s", log=True).to_dict()) == ("log", "log")
    assert _axis_types(charts.scaling_chart(df, "mfu_pct", "MFU (%)", log=False).to_dict()) == ("linear", "linear")


def test_scaling_table_shows_mfu_in_percent():
    rows = [{"gpus": 8, "nodes": 1, "mode": "strong", "global_batch": 32, "plan": "#1", "tokens_per_s": 1e5,
             "mfu": 0.4321, "step_time_s": 0.1, "error": ""},
            {"gpus": 16, "nodes": 2, "mode": "weak", "global_batch": None, "plan": "", "tokens_per_s": None,
             "mfu": None, "step_time_s": None, "error": "not an integer"}]
    df = scaling_frame(rows)
    assert "mfu" not in df.columns
    assert df["mfu_pct"][0] == pytest.approx(43.21)
    assert pd.isna(df["mfu_pct"][1])


def test_heading_and_band_formats():
    assert heading(request({"preset": "llama3-70b"}, "h100-sxm-80gb", 64, 8, 1024)) == \
        "Llama-3 70B on 512 x h100-sxm-80gb"
    assert heading(request({"preset": "gpt3-13b"}, "a100-sxm-80gb", 4, 8, 128)) == "GPT-3 13B on 32 x a100-sxm-80gb"
    assert fmt_band([0.5, 1.5]) == f"{fmt_s(0.5)} – {fmt_s(1.5)}"
    assert fmt_band(None) is None


# --- the page ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception and not at.error
    return at


def test_page_heading_names_model_and_cluster(page):
    assert page.title[0].value == "GPT-3 13B on 32 x a100-sxm-80gb"


def test_page_charts_share_the_palette(page):
    specs = [json.loads(c.proto.spec) for c in page.get("vega_lite_chart")]
    assert len(specs) >= 4
    seen: dict[str, set[str]] = {}
    for spec in specs:
        for name, colour in _colours(spec).items():
            seen.setdefault(name, set()).add(colour)
    assert seen["compute"] == {PALETTE["compute"]}
    assert sum("compute" in _colours(spec) for spec in specs) >= 2  # breakdown and comparisons
    assert all(len(c) == 1 for c in seen.values()), seen


def test_page_shows_the_error_band_and_mfu_in_percent(page):
    rp = page.session_state["selected"]
    r = simulate(load_scenario(rp.scenario))
    assert r.step_time_band_s is not None  # a100-sxm-80gb carries calibration.step_time_error
    band = fmt_band(r.step_time_band_s)
    captions = [c.value for c in page.caption]
    assert sum(band in c for c in captions) >= 2  # the plan's step time and the what-if's (unchanged)
    shown = {m.label: m.value for m in page.metric}
    assert shown["MFU"] == fmt_pct(r.mfu) and shown["MFU"].endswith(" %")
    table = page.dataframe[0].value
    assert "mfu" not in table.columns and table["mfu_pct"][0] == pytest.approx(100 * rp.result["mfu"])
