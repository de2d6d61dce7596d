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
"""

from __future__ import annotations

from dataclasses import dataclass

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
    kernels = max(1.0, round(op.bwd_factor)) if backward else 1.0
    split = shard_factor(op.sharding, plan) * plan.cp
    per_rank_samples = plan.micro_batch / split
    # expert parallelism moves tokens, not work: each rank still runs tokens x top_k of expert math
    weight_split = shard_factor(op.sharding, plan)
    bytes_ = work * (op.act_bytes * per_rank_samples * _act_scale(plan) + op.weight_bytes / weight_split
                     * BYTES_PER_ELEMENT[plan.precision] / ACT_BYTES_16BIT)
    memory_s = bytes_ / (hw.hbm_bytes_per_s * hw.memory_efficiency)
    if op.kind == "elementwise" or op.flops == 0:
        return memory_s + kernels * hw.kernel_overhead_s
    flops = work * op.flops * per_rank_samples
    math_s = (flops + kernels * hw.matmul_half_flops) / (hw.peak(plan.precision) * hw.matmul_efficiency)
    return max(math_s, memory_s) + kernels * hw.kernel_overhead_s


def layer_time(layer: Layer, plan: Plan, hw: HardwareProfile) -> LayerTime:
    """Forward and backward time of one micro-batch through ``layer`` on one rank."""
    return LayerTime(
        fwd_s=sum(op_time_s(op, plan, hw) for op in layer.ops),
        bwd_s=sum(op_time_s(op, plan, hw, backward=True) for op in layer.ops),
    )


def optimizer_time_s(params_local: float, plan: Plan, hw: HardwareProfile) -> float:
    """Mixed-precision Adam over the rank's parameter shard, memory bound: read fp32 master
    weights, momentum, variance and the gradient; write the three states and the 16-bit
    weights (Rajbhandari et al. 2020, ZeRO, Section 3.1: 16 bytes of state per parameter)."""
    grad_bytes = BYTES_PER_ELEMENT[plan.precision] if plan.precision != "fp8" else 2
    bytes_per_param = 3 * 4 + grad_bytes + 3 * 4 + grad_bytes
    return params_local * bytes_per_param / (hw.hbm_bytes_per_s * hw.memory_efficiency) + hw.kernel_overhead_s
