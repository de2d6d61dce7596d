"""Compute time of a layer on one GPU: a roofline per op with size-dependent efficiency.

For each op (simplan.model.layer.Op) the time is the larger of its math time and its
memory time (Williams et al. 2009, "Roofline: an insightful visual performance model"),
plus the kernel launch gap:

    math   = (F + F_half) / (peak * matmul_efficiency)      matmul and attention ops
    memory = bytes / (hbm_bytes_per_s * memory_efficiency)

``F_half`` (HardwareProfile.matmul_half_flops) makes the achieved rate F / math half of
``peak * matmul_efficiency`` at F = F_half: small matmuls cannot fill the GPU.
Backward runs ``bwd_factor`` times the forward work in ``bwd_factor`` kernels' worth
of fixed cost (grad-input and grad-weight for a matmul).

``kernel_overhead_s`` is the host's launch-to-launch gap (framework dispatch and kernel
launch). A GPU runs kernels asynchronously from the host that queues them (CUDA stream
semantics), so over a run of ops the launches hide behind longer kernels and the run
takes max(sum of device times, sum of launch gaps), the host-bound regime of small
kernels (PyTorch docs, "CUDA semantics: asynchronous execution": GPU operations are
enqueued and run later; the vTrain A100 runs of small GPT models show it: a floor of
~3.4 ms per layer and micro-batch that does not move with tp 1-4 or micro-batch 1-2).
A host device (fabric ``host``) runs each op synchronously: device time plus gap, op by op.
"""

from __future__ import annotations

from dataclasses import dataclass

from simplan.cost.memory import grad_element_bytes
from simplan.hardware.profile import HardwareProfile
from simplan.model.layer import Layer, Op
from simplan.plan.plan import Plan
from simplan.units import BYTES_PER_ELEMENT

ACT_BYTES_16BIT = 2


@dataclass(frozen=True, slots=True)
class LayerTime:
    fwd_s: float
    bwd_s: float


def shard_factor(sharding: str, plan: Plan) -> int:
    """How many ways tensor (and sequence) parallelism divides an op or tensor."""
    if sharding == "tp":
        return plan.tp
    if sharding == "sp":
        return plan.tp if plan.sequence_parallel else 1
    return 1


def _act_scale(plan: Plan) -> float:
    """Activation bytes relative to the 16-bit convention of the layer graph (fp8 runs
    keep 16-bit activations between kernels, as Transformer Engine does)."""
    return max(BYTES_PER_ELEMENT[plan.precision], ACT_BYTES_16BIT) / ACT_BYTES_16BIT


def op_time_s(op: Op, plan: Plan, hw: HardwareProfile, backward: bool = False) -> float:
    work = op.bwd_factor if backward else 1.0
    kernels = _kernels(op, backward)
    split = shard_factor(op.sharding, plan) * plan.cp
    per_rank_samples = plan.micro_batch / split
    # expert parallelism moves tokens, not work: each rank still runs tokens x top_k of expert math
    weight_split = shard_factor(op.sharding, plan)
    bytes_ = work * (op.act_bytes * per_rank_samples * _act_scale(plan) + op.weight_bytes / weight_split
                     * BYTES_PER_ELEMENT[plan.precision] / ACT_BYTES_16BIT)
    if runs_fp8(op, plan):
        bytes_ += fp8_cast_bytes(op, backward) * per_rank_samples
    memory_s = memory_time_s(bytes_, hw)
    if op.kind == "elementwise" or op.flops == 0:
        return memory_s + kernels * launch_gap_s(op, plan, hw)
    flops = work * op.flops * per_rank_samples
    if op.kind == "attention" and op.fused:
        math_s = fused_attention_s(op, flops, plan, hw)
    else:
        peak, efficiency = matmul_rate(op, plan, hw)
        math_s = (flops + kernels * hw.matmul_half_flops) / (peak * efficiency)
    return max(math_s, memory_s) + kernels * launch_gap_s(op, plan, hw)


def runs_fp8(op: Op, plan: Plan) -> bool:
    """Whether ``op`` is an fp8 matmul under ``plan`` (``Op.fp8``)."""
    return plan.precision == "fp8" and op.kind == "matmul" and op.fp8


def matmul_rate(op: Op, plan: Plan, hw: HardwareProfile) -> tuple[float, float]:
    """(peak FLOP/s, achievable fraction) of a matmul: fp8 ones at the fp8 peak and its own
    efficiency (large fp8 GEMMs reach a smaller fraction of their peak than bf16 ones: on
    H200, 73% against 80%, S. Bekman, ml-engineering, maximum achievable matmul FLOPS
    tables); every other matmul of an fp8 plan at the 16-bit peak."""
    if runs_fp8(op, plan):
        return hw.peak("fp8"), hw.fp8_matmul_efficiency or hw.matmul_efficiency
    return hw.peak_16bit(plan.precision), hw.matmul_efficiency


def fused_attention_s(op: Op, flops: float, plan: Plan, hw: HardwareProfile) -> float:
    """Time of a fused attention kernel doing ``flops`` (the non-causal count): a causal
    mask halves the work (FlashAttention-2, Dao 2023, Section 4.1), and the kernel runs at
    ``attention_efficiency`` of the 16-bit peak, less on short sequences per rank:
    efficiency x s / (s + attention_half_seq) (FlashAttention-3, Shah et al. 2024, Fig. 5-7:
    throughput rises with sequence length at fixed tokens). An fp8 plan keeps attention in
    16 bits (Transformer Engine's default DotProductAttention, torchtitan's float8).
    ``Plan.attention_kernel`` picks the kernel's rate (the best one, or FlashAttention-2)."""
    executed = flops * (0.5 if op.causal else 1.0)
    seq = op.seq_len / plan.cp if op.seq_len else 0.0
    efficiency = hw.attention_efficiency or hw.matmul_efficiency
    if plan.attention_kernel == "fa2" and hw.attention_fa2_efficiency:
        efficiency = hw.attention_fa2_efficiency
    if seq > 0 and hw.attention_half_seq > 0:
        efficiency *= seq / (seq + hw.attention_half_seq)
    return executed / (hw.peak_16bit(plan.precision) * efficiency)


FP8_CAST_BYTES_PER_ELEMENT = 4
"""Bytes moved per element an fp8 matmul casts: read 2 (bf16), write 1 (fp8) and 1 more for
the transposed fp8 copy the other GEMM of the pair needs (Transformer Engine's fused
cast-transpose; Micikevicius et al. 2022, "FP8 Formats for Deep Learning", Section 4)."""


def fp8_cast_bytes(op: Op, backward: bool) -> float:
    """Per sample, HBM bytes of the casts around one fp8 matmul: its input in forward, its
    output gradient in backward (the weights are cast once per step and cached across
    micro-batches: small, not charged)."""
    elems = op.output_elems if backward else op.input_elems
    return FP8_CAST_BYTES_PER_ELEMENT * elems


def launch_gap_s(op: Op, plan: Plan, hw: HardwareProfile) -> float:
    """Host time per kernel of ``op``: the launch gap, plus DTensor's dispatch when tensor
    parallelism shards the op (the torch executor runs those ops on DTensors; the cost
    grows with the number of sharded ops, not their size: ``calibrate --local`` measures
    it as the executor's layers with and without DTensor, at negligible width)."""
    dtensor = hw.dtensor_op_overhead_s if shard_factor(op.sharding, plan) > 1 else 0.0
    return hw.kernel_overhead_s + dtensor


def _kernels(op: Op, backward: bool) -> float:
    return max(1.0, round(op.bwd_factor)) if backward else 1.0


def op_kernels(op: Op) -> float:
    """Forward + backward kernels charged for ``op``."""
    return _kernels(op, False) + _kernels(op, True)


def sharded_kernels(ops, plan: Plan) -> float:
    """Forward + backward kernels of the ops in ``ops`` that tensor parallelism shards under
    ``plan`` (those that run on DTensors in the torch executor)."""
    return sum(op_kernels(op) for op in ops if shard_factor(op.sharding, plan) > 1)


def dtensor_update_s(layers, plan: Plan, hw: HardwareProfile) -> float:
    """Host time DTensor adds to the optimizer step of a rank holding ``layers``
    (``HardwareProfile.dtensor_update_overhead_s``, measured by ``calibrate --local``)."""
    if hw.dtensor_update_overhead_s == 0.0:
        return 0.0
    return hw.dtensor_update_overhead_s * sum(sharded_kernels(layer.ops, plan) for layer in layers)


def ops_time_s(ops, plan: Plan, hw: HardwareProfile, backward: bool = False) -> float:
    """Time of a run of ops on one rank: max(device time, launch gaps) on an asynchronous
    accelerator, their sum on a host device (see the module docstring)."""
    ops = tuple(ops)
    if hw.fabric == "host":
        return sum(op_time_s(op, plan, hw, backward) for op in ops)
    launches = sum(_kernels(op, backward) * launch_gap_s(op, plan, hw) for op in ops)
    device = sum(op_time_s(op, plan, hw, backward) for op in ops) - launches
    return max(device, launches)


def layer_time(layer: Layer, plan: Plan, hw: HardwareProfile) -> LayerTime:
    """Forward and backward time of one micro-batch through ``layer`` on one rank."""
    return LayerTime(
        fwd_s=ops_time_s(layer.ops, plan, hw),
        bwd_s=ops_time_s(layer.ops, plan, hw, backward=True),
    )


def optimizer_time_s(params_local: float, plan: Plan, hw: HardwareProfile) -> float:
    """Mixed-precision Adam over the rank's parameter shard, memory bound: read fp32 master
    weights, momentum, variance and the gradient; write the three states and the 16-bit
    weights (Rajbhandari et al. 2020, ZeRO, Section 3.1: 16 bytes of state per parameter)."""
    grad_bytes = grad_element_bytes(plan)
    bytes_per_param = 3 * 4 + grad_bytes + 3 * 4 + grad_bytes
    return memory_time_s(params_local * bytes_per_param, hw) + hw.kernel_overhead_s


def memory_time_s(nbytes: float, hw: HardwareProfile) -> float:
    """Time to move ``nbytes`` (read plus write) through device memory at the rate
    memory-bound kernels reach (the roofline's memory term)."""
    return nbytes / (hw.hbm_bytes_per_s * hw.memory_efficiency)


def fsdp_gather_copy_s(unit_bytes: float, shards: int, hw: HardwareProfile) -> float:
    """Copies around one FSDP2 all-gather of a unit of ``unit_bytes`` unsharded parameter
    bytes over ``shards`` ranks: the rank's shard into the all-gather input (read and write
    unit/shards) and the gathered output into the unsharded parameters (read and write the
    unit). PyTorch FSDP2, torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py:
    ``foreach_all_gather`` (``all_gather_copy_in``) and ``foreach_all_gather_copy_out``
    (``split_with_sizes_copy``)."""
    return memory_time_s(2.0 * unit_bytes / shards + 2.0 * unit_bytes, hw)


def fsdp_reduce_copy_s(unit_bytes: float, hw: HardwareProfile) -> float:
    """The copy before one FSDP2 reduce-scatter of a unit's gradients: its unsharded
    gradients into the reduce-scatter input (read and write the unit). PyTorch FSDP2,
    torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py: ``foreach_reduce``
    (``foreach_reduce_scatter_copy_in``, ``chunk_cat``)."""
    return memory_time_s(2.0 * unit_bytes, hw)
