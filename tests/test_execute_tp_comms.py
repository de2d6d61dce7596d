"""The executor's tensor parallelism issues the collectives the simulator charges for.

One process plays rank 0 of a 2-rank group on torch's fake process group (collectives
return at once), and ``CommDebugMode`` counts the functional collectives of one training
step of one micro-batch. Megatron-LM's counts per micro-batch, which the lowering
charges: the vocabulary-parallel embedding's all-reduce, per block one all-reduce in
forward (g) and one in backward (f), the logits input's gradient all-reduce, and the
three of the vocabulary-parallel cross entropy.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402

from simplan.model import load_model  # noqa: E402
from simplan.plan import Plan  # noqa: E402
from simplan.scenario import load_scenario  # noqa: E402
from simplan.sim.lower import lower  # noqa: E402


@pytest.fixture(scope="module")
def fake_group():
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    yield
    dist.destroy_process_group()


def _simulated_tp_allreduces(model: str) -> int:
    sc = load_scenario({"model": model, "hardware": "cpu-host", "cluster": {"nodes": 1, "gpus_per_node": 2},
                        "plan": {"tp": 2, "micro_batch": 4, "global_batch": 4, "precision": "fp32"}})
    (chunk,) = lower(sc.graph, sc.plan, sc.cluster).chunks
    return sum(1 for step in chunk.fwd + chunk.bwd for c in step.comms if c.name == "tp")


@pytest.mark.parametrize("model", ["tiny-gpt", "tiny-llama"])
def test_tensor_parallel_all_reduces_per_micro_batch_match_the_lowering(fake_group, model):
    from torch.distributed.tensor.debug import CommDebugMode

    from simplan.execute.worker import Runner

    spec = load_model(model)
    runner = Runner(spec, Plan(tp=2, micro_batch=4, global_batch=4, precision="fp32"), 0, torch.device("cpu"))
    with CommDebugMode() as comms:
        runner.step()
    counts = {str(k).rsplit(".", 1)[-1]: v for k, v in comms.get_comm_counts().items()}
    blocks = 2 * spec.layers
    expected = 1 + 2 * blocks + 1 + 3  # embedding, f and g per block, logits input, cross entropy
    assert counts == {"all_reduce": expected}
    assert _simulated_tp_allreduces(model) == expected


@pytest.mark.parametrize("model", ["tiny-gpt", "tiny-llama"])
def test_sequence_parallel_norm_gradients_are_all_reduced_in_one_collective(fake_group, model, monkeypatch):
    # Megatron-LM's finalize_model_grads: one flat all-reduce of the norms' partial gradients,
    # the one the lowering charges (Program.norm_grad_allreduce)
    from torch.distributed.tensor import DTensor, Partial

    from simplan.execute import worker
    from simplan.execute.worker import Runner

    spec = load_model(model)
    plan = Plan(tp=2, sequence_parallel=True, micro_batch=4, global_batch=4, precision="fp32")
    runner = Runner(spec, plan, 0, torch.device("cpu"))
    sizes = []
    real = worker.dist.all_reduce

    def counting(tensor, *args, **kwargs):
        sizes.append(tensor.numel())
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(worker.dist, "all_reduce", counting)
    runner.step()
    norm_params = sum(p.numel() for n, p in runner.wrapped[0].named_parameters() if "norm" in n)
    assert sizes == [norm_params]
    sc = load_scenario({"model": model, "hardware": "cpu-host", "cluster": {"nodes": 1, "gpus_per_node": 2},
                        "plan": {"tp": 2, "sequence_parallel": True, "micro_batch": 4, "global_batch": 4,
                                 "precision": "fp32"}})
    assert sum(layer.norm_params for layer in sc.graph.order) == norm_params
    for p in runner.wrapped[0].parameters():
        assert not (isinstance(p.grad, DTensor) and any(isinstance(pl, Partial) for pl in p.grad.placements))


@pytest.mark.parametrize("model", ["tiny-gpt", "tiny-llama"])
def test_sequence_parallel_collectives_per_micro_batch_match_the_lowering(fake_group, model):
    # per micro-batch and block: all-gather in, reduce-scatter out (forward), the reverse in
    # backward, and the all-gather that recovers the input saved as its sequence shard
    # (Megatron-LM); the head gathers its input and recovers it too; the cross entropy's
    # three all-reduces. The embedding all-reduces and keeps its shard where Megatron-LM
    # (and the lowering) reduce-scatter: the one difference, counted here.
    from torch.distributed.tensor.debug import CommDebugMode

    from simplan.execute.worker import Runner
    from simplan.sim.lower import sp_regather_bytes, tp_collectives

    spec = load_model(model)
    plan = Plan(tp=2, sequence_parallel=True, micro_batch=4, global_batch=4, precision="fp32")
    runner = Runner(spec, plan, 0, torch.device("cpu"))
    with CommDebugMode() as comms:
        runner.step()
    counts = {str(k).rsplit(".", 1)[-1]: v for k, v in comms.get_comm_counts().items()}
    sc = load_scenario({"model": model, "hardware": "cpu-host", "cluster": {"nodes": 1, "gpus_per_node": 2},
                        "plan": {"tp": 2, "sequence_parallel": True, "micro_batch": 4, "global_batch": 4,
                                 "precision": "fp32"}})
    lowered: dict[str, int] = {}
    for layer in sc.graph.order:
        for backward in (False, True):
            for kind, _ in tp_collectives(layer, sc.plan, backward):
                lowered[kind] = lowered.get(kind, 0) + 1
        if sp_regather_bytes(layer, sc.plan):
            lowered["allgather"] += 1
    blocks = 2 * spec.layers
    assert lowered == {"reducescatter": 2 * blocks + 2, "allgather": 3 * blocks + 3, "allreduce": 3}
    assert counts == {"all_gather_into_tensor": lowered["allgather"],
                      "reduce_scatter_tensor": lowered["reducescatter"] - 1,  # the embedding's ...
                      "all_reduce": lowered["allreduce"] + 1,  # ... is an all-reduce here
                      "allreduce_": 1}  # the norms' gradients, once per step
