"""search(): the planner. Enumerate plans, prune by arithmetic and memory, rank by the fast
estimate, balance the pipeline stages, simulate the best ``top_k`` with the SimPy engine
and rank them by simulated step time.

    space.plans ─► estimate (memory, time; uniform partition) ─► fits? ─► rank
        ─► balanced partition for the leaders ─► exact memory_report ─► simulate top-K ─► rank

Work is split over a process pool (``workers``, default: every core); each task is a
pure function of its inputs and results are re-assembled in input order and sorted with
the plan itself as the tie-breaker, so the result does not depend on the number of
workers (tests/test_search.py checks it).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

from simplan.cost.memory import memory_report
from simplan.errors import SimplanError
from simplan.hardware.cluster import Cluster
from simplan.model.load import build_graph
from simplan.model.spec import ModelSpec
from simplan.plan.partition import balanced_sizes, from_sizes, uniform
from simplan.plan.plan import Plan
from simplan.plan.validate import FLAG_NAMES, scale_problems
from simplan.scenario import Scenario, scenario_to_dict
from simplan.search import space
from simplan.search.estimate import Estimate, Estimator, bounds_of, sizes_from_bounds
from simplan.search.pareto import pareto_front
from simplan.sim.result import BREAKDOWN_KEYS, StepResult

GIB = 2**30
Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): phases "estimate" and "simulate"."""

SIM_BUDGET_EVENTS = 4_500_000
"""Default SimPy events the planner spends simulating its top plans (~20 s of one core):
the README examples' 32 plans take 2.9 M (Llama-3 70B, 512 H100) and 4.3 M (GPT-3 175B,
1,024 A100); one Llama-3 405B plan on 16,384 H100 (128 stages x 512-1,024 micro-batches,
folded to 130 + 131: simplan.sim.fold) takes 2.3 M, so there the best two are simulated."""

LONG_SEQUENCE = 8192
"""Context parallelism is searched by default only from this sequence length on: it is
the long-context technique of Megatron-LM (``--context-parallel-size``) and NVIDIA NeMo
("context parallelism for long sequences"); below it the user can still ask (--max-cp)."""


@dataclass
class SearchResult:
    plans: list[tuple[Scenario, StepResult]]
    """Simulated plans, best (shortest simulated step) first."""
    considered: int
    """Valid candidate plans examined (memory check and, when they fit, the estimate)."""
    simulated: int
    """Candidates run through the SimPy engine."""
    search_wall_s: float
    pareto: list[dict]
    """Non-dominated plans of (step time, memory per GPU, cost per step)."""
    why: dict
    """The winner against the runner-up: time breakdown difference and plan differences."""
    fitting: int = 0
    """Candidates that fit in memory (by the fast estimate)."""
    partitions: list[tuple[int, ...]] = field(default_factory=list)
    """Per ranked plan: layer units per pipeline chunk (embedding and head count as units)."""
    uniform: list[bool] = field(default_factory=list)
    """Per ranked plan: whether that partition is Megatron-LM's uniform one, which is what a
    scenario file (and ``simplan simulate``) reproduces."""
    notes: list[str] = field(default_factory=list)
    """What the search assumed (default limits of the space, precision)."""
    price_per_gpu_hour: float | None = None

    @property
    def best(self) -> tuple[Scenario, StepResult]:
        return self.plans[0]

    def to_json(self) -> dict:
        """The ``simplan plan --json`` object (DESIGN.md): plans, considered, simulated,
        search_wall_s; plus pareto, why, partitions and notes."""
        plans = []
        for (scenario, result), sizes, uni in zip(self.plans, self.partitions, self.uniform):
            plans.append({"scenario": scenario_to_dict(scenario), "result": result.to_json(),
                          "partition": {"units_per_chunk": list(sizes), "uniform": uni},
                          "cost_per_step": cost_per_step(result.step_time_s, scenario.plan.gpus,
                                                         self.price_per_gpu_hour)})
        return {"plans": plans, "considered": self.considered, "simulated": self.simulated,
                "search_wall_s": self.search_wall_s, "fitting": self.fitting, "pareto": self.pareto,
                "why": self.why, "notes": self.notes, "price_per_gpu_hour": self.price_per_gpu_hour}


def cost_per_step(step_time_s: float, gpus: int, price_per_gpu_hour: float | None) -> float | None:
    """Rental cost of one optimizer step: GPUs x step time x hourly price / 3600 s."""
    if price_per_gpu_hour is None:
        return None
    return gpus * step_time_s * price_per_gpu_hour / 3600.0


_PLAN_FIELDS = tuple(f.name for f in fields(Plan))


def plan_key(plan: Plan) -> tuple:
    """A total order on plans (the tie-breaker that keeps rankings deterministic); read
    field by field (``asdict`` deep-copies, and the search sorts 10^5 plans)."""
    return tuple(str(getattr(plan, name)) for name in _PLAN_FIELDS)


# --- the process pool ------------------------------------------------------------------------

_STATE: dict = {}
"""What forked workers read: the estimator and the base scenario (set before the pool forks)."""


def _pool(workers: int):
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


def _map(fn, items: list, workers: int, progress: Progress | None, phase: str, chunk: int = 1) -> list:
    """``[fn(x) for x in items]`` over ``workers`` forked processes, in input order."""
    total = len(items)
    if workers <= 1 or total <= 1:
        out = []
        for i, x in enumerate(items):
            out.append(fn(x))
            if progress and (i + 1) % chunk == 0:
                progress(phase, i + 1, total)
        if progress:
            progress(phase, total, total)
        return out
    batches = [items[i:i + chunk] for i in range(0, total, chunk)]
    out, done = [], 0
    with _pool(min(workers, len(batches))) as pool:
        for batch_out in pool.map(_run_batch, [(fn, b) for b in batches]):
            out.extend(batch_out)
            done += len(batch_out)
            if progress:
                progress(phase, done, total)
    return out


def _simulate_in_order(items: list, workers: int, progress: Progress | None, budget_events: int) -> list[StepResult]:
    """Simulate ``items`` in order until the events simulated reach ``budget_events``: item i
    is simulated when items 0..i-1 took fewer events together (the first always), whatever
    the number of workers. A worker starts the next item only while the events spent plus
    those expected of the items in flight (the mean so far) stay under the budget, so little
    is simulated past it and nothing has to be killed (Pool.terminate can hang in a
    threaded host such as the dashboard's server)."""
    out: list[StepResult] = []
    if workers <= 1 or len(items) <= 1:
        for x in items:
            out.append(_simulate_task(x))
            if progress:
                progress("simulate", len(out), len(items))
            if sum(r.events for r in out) >= budget_events:
                break
    else:
        with _pool(min(workers, len(items))) as pool:
            futures: list = []
            while len(out) < len(items):
                spent = sum(r.events for r in out)
                if spent >= budget_events:
                    break
                mean = spent / len(out) if out else 0.0
                while (len(futures) < len(items) and len(futures) - len(out) < workers
                       and (len(futures) == len(out) or spent + mean * (len(futures) - len(out)) < budget_events)):
                    futures.append(pool.submit(_simulate_task, items[len(futures)]))
                out.append(futures[len(out)].result())
                if progress:
                    progress("simulate", len(out), len(items))
            for f in futures[len(out):]:
                f.cancel()
    if progress:
        progress("simulate", len(items), len(items))
    return out


def _run_batch(args) -> list:
    fn, batch = args
    return [fn(x) for x in batch]


def _estimate_task(index: int) -> Estimate:
    return _STATE["estimator"].estimate(_STATE["candidates"][index], time_hopeless=False)


def _simulate_task(item: tuple[Plan, tuple[int, ...] | None]) -> StepResult:
    from simplan.sim import simulate

    plan, sizes = item
    base: Scenario = _STATE["base"]
    return simulate(replace(base, plan=_with_partition(plan, sizes)))


def _with_partition(plan: Plan, sizes: tuple[int, ...] | None) -> Plan:
    """The plan carrying its balanced partition (a uniform one stays implicit)."""
    return replace(plan, partition=tuple(sizes)) if sizes else plan


# --- the search ------------------------------------------------------------------------------

def resolve_constraints(model: ModelSpec, cluster: Cluster,
                        constraints: space.Constraints) -> tuple[space.Constraints, list[str]]:
    """Fill in the search's default limits where the user set nothing, and say so."""
    c, notes = constraints, []
    g = cluster.gpus_per_node
    if c.tp is None and c.max_tp is None:
        c = replace(c, max_tp=g)
        notes.append(f"tp <= {g} (GPUs per node; tensor parallelism inside a node, Narayanan et al. 2021, "
                     "Takeaway 1); widen with --max-tp")
    if c.cp is None and c.max_cp is None and model.is_transformer and model.seq_len < LONG_SEQUENCE:
        c = replace(c, max_cp=1)
        notes.append(f"cp = 1 (sequence {model.seq_len} < {LONG_SEQUENCE}: context parallelism is for long "
                     "sequences); widen with --max-cp")
    return c, notes


def default_precision(cluster: Cluster) -> str:
    """bf16 where the GPU has it, else fp16, else fp32 (V100 has no bf16)."""
    peaks = cluster.profile.peak_flops_per_s
    return next(p for p in ("bf16", "fp16", "fp32", "tf32") if p in peaks)


def search(model: ModelSpec, cluster: Cluster, global_batch: int, *, constraints: space.Constraints | None = None,
           top_k: int = 32, workers: int | None = None, progress: Progress | None = None,
           price_per_gpu_hour: float | None = None, hardware_ref: str | None = None,
           sim_budget_events: int | None = None) -> SearchResult:
    """The ``top_k`` fastest plans that fit, simulated and ranked (see the module docstring).

    ``constraints``: what the user fixed (``space.Constraints``); ``workers``: processes
    (default ``os.cpu_count()``); ``hardware_ref``: how scenarios name the hardware
    (default: the profile's name); ``price_per_gpu_hour`` adds the cost axis;
    ``sim_budget_events``: SimPy events the top plans may take together (the best by estimate
    first; at frontier scale one plan can take millions; default ``SIM_BUDGET_EVENTS``).
    """
    wall0 = time.perf_counter()
    if not (isinstance(global_batch, int) and not isinstance(global_batch, bool) and global_batch >= 1):
        raise SimplanError(f"--global-batch: must be an integer >= 1, got {global_batch!r}")
    if not (isinstance(top_k, int) and top_k >= 1):
        raise SimplanError(f"--top-k: must be an integer >= 1, got {top_k!r}")
    if price_per_gpu_hour is not None and not (price_per_gpu_hour >= 0 and math.isfinite(price_per_gpu_hour)):
        raise SimplanError(f"--price-per-gpu-hour: must be >= 0 and finite, got {price_per_gpu_hour}")
    sim_budget_events = SIM_BUDGET_EVENTS if sim_budget_events is None else sim_budget_events
    if not (isinstance(sim_budget_events, int) and sim_budget_events >= 1):
        raise SimplanError(f"--sim-budget: must be an integer >= 1 (events), got {sim_budget_events!r}")
    found = scale_problems(cluster.gpus, global_batch, model.seq_len, names=FLAG_NAMES)
    if found:
        raise SimplanError("; ".join(found))
    workers = (os.cpu_count() or 1) if workers is None else workers
    if not (isinstance(workers, int) and workers >= 1):
        raise SimplanError(f"--workers: must be an integer >= 1, got {workers!r}")
    constraints = constraints or space.Constraints()
    notes: list[str] = []
    if constraints.precision is None:
        constraints = replace(constraints, precision=default_precision(cluster))
        notes.append(f"precision {constraints.precision} (the best 16-bit type {cluster.profile.name} has)")
    elif constraints.precision not in cluster.profile.peak_flops_per_s:
        raise SimplanError(f"--precision: {constraints.precision} is not supported by {cluster.profile.name} "
                           f"(it has {', '.join(sorted(cluster.profile.peak_flops_per_s))})")
    constraints, limits = resolve_constraints(model, cluster, constraints)
    notes += limits

    candidates = space.plans(model, cluster.gpus, global_batch, constraints)
    graph = build_graph(model)
    base = Scenario(model=model, cluster=cluster, plan=candidates[0], hardware_ref=hardware_ref or cluster.profile.name)
    estimator = Estimator(graph, cluster)
    _STATE.update(estimator=estimator, base=base, candidates=candidates)

    # 1. the fast estimate of every candidate (uniform partition), in input order
    estimates = _map(_estimate_task, list(range(len(candidates))), workers, progress, "estimate", chunk=2000)
    fitting = [i for i, e in enumerate(estimates) if e.fits]
    # 2. candidates that do not fit uniformly but would on average: try a memory-aware partition
    rescued: dict[int, tuple[int, ...]] = {}
    rescuable = [i for i, e in enumerate(estimates)
                 if not e.fits and e.mean_bytes <= e.capacity_bytes and candidates[i].pp > 1]
    order = sorted(rescuable, key=lambda i: (estimates[i].step_time_s, plan_key(candidates[i])))
    fit_times = sorted(estimates[i].step_time_s for i in fitting)
    cutoff = fit_times[min(len(fit_times), 2 * top_k) - 1] if fit_times else math.inf
    for i in order:
        e = estimates[i]
        if e.step_time_s > cutoff or len(rescued) >= 4 * top_k:
            break
        sizes = _balanced(estimator, candidates[i], memory_limited=True)
        if sizes is not None:
            better = estimator.estimate(candidates[i], bounds_of(sizes))
            if better.fits:
                rescued[i] = sizes
                estimates[i] = better
    if not fitting and not rescued:
        raise SimplanError(_no_fit_message(model, cluster, global_batch, candidates, estimates, constraints))

    # 3. the leaders by estimate get a time-balanced partition where it beats the uniform one
    leaders = sorted(fitting + list(rescued), key=lambda i: (estimates[i].step_time_s, plan_key(candidates[i])))
    leaders = leaders[:3 * top_k]
    partition: dict[int, tuple[int, ...] | None] = {}
    for i in leaders:
        partition[i] = rescued.get(i)
        if i in rescued or candidates[i].pp == 1:
            continue
        sizes = _balanced(estimator, candidates[i], memory_limited=True)
        if sizes is not None:
            e = estimator.estimate(candidates[i], bounds_of(sizes))
            if e.fits and e.step_time_s < estimates[i].step_time_s * (1 - 1e-3):
                partition[i], estimates[i] = sizes, e
    leaders.sort(key=lambda i: (estimates[i].step_time_s, plan_key(candidates[i])))

    # 4. the exact memory model on the leaders, then simulate the top K that fit
    chosen = []
    for i in leaders:
        plan = candidates[i]
        chunks = from_sizes(graph, partition[i]) if partition[i] else uniform(graph, plan.pp * plan.virtual_stages)
        if memory_report(graph, plan, cluster.profile, chunks).fits:
            chosen.append(i)
        if len(chosen) == top_k:
            break
    results = _simulate_in_order([(candidates[i], partition[i]) for i in chosen], workers, progress, sim_budget_events)
    if len(results) < len(chosen):
        per_plan = sum(r.events for r in results) / len(results)
        notes.append(f"simulated the {len(results)} best of {len(chosen)} plans by estimate: the simulation budget of "
                     f"{sim_budget_events / 1e6:g} M events was spent ({per_plan / 1e6:.2g} M events per plan); "
                     "widen with --sim-budget")
        chosen = chosen[:len(results)]
    # equal step times: the plan needing less memory per GPU first, then the plan's fields
    ranked = sorted(zip(chosen, results), key=lambda x: (x[1].step_time_s, x[1].memory["peak_bytes_per_gpu"],
                                                         plan_key(candidates[x[0]])))

    plans = [(replace(base, plan=_with_partition(candidates[i], partition[i])), r) for i, r in ranked]
    sizes_out, uniform_out = [], []
    for i, _ in ranked:
        plan = candidates[i]
        uni = sizes_from_bounds(estimator.uniform_bounds(plan.pp * plan.virtual_stages))
        sizes_out.append(partition[i] or uni)
        uniform_out.append(partition[i] is None or tuple(partition[i]) == uni)
    result = SearchResult(plans=plans, considered=len(candidates), simulated=len(results),
                          search_wall_s=0.0, pareto=pareto_front(plans, price_per_gpu_hour),
                          why=explain(plans), fitting=len(fitting) + len(rescued), partitions=sizes_out,
                          uniform=uniform_out, notes=notes, price_per_gpu_hour=price_per_gpu_hour)
    result.search_wall_s = time.perf_counter() - wall0
    return result


def _balanced(estimator: Estimator, plan: Plan, memory_limited: bool) -> tuple[int, ...] | None:
    """The min-max partition of the plan's per-unit time, under each stage's memory limit
    (for one chunk per stage; interleaved plans are balanced on time alone)."""
    cost = estimator.unit_cost(plan)
    fits = None
    if memory_limited and plan.virtual_stages == 1:
        fits = _stage_fits(estimator, plan)
    return balanced_sizes(cost, plan.pp * plan.virtual_stages, fits)


def _stage_fits(estimator: Estimator, plan: Plan):
    """Vectorized test: would units [i, j) fit on stage c? Memory of a stage as the estimate
    counts it (model states, the schedule's micro-batches in flight, buffers), with the
    tied output embedding on the last stage."""
    import numpy as np

    from simplan.cost.memory import model_state_bytes
    from simplan.search.estimate import _C

    prefix, _ = estimator.table(plan)
    shard = plan.dp * plan.cp
    per = sum(model_state_bytes(1.0, plan.precision, plan.zero_stage, shard).values())
    per_e = sum(model_state_bytes(1.0, plan.precision, plan.zero_stage, max(shard // plan.ep, 1)).values())
    act = prefix[_C[f"act_{plan.recompute}"]]
    params = prefix[_C["params_dense"]] * per + prefix[_C["params_expert"]] * per_e
    held = estimator.held(plan)[:, :, 0].max(axis=1)  # micro-batches in flight per stage (v = 1)
    cap = estimator.hw.hbm_bytes
    spec = estimator.graph.spec
    tied = spec.vocab * spec.hidden / plan.tp * per if spec.tied_embeddings else 0.0
    working = 0.0
    if plan.recompute == "full":
        working = float(estimator.table(plan)[1][0].max())
    grad_b = model_state_bytes(1.0, plan.precision, 0, 1)["gradients"]
    from simplan.cost.memory import ACTIVATION_SCALE, DDP_BUCKET_BYTES

    sp_div = plan.tp if plan.sequence_parallel else 1
    pp_buf = 2 * estimator.out_bytes * plan.micro_batch * ACTIVATION_SCALE[plan.precision] / (plan.cp * sp_div)
    n = estimator.n

    def fits(c: int, i, j):
        i, j = np.asarray(i), np.asarray(j)
        states = params[j] - params[i]
        total = states + held[c] * (act[j] - act[i]) + working + pp_buf
        if shard > 1:
            total = total + (np.minimum(DDP_BUCKET_BYTES, states / per * grad_b) if plan.zero_stage < 3 else 0.0)
        if c == plan.pp - 1 and c > 0:
            total = total + tied * (j == n)
        return total <= cap

    return fits


# --- explanations ----------------------------------------------------------------------------

def dominant_overhead(result: StepResult) -> tuple[str, float]:
    """The largest part of the step that is not the model's own compute."""
    parts = {k: v for k, v in result.breakdown_s.items() if k != "compute"}
    key = max(sorted(parts), key=lambda k: parts[k])
    return key, parts[key]


def explain(plans: list[tuple[Scenario, StepResult]]) -> dict:
    """Why the winner wins: its time breakdown against the runner-up's, and what differs."""
    if not plans:
        return {}
    (s1, r1) = plans[0]
    if len(plans) == 1:
        return {"winner_step_time_s": r1.step_time_s, "summary": "only one plan was simulated"}
    (s2, r2) = plans[1]
    p1, p2 = asdict(s1.plan), asdict(s2.plan)
    differs = {k: {"winner": p1[k], "runner_up": p2[k]} for k in p1 if p1[k] != p2[k]}
    keys = [k for k in list(BREAKDOWN_KEYS) + sorted(set(r1.breakdown_s) - set(BREAKDOWN_KEYS))
            if r1.breakdown_s.get(k, 0.0) or r2.breakdown_s.get(k, 0.0)]
    diff = {k: {"winner_s": r1.breakdown_s.get(k, 0.0), "runner_up_s": r2.breakdown_s.get(k, 0.0),
                "delta_s": r1.breakdown_s.get(k, 0.0) - r2.breakdown_s.get(k, 0.0)} for k in keys}
    margin = r2.step_time_s - r1.step_time_s
    if margin <= 1e-12 * r2.step_time_s:
        return {"winner_step_time_s": r1.step_time_s, "runner_up_step_time_s": r2.step_time_s, "margin_s": margin,
                "plan_differences": differs, "breakdown_s": diff,
                "summary": "ties with the runner-up (" + ", ".join(
                    f"{k} {v['runner_up']}->{v['winner']}" for k, v in differs.items()) + "): the simulator sees no "
                           "difference in step time; " + _tie_break(r1, r2)}
    gains = sorted(diff.items(), key=lambda kv: kv[1]["delta_s"])
    wins = [f"{k} {-v['delta_s']:.3g} s less" for k, v in gains if v["delta_s"] < -1e-9][:3]
    losses = [f"{k} {v['delta_s']:.3g} s more" for k, v in reversed(gains) if v["delta_s"] > 1e-9][:2]
    changed = ", ".join(f"{k} {v['runner_up']}->{v['winner']}" for k, v in differs.items()) or "nothing"
    summary = (f"wins by {margin:.3g} s ({100 * margin / r2.step_time_s:.2f}%) over the runner-up ({changed}): "
               + "; ".join(wins + losses))
    return {"winner_step_time_s": r1.step_time_s, "runner_up_step_time_s": r2.step_time_s, "margin_s": margin,
            "plan_differences": differs, "breakdown_s": diff, "summary": summary}


def _tie_break(winner: StepResult, runner_up: StepResult) -> str:
    """How two plans of equal step time were ordered (search's ranking key)."""
    m1, m2 = winner.memory["peak_bytes_per_gpu"], runner_up.memory["peak_bytes_per_gpu"]
    if m1 < m2:
        return f"ranked by memory per GPU ({m1 / 2**30:.2f} GiB against {m2 / 2**30:.2f} GiB)"
    return "ranked by the plan's fields"


def _no_fit_message(model: ModelSpec, cluster: Cluster, global_batch: int, candidates: list[Plan],
                    estimates: list[Estimate], constraints: space.Constraints) -> str:
    """The smallest shortfall found and what would make the model fit."""
    i = min(range(len(candidates)), key=lambda k: (estimates[k].shortfall_bytes, plan_key(candidates[k])))
    p, e = candidates[i], estimates[i]
    hints, searched = [], []
    allowed_rc = space._as_tuple(constraints.recompute)
    if allowed_rc is not None and "full" not in allowed_rc:
        hints.append("full recomputation (--recompute full; the constraints exclude it)")
    else:
        searched.append("full recomputation")
    allowed_zero = space._as_tuple(constraints.zero_stage)
    if allowed_zero is not None and 3 not in allowed_zero:
        hints.append("ZeRO-3 (--zero-stage 3; the constraints exclude it)")
    else:
        searched.append("ZeRO-3")
    # model states shrink about linearly with the GPUs that shard them: a lower bound on the count needed
    need = cluster.gpus * e.peak_bytes / e.capacity_bytes
    nodes = math.ceil(need / cluster.gpus_per_node)
    hints.append(f"more GPUs (about {nodes * cluster.gpus_per_node} or more, if memory shrinks with the GPU count)")
    plan_text = (f"tp {p.tp} pp {p.pp} dp {p.dp} cp {p.cp} micro-batch {p.micro_batch} {p.schedule} "
                 f"recompute {p.recompute} zero {p.zero_stage}")
    return (f"memory: {model.name} does not fit on {cluster.gpus} x {cluster.profile.name} under any of "
            f"{len(candidates)} plans; the closest ({plan_text}) needs {e.peak_bytes / GIB:.2f} GiB per GPU, "
            f"{e.shortfall_bytes / GIB:.2f} GiB more than {e.capacity_bytes / GIB:.2f} GiB; it would fit with "
            + " or ".join(hints) + (f" ({' and '.join(searched)} were searched)" if searched else ""))
