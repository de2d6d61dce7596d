"""Pipeline schedule orderings: counts, dependencies, and torch's names and order."""

import pytest

from simplan.sim.schedules import gpipe, interleaved_1f1b, one_f_one_b, stage_actions, zero_bubble_h1


@pytest.mark.parametrize("schedule,v", [("gpipe", 1), ("1f1b", 1), ("interleaved-1f1b", 2),
                                         ("interleaved-1f1b", 3), ("zero-bubble", 1)])
@pytest.mark.parametrize("pp,m", [(1, 4), (2, 4), (4, 8), (4, 12)])
def test_every_microbatch_runs_forward_and_backward_once_per_chunk(schedule, v, pp, m):
    if v > 1 and pp == 1:
        pytest.skip("interleaving needs pp >= 2")
    for s in range(pp):
        acts = stage_actions(schedule, s, pp, m, v)
        chunks = [s + k * pp for k in range(v)]
        for c in chunks:
            for t in ("F",) + (("I", "W") if schedule == "zero-bubble" else ("B",)):
                got = sorted(a.microbatch for a in acts if a.chunk == c and a.type == t)
                assert got == list(range(m)), (s, c, t)


@pytest.mark.parametrize("fn", [gpipe, one_f_one_b, zero_bubble_h1])
def test_backward_follows_its_forward_on_each_stage(fn):
    for s in range(4):
        acts = fn(s, 4, 8)
        seen = set()
        for a in acts:
            if a.type == "F":
                seen.add(a.microbatch)
            else:
                assert a.microbatch in seen


def test_1f1b_warmup_is_pp_minus_1_minus_stage():
    # Narayanan et al. 2021, Fig. 4: stage s runs pp - 1 - s forwards before its first backward
    for s in range(4):
        acts = one_f_one_b(s, 4, 8)
        first_b = next(i for i, a in enumerate(acts) if a.type == "B")
        assert first_b == (4 - 1 - s) + 1


def test_interleaved_order_matches_megatron_example():
    # pp=2, v=2, m=4, stage 0: warm-up (v-1)*pp + 2*(pp-1-0) = 4 forwards:
    # chunk 0 mb 0,1; chunk 2 mb 0,1 (rounds of pp micro-batches)
    acts = interleaved_1f1b(0, 2, 4, 2)
    assert [(a.type, a.microbatch, a.chunk) for a in acts[:5]] == [
        ("F", 0, 0), ("F", 1, 0), ("F", 0, 2), ("F", 1, 2), ("F", 2, 0)]
    assert (acts[5].type, acts[5].microbatch, acts[5].chunk) == ("B", 0, 2)


def _torch_order(schedule_cls, pp, m, v):
    """The action order torch.distributed.pipelining computes for each rank, without a
    process group (its schedules compute the order from sizes alone)."""
    torch_sched = pytest.importorskip("torch.distributed.pipelining.schedules")
    cls = getattr(torch_sched, schedule_cls)
    orders = {}
    for rank in range(pp):
        obj = cls.__new__(cls)
        obj.pp_group_size = pp
        obj.rank = rank
        obj.n_local_stages = v
        obj._n_microbatches = m
        obj.n_microbatches = m
        obj.microbatches_per_round = pp
        obj.stage_index_to_group_rank = {i: i % pp for i in range(pp * v)}
        try:
            ops = obj._calculate_single_rank_operations(rank)
        except Exception as exc:  # torch internals moved: nothing to compare against
            pytest.skip(f"torch's schedule internals differ: {exc}")
        names = {"FORWARD": "F", "FULL_BACKWARD": "B", "BACKWARD_INPUT": "I", "BACKWARD_WEIGHT": "W"}
        orders[rank] = [(names[a.computation_type.name], a.microbatch_index, a.stage_index)
                        for a in ops if a is not None]
    return orders


def test_interleaved_order_equals_torch_schedule_interleaved_1f1b():
    pp, m, v = 4, 8, 2
    torch_orders = _torch_order("ScheduleInterleaved1F1B", pp, m, v)
    for s in range(pp):
        ours = [(a.type, a.microbatch, a.chunk) for a in interleaved_1f1b(s, pp, m, v)]
        assert ours == torch_orders[s]
