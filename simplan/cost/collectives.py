"""Collective algorithms in the alpha-beta model (Hockney 1994; Thakur, Rabenseifner and
Gropp 2005, "Optimization of Collective Communication Operations in MPICH", Section 4).

n ranks, S bytes (the full buffer: the all-reduced tensor, or the gathered result),
B the per-rank bottleneck bandwidth, alpha the per-step latency:

    ring all-reduce        2 (n-1)/n * S/B + 2 (n-1) alpha
    ring all-gather        (n-1)/n * S/B + (n-1) alpha      (reduce-scatter the same)
    tree all-reduce        2 S/B + 2 ceil(log2 n) alpha     (reduce then broadcast, pipelined;
                                                             NCCL's double binary tree keeps
                                                             the full bandwidth, Sanders et al. 2009)
    hierarchical           reduce-scatter in the node, all-reduce across nodes on S/r,
                           all-gather in the node (Goyal et al. 2017; NCCL's ring over nodes)
    all-to-all (pairwise)  (n-1)/n * S/B + (n-1) alpha
    point-to-point         S/B + alpha

``Collective.wire_bytes`` is what one rank pushes through its bottleneck link, which
the engine turns into a flow that shares links with other flows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("allreduce", "allgather", "reducescatter", "alltoall", "p2p")
ALGORITHMS = ("ring", "tree", "hierarchical")


@dataclass(frozen=True, slots=True)
class Phase:
    """One bandwidth phase of a collective: bytes per rank over one class of link."""

    wire_bytes: float
    link: str
    """"intra" (NVLink / in-node fabric) or "inter" (NICs)."""
    latency_s: float


def ring_steps(kind: str, n: int) -> int:
    if kind == "allreduce":
        return 2 * (n - 1)
    if kind == "p2p":
        return 1
    return n - 1


def ring_wire_bytes(kind: str, n: int, size_bytes: float) -> float:
    """Bytes each rank sends in a ring collective of ``n`` ranks (Thakur et al. 2005)."""
    if n <= 1 and kind != "p2p":
        return 0.0
    if kind == "allreduce":
        return 2.0 * (n - 1) / n * size_bytes
    if kind == "p2p":
        return size_bytes
    return (n - 1) / n * size_bytes


def phases(kind: str, algorithm: str, size_bytes: float, ranks_per_node: int, nodes: int,
           intra_latency_s: float, inter_latency_s: float) -> tuple[Phase, ...]:
    """The bandwidth phases of one collective over a group of ``ranks_per_node * nodes`` ranks."""
    n = ranks_per_node * nodes
    if n <= 1 and kind != "p2p":
        return ()
    link = "intra" if nodes == 1 else "inter"
    alpha = intra_latency_s if nodes == 1 else inter_latency_s
    if kind == "p2p":
        return (Phase(size_bytes, link, alpha),)
    if algorithm == "hierarchical" and nodes > 1 and ranks_per_node > 1 and kind == "allreduce":
        r = ranks_per_node
        inner = ring_wire_bytes("reducescatter", r, size_bytes)
        return (
            Phase(inner, "intra", (r - 1) * intra_latency_s),
            Phase(ring_wire_bytes("allreduce", nodes, size_bytes / r), "inter", 2 * (nodes - 1) * inter_latency_s),
            Phase(inner, "intra", (r - 1) * intra_latency_s),
        )
    # Over nodes, a ring (or tree) leaves each node once per channel, and NCCL spreads its
    # channels over all the node's NICs (one ring per NIC rail, NCCL docs "NCCL_CROSS_NIC"
    # / nccl src/graph/search.cc): the crossing traffic of a group with r ranks on a node
    # is served by those r ranks' NIC shares, so per rank 1/r of the bytes goes through
    # its share. (Without this a 16-way tensor-parallel ring over 2 nodes of the vTrain
    # runs is predicted 4-5x slower than measured.) The in-node hops run at the same time.
    share = ranks_per_node if nodes > 1 else 1
    if algorithm == "tree" and kind == "allreduce":
        return (Phase(2.0 * size_bytes / share, link, 2 * math.ceil(math.log2(n)) * alpha),)
    return (Phase(ring_wire_bytes(kind, n, size_bytes) / share, link, ring_steps(kind, n) * alpha),)


def measured_phases(kind: str, size_bytes: float, n: int, latency_s: float, bytes_per_s: float,
                    link_bytes_per_s: float) -> tuple[Phase, ...]:
    """An in-node collective from its own measured fit t = steps x latency + wire / bytes_per_s
    (the ring's steps and wire bytes, the constants ``calibrate --local`` fits), as one phase
    on the in-node link: its bytes are rescaled so that at ``link_bytes_per_s`` it takes
    wire / bytes_per_s alone, and shares the link as any other flow."""
    if n <= 1:
        return ()
    wire = ring_wire_bytes(kind, n, size_bytes) * link_bytes_per_s / bytes_per_s
    return (Phase(wire, "intra", ring_steps(kind, n) * latency_s),)


def idle_time_s(phases_: tuple[Phase, ...], intra_bytes_per_s: float, inter_bytes_per_s: float) -> float:
    """Time of a collective alone on the network (no other flow on its links). Over nodes
    a ring's slowest hop is the NIC; the in-node hops of that ring run at the same time."""
    total = 0.0
    for p in phases_:
        bw = intra_bytes_per_s if p.link == "intra" else inter_bytes_per_s
        total += p.wire_bytes / bw + p.latency_s
    return total


def best_algorithm(kind: str, size_bytes: float, ranks_per_node: int, nodes: int, intra_latency_s: float,
                   inter_latency_s: float, intra_bytes_per_s: float, inter_bytes_per_s: float) -> str:
    """The algorithm NCCL's tuner would pick: the fastest on an idle network (NCCL
    estimates each algorithm's time from a latency and a bandwidth model the same way)."""
    if kind != "allreduce":
        return "ring"
    best = min(ALGORITHMS, key=lambda a: (idle_time_s(
        phases(kind, a, size_bytes, ranks_per_node, nodes, intra_latency_s, inter_latency_s),
        intra_bytes_per_s, inter_bytes_per_s), ALGORITHMS.index(a)))
    return best
