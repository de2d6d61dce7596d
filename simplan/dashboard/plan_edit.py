"""The what-if plan editor: several plan fields changed at once, each widget offering only
the values that can run given the others.

``simplan.plan.validate.problems`` is the one validity rule; this module only asks it.
The parallel degrees (tp, pp, cp) are the user's: they are never moved. ``dp`` follows
the GPU count (GPUs / (tp * pp * cp)); choosing a ``dp`` chooses the node count. The
other fields (micro-batch, ZeRO stage, schedule and virtual stages, sequence parallelism,
expert parallelism, gradient sync) are *adjustable*: when a change leaves the plan with
problems that moving them removes, they move (fewest problems first, then the smallest
step from their value) and each move comes back as a note for the page to show.

Messages from the library name fields as ``plan.zero_stage``; :func:`plain` rewrites
them with the names of the page's widgets.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

from simplan.model.spec import ModelSpec
from simplan.plan.plan import DP_SYNC, PLAN_FIELDS, RECOMPUTE, SCHEDULES, Plan
from simplan.plan.validate import problems

EDITABLE = ("tp", "pp", "dp", "cp", "ep", "micro_batch", "schedule", "virtual_stages", "recompute", "zero_stage",
            "sequence_parallel", "dp_sync")
"""Plan fields the what-if editor shows, in page order."""
DEGREES = ("tp", "pp", "cp")
"""Never moved to make room for another change."""
GROUPS = (("micro_batch",), ("zero_stage", "dp_sync"), ("schedule", "virtual_stages"),
          ("sequence_parallel", "tp_comm_overlap"), ("ep",))
"""Adjustable fields, in the order they are tried; the fields of one group move together
(problems() ties them: virtual stages > 1 need the interleaved schedule and back,
tp_comm_overlap needs sequence parallelism, ZeRO does not combine with a parameter server)."""
KEPT = EDITABLE + ("tp_comm_overlap",)
"""The fields the editor keeps (the editable ones and what adjusting them can touch)."""
MAX_VIRTUAL_STAGES = 16
MAX_NODES_FACTOR = 8
"""A dp choice may grow the cluster up to this many times the baseline's nodes."""

LABELS = {
    "tp": "Tensor parallel (tp)",
    "pp": "Pipeline stages (pp)",
    "dp": "Data parallel (dp)",
    "cp": "Context parallel (cp)",
    "ep": "Expert parallel (ep)",
    "micro_batch": "Micro-batch (sequences)",
    "schedule": "Pipeline schedule",
    "virtual_stages": "Virtual stages per rank",
    "recompute": "Activation recompute",
    "zero_stage": "ZeRO stage",
    "sequence_parallel": "Sequence parallel",
    "dp_sync": "Gradient sync",
    "tp_comm_overlap": "TP communication overlap",
    "global_batch": "Global batch",
    "nodes": "Nodes",
    "partition": "Pipeline partition",
    "precision": "Precision",
}
"""Widget labels, also the names messages use for the fields."""
MODEL_LABELS = {"layers": "Layers", "hidden": "Hidden", "heads": "Heads", "kv_heads": "KV heads",
                "ffn_hidden": "FFN hidden", "vocab": "Vocabulary", "seq_len": "Sequence length",
                "experts": "Experts", "top_k": "Top-k", "family": "Family"}
"""The sidebar's custom-model labels."""
WORDS = {"micro_batch": "micro-batch", "micro_batches": "micro-batches", "virtual_stages": "virtual stages",
         "zero_stage": "ZeRO stage", "global_batch": "global batch", "sequence_parallel": "sequence parallel",
         "dp_sync": "gradient sync", "tp_comm_overlap": "TP communication overlap", "kv_heads": "KV heads",
         "ffn_hidden": "FFN hidden", "seq_len": "sequence length", "top_k": "top-k"}
"""Field names inside a message, in words."""


@dataclass(frozen=True)
class Frame:
    """What the editor's choices are checked against."""

    model: ModelSpec
    gpus_per_node: int
    max_nodes: int
    """The largest cluster a dp choice may ask for."""


@dataclass(frozen=True)
class Note:
    """One adjusted field: ``field`` moved from ``old`` to ``new`` because of ``reason``
    (a library message, raw)."""

    field: str
    old: object
    new: object
    reason: str

    def text(self) -> str:
        why = plain(self.reason)
        head, sep, rest = why.partition(": ")
        if sep and head == label(self.field):
            why = rest
        return (f"{label(self.field)} moved from {show(self.field, self.old)} to {show(self.field, self.new)} "
                f"to keep the plan valid: {why}")


def label(field: str) -> str:
    return LABELS.get(field, field)


def show(field: str, value: object) -> str:
    """A field's value as the widgets print it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if field == "zero_stage":
        return "off (0)" if value == 0 else str(value)
    return str(value)


# --- checking ----------------------------------------------------------------------------------

def nodes_problem(plan: dict, nodes: int, frame: Frame) -> str | None:
    """Why ``dp`` cannot be derived on ``nodes`` (None when GPUs / (tp * pp * cp) divides)."""
    gpus = nodes * frame.gpus_per_node
    tp, pp, cp = plan["tp"], plan["pp"], plan["cp"]
    if gpus % (tp * pp * cp):
        return (f"Nodes: {nodes} nodes x {frame.gpus_per_node} GPUs = {gpus} GPUs are not divisible by "
                f"tp*pp*cp = {tp}*{pp}*{cp} = {tp * pp * cp}")
    return None


def with_dp(plan: dict, nodes: int, frame: Frame) -> dict:
    """``plan`` with dp = GPUs / (tp * pp * cp) (unchanged when that does not divide)."""
    if nodes_problem(plan, nodes, frame) is None:
        return {**plan, "dp": nodes * frame.gpus_per_node // (plan["tp"] * plan["pp"] * plan["cp"])}
    return dict(plan)


def _plan(plan: dict) -> Plan:
    # the layer partition belongs to the baseline's pipeline shape: the what-if checks (and
    # simulates, see whatif.variant_dict) a changed shape on the uniform split
    return Plan(**{k: v for k, v in plan.items() if k in PLAN_FIELDS and k != "partition"})


@lru_cache(maxsize=1 << 16)
def _problems(plan: Plan, model: ModelSpec, gpus: int) -> tuple[str, ...]:
    return tuple(problems(plan, model, gpus))


def check(plan: dict, nodes: int, frame: Frame) -> list[str]:
    """Every problem of ``plan`` on ``nodes`` nodes: the library's messages (raw), or the
    one reason dp cannot be derived."""
    bad = nodes_problem(plan, nodes, frame)
    if bad is not None:
        return [bad]
    plan = with_dp(plan, nodes, frame)
    return list(_problems(_plan(plan), frame.model, nodes * frame.gpus_per_node))


# --- adjusting ---------------------------------------------------------------------------------

def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidates(field: str, plan: dict, nodes: int, frame: Frame) -> list:
    """The values ``field`` can take at all (problems() then says which run)."""
    m, gpus = frame.model, nodes * frame.gpus_per_node
    if field in ("tp", "pp", "cp"):
        return divisors(gpus)
    if field == "ep":
        return divisors(m.experts) if m.is_moe else [1]
    if field == "micro_batch":
        return divisors(plan["global_batch"])
    if field == "virtual_stages":
        return list(range(1, MAX_VIRTUAL_STAGES + 1))
    if field == "zero_stage":
        return [0, 1, 2, 3]
    if field == "schedule":
        return list(SCHEDULES)
    if field == "recompute":
        return list(RECOMPUTE)
    if field == "dp_sync":
        return list(DP_SYNC)
    if field in ("sequence_parallel", "tp_comm_overlap"):
        return [False, True]
    raise ValueError(f"plan editor: no candidates for {field!r}")


def _preference(field: str, current: object, values: list) -> list:
    """``values`` without ``current``, nearest first (numbers: by distance, then smaller;
    choices: in the library's order, 1F1B before the others)."""
    rest = [v for v in values if v != current]
    if field in ("micro_batch", "zero_stage", "virtual_stages", "ep"):
        return sorted(rest, key=lambda v: (abs(v - current), v))
    if field == "schedule":
        order = ("1f1b", "interleaved-1f1b", "zero-bubble", "gpipe")
        return sorted(rest, key=order.index)
    return rest


def _group_moves(group: tuple[str, ...], plan: dict, nodes: int, frame: Frame, fixed: set[str]) -> list[dict]:
    """The changes of one group's free fields, fewest fields changed first, then nearest."""
    free = [f for f in group if f not in fixed]
    if not free:
        return []
    options = [[plan[f]] + _preference(f, plan[f], candidates(f, plan, nodes, frame)) for f in free]
    moves = []
    for combo in itertools.product(*options):
        change = {f: v for f, v in zip(free, combo) if v != plan[f]}
        if change:
            moves.append(change)
    rank = {f: {v: i for i, v in enumerate(opts)} for f, opts in zip(free, options)}
    return sorted(moves, key=lambda c: (len(c), sum(rank[f][v] for f, v in c.items())))


def resolve(plan: dict, nodes: int, frame: Frame, changed: str | None = None) -> tuple[dict, list[Note]]:
    """``plan`` (the editor's fields and ``global_batch``) on ``nodes`` nodes with dp
    derived and, when it has problems, the adjustable fields other than ``changed`` moved
    until it has none (or no move removes one). Returns the plan and a note per moved field."""
    plan = with_dp(plan, nodes, frame)
    fixed = set(DEGREES) | {"dp"} | ({changed} if changed else set())
    start = dict(plan)
    found = check(plan, nodes, frame)
    reasons: dict[str, str] = {}
    while found:
        best = None
        for group in GROUPS:
            for change in _group_moves(group, plan, nodes, frame, fixed):
                after = check({**plan, **change}, nodes, frame)
                if len(after) < len(found) and (best is None or len(after) < len(best[1])):
                    best = (change, after)
                    if not after:
                        break
            if best is not None and not best[1]:
                break
        if best is None:
            break
        change, after = best
        gone = [p for p in found if p not in after]
        for f in change:
            reasons.setdefault(f, _reason_for(f, gone))
        plan = {**plan, **change}
        found = after
    notes = [Note(f, start[f], plan[f], reasons[f]) for f in KEPT if f in reasons and plan[f] != start[f]]
    return plan, notes


def _reason_for(field: str, gone: list[str]) -> str:
    """The removed problem that names ``field`` (else the first one removed)."""
    for p in gone:
        if re.match(rf"plan\.{field}\b", p):
            return p
    return gone[0] if gone else ""


def options(field: str, plan: dict, nodes: int, frame: Frame) -> list:
    """The values of ``field`` that give a plan without problems, after adjusting the
    adjustable fields (``plan[field]`` is always among them, valid or not)."""
    return list(_options(field, _key(plan), nodes, frame))


def _key(plan: dict) -> tuple:
    return tuple(sorted((k, plan[k]) for k in KEPT + ("global_batch",)))


@lru_cache(maxsize=4096)
def _options(field: str, key: tuple, nodes: int, frame: Frame) -> tuple:
    plan = dict(key)
    out = []
    if field == "dp":  # a dp asks for tp * pp * cp * dp GPUs: whole nodes, up to the frame's largest cluster
        mp, gpn = plan["tp"] * plan["pp"] * plan["cp"], frame.gpus_per_node
        for d in divisors(plan["global_batch"]):
            n = mp * d // gpn
            if (mp * d) % gpn == 0 and 1 <= n <= frame.max_nodes \
                    and not check(resolve({**plan, "dp": d}, n, frame, "dp")[0], n, frame):
                out.append(d)
        return tuple(sorted(set(out) | {plan["dp"]}))
    for v in candidates(field, plan, nodes, frame):
        if v == plan[field] or not check(resolve({**plan, field: v}, nodes, frame, field)[0], nodes, frame):
            out.append(v)
    if plan[field] not in out:
        out.append(plan[field])
    return tuple(sorted(out) if all(type(v) is int for v in out) else out)


def nodes_for_dp(plan: dict, dp: int, frame: Frame) -> int:
    """The node count that gives ``dp`` with the plan's tp, pp and cp."""
    return plan["tp"] * plan["pp"] * plan["cp"] * dp // frame.gpus_per_node


# --- messages ----------------------------------------------------------------------------------

_PREFIX = re.compile(r"^(?:what-if|scenario|planner|Planner): ")
_FIELD = re.compile(r"^(plan|model|cluster)\.(\w+)(?:\.\w+)*: ")
_NO_DP = re.compile(r"^plan\.dp: not given, and GPUs (\d+) are not divisible by tp\*pp\*cp = (\d+)$")
_WORD = re.compile(r"\b(" + "|".join(sorted(WORDS, key=len, reverse=True)) + r")\b")


def plain(message: str) -> str:
    """A library message in the page's words: each ``; ``-separated problem starts with
    the widget it is about (``plan.pp: ...`` -> ``Pipeline stages (pp): ...``), field names
    inside it are written out (micro_batch -> micro-batch). Plain text, not Markdown."""
    parts = []
    for part in message.split("; "):
        while _PREFIX.match(part):
            part = _PREFIX.sub("", part, count=1)
        m = _NO_DP.match(part)
        if m:  # load_plan's message when dp is left to the GPU count
            parts.append(f"Nodes: {m.group(1)} GPUs are not divisible by tp*pp*cp = {m.group(2)}")
            continue
        m = _FIELD.match(part)
        if m:
            section, field = m.groups()
            name = (MODEL_LABELS if section == "model" else LABELS).get(field)
            if name is None:
                name = {"gpus_per_node": "GPUs per node", "nodes": "Nodes"}.get(field, field.replace("_", " "))
            part = f"{name}: {part[m.end():]}"
        elif part.startswith("plan: "):
            part = "Plan degrees: " + part[len("plan: "):]
        elif part.startswith("slow rank: "):
            part = "Slow rank: " + part[len("slow rank: "):]
        head, sep, rest = part.partition(": ")
        parts.append(head + sep + _WORD.sub(lambda w: WORDS[w.group(1)], rest) if sep
                     else _WORD.sub(lambda w: WORDS[w.group(1)], part))
    return "; ".join(parts)
