"""Rank placement (Megatron-LM order), group spans, and ring bandwidth over a group."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplan.errors import SimplanError
from simplan.hardware.cluster import Cluster
from simplan.hardware.load import load_hardware
from simplan.plan.placement import (GroupSpan, coords_of, group_ranks, group_span, groups, joint_group_ranks,
                                    link_bandwidth, rank_of, span_of)
from simplan.plan.plan import Plan

A100 = load_hardware("a100-sxm-80gb")
REL = 1e-12
"""link_bandwidth is a product of profile numbers: pinned exactly (1e-12 relative)."""


def plan(**kw) -> Plan:
    return Plan(global_batch=1, **kw)


# --- order ----------------------------------------------------------------------------------

def test_megatron_order_tp_fastest_then_cp_dp_pp():
    p = plan(tp=8, cp=2, dp=4, pp=2)
    # rank = tp + tp_size*(cp + cp_size*(dp + dp_size*pp))  (Megatron-LM parallel_state)
    assert rank_of(p, tp=3, cp=1, dp=2, pp=1) == 3 + 8 * (1 + 2 * (2 + 4 * 1))
    assert group_ranks(p, "tp") == list(range(8))
    assert group_ranks(p, "cp") == [0, 8]
    assert group_ranks(p, "dp") == [0, 16, 32, 48]
    assert group_ranks(p, "pp") == [0, 64]
    assert group_ranks(p, "dp", tp=1, cp=1, pp=1) == [1 + 8 + 64 + 16 * i for i in range(4)]


def test_gpt3_175b_on_1024_a100s_puts_tp_inside_nodes_and_dp_pp_across():
    p = plan(tp=8, pp=16, dp=8)
    c = Cluster(profile=A100, nodes=128)
    assert group_span(p, c, "tp") == GroupSpan(size=8, nodes=1, ranks_per_node=8, leaf_domains=1)
    assert group_span(p, c, "dp") == GroupSpan(size=8, nodes=8, ranks_per_node=1, leaf_domains=1)
    assert group_span(p, c, "pp") == GroupSpan(size=16, nodes=16, ranks_per_node=1, leaf_domains=7)


def test_joint_dp_cp_group_for_gradient_averaging():
    p = plan(tp=2, cp=2, dp=2, pp=2)
    assert joint_group_ranks(p, ("dp", "cp")) == [0, 2, 4, 6]
    assert joint_group_ranks(p, ("dp", "cp"), tp=1, pp=1) == [9, 11, 13, 15]
    c = Cluster(profile=A100, nodes=2, gpus_per_node=4)
    assert span_of(joint_group_ranks(p, ("dp", "cp")), c) == GroupSpan(size=4, nodes=2, ranks_per_node=2)


def test_data_parallel_innermost_when_tp_is_not_inside_the_node():
    p = plan(tp=4, dp=4, pp=2, tp_inside_node=False)
    assert group_ranks(p, "dp") == [0, 1, 2, 3]
    assert group_ranks(p, "tp") == [0, 4, 8, 12]
    assert group_ranks(p, "pp") == [0, 16]


def test_expert_groups_are_consecutive_slices_of_the_dp_group():
    p = plan(tp=2, dp=8, ep=4)
    assert group_ranks(p, "dp") == [0, 2, 4, 6, 8, 10, 12, 14]
    assert group_ranks(p, "ep") == [0, 2, 4, 6]
    assert group_ranks(p, "ep", dp=5) == [8, 10, 12, 14]
    assert group_ranks(p, "ep", tp=1, dp=5) == [9, 11, 13, 15]
    assert len(groups(p, "ep")) == 2 * 2


@pytest.mark.parametrize("call, message", [
    (lambda: group_ranks(plan(dp=6, ep=4), "ep"), "plan.ep: 4 does not divide dp 6"),
    (lambda: group_ranks(plan(tp=2), "xp"), "unknown parallel axis 'xp'"),
    (lambda: group_ranks(plan(tp=2), "tp", tp=1), "tp cannot be fixed"),
    (lambda: group_ranks(plan(tp=2), "tp", ep=1), "unknown coordinate(s) ep"),
    (lambda: rank_of(plan(tp=2), tp=2), "tp coordinate 2 is outside 0..1"),
    (lambda: group_span(plan(dp=32), Cluster(profile=A100, nodes=2), "dp"), "32 GPUs, more than the cluster's"),
])
def test_bad_placement_questions(call, message):
    with pytest.raises(SimplanError) as err:
        call()
    assert message in str(err.value)


POW2 = st.sampled_from([1, 2, 4, 8])


@st.composite
def plans(draw, any_degree: bool = False):
    degree = st.integers(1, 6) if any_degree else POW2
    tp, cp, dp, pp = (draw(degree) for _ in range(4))
    ep = draw(st.sampled_from([e for e in (1, 2, 4, 8) if dp % e == 0]))
    return plan(tp=tp, cp=cp, dp=dp, pp=pp, ep=ep, tp_inside_node=draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(p=plans(any_degree=True), data=st.data())
def test_coords_of_inverts_rank_of_and_groups_partition_the_ranks(p, data):
    rank = data.draw(st.integers(0, p.gpus - 1))
    assert rank_of(p, **coords_of(p, rank)) == rank
    for axis in ("tp", "cp", "dp", "pp", "ep"):
        members = sorted(r for g in groups(p, axis) for r in g)
        assert members == list(range(p.gpus))
        size = p.ep if axis == "ep" else getattr(p, axis)
        assert all(len(g) == size for g in groups(p, axis))


@settings(max_examples=150, deadline=None)
@given(p=plans(), gpn=POW2)
def test_all_groups_of_an_axis_have_the_same_shape_when_sizes_divide(p, gpn):
    # The claim group_span relies on: with gpus_per_node and every degree powers of two,
    # the group through rank 0 stands for all groups of its axis (leaf domains aside).
    c = Cluster(profile=A100, nodes=-(-p.gpus // gpn), gpus_per_node=gpn)
    for axis in ("tp", "cp", "dp", "pp", "ep"):
        first = group_span(p, c, axis)
        for g in groups(p, axis):
            s = span_of(g, c)
            assert (s.size, s.nodes, s.ranks_per_node) == (first.size, first.nodes, first.ranks_per_node)


def test_the_shape_claim_needs_divisibility():
    # dp = 3 groups of stride 2 on 8-GPU nodes: {0,2,4} fits one node, {6,8,10} straddles two.
    p, c = plan(tp=2, dp=3, pp=2), Cluster(profile=A100, nodes=2)
    spans = {span_of(g, c).nodes for g in groups(p, "dp")}
    assert spans == {1, 2}


# --- ring bandwidth over a group ------------------------------------------------------------

def test_tensor_parallel_inside_a_dgx_a100_gets_nvlink_times_efficiency():
    c = Cluster(profile=A100, nodes=128)
    bw, lat = link_bandwidth(c, group_span(plan(tp=8, pp=16, dp=8), c, "tp"))
    assert bw == pytest.approx(300e9 * 0.78, rel=REL)      # 234 GB/s, nccl-tests-like bus bandwidth
    assert lat == pytest.approx(1.9e-6, rel=REL)


def test_one_rank_per_node_gets_its_own_rail():
    c = Cluster(profile=A100, nodes=128)
    bw, lat = link_bandwidth(c, group_span(plan(tp=8, pp=16, dp=8), c, "dp"))
    assert bw == pytest.approx(25e9 * 0.9, rel=REL)        # one 200 Gbit/s HDR NIC
    assert lat == pytest.approx(4e-6, rel=REL)


def test_r_ranks_per_node_use_r_rails_until_nvlink_limits():
    c = Cluster(profile=A100, nodes=16)
    p = plan(tp=4, dp=32, tp_inside_node=False)              # dp innermost: 8 per node, 4 nodes
    span = group_span(p, c, "dp")
    assert (span.nodes, span.ranks_per_node) == (4, 8)
    bw, _ = link_bandwidth(c, span)
    assert bw == pytest.approx(min(300e9 * 0.78, 8 * 25e9 * 0.9), rel=REL)   # 180 GB/s: the NICs
    two = GroupSpan(size=4, nodes=2, ranks_per_node=2)
    assert link_bandwidth(c, two)[0] == pytest.approx(2 * 25e9 * 0.9, rel=REL)


def test_the_node_nics_are_split_evenly_between_concurrent_groups():
    # g / r groups share a node, each at r per-GPU NIC shares per rank: together they use
    # exactly the node's NICs, whatever r is.
    c = Cluster(profile=A100, nodes=4)
    node_nics = A100.nics_per_node * A100.nic_bytes_per_s * A100.inter_efficiency
    for r in (1, 2, 4, 8):
        bw, _ = link_bandwidth(c, GroupSpan(size=4 * r, nodes=4, ranks_per_node=r))
        assert (8 // r) * bw == pytest.approx(node_nics, rel=REL)


def test_crossing_leaf_domains_divides_by_oversubscription():
    c = Cluster(profile=replace(A100, oversubscription=2.0), nodes=100)
    inside = GroupSpan(size=8, nodes=8, ranks_per_node=1, leaf_domains=1)
    across = GroupSpan(size=8, nodes=8, ranks_per_node=1, leaf_domains=2)
    assert link_bandwidth(c, across)[0] == pytest.approx(link_bandwidth(c, inside)[0] / 2, rel=REL)


def test_mi300x_mesh_gives_a_small_group_only_the_links_to_its_peers():
    c = Cluster(profile=load_hardware("mi300x"), nodes=1)
    bw4, _ = link_bandwidth(c, GroupSpan(size=4, nodes=1, ranks_per_node=4))
    bw8, _ = link_bandwidth(c, GroupSpan(size=8, nodes=1, ranks_per_node=8))
    assert bw8 == pytest.approx(448e9 * 0.7, rel=REL)
    assert bw4 == pytest.approx(448e9 * 0.7 * 3 / 7, rel=REL)


def test_a_group_of_one_needs_no_link():
    bw, lat = link_bandwidth(Cluster(profile=A100, nodes=1), GroupSpan(size=1, nodes=1, ranks_per_node=1))
    assert math.isinf(bw) and lat == 0.0
