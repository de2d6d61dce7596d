"""The what-if plan editor (issue 15): several plan fields changed at once, each widget
offering what runs with the others (``simplan.dashboard.plan_edit``, validity from
``simplan.plan.validate.problems`` only), adjusted fields named in a note, and errors in
the widgets' words, shown as plain text (not Markdown)."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from simplan.dashboard import plan_edit as pe
from simplan.dashboard.format import fmt_s, md_escape
from simplan.model import load_model
from simplan.plan.plan import Plan
from simplan.plan.validate import problems
from simplan.scenario import load_scenario, scenario_to_dict
from simplan.sim import simulate

APP = str(Path(__file__).resolve().parents[1] / "app.py")
MODEL = load_model("gpt3-13b")  # the page's default: 40 layers, 40 heads, on 4 nodes of 8 GPUs
FRAME = pe.Frame(model=MODEL, gpus_per_node=8, max_nodes=32)
ZERO3 = {"tp": 1, "pp": 1, "dp": 32, "cp": 1, "ep": 1, "micro_batch": 4, "global_batch": 128, "schedule": "1f1b",
         "virtual_stages": 1, "recompute": "none", "zero_stage": 3, "sequence_parallel": False,
         "dp_sync": "allreduce", "tp_comm_overlap": False}


def _library_problems(plan: dict, nodes: int) -> list[str]:
    """The library's verdict, asked directly (dp derived as a scenario file derives it)."""
    fields = {k: v for k, v in plan.items() if k in pe.KEPT + ("global_batch",)}
    gpus = nodes * FRAME.gpus_per_node
    fields["dp"] = gpus // (plan["tp"] * plan["pp"] * plan["cp"])
    return problems(Plan(**fields), MODEL, gpus)


# --- the pure editor ---------------------------------------------------------------------------

def test_zero3_plan_reaches_pp4_and_zero_moves_to_the_highest_allowed_stage():
    assert _library_problems({**ZERO3, "pp": 4}, 4)  # the dead end of a one-degree what-if
    plan, notes = pe.resolve({**ZERO3, "pp": 4}, 4, FRAME, "pp")
    assert (plan["pp"], plan["dp"], plan["zero_stage"]) == (4, 8, 1)  # ZeRO-2/3 do not combine with pp
    assert _library_problems(plan, 4) == []
    assert [n.field for n in notes] == ["zero_stage"]
    text = notes[0].text()
    assert text.startswith("ZeRO stage moved from 3 to 1") and "pp(4)" in text and "plan." not in text
    # the user's own choices never move: pp stays 4 even though zero_stage was the one asked last
    assert pe.options("zero_stage", plan, 4, FRAME) == [0, 1]


def test_every_offered_option_runs_after_its_adjustments():
    plan, _ = pe.resolve({**ZERO3, "tp": 2, "pp": 4}, 4, FRAME, "pp")
    for field in pe.EDITABLE:
        for value in pe.options(field, plan, 4, FRAME):
            nodes = pe.nodes_for_dp(plan, value, FRAME) if field == "dp" else 4
            fixed, _ = pe.resolve({**plan, field: value}, nodes, FRAME, field)
            assert fixed[field] == value
            assert _library_problems(fixed, nodes) == [], (field, value)
    assert 3 not in pe.options("tp", plan, 4, FRAME)  # 40 heads are not divisible by 3
    assert 5 not in pe.options("pp", plan, 4, FRAME)  # 5 does not divide 32 GPUs
    assert pe.options("dp", plan, 4, FRAME) == [1, 2, 4, 8, 16, 32]  # up to 32 nodes, dp | 128
    assert pe.options("sequence_parallel", {**ZERO3}, 4, FRAME) == [False]  # needs tp > 1


def test_interleaving_moves_the_virtual_stages_and_back():
    plan, _ = pe.resolve({**ZERO3, "pp": 4}, 4, FRAME, "pp")
    plan, notes = pe.resolve({**plan, "schedule": "interleaved-1f1b"}, 4, FRAME, "schedule")
    assert (plan["schedule"], plan["virtual_stages"]) == ("interleaved-1f1b", 2)
    assert [n.field for n in notes] == ["virtual_stages"]
    plan, notes = pe.resolve({**plan, "pp": 1}, 4, FRAME, "pp")  # two fields have to move together
    assert (plan["schedule"], plan["virtual_stages"]) == ("1f1b", 1)
    assert {n.field for n in notes} == {"schedule", "virtual_stages"}
    assert _library_problems(plan, 4) == []


def test_library_messages_name_the_widget():
    assert pe.plain("what-if: plan.zero_stage: 2 does not combine with pp(4) > 1") == \
        "ZeRO stage: 2 does not combine with pp(4) > 1"
    assert pe.plain("plan.global_batch: 100 is not divisible by dp(8) * micro_batch(4)") == \
        "Global batch: 100 is not divisible by dp(8) * micro-batch(4)"
    assert pe.plain("what-if: plan.dp: not given, and GPUs 24 are not divisible by tp*pp*cp = 16") == \
        "Nodes: 24 GPUs are not divisible by tp*pp*cp = 16"
    assert pe.plain("model.hidden: 2050 is not divisible by heads 16") == "Hidden: 2050 is not divisible by heads 16"


def test_escaped_messages_render_literally():
    message = "Nodes: 3 nodes x 8 GPUs = 24 GPUs are not divisible by tp*pp*cp = 8*4*1 = 32; ffn_hidden_x $1$ [a](b)"
    md = MarkdownIt("commonmark")
    assert "<em>" in md.render(message)  # what st.error would have shown without escaping
    html = md.render(md_escape(message))
    assert "<em>" not in html and "<a " not in html
    assert "tp*pp*cp = 8*4*1 = 32; ffn_hidden_x $1$ [a](b)" in html


# --- the page ----------------------------------------------------------------------------------

def _default_app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception and not at.error
    return at


def test_page_multi_degree_what_if_from_the_default_plan_reaches_pp4():
    at = _default_app()
    rp = at.session_state["selected"]
    at.selectbox(key="wi_plan_zero_stage").set_value(3).run()  # the plan that makes pp a dead end
    at.selectbox(key="wi_plan_tp").set_value(2).run()
    assert "4" in at.selectbox(key="wi_plan_pp").options  # (as the page prints them)
    at.selectbox(key="wi_plan_pp").set_value(4).run()
    assert not at.exception and not at.error
    assert at.selectbox(key="wi_plan_zero_stage").value == 1
    assert at.selectbox(key="wi_plan_dp").value == 4  # 32 GPUs / (tp 2 * pp 4)
    assert [i.value for i in at.info if i.value.startswith("ZeRO stage moved from 3 to 1")]
    d = scenario_to_dict(load_scenario(rp.scenario))
    d["plan"].update(tp=2, pp=4, zero_stage=1, partition=[])
    d["plan"].pop("dp")
    expected = simulate(load_scenario(d))
    shown = {m.label: m.value for m in at.metric}
    assert shown["What-if step time"] == fmt_s(expected.step_time_s)


def test_page_error_names_the_widget_and_shows_stars_literally():
    at = _default_app()
    at.selectbox(key="wi_plan_tp").set_value(8).run()
    at.selectbox(key="wi_plan_pp").set_value(4).run()  # dp 1: ZeRO moves to 0
    assert at.selectbox(key="wi_plan_zero_stage").value == 0
    at.number_input(key="wi_nodes").set_value(3).run()  # 24 GPUs for tp 8 * pp 4
    assert not at.exception
    assert len(at.error) == 1
    shown = at.error[0].value
    assert shown.startswith("Nodes: ")
    assert "plan." not in shown and "not given" not in shown
    html = MarkdownIt("commonmark").render(shown)  # what the browser renders from it
    assert "tp*pp*cp = 8*4*1 = 32" in html and "<em>" not in html
    at.number_input(key="wi_nodes").set_value(4).run()
    assert not at.error
