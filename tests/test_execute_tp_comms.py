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
