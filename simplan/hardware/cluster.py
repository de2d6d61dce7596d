"""Cluster: nodes x GPUs per node of one hardware profile, and its topology graph.

The graph (``networkx.Graph``) has one vertex per GPU, one in-node switch per node (the
NVSwitch chips, or the PCIe/host switch, drawn as one vertex), the NICs, one leaf switch
per rail per leaf domain, and the spine switches. Every edge carries ``bytes_per_s`` (per
direction) and ``latency_s``. Vertex ids are tuples: ``("gpu", node, local)``,
``("switch", node)``, ``("nic", node, index)``, ``("leaf", rail, domain)``, ``("spine", i)``.

Layout, as NVIDIA's DGX SuperPOD reference architectures build it:

* GPU ``local`` uses the NIC(s) of its own rail, ``local * nics // gpus_per_node`` (DGX A100
  and H100 pair each GPU with one NIC behind the same PCIe switch; NCCL uses the closest
  NIC). With fewer NICs than GPUs, neighbours share one.
* Rail-optimized fat tree: NIC ``i`` of every node in a leaf domain goes to the rail-``i``
  leaf. A leaf with P ports at oversubscription o has floor(P o / (1 + o)) ports down to
  NICs and the rest up, one link to each spine: 40-port HDR leaves at o = 1 give the
  20-node DGX A100 SuperPOD scalable unit, 64-port NDR leaves the 32-node DGX H100 one.
* Fat tree (not rail-optimized): all NICs of a node go to one leaf.
* Single switch: every NIC on one switch, no spines.
* An ``xgmi`` node (AMD MI300X) has no switch: the GPUs form a full mesh, each link
  ``intra_bytes_per_s / (gpus_per_node - 1)`` (AMD MI300X data sheet: 7 links per GPU).

Spines are shared by all rails; a real cluster past one spine's radix needs a third tier,
which this graph does not draw (it keeps the leaf-to-spine capacity, which is what
oversubscription is about).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from simplan.errors import SimplanError, require
from simplan.hardware.load import apply_cluster_overrides, key_name
from simplan.hardware.profile import HardwareProfile

CLUSTER_KEYS = ("nodes", "gpus_per_node", "nic_gbit_per_s", "nics_per_node")


@dataclass(frozen=True)
class Cluster:
    profile: HardwareProfile
    """The node's hardware; its ``gpus_per_node`` always equals the cluster's."""
    nodes: int
    gpus_per_node: int | None = None
    """Default: the profile's. A different number overrides the profile's (a copy)."""

    def __post_init__(self) -> None:
        require(isinstance(self.nodes, int) and not isinstance(self.nodes, bool),
                f"cluster.nodes: expected an integer, got {self.nodes!r}")
        require(self.nodes >= 1, f"cluster.nodes: must be >= 1, got {self.nodes}")
        if self.gpus_per_node is None:
            object.__setattr__(self, "gpus_per_node", self.profile.gpus_per_node)
        elif self.gpus_per_node != self.profile.gpus_per_node:
            object.__setattr__(self, "profile",
                               apply_cluster_overrides(self.profile, gpus_per_node=self.gpus_per_node))

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    # --- where things are -----------------------------------------------------------------

    @property
    def leaf_down_ports(self) -> int:
        """NIC ports one leaf serves: floor(P o / (1 + o)) for P ports at oversubscription o."""
        p = self.profile
        return int(p.switch_ports * p.oversubscription // (1 + p.oversubscription))

    @property
    def nodes_per_leaf(self) -> int:
        """Nodes in one leaf domain (nodes whose NICs share leaf switches)."""
        p = self.profile
        if p.topology == "single-switch":
            return self.nodes
        if p.topology == "rail-optimized-fat-tree":
            return max(1, self.leaf_down_ports)
        return max(1, self.leaf_down_ports // p.nics_per_node)

    @property
    def leaf_domains(self) -> int:
        return -(-self.nodes // self.nodes_per_leaf)

    def node_of(self, rank: int) -> int:
        self._check_rank(rank)
        return rank // self.gpus_per_node

    def leaf_domain(self, node: int) -> int:
        return node // self.nodes_per_leaf

    def nics_of_gpu(self, local: int) -> list[int]:
        """NIC indices GPU ``local`` of a node uses (its rail)."""
        g, n = self.gpus_per_node, self.profile.nics_per_node
        if n >= g:
            return list(range(local * n // g, (local + 1) * n // g))
        return [local * n // g]

    def gpu(self, rank: int) -> tuple:
        self._check_rank(rank)
        return ("gpu", rank // self.gpus_per_node, rank % self.gpus_per_node)

    def _check_rank(self, rank: int) -> None:
        if not (0 <= rank < self.gpus):
            raise SimplanError(f"rank {rank} is outside the cluster's {self.gpus} GPUs "
                               f"({self.nodes} nodes x {self.gpus_per_node})")

    def _leaf(self, node: int, nic: int) -> tuple:
        topology = self.profile.topology
        if topology == "single-switch":
            return ("leaf", 0, 0)
        rail = nic if topology == "rail-optimized-fat-tree" else 0
        return ("leaf", rail, self.leaf_domain(node))

    @property
    def spines(self) -> int:
        """Spine switches: one per leaf uplink port, none when one leaf domain suffices."""
        if self.profile.topology == "single-switch" or self.leaf_domains == 1:
            return 0
        return self.profile.switch_ports - self.leaf_down_ports

    # --- the graph ------------------------------------------------------------------------

    @cached_property
    def graph(self) -> nx.Graph:
        p = self.profile
        g = nx.Graph(name=f"{self.nodes}x{self.gpus_per_node} {p.name}")
        nic_bw = p.nic_bytes_per_s
        # A GPU-switch-GPU or NIC-leaf-NIC path adds up to the profile's one-hop latency.
        half_intra, half_inter = p.intra_latency_s / 2, p.inter_latency_s / 2
        for node in range(self.nodes):
            gpus = [("gpu", node, i) for i in range(self.gpus_per_node)]
            for i, v in enumerate(gpus):
                g.add_node(v, kind="gpu", node=node, local=i, rank=node * self.gpus_per_node + i)
            if p.fabric == "xgmi":
                link = p.intra_bytes_per_s / max(1, self.gpus_per_node - 1)
                for a in range(self.gpus_per_node):
                    for b in range(a + 1, self.gpus_per_node):
                        g.add_edge(gpus[a], gpus[b], bytes_per_s=link, latency_s=p.intra_latency_s)
            else:
                switch = ("switch", node)
                g.add_node(switch, kind=p.fabric, node=node)
                for v in gpus:
                    g.add_edge(v, switch, bytes_per_s=p.intra_bytes_per_s, latency_s=half_intra)
            for nic in range(p.nics_per_node):
                g.add_node(("nic", node, nic), kind="nic", node=node, rail=nic)
                leaf = self._leaf(node, nic)
                g.add_node(leaf, kind="leaf")
                g.add_edge(("nic", node, nic), leaf, bytes_per_s=nic_bw, latency_s=half_inter)
            for i, v in enumerate(gpus):
                for nic in self.nics_of_gpu(i):
                    # PCIe between GPU and NIC is not the bottleneck on DGX-class nodes
                    # (Gen4 x16 ~ 32 GB/s for a 25 GB/s HDR NIC), so it runs at the NIC rate.
                    g.add_edge(v, ("nic", node, nic), bytes_per_s=nic_bw, latency_s=0.0)
        leaves = [v for v, kind in g.nodes(data="kind") if kind == "leaf"]
        for s in range(self.spines):
            g.add_node(("spine", s), kind="spine")
            for leaf in leaves:
                g.add_edge(leaf, ("spine", s), bytes_per_s=nic_bw, latency_s=0.0)
        return g

    def route(self, src: int, dst: int) -> list[tuple]:
        """Vertices a message from rank ``src`` to rank ``dst`` crosses: over the in-node
        fabric inside a node; otherwise out of the sender's own NIC, through its leaf (and
        a spine, picked by a fixed hash as ECMP would), into the receiver's own NIC."""
        a, b = self.gpu(src), self.gpu(dst)
        if a == b:
            return [a]
        if a[1] == b[1]:
            return [a, b] if self.profile.fabric == "xgmi" else [a, ("switch", a[1]), b]
        nic_a = ("nic", a[1], self.nics_of_gpu(a[2])[0])
        nic_b = ("nic", b[1], self.nics_of_gpu(b[2])[0])
        leaf_a, leaf_b = self._leaf(a[1], nic_a[2]), self._leaf(b[1], nic_b[2])
        middle = [leaf_a] if leaf_a == leaf_b else [leaf_a, ("spine", (a[1] + b[1]) % self.spines), leaf_b]
        return [a, nic_a, *middle, nic_b, b]

    def route_links(self, src: int, dst: int) -> list[tuple[tuple, tuple]]:
        """The edges of :meth:`route`, in order (look them up in :attr:`graph`)."""
        path = self.route(src, dst)
        return list(zip(path, path[1:]))


def load_cluster(section: dict, profile: HardwareProfile, where: str = "cluster") -> Cluster:
    """A scenario's ``cluster`` section: ``nodes`` (required) and optional overrides of the
    profile's ``gpus_per_node``, ``nic_gbit_per_s`` and ``nics_per_node``."""
    if not isinstance(section, dict):
        raise SimplanError(f"{where}: expected a mapping, got {type(section).__name__}")
    unknown = sorted(key_name(k) for k in section if k not in CLUSTER_KEYS)
    require(not unknown, f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(CLUSTER_KEYS)}")
    require("nodes" in section, f"{where}.nodes: missing (how many nodes of {profile.gpus_per_node} GPUs)")
    nodes = section["nodes"]
    require(isinstance(nodes, int) and not isinstance(nodes, bool), f"{where}.nodes: expected an integer, got {nodes!r}")
    require(nodes >= 1, f"{where}.nodes: must be >= 1, got {nodes}")
    for key in CLUSTER_KEYS[1:]:
        require(key not in section or section[key] is not None,
                f"{where}.{key}: empty; give a value or leave the key out to keep the profile's")
    profile = apply_cluster_overrides(profile, gpus_per_node=section.get("gpus_per_node"),
                                      nic_gbit_per_s=section.get("nic_gbit_per_s"),
                                      nics_per_node=section.get("nics_per_node"), where=where)
    return Cluster(profile=profile, nodes=nodes, gpus_per_node=profile.gpus_per_node)
