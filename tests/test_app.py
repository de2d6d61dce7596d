"""The dashboard (app.py) driven through Streamlit's AppTest: widgets are changed and the
numbers on the page are checked against the library (``simulate`` on the same scenario)
and against what the simulator must do (faster hardware never slows a step).

Plus the pure helpers of ``simplan.dashboard`` (Gantt blocks, what-if variants)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from simplan.dashboard.format import fmt_gib, fmt_pct, fmt_s, fmt_tokens
from simplan.dashboard.gantt import gantt_blocks
from simplan.dashboard.whatif import WhatIf, resimulate, variant
from simplan.errors import SimplanError
from simplan.hardware.cluster import Cluster
from simplan.scenario import load_scenario, scenario_to_dict
from simplan.sim import simulate

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SMALL = {"preset": "gpt2-small", "nodes": 1, "global_batch": 32}
"""A setup the planner answers in about a second."""


# --- helpers ---------------------------------------------------------------------------------

def _app(**sidebar):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    _no_trouble(at)
    if sidebar:
        if "preset" in sidebar:
            at.selectbox(key="preset").set_value(sidebar["preset"])
        if "hardware" in sidebar:
            at.selectbox(key="hardware").set_value(sidebar["hardware"])
        if "nodes" in sidebar:
            at.number_input(key="nodes").set_value(sidebar["nodes"])
        if "global_batch" in sidebar:
            at.number_input(key="global_batch").set_value(sidebar["global_batch"])
        at.button(key="run_planner").click().run()
        _no_trouble(at)
    return at


def _no_trouble(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _metrics(at) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def _selected(at):
    return at.session_state["selected"]


def _picker(at):
    return next(s for s in at.selectbox if s.label.startswith("Selected plan"))


def _simulated(rp, **kwargs):
    scenario = load_scenario(rp.scenario)
    return simulate(scenario, **kwargs)


def _scaled_scenario(rp, **factors):
    """The baseline with a scaled profile, built here from the library's own pieces."""
    s = load_scenario(rp.scenario)
    cluster = Cluster(profile=s.hardware.scaled(**factors), nodes=s.cluster.nodes,
                      gpus_per_node=s.cluster.gpus_per_node)
    return replace(s, cluster=cluster)


@pytest.fixture
def small_app():
    return _app(**SMALL)  # planner results and simulations are cached across sessions: cheap


# --- the page --------------------------------------------------------------------------------

def test_default_page_shows_ranked_plans_and_the_simulated_step():
    at = _app()
    assert "plans considered" in at.caption[0].value
    table = at.dataframe[0].value
    assert len(table) >= 2
    assert list(table["step_time_s"]) == sorted(table["step_time_s"])  # ranked, best first
    rp = _selected(at)
    assert _picker(at).value == 0
    r = _simulated(rp)
    shown = _metrics(at)
    assert shown["Step time"][0] == fmt_s(r.step_time_s)
    assert shown["Tokens per second"][0] == fmt_tokens(r.tokens_per_s)
    assert shown["MFU"][0] == fmt_pct(r.mfu)
    assert shown["Memory per GPU"][0] == fmt_gib(r.memory["peak_bytes_per_gpu"])
    assert table["step_time_s"][0] == pytest.approx(r.step_time_s, rel=1e-12)  # the planner's own figure


def test_changing_model_and_hardware_reruns_the_planner():
    at = _app()
    before = _selected(at)
    at.selectbox(key="preset").set_value("gpt2-small")
    at.selectbox(key="hardware").set_value("h100-sxm-80gb")
    at.number_input(key="nodes").set_value(1)
    at.number_input(key="global_batch").set_value(32).run()
    assert any("press **Run planner**" in i.value for i in at.info)  # not run yet: the old plans stay
    assert _selected(at) == before
    at.button(key="run_planner").click().run()
    _no_trouble(at)
    rp = _selected(at)
    assert at.title[0].value == "GPT-2 small on 8 x h100-sxm-80gb"
    assert rp.scenario["model"]["name"] == "gpt2-small"
    assert rp.scenario["hardware"] == "h100-sxm-80gb"
    assert rp.scenario["plan"]["tp"] * rp.scenario["plan"]["pp"] * rp.scenario["plan"]["dp"] * rp.scenario["plan"]["cp"] == 8
    assert _metrics(at)["Step time"][0] == fmt_s(_simulated(rp).step_time_s)


def test_picking_another_plan_shows_its_numbers(small_app):
    at = small_app
    _picker(at).set_value(1).run()
    _no_trouble(at)
    rp = _selected(at)
    assert at.dataframe[0].value["step_time_s"][1] == pytest.approx(rp.result["step_time_s"], rel=1e-12)
    assert _metrics(at)["Step time"][0] == fmt_s(_simulated(rp).step_time_s)
    _picker(at).set_value(0).run()


@pytest.mark.parametrize("control", ["wi_nic_bw", "wi_intra_bw", "wi_hbm_bw", "wi_flops"])
def test_faster_hardware_never_slows_the_step(small_app, control):
    at = small_app
    rp = _selected(at)
    base = rp.result["step_time_s"]
    at.select_slider(key=control).set_value(2.0).run()
    _no_trouble(at)
    shown, delta = _metrics(at)["What-if step time"]
    factor = {"wi_nic_bw": "nic_bw", "wi_intra_bw": "intra_bw", "wi_hbm_bw": "hbm_bw", "wi_flops": "flops"}[control]
    expected = simulate(_scaled_scenario(rp, **{factor: 2.0}))
    assert shown == fmt_s(expected.step_time_s)
    assert expected.step_time_s <= base
    assert not delta.startswith("+") or delta == "+0.00 %"
    if control == "wi_flops":  # compute is most of a step: twice the FLOP/s must show
        assert expected.step_time_s < 0.8 * base
    at.select_slider(key=control).set_value(1.0).run()
    assert _metrics(at)["What-if step time"] == (fmt_s(base), "+0.00 %")


def test_hbm_capacity_changes_memory_headroom_not_time(small_app):
    at = small_app
    rp = _selected(at)
    at.select_slider(key="wi_hbm").set_value(0.25).run()
    _no_trouble(at)
    expected = simulate(_scaled_scenario(rp, hbm=0.25))
    assert expected.memory["capacity_bytes"] == pytest.approx(0.25 * rp.result["memory"]["capacity_bytes"])
    assert _metrics(at)["What-if step time"][0] == fmt_s(rp.result["step_time_s"])
    assert any("does not fit" in w.value for w in at.warning) == (not expected.memory["fits"])
    at.select_slider(key="wi_hbm").set_value(1.0).run()


def test_more_gpus_and_a_hand_set_degree(small_app):
    at = small_app
    rp = _selected(at)
    batch = rp.scenario["plan"]["global_batch"]
    at.number_input(key="wi_nodes").set_value(2)
    at.number_input(key="wi_batch").set_value(2 * batch).run()  # weak scaling: the same micro-batches per replica
    _no_trouble(at)
    d = scenario_to_dict(load_scenario(rp.scenario))
    d["cluster"]["nodes"], d["plan"]["global_batch"] = 2, 2 * batch
    d["plan"].pop("dp")
    expected = simulate(load_scenario(d))
    assert expected.scenario["plan"]["dp"] == 2 * rp.scenario["plan"]["dp"]
    assert _metrics(at)["What-if step time"][0] == fmt_s(expected.step_time_s)
    assert _metrics(at)["What-if tokens per second"][0] == fmt_tokens(expected.tokens_per_s)
    at.number_input(key="wi_nodes").set_value(1)
    at.number_input(key="wi_batch").set_value(batch).run()

    at.selectbox(key="wi_plan_tp").set_value(2 * rp.scenario["plan"]["tp"]).run()
    _no_trouble(at)
    assert not at.info  # nothing else had to move
    d = scenario_to_dict(load_scenario(rp.scenario))
    d["plan"]["tp"] *= 2
    d["plan"].pop("dp")
    assert at.selectbox(key="wi_plan_dp").value == rp.scenario["plan"]["dp"] // 2  # dp follows the GPU count
    assert _metrics(at)["What-if step time"][0] == fmt_s(simulate(load_scenario(d)).step_time_s)
    at.button(key="wi_reset").click().run()
    assert at.selectbox(key="wi_plan_tp").value == rp.scenario["plan"]["tp"]
    assert _metrics(at)["What-if step time"] == (fmt_s(rp.result["step_time_s"]), "+0.00 %")


def test_invalid_combination_is_a_readable_error_not_a_traceback(small_app):
    at = small_app
    assert 5 not in at.selectbox(key="wi_plan_pp").options  # 5 does not divide 8 GPUs: not offered
    at.number_input(key="wi_batch").set_value(33).run()  # 33 sequences over dp 8: no micro-batch helps
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("Global batch: 33 is not divisible by dp(8)") and "Traceback" not in message
    at.number_input(key="wi_batch").set_value(32).run()
    _no_trouble(at)


def test_slow_rank_and_jitter_slow_the_step(small_app):
    at = small_app
    rp = _selected(at)
    at.select_slider(key="wi_slow_factor").set_value(2.0).run()
    _no_trouble(at)
    expected = _simulated(rp, slow_ranks={0: 2.0})
    assert _metrics(at)["What-if step time"][0] == fmt_s(expected.step_time_s)
    assert expected.step_time_s > rp.result["step_time_s"]
    at.select_slider(key="wi_slow_factor").set_value(1.0)
    at.slider(key="wi_jitter").set_value(0.1)
    at.number_input(key="wi_steps").set_value(3).run()
    _no_trouble(at)
    expected = _simulated(rp, jitter=0.1, steps=3)
    assert any(f"over 3 step(s): mean {fmt_s(expected.distribution['mean_s'])}" in c.value for c in at.caption)
    assert _metrics(at)["What-if step time"][0] == fmt_s(expected.step_time_s)
    at.slider(key="wi_jitter").set_value(0.0).run()


def test_custom_model_errors_in_the_sidebar():
    at = _app()
    at.radio(key="model_source").set_value("custom").run()
    at.number_input(key="c_hidden").set_value(2050).run()  # 2050 is not divisible by 16 heads
    assert not at.exception
    assert any(e.value.startswith("Hidden: 2050") for e in at.sidebar.error)  # the widget's name
    at.number_input(key="c_hidden").set_value(1024)
    at.number_input(key="c_layers").set_value(4)
    at.number_input(key="c_ffn").set_value(4096)
    at.number_input(key="c_seq").set_value(512)
    at.number_input(key="nodes").set_value(1)
    at.number_input(key="global_batch").set_value(16).run()
    assert not at.sidebar.error
    at.button(key="run_planner").click().run()
    _no_trouble(at)
    assert _selected(at).scenario["model"]["layers"] == 4


def test_model_too_big_for_the_cluster_says_so():
    at = _app(preset="gpt2-small", nodes=1, global_batch=32)
    at.selectbox(key="preset").set_value("gpt3-175b")
    at.number_input(key="global_batch").set_value(8)
    at.button(key="run_planner").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "does not fit" in at.error[0].value


def test_scaling_sweep_and_compare(small_app):
    at = small_app
    at.button(key="scaling_run").click().run()
    _no_trouble(at)
    sweep = next(d.value for d in at.dataframe if "mode" in d.value.columns)
    assert set(sweep["mode"]) == {"strong", "weak"}
    ok = sweep[sweep["error"] == ""]
    assert len(ok) >= 4
    plans = at.dataframe[0].value
    here = ok[ok["nodes"] == SMALL["nodes"]]
    assert list(here["tokens_per_s"]) == [plans["tokens_per_s"][0]] * 2  # this size: the table's best plan
    weak = ok[ok["mode"] == "weak"]
    assert list(weak["global_batch"]) == [SMALL["global_batch"] * n // SMALL["nodes"] for n in weak["nodes"]]
    assert set(ok[ok["mode"] == "strong"]["global_batch"]) == {SMALL["global_batch"]}
    assert "mfu" not in sweep.columns  # MFU in percent, as everywhere on the page
    assert list(here["mfu_pct"]) == [pytest.approx(plans["mfu_pct"][0])] * 2
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    scaling = [sp for sp in specs if sp.get("encoding", {}).get("x", {}).get("field") == "gpus"]
    assert len(scaling) == 2
    for sp in scaling:  # log-log or linear-linear, never a log GPU axis against a linear one
        x, y = (sp["encoding"][a].get("scale", {}).get("type", "linear") for a in ("x", "y"))
        assert x == y

    at.selectbox(key="cmp_b").set_value(1).run()
    _no_trouble(at)
    table = next(d.value for d in at.dataframe if "B vs A" in d.value.columns)
    row = table[table[""] == "step_time_s"].iloc[0]
    assert row["plan A"] == fmt_s(plans["step_time_s"][0]) and row["plan B"] == fmt_s(plans["step_time_s"][1])


def test_downloads_are_offered(small_app):
    at = small_app
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Scenario (YAML)" in labels and "Chrome trace (JSON)" in labels
    assert "megatron config" in labels and "torchtitan config" in labels


# --- helpers of simplan.dashboard ------------------------------------------------------------

PIPE = {"model": {"preset": "gpt2-small"}, "hardware": "a100-sxm-80gb", "cluster": {"nodes": 1},
        "plan": {"tp": 2, "pp": 2, "micro_batch": 1, "global_batch": 16, "recompute": "full"}}


def test_gantt_blocks_draw_the_schedule():
    r = simulate(load_scenario(PIPE), trace=True)
    blocks = gantt_blocks(r.trace, r.step_time_s)
    assert set(blocks["lane"]) == {"stage 0", "stage 1"}
    assert blocks["end_ms"].max() == pytest.approx(r.step_time_s * 1e3, rel=1e-9)
    micro_batches = 16 // 2  # global batch / dp
    for stage in (0, 1):
        lane = blocks[blocks["stage"] == stage].sort_values("start_ms")
        for kind in ("forward", "backward", "recompute"):
            assert sorted(lane[lane["kind"] == kind]["microbatch"]) == list(range(micro_batches))
        # one compute stream: blocks never overlap
        assert (lane["start_ms"].values[1:] >= lane["end_ms"].values[:-1] - 1e-9).all()
    # 1F1B: the last stage starts later than the first (the pipeline fill, a bubble)
    first = blocks[(blocks["kind"] == "forward") & (blocks["microbatch"] == 0)].set_index("stage")["start_ms"]
    assert first[1] > first[0]
    comm = gantt_blocks(r.trace, r.step_time_s, comm_lanes=True)
    assert {"stage 0 · tp", "stage 0 · pp", "stage 0 · dp"} <= set(comm["lane"])


def test_what_if_variant_goes_through_the_library():
    base = scenario_to_dict(load_scenario(PIPE))
    same = variant(base, WhatIf())
    assert scenario_to_dict(same) == base
    faster = variant(base, WhatIf(scales={"nic_bw": 2.0, "flops": 1.5}))
    assert faster.hardware.nic_bytes_per_s == 2 * same.hardware.nic_bytes_per_s
    assert faster.hardware.peak("bf16") == 1.5 * same.hardware.peak("bf16")
    assert variant(base, WhatIf(nodes=2)).plan.dp == 2 * same.plan.dp
    with pytest.raises(SimplanError, match="not divisible"):
        variant(base, WhatIf(plan={"tp": 3}))
    with pytest.raises(SimplanError, match="must be > 0"):
        variant(base, WhatIf(scales={"flops": 0.0}))
    assert resimulate(base).step_time_s == simulate(load_scenario(PIPE)).step_time_s
