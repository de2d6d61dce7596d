"""Apply a plan to the torch model with PyTorch's own parallelism (torchtitan's style:
small ``apply_*`` functions over a ``DeviceMesh``).

tensor / sequence parallel: DTensor ``parallelize_module`` with ``ColwiseParallel`` /
``RowwiseParallel`` / ``SequenceParallel`` (Megatron-LM's layout, Shoeybi et al. 2019,
Fig. 3; Korthikanti et al. 2022, Section 4.2.2), vocabulary-parallel loss through
``loss_parallel``. Recomputation: ``torch.utils.checkpoint``. Data parallel: DDP (ZeRO-1:
``ZeroRedundancyOptimizer``), FSDP2 ``fully_shard`` for ZeRO-2 (``reshard_after_forward
=False``) and ZeRO-3. Pipelines: ``torch.distributed.pipelining`` stages and schedules.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from simplan.errors import SimplanError
from simplan.execute import saved
from simplan.execute.models import AttentionCore, Chunk, TransformerLayer
from simplan.plan.plan import Plan


# --------------------------------------------------------------------------- tensor parallel
def apply_tp(chunk: Chunk, tp_mesh, sequence_parallel: bool, loss_parallel: bool) -> None:
    """Megatron-LM column/row-parallel layers on each unit of ``chunk``. With sequence
    parallelism the residual stream between blocks is split along the sequence (dim 1):
    norms run on the shard, each block's input is all-gathered once and its output
    reduce-scattered."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, PrepareModuleOutput,
                                                   RowwiseParallel, SequenceParallel, parallelize_module)

    seq = Shard(1)
    block_out = seq if sequence_parallel else Replicate()
    # with sequence parallelism a column-parallel input is saved as the rank's sequence shard
    # and gathered again in backward, as Megatron-LM does (simplan.execute.saved)
    for name, unit in chunk.units.items():
        plan: dict = {}
        if name == "embedding":
            # vocabulary-parallel lookup (Megatron-LM VocabParallelEmbedding): all-reduce of the output
            plan["tok"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
            parallelize_module(unit, tp_mesh, plan)
            if sequence_parallel:
                # the learned positions are added to the full sequence, then each rank keeps its
                # shard: an all-reduce where Megatron-LM reduce-scatters (one all-gather's worth
                # more per micro-batch, which the simulator does not charge)
                parallelize_module(unit, tp_mesh, PrepareModuleOutput(output_layouts=Replicate(),
                                                                      desired_output_layouts=seq))
            continue
        if name == "head":
            if sequence_parallel:
                plan["norm"] = SequenceParallel()
            plan["out"] = ColwiseParallel(input_layouts=seq if sequence_parallel else Replicate(),
                                          output_layouts=Shard(-1) if loss_parallel else Replicate(),
                                          use_local_output=not loss_parallel)
            parallelize_module(unit, tp_mesh, plan)
            if sequence_parallel:
                saved.regather_inputs(unit.out)
            continue
        mlp_names = ("fc1", "fc2") if hasattr(unit.mlp.mlp, "fc1") else ("w1", "w3", "w2")
        for block, inner, col, row in (("attention", "attn", ("wq", "wk", "wv"), "wo"),
                                       ("mlp", "mlp", mlp_names[:-1], mlp_names[-1])):
            if sequence_parallel:
                plan[f"{block}.norm"] = SequenceParallel()
            # the block input enters as one replicated DTensor shared by its column-parallel
            # projections (q, k, v; or w1, w3), so that backward sums their input gradients
            # locally and reduces once, Megatron-LM's f operator (torchtitan does the same);
            # a plain tensor would make each projection reduce its own input gradient
            plan[f"{block}.{inner}"] = PrepareModuleInput(input_layouts=(block_out,),
                                                          desired_input_layouts=(Replicate(),),
                                                          use_local_output=False)
            for c in col:
                plan[f"{block}.{inner}.{c}"] = ColwiseParallel()
            plan[f"{block}.{inner}.{row}"] = RowwiseParallel(output_layouts=block_out)
        parallelize_module(unit, tp_mesh, plan)
        if sequence_parallel:
            # keep the gathered block input as the sequence shard (Megatron-LM's layout)
            saved.regather_inputs(unit.attention.attn)
            saved.regather_inputs(unit.mlp.mlp)


# --------------------------------------------------------------------------- recomputation
class Checkpointed(nn.Module):
    """Recompute ``module`` in backward (non-reentrant ``torch.utils.checkpoint``). What
    stays saved is the module's inputs, recorded for the activation count."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        saved.note(*args)
        return checkpoint(self.module, *args, use_reentrant=False)


def apply_ac(chunk: Chunk, mode: str) -> None:
    """``full``: checkpoint every transformer layer, keeping its input (Korthikanti et al.
    2022, Section 4.3). ``selective``: checkpoint the attention core only (Q K^T, softmax,
    A V), keeping Q, K, V (Section 5)."""
    if mode == "none":
        return
    for name, unit in list(chunk.units.items()):
        if not isinstance(unit, TransformerLayer):
            continue
        if mode == "full":
            chunk.units[name] = Checkpointed(unit)
        elif mode == "selective":
            attn = unit.attention.attn
            if isinstance(attn.core, AttentionCore) and attn.core.flash:
                raise SimplanError("plan.recompute: selective recomputation of a flash-attention core "
                                   "saves nothing (FlashAttention already recomputes it); use none or full")
            attn.core = Checkpointed(attn.core)
        else:
            raise SimplanError(f"plan.recompute: {mode!r} is not one of none, selective, full")


# --------------------------------------------------------------------------- data parallel
def apply_ddp(module: nn.Module, dp_mesh, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # the model's only buffers are constants (the causal mask), identical on every rank: with
    # the default broadcast_buffers=True DDP would broadcast them from rank 0 before every
    # synchronizing forward, a collective (and sync point) the training step does not need
    return DistributedDataParallel(module, device_ids=ids, process_group=dp_mesh.get_group(),
                                   broadcast_buffers=False)


def apply_fsdp(chunk: Chunk, dp_mesh, reshard_after_forward: bool) -> nn.Module:
    """FSDP2: one parameter group per unit, then the chunk (torchtitan's ``apply_fsdp``)."""
    from torch.distributed.fsdp import fully_shard

    for unit in chunk.units.values():
        fully_shard(unit, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(chunk, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)
    return chunk


def apply_dp(chunk: Chunk, plan: Plan, dp_mesh, device: torch.device) -> nn.Module:
    """The data-parallel wrapper the plan asks for (identity at dp = 1)."""
    if plan.dp == 1:
        return chunk
    if plan.dp_sync != "allreduce":
        raise SimplanError(f"plan.dp_sync: the torch executor runs allreduce (DDP / FSDP), "
                           f"not {plan.dp_sync}")
    if plan.zero_stage >= 2:
        return apply_fsdp(chunk, dp_mesh, reshard_after_forward=plan.zero_stage == 3)
    if plan.tp > 1:
        raise SimplanError(f"plan.zero_stage: dp({plan.dp}) with tp({plan.tp}) needs zero_stage 2 or 3 in the "
                           f"torch executor (DDP does not take DTensor parameters), got {plan.zero_stage}")
    return apply_ddp(chunk, dp_mesh, device)


def build_optimizer(modules: list[nn.Module], plan: Plan, dp_mesh, lr: float) -> torch.optim.Optimizer:
    """AdamW over the rank's parameters; ZeRO-1 shards its states with ZeroRedundancyOptimizer."""
    params = [p for m in modules for p in m.parameters()]
    if plan.zero_stage == 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, lr=lr,
                                       process_group=dp_mesh.get_group())
    return torch.optim.AdamW(params, lr=lr)


# --------------------------------------------------------------------------- pipeline
SCHEDULE_CLASSES = {
    "gpipe": "ScheduleGPipe",
    "1f1b": "Schedule1F1B",
    "interleaved-1f1b": "ScheduleInterleaved1F1B",
    "zero-bubble": "ScheduleInterleavedZeroBubble",
}


def apply_pp(stage_modules: dict[int, nn.Module], plan: Plan, pp_mesh, device: torch.device, loss):
    """PipelineStage per local chunk (chunk c runs on pipeline rank c % pp, the
    partitioner's assignment) and the plan's schedule over them."""
    from torch.distributed import pipelining

    chunks = plan.pp * plan.virtual_stages
    group = pp_mesh.get_group()
    stages = [pipelining.PipelineStage(module, stage_index=c, num_stages=chunks, device=device, group=group)
              for c, module in sorted(stage_modules.items())]
    cls = getattr(pipelining, SCHEDULE_CLASSES[plan.schedule])
    if plan.schedule in ("gpipe", "1f1b"):
        return cls(stages[0], n_microbatches=plan.micro_batches, loss_fn=loss), stages
    return cls(stages, n_microbatches=plan.micro_batches, loss_fn=loss), stages
