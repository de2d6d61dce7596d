"""Cluster: the topology graph, leaf domains, routes, and the scenario's cluster section."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simplan.errors import SimplanError
from simplan.hardware.cluster import Cluster, load_cluster
from simplan.hardware.load import load_hardware

A100 = load_hardware("a100-sxm-80gb")
H100 = load_hardware("h100-sxm-80gb")


def kinds(cluster: Cluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, kind in cluster.graph.nodes(data="kind"):
        out[kind] = out.get(kind, 0) + 1
    return out


def test_two_dgx_a100_nodes_under_one_leaf_per_rail():
    c = Cluster(profile=A100, nodes=2)
    assert c.gpus == 16
    assert kinds(c) == {"gpu": 16, "nvswitch": 2, "nic": 16, "leaf": 8}
    for _, _, data in c.graph.edges(data=True):
        assert data["bytes_per_s"] > 0 and data["latency_s"] >= 0


def test_superpod_scalable_units_follow_from_the_switch_radix():
    # DGX SuperPOD reference architectures: 20 DGX A100 per scalable unit on 40-port HDR
    # leaves, 32 DGX H100 per unit on 64-port NDR leaves, non-blocking.
    a = Cluster(profile=A100, nodes=140)
    assert (a.nodes_per_leaf, a.leaf_domains, a.spines) == (20, 7, 20)
    assert Cluster(profile=H100, nodes=64).nodes_per_leaf == 32
    leaf = ("leaf", 0, 0)
    down = [v for v in a.graph[leaf] if v[0] == "nic"]
    up = [v for v in a.graph[leaf] if v[0] == "spine"]
    assert len(down) == len(up) == 20        # oversubscription 1: as much up as down


def test_oversubscription_shrinks_the_uplinks():
    p = replace(H100, oversubscription=3.0)
    c = Cluster(profile=p, nodes=100)
    assert c.leaf_down_ports == 48 and c.spines == 16   # floor(64 * 3 / 4) down, 16 up: 3:1
    leaf = ("leaf", 0, 0)
    assert sum(1 for v in c.graph[leaf] if v[0] == "spine") * 3 == c.leaf_down_ports


def test_one_node_needs_no_spine():
    c = Cluster(profile=H100, nodes=1)
    assert c.spines == 0 and "spine" not in kinds(c)


def test_each_gpu_uses_its_own_rail():
    c = Cluster(profile=A100, nodes=2)
    for local in range(8):
        assert c.nics_of_gpu(local) == [local]
        assert c.graph.has_edge(("gpu", 1, local), ("nic", 1, local))
        assert c.graph.has_edge(("nic", 1, local), ("leaf", local, 0))


def test_fewer_nics_than_gpus_are_shared_by_neighbours():
    c = Cluster(profile=replace(A100, nics_per_node=2), nodes=1)
    assert [c.nics_of_gpu(i)[0] for i in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_more_nics_than_gpus_are_split():
    c = Cluster(profile=replace(A100, gpus_per_node=4), nodes=1)
    assert [c.nics_of_gpu(i) for i in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_mi300x_node_is_a_full_mesh_without_a_switch():
    c = Cluster(profile=load_hardware("mi300x"), nodes=1)
    assert "xgmi" not in kinds(c)
    mesh = [d for a, b, d in c.graph.edges(data=True) if a[0] == b[0] == "gpu"]
    assert len(mesh) == 28                                   # 8 choose 2
    assert all(d["bytes_per_s"] == pytest.approx(64e9, rel=1e-12) for d in mesh)   # 448 / 7
    assert c.route(0, 5) == [("gpu", 0, 0), ("gpu", 0, 5)]


def test_fat_tree_puts_a_whole_node_on_one_leaf():
    c = Cluster(profile=replace(H100, topology="fat-tree"), nodes=8)
    assert c.nodes_per_leaf == 4                             # 32 down ports / 8 NICs
    assert {v for v in c.graph[("nic", 0, 0)] if v[0] == "leaf"} == {("leaf", 0, 0)}
    assert {v for v in c.graph[("nic", 0, 7)] if v[0] == "leaf"} == {("leaf", 0, 0)}
    assert c.leaf_domains == 2


def test_cpu_host_is_one_switch():
    c = Cluster(profile=load_hardware("cpu-host"), nodes=3)
    assert kinds(c) == {"gpu": 6, "host": 3, "nic": 3, "leaf": 1}
    assert c.route(0, 5) == [("gpu", 0, 0), ("nic", 0, 0), ("leaf", 0, 0), ("nic", 2, 0), ("gpu", 2, 1)]


def route_latency(c: Cluster, src: int, dst: int) -> float:
    return sum(c.graph.edges[u, v]["latency_s"] for u, v in c.route_links(src, dst))


def test_routes_follow_edges_and_add_up_to_the_profile_latencies():
    c = Cluster(profile=A100, nodes=40)
    inside = c.route(0, 3)
    assert inside == [("gpu", 0, 0), ("switch", 0), ("gpu", 0, 3)]
    assert route_latency(c, 0, 3) == pytest.approx(A100.intra_latency_s, rel=1e-12)
    same_leaf = c.route(8 * 1 + 2, 8 * 19 + 2)
    assert [v[0] for v in same_leaf] == ["gpu", "nic", "leaf", "nic", "gpu"]
    assert route_latency(c, 10, 8 * 19 + 2) == pytest.approx(A100.inter_latency_s, rel=1e-12)
    across = c.route(2, 8 * 25 + 2)                          # node 25 is in the second scalable unit
    assert [v[0] for v in across] == ["gpu", "nic", "leaf", "spine", "leaf", "nic", "gpu"]
    for u, v in c.route_links(2, 8 * 25 + 2):
        assert c.graph.has_edge(u, v)


def test_rank_outside_the_cluster():
    with pytest.raises(SimplanError, match="rank 16 is outside the cluster's 16 GPUs"):
        Cluster(profile=A100, nodes=2).gpu(16)


def test_gpus_per_node_override_copies_the_profile():
    c = Cluster(profile=A100, nodes=2, gpus_per_node=4)
    assert c.profile.gpus_per_node == 4 and A100.gpus_per_node == 8
    assert c.gpus == 8


# --- the scenario's cluster section ---------------------------------------------------------

def test_load_cluster_defaults_to_the_profile():
    c = load_cluster({"nodes": 128}, A100)
    assert (c.nodes, c.gpus_per_node, c.gpus) == (128, 8, 1024)
    assert c.profile is A100


def test_load_cluster_applies_overrides():
    c = load_cluster({"nodes": 4, "gpus_per_node": 4, "nic_gbit_per_s": 400, "nics_per_node": 4}, A100)
    assert c.profile.nic_bytes_per_s == pytest.approx(50e9, rel=1e-12)
    assert c.profile.nic_bytes_per_s_per_gpu == pytest.approx(50e9, rel=1e-12)
    assert c.gpus == 16


@pytest.mark.parametrize("section, message", [
    ({}, "cluster.nodes: missing"),
    ({"nodes": 0}, "cluster.nodes: must be >= 1, got 0"),
    ({"nodes": 2.0}, "cluster.nodes: expected an integer, got 2.0"),
    ({"nodes": True}, "cluster.nodes: expected an integer, got True"),
    ({"nodes": 2, "gpus": 16}, "cluster: unknown field(s) gpus"),
    ({"nodes": 2, "nic_gbit_per_s": -200}, "cluster.nic_gbit_per_s: must be > 0, got -200"),
    ({"nodes": 2, "nics_per_node": None}, "cluster.nics_per_node: empty"),
    ([1, 2], "cluster: expected a mapping, got list"),
    ({"nodes": 2, "\n": 1}, "cluster: unknown field(s) '\\n'"),
])
def test_bad_cluster_sections(section, message):
    with pytest.raises(SimplanError) as err:
        load_cluster(section, A100)
    assert message in str(err.value) and "\n" not in str(err.value)
