"""simplan what-if dashboard: `make app` (streamlit run app.py).

Pick a model and a cluster, let the planner rank the plans, then look at one plan's
simulated step (timeline, memory, breakdown) and ask "what if": faster links, more
GPUs, another plan degree, a slow rank. Every number comes from the library
(``simplan.search``, ``simplan.sim.simulate``); this file only lays them out.
"""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from simplan.dashboard import charts
from simplan.dashboard import plan_edit as pe
from simplan.dashboard.format import fmt_band, fmt_delta, fmt_gib, fmt_pct, fmt_s, fmt_tokens, md_escape
from simplan.dashboard.gantt import gantt_blocks
from simplan.dashboard.planner import RankedPlan, heading, plan_label, plans_frame, request, run_planner
from simplan.dashboard.scaling import node_counts, scaling_frame, scaling_rows
from simplan.dashboard.whatif import SCALES, WhatIf, deltas, parse_slow_rank, resimulate
from simplan.errors import SimplanError
from simplan.hardware.load import hardware_names, load_hardware
from simplan.model import load_model, model_names
from simplan.model.spec import FAMILIES
from simplan.report.export import FORMATS as EXPORTS
from simplan.report.export import export
from simplan.scenario import load_scenario

DEFAULT_MODEL = "gpt3-13b"  # small enough that the planner answers in a few seconds, big enough for pipelines
DEFAULT_HARDWARE = "a100-sxm-80gb"
DEFAULT_NODES = 4
DEFAULT_GLOBAL_BATCH = 128
TOP_K = 16
FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)
SLOW_FACTORS = (1.0, 1.1, 1.25, 1.5, 2.0, 3.0)
APP_TITLE = "simplan: parallel training plans, simulated"


# --- cached library calls -------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner="Simulating the step with a trace…")
def timeline(scenario_json: str, sizes: tuple[int, ...]) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """A ranked plan simulated again on its partition with a trace: its StepResult JSON and
    the Gantt blocks without and with the communication streams (the trace itself, 10^5
    events for a large plan, is not kept)."""
    r = resimulate(json.loads(scenario_json), sizes, trace=True)
    return (r.to_json(), gantt_blocks(r.trace, r.step_time_s),
            gantt_blocks(r.trace, r.step_time_s, comm_lanes=True))


@st.cache_data(max_entries=64, show_spinner=False)  # the page shows its own spinner (with what it runs)
def whatif_result(scenario_json: str, sizes: tuple[int, ...], whatif_json: str, jitter: float,
                  slow_json: str, steps: int) -> dict:
    slow = {int(k): v for k, v in json.loads(slow_json).items()}
    return resimulate(json.loads(scenario_json), sizes, WhatIf(**json.loads(whatif_json)), jitter=jitter,
                      slow_ranks=slow, steps=steps).to_json()


@st.cache_data(max_entries=2, show_spinner=False)
def trace_bytes(scenario_json: str, sizes: tuple[int, ...]) -> bytes:
    """The Chrome trace file of a ranked plan (simulated when the download is clicked)."""
    from simplan.sim.trace import write_trace

    r = resimulate(json.loads(scenario_json), sizes, trace=True)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.json"
        write_trace(r.trace, path)
        return path.read_bytes()


def key_of(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def show_error(message: str, where=None) -> None:
    """A library message in the page's words (``plan_edit.plain``), as plain text: escaped,
    so that "tp*pp*cp" or "micro_batch" never turn into italics."""
    (where or st).error(md_escape(pe.plain(message)))


# --- sidebar: what to plan ------------------------------------------------------------------

def model_section() -> dict:
    source = st.sidebar.radio("Model", ("preset", "custom"), horizontal=True, key="model_source")
    if source == "preset":
        names = model_names()
        preset = st.sidebar.selectbox("Preset", names, index=names.index(DEFAULT_MODEL), key="preset")
        spec = load_model(preset)
        seq = st.sidebar.number_input("Sequence length", min_value=1, value=spec.seq_len, step=128,
                                      key=f"seq_len::{preset}")
        return {"preset": preset} if seq == spec.seq_len else {"preset": preset, "seq_len": int(seq)}
    c1, c2 = st.sidebar.columns(2)
    family = c1.selectbox("Family", [f for f in FAMILIES if f not in ("resnet", "vit")], key="c_family")
    layers = c2.number_input("Layers", min_value=1, value=24, key="c_layers")
    hidden = c1.number_input("Hidden", min_value=1, value=2048, step=128, key="c_hidden")
    heads = c2.number_input("Heads", min_value=1, value=16, key="c_heads")
    kv_heads = c1.number_input("KV heads", min_value=1, value=16, key="c_kv_heads")
    ffn = c2.number_input("FFN hidden", min_value=1, value=8192, step=256, key="c_ffn")
    vocab = c1.number_input("Vocabulary", min_value=1, value=51200, key="c_vocab")
    seq = c2.number_input("Sequence length", min_value=1, value=2048, step=128, key="c_seq")
    section = {"family": family, "layers": int(layers), "hidden": int(hidden), "heads": int(heads),
               "kv_heads": int(kv_heads), "ffn_hidden": int(ffn), "vocab": int(vocab), "seq_len": int(seq)}
    if family == "moe":
        section["experts"] = int(c1.number_input("Experts", min_value=1, value=8, key="c_experts"))
        section["top_k"] = int(c2.number_input("Top-k", min_value=1, value=2, key="c_top_k"))
    load_model(section)  # a SimplanError here is shown in the sidebar
    return section


def sidebar_request() -> dict | None:
    """The planner request the sidebar describes, or None (with the reason shown) if it is invalid."""
    st.sidebar.title("simplan")
    ok = True
    try:
        model = model_section()
    except SimplanError as e:
        show_error(str(e), st.sidebar)
        ok = False
    names = hardware_names()
    hw = st.sidebar.selectbox("Hardware profile", names, index=names.index(DEFAULT_HARDWARE), key="hardware")
    try:
        default_gpn = load_hardware(hw).gpus_per_node
    except SimplanError as e:
        show_error(str(e), st.sidebar)
        ok, default_gpn = False, 8
    c1, c2 = st.sidebar.columns(2)
    nodes = c1.number_input("Nodes", min_value=1, value=DEFAULT_NODES, key="nodes")
    gpn = c2.number_input("GPUs per node", min_value=1, value=default_gpn, key=f"gpus_per_node::{hw}")
    batch = st.sidebar.number_input("Global batch (sequences)", min_value=1, value=DEFAULT_GLOBAL_BATCH,
                                    key="global_batch")
    st.sidebar.caption(f"{int(nodes) * int(gpn)} GPUs of {hw}")
    return request(model, hw, int(nodes), int(gpn), int(batch)) if ok else None


# --- the planner ----------------------------------------------------------------------------

@st.cache_resource
def planner_runs() -> dict:
    """Planner results by request, shared by every session (a search is pure)."""
    return {}


@st.cache_resource
def planner_lock() -> threading.Lock:
    """One search at a time: the planner keeps its worker state in a module global."""
    return threading.Lock()


def planner_run(req: dict, progress=None):
    """The planner's answer to ``req`` (from the shared cache when it was asked before);
    without ``progress``, a progress bar shows while it searches."""
    runs, key = planner_runs(), key_of(req)
    if key not in runs:
        bar = st.progress(0.0, text="Planning…") if progress is None else None
        try:
            with planner_lock():
                run = run_planner(req, top_k=TOP_K, progress=progress or (
                    lambda f, text: bar.progress(f, text=f"Planning… {text}")))
        finally:
            if bar is not None:
                bar.empty()
        if len(runs) >= 64:
            runs.pop(next(iter(runs)))
        runs[key] = run
    return runs[key]


def on_table_pick(table_key: str, pick_key: str) -> None:
    rows = st.session_state[table_key].selection.rows
    if rows:
        st.session_state[pick_key] = rows[0]


def ranked_table(run, req_key: str) -> int:
    """The sortable table of ranked plans; returns the selected plan's index."""
    frame = plans_frame(run.plans)
    table_key, pick_key = f"plans_table::{req_key}", f"plan_pick::{req_key}"
    st.dataframe(
        frame, hide_index=True, on_select=lambda: on_table_pick(table_key, pick_key),
        selection_mode="single-row", key=table_key,
        column_config={
            "step_time_s": st.column_config.NumberColumn("step time (s)", format="%.4f"),
            "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
            "mfu_pct": st.column_config.NumberColumn("MFU (%)", format="%.2f"),
            "mem_gib_per_gpu": st.column_config.NumberColumn("memory/GPU (GiB)", format="%.2f"),
        })
    labels = [plan_label(i + 1, rp.scenario) for i, rp in enumerate(run.plans)]
    return st.selectbox("Selected plan (or click a row)", range(len(labels)), format_func=labels.__getitem__,
                        key=pick_key)


# --- one plan --------------------------------------------------------------------------------

def band_caption(col, result: dict) -> None:
    """The prediction's error band under its step time (when the profile is calibrated)."""
    band = fmt_band(result.get("step_time_band_s"))
    if band is None:
        return
    hw = result["scenario"]["hardware"]
    col.caption(md_escape(f"likely {band} measured"),
                help=md_escape(f"Where the measured step time is expected to fall: the prediction divided by 1 + the "
                               f"90th and 10th percentiles of the relative errors of the {hw} profile on published "
                               f"runs (calibration.step_time_error)."))


def result_metrics(r: dict) -> None:
    mem = r["memory"]
    c = st.columns(5)
    c[0].metric("Step time", fmt_s(r["step_time_s"]))
    band_caption(c[0], r)
    c[1].metric("Tokens per second", fmt_tokens(r["tokens_per_s"]))
    c[2].metric("MFU", fmt_pct(r["mfu"]))
    c[3].metric("Memory per GPU", fmt_gib(mem["peak_bytes_per_gpu"]), help=f"capacity {fmt_gib(mem['capacity_bytes'])}")
    c[4].metric("Fits in memory", "yes" if mem["fits"] else "no")


def plan_view(rp: RankedPlan) -> None:
    scenario, sizes = rp.scenario, rp.sizes
    sj = key_of(scenario)
    result, compute_blocks, all_blocks = timeline(sj, sizes)
    result_metrics(result)
    st.subheader("Timeline of the simulated step")
    st.caption("Data-parallel replica 0, one row per pipeline stage (hover a block for its micro-batch). "
               "With the communication streams, pipeline sends are red stripes.")
    comm = st.toggle("Show communication streams", key="gantt_comm")
    st.altair_chart(charts.gantt_chart(all_blocks if comm else compute_blocks), width="stretch")
    left, right = st.columns(2)
    with left:
        st.subheader("Memory per GPU")
        st.altair_chart(charts.memory_chart(result), width="stretch")
    with right:
        st.subheader("Step-time breakdown")
        st.altair_chart(charts.breakdown_chart(result), width="stretch")
    if scenario["plan"]["pp"] > 1:
        st.subheader("Peak memory per pipeline stage")
        st.altair_chart(charts.stage_memory_chart(result), width="stretch")
    downloads(rp, sj)


def downloads(rp: RankedPlan, sj: str) -> None:
    scenario = rp.scenario
    st.subheader("Downloads")
    if not rp.uniform:
        st.caption(f"This plan's layers are balanced over the pipeline chunks ({list(rp.sizes)} units per chunk); "
                   "the scenario file keeps that split in `plan.partition`.")
    c = st.columns(5)
    c[0].download_button("Scenario (YAML)", yaml.safe_dump(scenario, sort_keys=False), "scenario.yaml",
                         "application/x-yaml", key="dl_scenario", on_click="ignore")
    c[1].download_button("Chrome trace (JSON)", lambda: trace_bytes(sj, rp.sizes), "trace.json", "application/json",
                         key="dl_trace", on_click="ignore")
    notes = []
    for col, fmt, name in zip(c[2:], EXPORTS, ("megatron_args.sh", "torchtitan.toml", "deepspeed.json")):
        try:
            out = export(load_scenario(scenario), fmt)
        except SimplanError as e:
            col.caption(md_escape(f"{fmt}: {pe.plain(str(e))}"))
            continue
        col.download_button(f"{fmt} config", out.text, name, "text/plain", key=f"dl_{fmt}", on_click="ignore")
        notes += [f"{fmt}: {n}" for n in out.notes]
    if notes:
        with st.expander("Notes on the launch configs"):
            st.markdown("\n".join(f"- {md_escape(n)}" for n in notes))


# --- what-if ---------------------------------------------------------------------------------

@st.cache_resource(max_entries=16)
def editor_frame(model_json: str, gpus_per_node: int, base_nodes: int) -> pe.Frame:
    """What the plan editor checks against (the model, the node size, the largest cluster)."""
    return pe.Frame(model=load_model(json.loads(model_json)), gpus_per_node=gpus_per_node,
                    max_nodes=pe.MAX_NODES_FACTOR * base_nodes)


def frame_of(scenario: dict) -> pe.Frame:
    return editor_frame(key_of(scenario["model"]), scenario["cluster"]["gpus_per_node"],
                        scenario["cluster"]["nodes"])


def reset_whatif(scenario: dict, force: bool = False) -> None:
    """Put the what-if widgets back on the baseline when another plan is selected (or on request)."""
    sj = key_of(scenario)
    # widgets that were not drawn in a run (no plan to show) lose their state: start again then
    keys = [f"wi_{k}" for k in SCALES] + ["wi_nodes", "wi_batch", "wi_jitter", "wi_steps", "wi_slow_rank",
                                          "wi_slow_factor"] + [f"wi_plan_{f}" for f in pe.KEPT]
    if st.session_state.get("wi_base") == sj and not force and all(k in st.session_state for k in keys):
        return
    st.session_state["wi_base"] = sj
    for key in SCALES:
        st.session_state[f"wi_{key}"] = 1.0
    st.session_state["wi_nodes"] = scenario["cluster"]["nodes"]
    st.session_state["wi_batch"] = scenario["plan"]["global_batch"]
    for field in pe.KEPT:
        st.session_state[f"wi_plan_{field}"] = scenario["plan"][field]
    st.session_state["wi_notes"] = []
    st.session_state["wi_jitter"] = 0.0
    st.session_state["wi_steps"] = 1
    st.session_state["wi_slow_rank"] = 0
    st.session_state["wi_slow_factor"] = 1.0


def editor_plan() -> tuple[dict, int]:
    """The plan the what-if widgets describe (the editor's fields and the global batch) and the node count."""
    ss = st.session_state
    plan = {field: ss[f"wi_plan_{field}"] for field in pe.KEPT}
    plan["global_batch"] = int(ss["wi_batch"])
    return plan, int(ss["wi_nodes"])


def on_plan_edit(field: str, scenario: dict) -> None:
    """A what-if widget changed: derive dp (or, for dp, the node count), move the adjustable
    fields the change invalidates, and keep a note of every move for the page."""
    ss = st.session_state
    frame = frame_of(scenario)
    plan, nodes = editor_plan()
    if field == "dp":
        nodes = pe.nodes_for_dp(plan, plan["dp"], frame)
        ss["wi_nodes"] = nodes
    plan, notes = pe.resolve(plan, nodes, frame, field if field in pe.KEPT else None)
    for f in pe.KEPT:
        ss[f"wi_plan_{f}"] = plan[f]
    ss["wi_notes"] = [n.text() for n in notes]


def plan_editor(scenario: dict) -> tuple[dict, int]:
    """The what-if plan and cluster widgets; each plan widget lists the values that run
    with the others (``plan_edit.options``). Returns the plan and the node count."""
    frame = frame_of(scenario)
    plan, nodes = editor_plan()
    fields = [f for f in pe.EDITABLE if f != "ep" or frame.model.is_moe]
    first = ["nodes", "global_batch"] + [f for f in fields if f in ("tp", "pp", "dp", "cp", "ep")]
    second = [f for f in fields if f not in first]
    gpn = scenario["cluster"]["gpus_per_node"]
    for field in fields:
        # written every run, so the browser is sent the value even when the list of options
        # changed under it (a selectbox whose options change falls back to its first option)
        st.session_state[f"wi_plan_{field}"] = plan[field]
    for row in (first, second):
        for col, field in zip(st.columns(max(len(first), len(second))), row):
            if field == "nodes":
                col.number_input(f"Nodes (× {gpn} GPUs)", min_value=1, key="wi_nodes",
                                 on_change=on_plan_edit, args=("nodes", scenario))
            elif field == "global_batch":
                col.number_input(pe.label("global_batch"), min_value=1, key="wi_batch",
                                 on_change=on_plan_edit, args=("global_batch", scenario))
            else:
                col.selectbox(pe.label(field), pe.options(field, plan, nodes, frame), key=f"wi_plan_{field}",
                              format_func=lambda v, f=field: pe.show(f, v), on_change=on_plan_edit,
                              args=(field, scenario))
    c = st.columns([4, 1])
    c[0].caption("Every list offers the values that run with the others: a change that needs another "
                 "field moved (ZeRO-2/3 with pipelines, the interleaved schedule's virtual stages, ...) moves "
                 "it and says so below.")
    c[1].button("Back to the selected plan", key="wi_reset", on_click=reset_whatif, args=(scenario, True))
    for note in st.session_state.get("wi_notes", []):
        st.info(md_escape(note), icon=":material/info:")
    return plan, nodes


def whatif_view(rp: RankedPlan) -> None:
    scenario = rp.scenario
    reset_whatif(scenario)
    base_plan = scenario["plan"]
    st.caption("Each change re-simulates the selected plan at once; deltas are against it.")
    cols = st.columns(len(SCALES))
    scales = {}
    for col, (key, label) in zip(cols, SCALES.items()):
        scales[key] = col.select_slider(label, FACTORS, format_func=lambda v: f"×{v:g}", key=f"wi_{key}")
    plan, nodes = plan_editor(scenario)
    c = st.columns(4)
    jitter = c[0].slider("Per-operation jitter (coefficient of variation)", 0.0, 0.3, step=0.01, key="wi_jitter")
    steps = c[1].number_input("Steps to sample (with jitter)", min_value=1, max_value=50, key="wi_steps")
    slow_rank = c[2].number_input("Slow rank", min_value=0, key="wi_slow_rank")
    slow_factor = c[3].select_slider("Slow rank runs slower by", SLOW_FACTORS, format_func=lambda v: f"×{v:g}",
                                     key="wi_slow_factor")
    variability = jitter > 0 or slow_factor > 1
    if variability:
        st.caption("Jitter and slow ranks simulate the data-parallel replicas (slower than one).")
    found = pe.check(plan, nodes, frame_of(scenario))
    if found:
        show_error("; ".join(found))
        return
    hand = {f: plan[f] for f in pe.KEPT if f != "dp" and plan[f] != base_plan[f]}
    w = WhatIf(scales=scales, nodes=None if nodes == scenario["cluster"]["nodes"] else nodes,
               global_batch=None if plan["global_batch"] == base_plan["global_batch"] else plan["global_batch"],
               plan=hand)
    steps = int(steps) if jitter > 0 else 1
    try:
        slow = parse_slow_rank(int(slow_rank), float(slow_factor), nodes * scenario["cluster"]["gpus_per_node"])
        base = rp.result
        what = " and ".join(x for x in ("jitter" if jitter > 0 else "", "a slow rank" if slow else "") if x)
        text = (f"Simulating {steps} step(s) with {what} over the data-parallel replicas…" if variability
                else "Re-simulating…")
        with st.spinner(text, show_time=variability):
            new = whatif_result(key_of(scenario), rp.sizes, key_of(asdict(w)), float(jitter), key_of(slow), steps)
    except SimplanError as e:
        show_error(str(e))
        return
    d = deltas(base, new)
    c = st.columns(4)
    for col, key, label, fmt, inverse in ((c[0], "step_time_s", "What-if step time", fmt_s, True),
                                          (c[1], "tokens_per_s", "What-if tokens per second", fmt_tokens, False),
                                          (c[2], "mfu", "What-if MFU", fmt_pct, False),
                                          (c[3], "peak_bytes_per_gpu", "What-if memory per GPU", fmt_gib, True)):
        _, value, rel = d[key]
        col.metric(label, fmt(value), fmt_delta(rel),
                   delta_color=("inverse" if inverse else "normal") if rel else "off")
    band_caption(c[0], new)
    if not new["memory"]["fits"]:
        st.warning(f"The what-if plan does not fit: {fmt_gib(new['memory']['peak_bytes_per_gpu'])} per GPU "
                   f"> {fmt_gib(new['memory']['capacity_bytes'])}")
    if "distribution" in new:
        dist = new["distribution"]
        st.caption(f"Step-time distribution over {dist['steps']} step(s): mean {fmt_s(dist['mean_s'])}, "
                   f"p50 {fmt_s(dist['p50_s'])}, p99 {fmt_s(dist['p99_s'])}, min {fmt_s(dist['min_s'])}, "
                   f"max {fmt_s(dist['max_s'])}")
    st.caption(f"re-simulated in {new['sim_wall_s']:.2f} s ({new['events']:,} events)")
    st.altair_chart(charts.compare_breakdown_chart(base, new, ("baseline", "what-if")), width="stretch")


# --- scaling ---------------------------------------------------------------------------------

def scaling_view(req: dict) -> None:
    counts = node_counts(req["cluster"]["nodes"])
    gpn = req["cluster"]["gpus_per_node"]
    st.caption(f"Best plan at {', '.join(str(n * gpn) for n in counts)} GPUs: strong scaling keeps the global "
               f"batch, weak scaling grows it with the GPU count.")
    store = st.session_state.setdefault("scaling", {})
    key = key_of(req)
    if st.button("Run scaling sweep", key="scaling_run"):
        bar = st.progress(0.0, text="Scaling sweep…")
        store[key] = scaling_rows(req, counts, planner_run,
                                  progress=lambda f, text: bar.progress(f, text=f"Scaling sweep… {text}"))
        bar.empty()
    if key not in store:
        return
    df = scaling_frame(store[key])
    ok = df[df["error"] == ""]
    if len(ok):
        c = st.columns(2)
        c[0].altair_chart(charts.scaling_chart(ok, "tokens_per_s", "tokens/s", log=True), width="stretch")
        c[1].altair_chart(charts.scaling_chart(ok, "mfu_pct", "MFU (%)", log=False), width="stretch")
    st.dataframe(df, hide_index=True, column_config={
        "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
        "mfu_pct": st.column_config.NumberColumn("MFU (%)", format="%.2f %%"),
        "step_time_s": st.column_config.NumberColumn("step time (s)", format="%.4f"),
    })


# --- compare ---------------------------------------------------------------------------------

def compare_view(run) -> None:
    if len(run.plans) < 2:
        st.info("The planner found one plan only.")
        return
    labels = [plan_label(i + 1, rp.scenario) for i, rp in enumerate(run.plans)]
    c = st.columns(2)
    a = c[0].selectbox("Plan A", range(len(labels)), index=0, format_func=labels.__getitem__, key="cmp_a")
    b = c[1].selectbox("Plan B", range(len(labels)), index=1, format_func=labels.__getitem__, key="cmp_b")
    sa, ra, sb, rb = run.plans[a].scenario, run.plans[a].result, run.plans[b].scenario, run.plans[b].result
    rows = []
    for key, (va, vb, rel) in deltas(ra, rb).items():
        fmt = {"step_time_s": fmt_s, "tokens_per_s": fmt_tokens, "mfu": fmt_pct, "peak_bytes_per_gpu": fmt_gib}[key]
        rows.append((key, fmt(va), fmt(vb), fmt_delta(rel)))
    for key in ("tp", "pp", "dp", "cp", "micro_batch", "schedule", "virtual_stages", "recompute",
                "sequence_parallel", "zero_stage", "dp_sync", "tp_inside_node"):
        rows.append((key, str(sa["plan"][key]), str(sb["plan"][key]), "" if sa["plan"][key] == sb["plan"][key] else "differs"))
    st.dataframe(pd.DataFrame(rows, columns=["", "plan A", "plan B", "B vs A"]), hide_index=True)
    st.altair_chart(charts.compare_breakdown_chart(ra, rb, ("plan A", "plan B")), width="stretch")


# --- page ------------------------------------------------------------------------------------

def main() -> None:
    st.set_page_config(page_title="simplan what-if", layout="wide")
    current = sidebar_request()
    run_clicked = st.sidebar.button("Run planner", type="primary", key="run_planner", disabled=current is None)
    if current is not None and (run_clicked or "request" not in st.session_state):
        st.session_state["request"] = current
    req = st.session_state.get("request")
    if req is None:
        st.title(APP_TITLE)
        return
    st.title(md_escape(heading(req)))
    if current is not None and current != req:
        st.info("The inputs changed since the last run: press **Run planner**.")
    try:
        run = planner_run(req)
    except SimplanError as e:
        st.error(md_escape(f"Planner: {pe.plain(str(e))}"))
        return
    if not run.plans:
        st.warning("The planner found no plan for these inputs.")
        return
    st.caption(f"{run.considered:,} plans considered, {run.simulated} simulated, in {run.search_wall_s:.1f} s")
    pick = ranked_table(run, key_of(req))
    chosen = run.plans[min(pick, len(run.plans) - 1)]
    st.session_state["selected"] = chosen  # what the page shows (tests read it back)
    # tracked tabs (key + rerun) stay open across reruns, e.g. after "Run scaling sweep"
    tabs = st.tabs(["Selected plan", "What-if", "Scaling", "Compare"], key="view", on_change="rerun")
    try:
        with tabs[0]:
            plan_view(chosen)
        with tabs[1]:
            whatif_view(chosen)
        with tabs[2]:
            scaling_view(req)
        with tabs[3]:
            compare_view(run)
    except SimplanError as e:
        show_error(str(e))


main()
