"""The plan space: every valid way to split one model over one cluster, with user constraints.

Dimensions (issue 5): the factorizations GPUs = dp x tp x pp x cp (ep splits the
data-parallel ranks of a mixture-of-experts model), micro-batch sizes (the divisors of the
per-replica batch), schedules (gpipe, 1f1b, interleaved-1f1b with every virtual-stage count
v for which the layers split evenly into pp * v chunks, as Megatron-LM's
--num-layers-per-virtual-pipeline-stage requires; zero-bubble), recomputation (none,
selective, full), sequence parallelism with tp > 1, ZeRO stages 0-3, all-reduce or a
parameter server, and rank placement (tensor-parallel groups inside a node first, or
data-parallel ranks innermost).

Every plan yielded passes ``simplan.plan.validate.problems`` by construction (tests check
it), so the search never builds an invalid plan. Pipelines of one stage get one schedule
(they are all the same there); placement is varied only where it moves ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import product
from typing import Iterator

from simplan.errors import SimplanError
from simplan.model.spec import ModelSpec
from simplan.plan.plan import DP_SYNC, PRECISIONS, RECOMPUTE, SCHEDULES, Plan
from simplan.plan.validate import FLAG_NAMES, MAX_MICRO_BATCHES, scale_problems

@dataclass(frozen=True, kw_only=True)
class Constraints:
    """What the user fixed. ``None`` leaves a dimension free; a value or a tuple of values
    restricts it (``tp=8``, ``schedule=("1f1b", "interleaved-1f1b")``)."""

    tp: int | tuple[int, ...] | None = None
    pp: int | tuple[int, ...] | None = None
    dp: int | tuple[int, ...] | None = None
    cp: int | tuple[int, ...] | None = None
    ep: int | tuple[int, ...] | None = None
    micro_batch: int | tuple[int, ...] | None = None
    virtual_stages: int | tuple[int, ...] | None = None
    schedule: str | tuple[str, ...] | None = None
    recompute: str | tuple[str, ...] | None = None
    sequence_parallel: bool | tuple[bool, ...] | None = None
    zero_stage: int | tuple[int, ...] | None = None
    dp_sync: str | tuple[str, ...] | None = None
    tp_inside_node: bool | tuple[bool, ...] | None = None
    max_tp: int | None = None
    max_pp: int | None = None
    max_cp: int | None = None
    max_micro_batch: int | None = None
    precision: str | None = None
    """One precision per search (None: the search picks the profile's best 16-bit type)."""
    dp_overlap: bool = True
    """Gradient reduction overlapped with the last backward (Plan.dp_overlap)."""
    layouts: tuple[tuple[int, int, int, int], ...] | None = None
    """Only these (tp, pp, dp, micro_batch) combinations (e.g. the measured ones of a
    benchmark); None: all."""

    def flags(self) -> list[str]:
        """The constraints that are set, as the CLI spells them (for messages)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("precision", "dp_overlap") or value is None:
                continue
            out.append(f"--{f.name.replace('_', '-')} {_show(value)}")
        return out


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _as_tuple(value) -> tuple | None:
    if value is None:
        return None
    return value if isinstance(value, tuple) else (value,)


_MAX_DIVIDEND = 2**40
"""divisors() walks up to sqrt(n): 2^20 steps at most. The sanity bounds keep every number
the space divides (GPUs <= 2^20, global batch <= 2^24) far below it."""


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` in increasing order (pairs d, n/d up to sqrt(n))."""
    if n > _MAX_DIVIDEND:
        raise SimplanError(f"{n} is too large to enumerate its divisors (limit {_MAX_DIVIDEND:,})")
    low, high = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            low.append(d)
            if d * d != n:
                high.append(n // d)
        d += 1
    return low + high[::-1]


def check_constraints(c: Constraints) -> None:
    """Reject values no plan can have (the message names the flag and the value)."""
    for name in ("tp", "pp", "dp", "cp", "ep", "micro_batch", "virtual_stages"):
        for v in _as_tuple(getattr(c, name)) or ():
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise SimplanError(f"--{name.replace('_', '-')}: must be an integer >= 1, got {v!r}")
    for name in ("max_tp", "max_pp", "max_cp", "max_micro_batch"):
        v = getattr(c, name)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise SimplanError(f"--{name.replace('_', '-')}: must be an integer >= 1, got {v!r}")
    for name, choices in (("schedule", SCHEDULES), ("recompute", RECOMPUTE), ("dp_sync", DP_SYNC)):
        for v in _as_tuple(getattr(c, name)) or ():
            if v not in choices:
                raise SimplanError(f"--{name.replace('_', '-')}: {v!r} is not one of {', '.join(choices)}")
    for v in _as_tuple(c.zero_stage) or ():
        if v not in (0, 1, 2, 3) or isinstance(v, bool):
            raise SimplanError(f"--zero-stage: must be 0..3, got {v!r}")
    if c.precision is not None and c.precision not in PRECISIONS:
        raise SimplanError(f"--precision: {c.precision!r} is not one of {', '.join(PRECISIONS)}")


# --- the unconstrained dimensions, each with the filter a constraint applies ------------------------

def _degrees(model: ModelSpec, gpus: int, global_batch: int) -> Iterator[tuple[int, int, int, int]]:
    """(tp, cp, pp, dp) with tp * cp * pp * dp = gpus that the model's shape allows."""
    blocks = model.layers
    for tp in divisors(gpus):
        if tp > 1 and not model.is_transformer:
            continue
        if model.is_transformer and (model.heads % tp or model.ffn_hidden % tp
                                     or (model.kv_heads % tp and tp % model.kv_heads)):
            continue
        for cp in divisors(gpus // tp):
            if cp > 1 and (not model.is_transformer or model.seq_len % cp):
                continue
            for pp in divisors(gpus // (tp * cp)):
                if pp > blocks + 2:
                    continue
                dp = gpus // (tp * cp * pp)
                if global_batch % dp:
                    continue
                yield tp, cp, pp, dp


def _schedules(pp: int, layers: int, micro_batches: int) -> list[tuple[str, int]]:
    if pp == 1:
        return [("1f1b", 1)]
    out = [("gpipe", 1), ("1f1b", 1)]
    if micro_batches % pp == 0 and layers % pp == 0:
        # layers % (pp * v) == 0 exactly when v divides layers / pp
        out += [("interleaved-1f1b", v) for v in divisors(layers // pp) if v >= 2]
    out.append(("zero-bubble", 1))
    return out


@dataclass(frozen=True)
class SpaceCount:
    """How many plans survive each constraint, in the order they are applied."""

    total: int
    after: tuple[tuple[str, int], ...]


_FILTERS = ("tp", "max_tp", "cp", "max_cp", "pp", "max_pp", "dp", "ep", "layouts", "micro_batch", "max_micro_batch",
            "schedule", "virtual_stages", "recompute", "sequence_parallel", "zero_stage", "dp_sync", "tp_inside_node")


def _passes(c: Constraints, name: str, p: Plan) -> bool:
    if name.startswith("max_"):
        limit = getattr(c, name)
        return limit is None or getattr(p, name[4:]) <= limit
    if name == "layouts":
        return c.layouts is None or (p.tp, p.pp, p.dp, p.micro_batch) in c.layouts
    allowed = _as_tuple(getattr(c, name))
    return allowed is None or getattr(p, name) in allowed


def all_plans(model: ModelSpec, gpus: int, global_batch: int, precision: str | None = "bf16",
              dp_overlap: bool = True, constraints: Constraints | None = None) -> Iterator[Plan]:
    """Every valid plan that satisfies ``constraints`` (None: unconstrained), in a fixed
    order. Constraints prune whole subtrees (a fixed tp skips every other tp's plans)."""
    c = constraints or Constraints()
    found = scale_problems(gpus, global_batch, model.seq_len, names=FLAG_NAMES)
    if found:  # before any enumeration: a typo such as --gpus 10**30 must not start one
        raise SimplanError("; ".join(found))

    def ok(name: str, value) -> bool:
        if name.startswith("max_"):
            limit = getattr(c, name)
            return limit is None or value <= limit
        allowed = _as_tuple(getattr(c, name))
        return allowed is None or value in allowed

    for tp, cp, pp, dp in _degrees(model, gpus, global_batch):
        if not (ok("tp", tp) and ok("max_tp", tp) and ok("cp", cp) and ok("max_cp", cp) and ok("pp", pp)
                and ok("max_pp", pp) and ok("dp", dp)):
            continue
        eps = [1]
        if model.is_moe:
            eps = [e for e in divisors(model.experts) if (dp * cp) % e == 0]
        for ep, mb in product(eps, divisors(global_batch // dp)):
            if not (ok("ep", ep) and ok("micro_batch", mb) and ok("max_micro_batch", mb)):
                continue
            if c.layouts is not None and (tp, pp, dp, mb) not in c.layouts:
                continue
            m = global_batch // (dp * mb)
            if m > MAX_MICRO_BATCHES:  # validate.problems refuses it: keep every plan valid
                continue
            # selective recomputation re-runs attention cores: models without attention have none
            recomputes = RECOMPUTE if model.is_transformer else ("none", "full")
            for (schedule, v), recompute in product(_schedules(pp, model.layers, m), recomputes):
                if not (ok("schedule", schedule) and ok("virtual_stages", v) and ok("recompute", recompute)):
                    continue
                sps = (False, True) if tp > 1 and model.seq_len % tp == 0 else (False,)
                replicas = dp * cp
                zeros = [0] + ([1] if replicas > 1 else []) + ([2, 3] if replicas > 1 and pp == 1 else [])
                for sp, zero in product(sps, zeros):
                    if not (ok("sequence_parallel", sp) and ok("zero_stage", zero)):
                        continue
                    syncs = ["allreduce"] + (["parameter-server"] if replicas > 1 and zero == 0 else [])
                    places = (True, False) if tp > 1 and dp > 1 else (True,)
                    for sync, inside in product(syncs, places):
                        if not (ok("dp_sync", sync) and ok("tp_inside_node", inside)):
                            continue
                        yield Plan(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=mb, global_batch=global_batch,
                                   schedule=schedule, virtual_stages=v, recompute=recompute,
                                   sequence_parallel=sp, zero_stage=zero, dp_sync=sync, precision=precision or "bf16",
                                   dp_overlap=dp_overlap, tp_inside_node=inside)


def plans(model: ModelSpec, gpus: int, global_batch: int, constraints: Constraints) -> list[Plan]:
    """The plans that satisfy ``constraints``. An empty result raises SimplanError naming
    the constraint that emptied the space (or, unconstrained, why no plan exists)."""
    check_constraints(constraints)
    c = constraints
    survivors = list(all_plans(model, gpus, global_batch, c.precision, c.dp_overlap, c))
    if survivors:
        return survivors
    # empty: find the constraint that emptied the space (the slow, unpruned walk)
    counts = {name: 0 for name in _FILTERS}
    total = 0
    for p in all_plans(model, gpus, global_batch, c.precision, c.dp_overlap):
        total += 1
        for name in _FILTERS:
            if not _passes(c, name, p):
                break
            counts[name] += 1
    if total == 0:
        raise SimplanError(_why_no_plan(model, gpus, global_batch))
    emptied = next(name for name in _FILTERS if counts[name] == 0)
    value = getattr(c, emptied)
    flag = f"--{emptied.replace('_', '-')} {_show(value)}" if emptied != "layouts" else "layouts"
    earlier = [f for f in _FILTERS[:_FILTERS.index(emptied)] if getattr(c, f) is not None]
    context = f" (after {', '.join(earlier)})" if earlier else ""
    raise SimplanError(f"constraint {flag} leaves no valid plan{context}: {_hint(emptied, model, gpus, global_batch)}")


def _hint(name: str, model: ModelSpec, gpus: int, global_batch: int) -> str:
    degrees = list(_degrees(model, gpus, global_batch))
    if name in ("tp", "max_tp"):
        return f"valid tp for {gpus} GPUs and {model.heads} heads: {sorted({d[0] for d in degrees})}"
    if name in ("pp", "max_pp"):
        return f"valid pp: {sorted({d[2] for d in degrees})}"
    if name in ("cp", "max_cp"):
        return f"valid cp: {sorted({d[1] for d in degrees})} (cp must divide seq_len {model.seq_len})"
    if name == "dp":
        return f"valid dp: {sorted({d[3] for d in degrees})} (dp must divide GPUs and global batch {global_batch})"
    if name in ("micro_batch", "max_micro_batch"):
        return (f"the micro-batch must divide global batch {global_batch} / dp and leave at most "
                f"{MAX_MICRO_BATCHES:,} micro-batches")
    if name == "ep":
        return "ep needs a mixture-of-experts model and must divide experts and dp * cp"
    if name in ("schedule", "virtual_stages"):
        return ("pipeline schedules need pp > 1; interleaved-1f1b needs micro-batches divisible by pp and "
                f"layers ({model.layers}) divisible by pp * virtual_stages")
    if name == "zero_stage":
        return "ZeRO needs dp * cp > 1; stages 2 and 3 need pp = 1"
    if name == "sequence_parallel":
        return "sequence parallelism needs tp > 1 and seq_len divisible by tp"
    if name == "dp_sync":
        return "a parameter server needs dp * cp > 1 and zero_stage 0"
    if name == "tp_inside_node":
        return "placement varies only with tp > 1 and dp > 1"
    return "no measured layout is a valid plan here"


def _why_no_plan(model: ModelSpec, gpus: int, global_batch: int) -> str:
    return (f"no valid plan for {model.name} on {gpus} GPUs with global batch {global_batch}: "
            "dp = GPUs / (tp * pp * cp) "
            f"must divide the global batch, tp must divide heads ({model.heads}), pp * virtual_stages <= layers "
            f"({model.layers}) + 2 and global batch / (dp * micro_batch) <= {MAX_MICRO_BATCHES:,}")
