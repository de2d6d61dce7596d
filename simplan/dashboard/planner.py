"""The dashboard's view of the planner (``simplan.search``) and of one ranked plan: a
request in, ranked plans out as plain data (normalized scenario, ``StepResult.to_json()``,
the layer partition), so they can be cached, tabulated and simulated again exactly as
the planner simulated them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from simplan.errors import require
from simplan.hardware.cluster import load_cluster
from simplan.hardware.load import load_hardware
from simplan.model import load_model
from simplan.scenario import Scenario
from simplan.units import GIB

PHASES = {"estimate": "estimating plans", "simulate": "simulating the best plans"}


@dataclass(frozen=True)
class RankedPlan:
    scenario: dict
    """The normalized scenario (``scenario_to_dict``)."""
    result: dict
    """``StepResult.to_json()`` as the planner simulated it."""
    sizes: tuple[int, ...]
    """Layer units per pipeline chunk (``simplan.plan.partition.from_sizes``)."""
    uniform: bool
    """Whether that partition is the uniform one a scenario file reproduces."""
    dominant_overhead: str


@dataclass(frozen=True)
class PlannerRun:
    plans: list[RankedPlan]
    """Best (shortest simulated step) first."""
    considered: int
    simulated: int
    search_wall_s: float
    notes: list[str]
    why: str


def request(model: dict, hardware: str, nodes: int, gpus_per_node: int, global_batch: int) -> dict:
    """What the sidebar asks the planner (a plain dict: the cache key)."""
    return {"model": model, "hardware": hardware, "cluster": {"nodes": nodes, "gpus_per_node": gpus_per_node},
            "global_batch": global_batch}


_FAMILY_TITLES = {"llama": "Llama", "gpt": "GPT", "mixtral": "Mixtral", "bert": "BERT", "vit": "ViT",
                  "resnet": "ResNet"}
_PRESET = re.compile(r"^(" + "|".join(_FAMILY_TITLES) + r")(\d*)-(.+)$")


def model_title(model: dict) -> str:
    """A request's model as people write it: preset "llama3-70b" -> "Llama-3 70B", a custom
    model by its family and size."""
    if "preset" in model:
        name = model["preset"]
        m = _PRESET.match(name)
        if m is None:
            return name
        family, version, rest = m.groups()
        size = rest[:-1] + "B" if re.fullmatch(r"[\d.x]+b", rest) else rest
        if family == "vit" or size == "xl":
            size = size.upper()
        title = _FAMILY_TITLES[family] + (f"-{version}" if version else "")
        return f"{title}-{size}" if family == "resnet" else f"{title} {size}"
    return f"custom {model.get('family', 'model')} ({model.get('layers', '?')} layers, hidden {model.get('hidden', '?')})"


def heading(req: dict) -> str:
    """The page heading for a request: "Llama-3 70B on 512 x h100-sxm-80gb"."""
    c = req["cluster"]
    return f"{model_title(req['model'])} on {c['nodes'] * c['gpus_per_node']} x {req['hardware']}"


def run_planner(req: dict, *, top_k: int = 16, workers: int | None = None,
                progress: Callable[[float, str], None] | None = None) -> PlannerRun:
    """Search the plans of ``req``; ``progress(fraction, text)`` is called as it goes.
    Raises SimplanError for a request the planner cannot serve."""
    from simplan.scenario import scenario_to_dict
    from simplan.search.search import dominant_overhead, search

    model = load_model(req["model"], where="model")
    cluster = load_cluster(req["cluster"], load_hardware(req["hardware"]))
    batch = req["global_batch"]
    require(isinstance(batch, int) and batch >= 1, f"global batch: must be an integer >= 1, got {batch!r}")

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            # the estimate is cheap per plan, the simulation is not: give each half the bar
            part = 0.0 if phase == "estimate" else 0.5
            progress(part + 0.5 * (done / total if total else 1.0), f"{PHASES.get(phase, phase)} {done}/{total}")

    res = search(model, cluster, batch, top_k=top_k, workers=workers, progress=report,
                 hardware_ref=req["hardware"])
    plans = [RankedPlan(scenario=scenario_to_dict(sc), result=r.to_json(), sizes=tuple(sizes), uniform=uni,
                        dominant_overhead=dominant_overhead(r)[0])
             for (sc, r), sizes, uni in zip(res.plans, res.partitions, res.uniform)]
    return PlannerRun(plans=plans, considered=res.considered, simulated=res.simulated,
                      search_wall_s=res.search_wall_s, notes=list(res.notes), why=res.why.get("summary", ""))


def plan_label(rank: int, scenario: dict) -> str:
    p = scenario["plan"]
    return (f"#{rank} tp{p['tp']} pp{p['pp']} dp{p['dp']}" + (f" cp{p['cp']}" if p["cp"] > 1 else "")
            + f" mb{p['micro_batch']} {p['schedule']}" + (f" v{p['virtual_stages']}" if p["virtual_stages"] > 1 else "")
            + (f" recompute-{p['recompute']}" if p["recompute"] != "none" else "")
            + (f" zero{p['zero_stage']}" if p["zero_stage"] else "")
            + (" sp" if p["sequence_parallel"] else "") + (" param-server" if p["dp_sync"] == "parameter-server" else "")
            + ("" if p["tp_inside_node"] else " dp-inner"))


def plans_frame(plans: list[RankedPlan]) -> pd.DataFrame:
    """One row per ranked plan: its degrees and the simulated figures."""
    rows = []
    for rank, rp in enumerate(plans, start=1):
        p, r = rp.scenario["plan"], rp.result
        rows.append({
            "rank": rank, "step_time_s": r["step_time_s"], "tokens_per_s": r["tokens_per_s"],
            "mfu_pct": 100 * r["mfu"], "mem_gib_per_gpu": r["memory"]["peak_bytes_per_gpu"] / GIB,
            "dominant_overhead": rp.dominant_overhead,
            "tp": p["tp"], "pp": p["pp"], "dp": p["dp"], "cp": p["cp"], "ep": p["ep"],
            "micro_batch": p["micro_batch"], "schedule": p["schedule"], "virtual_stages": p["virtual_stages"],
            "recompute": p["recompute"], "seq_parallel": p["sequence_parallel"], "zero": p["zero_stage"],
            "dp_sync": p["dp_sync"], "tp_inside_node": p["tp_inside_node"], "fits": r["memory"]["fits"],
            "uniform_partition": rp.uniform,
        })
    return pd.DataFrame(rows)
