"""simulate(): scenario -> lowered program -> SimPy engine -> StepResult."""

from __future__ import annotations

import itertools
import time

import numpy as np

from simplan.cost.memory import memory_report
from simplan.errors import SimplanError, require
from simplan.model.graph import RECOMPUTED_KINDS
from simplan.plan.partition import plan_chunks
from simplan.plan.placement import rank_of
from simplan.plan.validate import problems
from simplan.sim.engine import Engine
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


def simulate(scenario, *, seed: int = 0, jitter: float = 0.0, steps: int = 1,
             slow_ranks: dict[int, float] | None = None, trace: bool = False, replicas: int | None = None,
             chunks=None) -> StepResult:
    """Simulate ``steps`` optimizer steps of ``scenario``.

    ``jitter``: coefficient of variation of a per-operation lognormal slowdown (mean 1).
    ``slow_ranks``: {global rank: factor >= 1}. With either, every data-parallel replica is
    simulated and the result carries a step-time distribution. ``replicas`` forces the
    number of simulated replicas (1 or plan.dp; tests use it to check symmetry).
    ``chunks``: the layers of each pipeline chunk (default: the plan's partition).
    """
    from simplan.scenario import scenario_to_dict

    require(jitter >= 0, f"jitter: must be >= 0, got {jitter}")
    require(steps >= 1, f"steps: must be >= 1, got {steps}")
    plan, model, cluster = scenario.plan, scenario.model, scenario.cluster
    found = problems(plan, model, cluster.gpus)
    if found:
        raise SimplanError("; ".join(found))
    wall0 = time.perf_counter()
    graph = scenario.graph
    if chunks is None:
        chunks = plan_chunks(graph, plan)
    program = lower(graph, plan, cluster, chunks)
    slow = _slow_units(plan, slow_ranks)
    variability = jitter > 0 or bool(slow)
    n_replicas = replicas if replicas is not None else (plan.dp if variability else 1)
    if replicas is not None and replicas not in (1, plan.dp):
        raise SimplanError(f"replicas: must be 1 or dp ({plan.dp}), got {replicas}")
    samples, events, engine = [], 0, None
    for step in range(steps):
        engine = Engine(program, replicas=n_replicas, jitter=jitter, seed=seed + step, slow_units=slow,
                        trace=trace and step == 0)
        engine.run()
        samples.append(max(u.end_s for u in engine.units) + program.step_overhead_s)
        events += engine.env.events_scheduled
        if step == 0:
            first = engine
    step_time = float(np.mean(samples))
    critical = max(first.units, key=lambda u: (u.end_s, -u.stage))
    breakdown = {k: float(critical.acc.get(k, 0.0)) for k in BREAKDOWN_KEYS + EXTRA_BREAKDOWN_KEYS}
    breakdown["overhead"] = program.step_overhead_s
    tokens = plan.global_batch * model.seq_len
    model_flops = (graph.fwd_flops_per_sample + graph.bwd_flops_per_sample) * plan.global_batch
    hardware_flops = model_flops + _recompute_flops(graph, plan) * plan.global_batch
    peak = cluster.profile.peak(plan.precision)
    gpus = plan.gpus
    memory = memory_report(graph, plan, cluster.profile, chunks)
    first_time = samples[0]
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
        breakdown_s=breakdown,
        engine="simpy",
        events=events,
        sim_wall_s=time.perf_counter() - wall0,
        scenario=scenario_to_dict(scenario),
        step_time_band_s=step_time_band_s(step_time, cluster.profile.calibration),
        distribution=distribution,
    )
    if trace:
        from simplan.sim.trace import chrome_trace

        result.trace = chrome_trace(first, first_time)
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
