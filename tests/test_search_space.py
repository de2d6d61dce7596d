"""The plan space: valid by construction, constraints respected, empty spaces explained."""

import pytest

from simplan.errors import SimplanError
from simplan.model import load_model
from simplan.plan.validate import problems
from simplan.search.space import Constraints, all_plans, plans

GPT2 = load_model("gpt2-small")  # 12 layers, 12 heads
MIXTRAL = load_model("mixtral-8x7b")


def test_every_enumerated_plan_is_valid_and_distinct():
    found = list(all_plans(GPT2, 8, 16))
    assert len(found) > 1000
    assert len(set(found)) == len(found)
    assert [p for p in found if problems(p, GPT2, 8)] == []


def test_space_covers_every_dimension():
    found = list(all_plans(GPT2, 8, 16))
    assert {p.tp for p in found} == {1, 2, 4}  # divisors of 8 that divide 12 heads
    assert {p.pp for p in found} == {1, 2, 4, 8}
    assert {p.schedule for p in found} == {"gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"}
    assert {p.recompute for p in found} == {"none", "selective", "full"}
    assert {p.zero_stage for p in found} == {0, 1, 2, 3}
    assert {p.dp_sync for p in found} == {"allreduce", "parameter-server"}
    assert {p.tp_inside_node for p in found} == {True, False}
    # interleaving only where layers split evenly into pp * v chunks (Megatron-LM's rule)
    assert all(12 % (p.pp * p.virtual_stages) == 0 for p in found if p.virtual_stages > 1)


def test_expert_parallelism_only_for_moe():
    assert {p.ep for p in all_plans(GPT2, 8, 16)} == {1}
    eps = {p.ep for p in all_plans(MIXTRAL, 8, 8, constraints=Constraints(tp=1, pp=1, recompute="full",
                                                                               schedule="1f1b"))}
    assert eps == {1, 2, 4, 8}


def test_constraints_are_respected():
    c = Constraints(tp=2, max_pp=2, schedule=("1f1b", "interleaved-1f1b"), recompute="full", zero_stage=(0, 1))
    found = plans(GPT2, 8, 16, c)
    assert found
    assert all(p.tp == 2 and p.pp <= 2 and p.recompute == "full" and p.zero_stage in (0, 1) for p in found)
    assert {p.schedule for p in found} == {"1f1b", "interleaved-1f1b"}


def test_layouts_restrict_to_listed_combinations():
    c = Constraints(layouts=((2, 2, 2, 1), (1, 1, 8, 2)), recompute="full", schedule="1f1b")
    assert {(p.tp, p.pp, p.dp, p.micro_batch) for p in plans(GPT2, 8, 16, c)} == {(2, 2, 2, 1), (1, 1, 8, 2)}


@pytest.mark.parametrize("constraints, flag", [
    (Constraints(tp=3), "--tp 3"),
    (Constraints(pp=1, schedule="zero-bubble"), "--schedule zero-bubble"),
    (Constraints(pp=2, zero_stage=3), "--zero-stage 3"),
    (Constraints(tp=1, sequence_parallel=True), "--sequence-parallel true"),
])
def test_empty_space_names_the_constraint(constraints, flag):
    with pytest.raises(SimplanError, match=flag):
        plans(GPT2, 8, 16, constraints)


def test_no_valid_plan_at_all_is_explained():
    # ResNet-50 has no tensor or context parallel form and 18 units: 64 GPUs at batch 1 need pp 64
    with pytest.raises(SimplanError, match="64 GPUs with global batch 1"):
        plans(load_model("resnet-50"), 64, 1, Constraints())


def test_bad_constraint_values_are_rejected():
    with pytest.raises(SimplanError, match="--schedule"):
        plans(GPT2, 8, 16, Constraints(schedule="pipedream"))
    with pytest.raises(SimplanError, match="--tp"):
        plans(GPT2, 8, 16, Constraints(tp=0))
