"""simulate(): scenario -> lowered program -> SimPy engine -> StepResult."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace

import numpy as np

from simplan.cost.memory import memory_report
from simplan.errors import SimplanError, require
from simplan.model.graph import RECOMPUTED_KINDS
from simplan.plan.partition import plan_chunks
from simplan.plan.placement import rank_of
from simplan.plan.validate import problems
from simplan.sim import stragglers
from simplan.sim.engine import Engine
from simplan.sim.fold import extrapolate, fold_counts, with_micro_batches
from simplan.sim.lower import lower
from simplan.sim.result import BREAKDOWN_KEYS, StepResult, step_time_band_s

EXTRA_BREAKDOWN_KEYS = ("cp_comm_exposed", "ep_comm_exposed", "overhead")


def _slow_units(plan, slow_ranks: dict[int, float] | None) -> dict[tuple[int, int], float]:
    """Map slow global ranks to the (replica, stage) units that hold them; a unit (a
    tensor/context-parallel group in lockstep) runs at its slowest member's speed."""
    out: dict[tuple[int, int], float] = {}
    if not slow_ranks:
        return out
    where = {}
    for dp, pp, tp, cp in itertools.product(range(plan.dp), range(plan.pp), range(plan.tp), range(plan.cp)):
        where[rank_of(plan, tp=tp, cp=cp, dp=dp, pp=pp)] = (dp, pp)
    for rank, factor in slow_ranks.items():
        require(rank in where, f"slow_ranks: rank {rank} is outside the plan's {plan.gpus} ranks")
        require(factor >= 1.0, f"slow_ranks: factor for rank {rank} must be >= 1, got {factor}")
        unit = where[rank]
        out[unit] = max(out.get(unit, 1.0), factor)
    return out


@dataclass
class _Run:
    """What one engine run (or a folded pair of runs) found."""

    step_time_s: float
    breakdown_s: dict
    events: int
    engine: Engine | None
    segments_s: tuple[tuple[float, ...], ...] = ()
    """Per pipeline stage (of replica 0), its step between its meetings with the other
    replicas (``Unit.meets_s``), from the step's start to the stage's end."""


def _run(program, *, replicas: int = 1, jitter: float = 0.0, seed: int = 0, slow_units=None,
         trace: bool = False) -> _Run:
    engine = Engine(program, replicas=replicas, jitter=jitter, seed=seed, slow_units=slow_units, trace=trace)
    engine.run()
    critical = max(engine.units, key=lambda u: (u.end_s, -u.stage))
    breakdown = {k: float(critical.acc.get(k, 0.0)) for k in BREAKDOWN_KEYS + EXTRA_BREAKDOWN_KEYS}
    breakdown["overhead"] = program.step_overhead_s
    step = max(u.end_s for u in engine.units) + program.step_overhead_s
    segments = tuple(tuple(float(x) for x in np.diff([0.0, *u.meets_s, u.end_s + program.step_overhead_s]))
                     for u in engine.units if u.replica == 0)
    return _Run(step, breakdown, engine.env.events_scheduled, engine, segments)


def _deterministic(program, trace: bool, fold: bool) -> _Run:
    """One step without variability; folded over micro-batches (simplan.sim.fold) when
    that pays and no trace is asked for."""
    plan = program.plan
    counts = fold_counts(plan) if fold and not trace else None
    if counts is None:
        return _run(program, trace=trace)
    m1, m2 = counts
    r1, r2 = (_run(replace(program, plan=with_micro_batches(plan, m))) for m in counts)
    m = plan.micro_batches
    breakdown = {k: max(0.0, extrapolate(r1.breakdown_s[k], r2.breakdown_s[k], m1, m2, m)) for k in r1.breakdown_s}
    return _Run(extrapolate(r1.step_time_s, r2.step_time_s, m1, m2, m), breakdown, r1.events + r2.events, None)


def _sampled(program, jitter: float, seed: int, slow: dict, steps: int, trace: bool,
             progress) -> tuple[list[float], _Run, int]:
    """Steps of many replicas from a sample of single-replica runs (simplan.sim.stragglers):
    (step times, the slowest group's first run, events)."""
    groups_s, events, slowest = [], 0, None
    groups = stragglers.groups(program.plan.dp, slow)
    n = stragglers.SAMPLES if jitter > 0 else 1
    for g, group in enumerate(groups):
        runs = []
        for i in range(n):
            runs.append(_run(program, jitter=jitter, seed=_seed(seed, g, i), slow_units=group.slow_units,
                             trace=trace and i == 0))
            if progress:
                progress("sampled replicas", g * n + i + 1, len(groups) * n)
        groups_s.append((group.count, np.array([r.segments_s for r in runs])))
        events += sum(r.events for r in runs)
        mean = np.mean([r.step_time_s for r in runs])
        if slowest is None or mean > slowest[0]:
            slowest = (mean, runs[0])
    return stragglers.step_samples(groups_s, steps, seed), slowest[1], events


def _seed(seed: int, group: int, sample: int) -> int:
    return int(np.random.SeedSequence([seed, group, sample]).generate_state(1)[0])


def simulate(scenario, *, seed: int = 0, jitter: float = 0.0, steps: int = 1,
             slow_ranks: dict[int, float] | None = None, trace: bool = False, replicas: int | None = None,
             chunks=None, fold: bool = True, progress=None) -> StepResult:
    """Simulate ``steps`` optimizer steps of ``scenario``.

    ``jitter``: coefficient of variation of a per-operation lognormal slowdown (mean 1).
    ``slow_ranks``: {global rank: factor >= 1}. With either, the result carries a
    step-time distribution: up to ``stragglers.JOINT_REPLICAS`` data-parallel replicas are
    all simulated together, more are sampled (simplan.sim.stragglers). ``replicas`` forces
    the number simulated together (1 or plan.dp; tests use it to check symmetry and the
    sampling). ``chunks``: the layers of each pipeline chunk (default: the plan's
    partition). ``fold``: without variability, simulate a long step from two short ones
    (simplan.sim.fold; never with a trace). ``progress(phase, done, total)``: called as
    replicas or steps are simulated with variability.
    """
    from simplan.scenario import scenario_to_dict

    require(jitter >= 0, f"jitter: must be >= 0, got {jitter}")
    require(steps >= 1, f"steps: must be >= 1, got {steps}")
    plan, model, cluster = scenario.plan, scenario.model, scenario.cluster
    found = problems(plan, model, cluster.gpus)
    if found:
        raise SimplanError("; ".join(found))
    if replicas is not None and replicas not in (1, plan.dp):
        raise SimplanError(f"replicas: must be 1 or dp ({plan.dp}), got {replicas}")
    wall0 = time.perf_counter()
    graph = scenario.graph
    if chunks is None:
        chunks = plan_chunks(graph, plan)
    program = lower(graph, plan, cluster, chunks)
    slow = _slow_units(plan, slow_ranks)
    variability = jitter > 0 or bool(slow)
    if not variability and replicas in (None, 1):
        first = _deterministic(program, trace, fold)
        samples, events = [first.step_time_s] * steps, first.events
    elif replicas is None and plan.dp > stragglers.JOINT_REPLICAS:
        samples, first, events = _sampled(program, jitter, seed, slow, steps, trace, progress)
    else:
        runs = []
        for step in range(steps):
            runs.append(_run(program, replicas=replicas or plan.dp, jitter=jitter, seed=seed + step,
                             slow_units=slow, trace=trace and step == 0))
            if progress:
                progress("steps", step + 1, steps)
        samples, first, events = [r.step_time_s for r in runs], runs[0], sum(r.events for r in runs)
    step_time = float(np.mean(samples))
    tokens = plan.global_batch * model.seq_len
    model_flops = (graph.fwd_flops_per_sample + graph.bwd_flops_per_sample) * plan.global_batch
    hardware_flops = model_flops + _recompute_flops(graph, plan) * plan.global_batch
    peak = cluster.profile.peak(plan.precision)
    gpus = plan.gpus
    memory = memory_report(graph, plan, cluster.profile, chunks)
    distribution = None
    if variability or steps > 1:
        arr = np.array(samples)
        distribution = {"steps": steps, "mean_s": float(arr.mean()), "p50_s": float(np.percentile(arr, 50)),
                        "p99_s": float(np.percentile(arr, 99)), "min_s": float(arr.min()),
                        "max_s": float(arr.max()), "samples_s": [float(x) for x in arr]}
    result = StepResult(
        step_time_s=step_time,
        tokens_per_s=tokens / step_time,
        samples_per_s=plan.global_batch / step_time,
        model_flops_per_step=model_flops,
        hardware_flops_per_step=hardware_flops,
        model_tflops_per_gpu=model_flops / step_time / gpus / 1e12,
        hardware_tflops_per_gpu=hardware_flops / step_time / gpus / 1e12,
        mfu=model_flops / step_time / gpus / peak,
        memory=memory.to_json(),
        breakdown_s=first.breakdown_s,
        engine="simpy",
        events=events,
        sim_wall_s=time.perf_counter() - wall0,
        scenario=scenario_to_dict(scenario),
        step_time_band_s=step_time_band_s(step_time, cluster.profile.calibration),
        distribution=distribution,
    )
    if trace:
        from simplan.sim.trace import chrome_trace

        result.trace = chrome_trace(first.engine, first.step_time_s)
    return result


def _recompute_flops(graph, plan) -> float:
    """Per-sample FLOPs that recomputation adds (forward of the recomputed layers, or of
    their attention core only for selective recomputation)."""
    if plan.recompute == "none":
        return 0.0
    layers = [layer for layer in graph.order if layer.kind in RECOMPUTED_KINDS]
    if plan.recompute == "full":
        return sum(layer.fwd_flops for layer in layers)
    return sum(op.flops for layer in layers for op in layer.ops if op.kind == "attention")
