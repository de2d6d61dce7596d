"""Rank placement: which GPU holds which (tp, cp, dp, pp) coordinate, which ranks form a
group, how a group lies across nodes, and what bandwidth a ring over it gets.

Order. Megatron-LM (``megatron/core/parallel_state.py``, ``RankGenerator`` with the default
order "tp-cp-ep-dp-pp") makes tensor parallelism fastest, then context, then data, then
pipeline parallelism, so a tensor-parallel group sits on consecutive GPUs of one node::

    rank = tp + TP * (cp + CP * (dp + DP * pp))          (plan.tp_inside_node = True)

``tp_inside_node = False`` puts data parallelism innermost instead (dp, tp, cp, pp).
Expert parallelism splits the data-parallel group: an ep group is a run of ``ep``
consecutive data-parallel indices (Megatron-LM's expert-data-parallel layout).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import product

from simplan.errors import SimplanError, require
from simplan.hardware.cluster import Cluster
from simplan.plan.plan import Plan

AXES = ("tp", "cp", "dp", "pp", "ep")
COORDS = ("tp", "cp", "dp", "pp")


def order(plan: Plan) -> tuple[str, ...]:
    """Axes from fastest- to slowest-varying rank."""
    return ("tp", "cp", "dp", "pp") if plan.tp_inside_node else ("dp", "tp", "cp", "pp")


def _size(plan: Plan, axis: str) -> int:
    return getattr(plan, axis)


def rank_of(plan: Plan, *, tp: int = 0, cp: int = 0, dp: int = 0, pp: int = 0) -> int:
    coords = {"tp": tp, "cp": cp, "dp": dp, "pp": pp}
    rank, stride = 0, 1
    for axis in order(plan):
        size = _size(plan, axis)
        if not (isinstance(coords[axis], int) and 0 <= coords[axis] < size):
            raise SimplanError(f"{axis} coordinate {coords[axis]!r} is outside 0..{size - 1} ({axis} = {size})")
        rank += coords[axis] * stride
        stride *= size
    return rank


def coords_of(plan: Plan, rank: int) -> dict[str, int]:
    """Inverse of :func:`rank_of`: ``{"tp": .., "cp": .., "dp": .., "pp": ..}``."""
    require(0 <= rank < plan.gpus, f"rank {rank} is outside the plan's {plan.gpus} GPUs")
    coords = {}
    for axis in order(plan):
        rank, coords[axis] = divmod(rank, _size(plan, axis))
    return coords


def _check_ep(plan: Plan) -> None:
    require(plan.dp % plan.ep == 0, f"plan.ep: {plan.ep} does not divide dp {plan.dp}")


def group_ranks(plan: Plan, axis: str, **fixed: int) -> list[int]:
    """Ranks of the ``axis`` group through the coordinates ``fixed`` (others 0). For
    ``ep``, ``dp`` picks the group: ep-sized slice number ``dp // ep`` of the dp group."""
    require(axis in AXES, f"unknown parallel axis {axis!r}; known: {', '.join(AXES)}")
    unknown = sorted(set(fixed) - set(COORDS))
    require(not unknown, f"unknown coordinate(s) {', '.join(unknown)}; known: {', '.join(COORDS)}")
    for a, v in fixed.items():
        require(isinstance(v, int) and not isinstance(v, bool), f"{a} coordinate: expected an integer, got {v!r}")
    coords = {a: fixed.get(a, 0) for a in COORDS}
    if axis == "ep":
        _check_ep(plan)
        first = coords["dp"] - coords["dp"] % plan.ep
        return [rank_of(plan, **{**coords, "dp": first + j}) for j in range(plan.ep)]
    require(axis not in fixed, f"{axis} cannot be fixed when asking for the {axis} group")
    return [rank_of(plan, **{**coords, axis: i}) for i in range(_size(plan, axis))]


def joint_group_ranks(plan: Plan, axes: tuple[str, ...], **fixed: int) -> list[int]:
    """Ranks that vary over several axes at once with the others fixed, e.g. the dp x cp
    group over which gradients are averaged: ``joint_group_ranks(plan, ("dp", "cp"))``."""
    bad = sorted(set(axes) - set(COORDS))
    require(not bad, f"unknown or unsupported axis(es) {', '.join(bad)}; joint groups take {', '.join(COORDS)}")
    clash = sorted(set(axes) & set(fixed))
    require(not clash, f"{', '.join(clash)} cannot be fixed when asking for a group over them")
    base = {a: fixed.get(a, 0) for a in COORDS}
    ranks = [rank_of(plan, **{**base, **dict(zip(axes, values))})
             for values in product(*(range(_size(plan, a)) for a in axes))]
    return sorted(ranks)


def groups(plan: Plan, axis: str) -> list[list[int]]:
    """Every ``axis`` group of the plan (together they hold every rank exactly once)."""
    require(axis in AXES, f"unknown parallel axis {axis!r}; known: {', '.join(AXES)}")
    if axis == "ep":
        _check_ep(plan)
        others = [a for a in COORDS if a != "dp"]
        out = []
        for values in product(*(range(_size(plan, a)) for a in others)):
            for first in range(0, plan.dp, plan.ep):
                out.append(group_ranks(plan, "ep", dp=first, **dict(zip(others, values))))
        return out
    others = [a for a in COORDS if a != axis]
    return [group_ranks(plan, axis, **dict(zip(others, values)))
            for values in product(*(range(_size(plan, a)) for a in others))]


@dataclass(frozen=True, slots=True)
class GroupSpan:
    """How one communication group lies on the cluster."""

    size: int
    """Ranks in the group."""
    nodes: int
    """Nodes the group touches."""
    ranks_per_node: int
    """Most group members on one node."""
    leaf_domains: int = 1
    """Leaf-switch domains the group touches; above 1 its traffic crosses the spines."""


def span_of(ranks: list[int], cluster: Cluster) -> GroupSpan:
    nodes = Counter(cluster.node_of(r) for r in ranks)
    return GroupSpan(size=len(ranks), nodes=len(nodes), ranks_per_node=max(nodes.values()),
                     leaf_domains=len({cluster.leaf_domain(n) for n in nodes}))


def group_span(plan: Plan, cluster: Cluster, axis: str, **fixed: int) -> GroupSpan:
    """The span of the ``axis`` group through rank 0 (or through ``fixed``). When
    ``gpus_per_node`` is divisible by the inner degrees (or they by it) every group of an
    axis has this same shape; tests/test_placement.py checks the claim."""
    require(plan.gpus <= cluster.gpus,
            f"plan: tp*cp*dp*pp = {plan.tp}*{plan.cp}*{plan.dp}*{plan.pp} = {plan.gpus} GPUs, "
            f"more than the cluster's {cluster.nodes} nodes x {cluster.gpus_per_node} = {cluster.gpus}")
    return span_of(group_ranks(plan, axis, **fixed), cluster)


def link_bandwidth(cluster: Cluster, span: GroupSpan) -> tuple[float, float]:
    """Per-rank bottleneck bandwidth (bytes/s, one direction) and per-hop latency (s) of a
    ring over a group laid out as ``span``: the B and alpha of the alpha-beta model in
    ``simplan.cost.collectives`` (bus bandwidth in nccl-tests' terms).

    Inside one node: the fabric's per-GPU rate times ``intra_efficiency``. On an ``xgmi``
    full mesh (MI300X: 7 point-to-point links per GPU, AMD data sheet) a group with r
    members on the node can use only the r - 1 links to its peers: (r-1)/(g-1) of it.

    Across nodes: a ring visits each node once per channel, entering and leaving through
    one NIC, and NCCL runs one channel per NIC it finds next to the group's GPUs (NCCL
    docs, NCCL_CROSS_NIC and "rings"; DGX A100/H100 pair every GPU with its own NIC, the
    rail). Every ring hop carries the same bytes, so a node's r members together push
    through their r rails exactly what one rank pushes: per-rank bandwidth is r times the
    per-GPU NIC share, ``r * nics_per_node * nic_bytes_per_s / gpus_per_node``, times
    ``inter_efficiency``. The g / r groups that share a node then split its NICs evenly,
    so this holds with every group of the axis busy at once. When the group spans leaf
    domains its rail traffic crosses the spines, which give 1/oversubscription of it. A
    group with more than one member per node also crosses the in-node fabric, so the
    result is the smaller of the two; a group with one member per node never does.
    """
    p = cluster.profile
    if span.size <= 1:
        return math.inf, 0.0
    r, g = span.ranks_per_node, cluster.gpus_per_node
    intra = p.intra_bytes_per_s * p.intra_efficiency
    if p.fabric == "xgmi" and g > 1:
        intra *= (r - 1) / (g - 1)
    if span.nodes == 1:
        return intra, p.intra_latency_s
    inter = r * p.nic_bytes_per_s_per_gpu * p.inter_efficiency
    if span.leaf_domains > 1:
        inter /= p.oversubscription
    return (inter if r == 1 else min(intra, inter)), p.inter_latency_s
