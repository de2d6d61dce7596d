"""Memory per GPU: model states, activations in flight, communication buffers.

Model states follow mixed-precision Adam as the ZeRO paper counts them (Rajbhandari et
al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
Section 3.1): 2 bytes of 16-bit weights + 2 bytes of 16-bit gradients + K = 12 bytes of
optimizer state (fp32 master weights, momentum, variance) per parameter, 16 bytes in
all; fp32 training keeps 4 + 4 + 8. ZeRO stages 1/2/3 divide the optimizer states /
+ gradients / + weights by the data-parallel degree (Section 5, Fig. 1, Table 1).

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", Sections 4-5) through the per-layer coefficients of the layer
graph (``Layer.act_saved_bytes``, ``act_core_bytes``, ``input_bytes``), times the
micro-batches each pipeline stage holds at its peak under the plan's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from simplan.hardware.profile import HardwareProfile
from simplan.model.graph import RECOMPUTED_KINDS, LayerGraph
from simplan.model.layer import Layer
from simplan.plan.partition import plan_chunks
from simplan.plan.plan import Plan

if TYPE_CHECKING:
    from simplan.scenario import Scenario

MIB = 2**20

DDP_BUCKET_BYTES = 25 * MIB
"""PyTorch DistributedDataParallel's default ``bucket_cap_mb`` = 25 MiB
(torch.nn.parallel.DistributedDataParallel documentation)."""

BREAKDOWN = ("weights", "gradients", "optimizer", "activations", "comm_buffers", "other")

_MIXED = {"weights": 2, "gradients": 2, "optimizer": 12}
"""Bytes per parameter, mixed-precision Adam (ZeRO paper, Section 3.1: 2 + 2 + K, K = 12).
fp8 training keeps the same 16-bit weights and gradients and fp32 optimizer states
(Transformer Engine casts to fp8 inside the matmuls)."""
_FP32 = {"weights": 4, "gradients": 4, "optimizer": 8}
"""fp32 weights and gradients, Adam momentum and variance; no separate master copy."""

ACTIVATION_SCALE = {"fp32": 2.0, "tf32": 2.0, "fp16": 1.0, "bf16": 1.0, "fp8": 1.0}
"""Activation bytes relative to the graph's 16-bit convention (Korthikanti et al. 2022,
Section 4.1). tf32 stores fp32 tensors. The 1-byte dropout masks are scaled too: a
small overestimate for fp32 runs (the head's fp32 logits are not: ``act_fp32_bytes``).
fp8 runs keep their saved activations in 16 bits (Transformer Engine's default), hence 1."""


def param_element_bytes(precision: str) -> int:
    """Bytes of one parameter element as the model computes with it (what FSDP gathers and
    ZeRO-1/2 all-gathers after the step): 4 in fp32/tf32 training, else 2 (fp8 keeps 16-bit
    weights, Transformer Engine casts inside the matmuls)."""
    return _FP32["weights"] if precision in ("fp32", "tf32") else _MIXED["weights"]


def grad_element_bytes(plan: Plan) -> int:
    """Bytes of one gradient element as it is held and reduced: fp32 with
    ``Plan.main_grads_fp32``, else the parameters' width."""
    return 4 if plan.main_grads_fp32 else param_element_bytes(plan.precision)


def model_state_bytes(params: float, precision: str, zero_stage: int, shard: int,
                      main_grads_fp32: bool = False) -> dict[str, float]:
    """Weights, gradients and optimizer bytes of ``params`` parameters on one GPU, with
    ZeRO sharding across ``shard`` data-parallel ranks (ZeRO paper, Table 1:
    P_os divides the optimizer states, P_os+g also the gradients, P_os+g+p everything).
    ``main_grads_fp32``: gradients kept in fp32 (``Plan.main_grads_fp32``)."""
    per = _FP32 if precision in ("fp32", "tf32") else _MIXED
    grad = 4 if main_grads_fp32 else per["gradients"]
    return {
        "weights": params * per["weights"] / (shard if zero_stage >= 3 else 1),
        "gradients": params * grad / (shard if zero_stage >= 2 else 1),
        "optimizer": params * per["optimizer"] / (shard if zero_stage >= 1 else 1),
    }


def layer_activation_bytes(layer: Layer, plan: Plan) -> float:
    """Bytes one micro-batch leaves saved for backward in ``layer`` on one GPU.

    Korthikanti et al. 2022: with no recomputation a layer keeps the ``sp`` class
    (replicated across tensor-parallel ranks unless sequence parallelism splits it,
    Section 4.2.2), the ``tp`` class / t, and the attention core / t (Eq. 2 and 3);
    selective recomputation drops the attention core (Section 5: 34 s b h / t with
    sequence parallelism); full recomputation keeps only each recomputed layer's input
    (Section 4.3: 2 s b h, split by sequence parallelism in Megatron-LM), while layers
    it does not re-run (embedding, head) keep everything. Context parallelism splits
    the sequence, so every term is divided by cp.
    """
    t = plan.tp
    sp_div = t if plan.sequence_parallel else 1
    if plan.recompute == "full" and layer.kind in RECOMPUTED_KINDS:
        per_sample = layer.input_bytes / sp_div
    else:
        saved = layer.act_saved_bytes
        per_sample = saved.get("sp", 0.0) / sp_div + saved.get("tp", 0.0) / t + saved.get("none", 0.0)
        if plan.recompute == "none":
            per_sample += layer.act_core_bytes / t
    fp32 = layer.act_fp32_bytes / t  # the loss's fp32 logits: the same bytes at any precision
    return (per_sample * ACTIVATION_SCALE[plan.precision] + fp32) * plan.micro_batch / plan.cp


def activation_bytes_per_microbatch(layers: Sequence[Layer], plan: Plan) -> float:
    """Saved-for-backward bytes of one micro-batch through ``layers`` on one GPU: what
    the torch executor's ``saved_tensors_hooks`` measure, and the one source the memory
    report multiplies by the micro-batches in flight."""
    return sum(layer_activation_bytes(layer, plan) for layer in layers)


def schedule_order(plan: Plan, stage: int, micro_batches: int) -> tuple[int, int, list[int], list[int]]:
    """The order of forward and backward passes of one stage: (passes per direction,
    warm-up forwards, local chunk of the k-th forward, local chunk of the k-th backward,
    both periodic in k with the returned lists' length). After the warm-up the stage
    alternates one forward, one backward; then the remaining backwards. Only the order
    matters for memory: a forward saves a chunk's activations for one micro-batch, its
    backward frees them.

    gpipe: all forwards, then all backwards (Huang et al. 2019).
    1f1b: pp - stage - 1 warm-up forwards, then one forward / one backward (Narayanan
    et al. 2021, Section 2.2.1; Megatron-LM's ``forward_backward_pipelining_without_
    interleaving``), so min(pp - stage, m) micro-batches are in flight at the peak.
    interleaved-1f1b: Megatron-LM's ``forward_backward_pipelining_with_interleaving``:
    2 (pp - stage - 1) + (v - 1) pp warm-up forwards over chunk-micro-batches, the k-th
    forward on local chunk (k mod pp v) // pp, the k-th backward on chunk
    v - 1 - (k mod pp v) // pp. At stage 0 the peak is 2(pp - 1) + (v - 1) pp + 1 =
    v pp + pp - 1 chunk-micro-batches, each 1/v of the stage's layers: pp (1 + (pp - 1)
    / (pp v)) micro-batches' worth, Korthikanti et al. 2022's interleaving factor
    (Section 4.2.3).
    zero-bubble: ZB-H1 (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", Section 3.1)
    bounds every stage's peak by the first stage's 1F1B peak; later stages defer weight
    gradient passes (W) and keep those micro-batches' matmul inputs and output
    gradients meanwhile. Assumption: every stage reaches that bound, i.e. holds what
    stage 0 holds under (interleaved, when v > 1) 1F1B.
    """
    v, pp = plan.virtual_stages, plan.pp
    total = micro_batches * v
    if plan.schedule == "zero-bubble":
        stage = 0
    if plan.schedule == "gpipe":
        warmup = total
    elif v == 1:
        warmup = min(pp - stage - 1, total)
    else:
        warmup = min(2 * (pp - stage - 1) + (v - 1) * pp, total)
    if v == 1:
        return total, warmup, [0], [0]
    period = pp * v
    fwd = [k // pp for k in range(period)]
    return total, warmup, fwd, [v - 1 - c for c in fwd]


def in_flight_peak_bytes(plan: Plan, stage: int, chunk_bytes: Sequence[float]) -> float:
    """Peak saved activations of ``stage`` given the per-micro-batch bytes of each of its
    ``virtual_stages`` local chunks: the running sum over the schedule's passes.

    The warm-up only adds; in the steady state the bytes held after each forward repeat
    with the chunk period (both pass orders are periodic with the same per-period total),
    so one period of it gives the peak, in O(pp * v) whatever the number of micro-batches.
    """
    total, warmup, fwd, bwd = schedule_order(plan, stage, plan.micro_batches)
    period = len(fwd)
    full, rest = divmod(warmup, period)
    held = full * sum(chunk_bytes[c] for c in fwd) + sum(chunk_bytes[c] for c in fwd[:rest])
    peak = held
    for i in range(min(total - warmup, period)):
        held += chunk_bytes[fwd[(warmup + i) % period]]
        peak = max(peak, held)
        held -= chunk_bytes[bwd[i % period]]
    return peak


def micro_batches_in_flight(plan: Plan, stage: int) -> float:
    """Micro-batches' worth of a stage's activations held at its peak (equal chunks)."""
    return in_flight_peak_bytes(plan, stage, [1.0 / plan.virtual_stages] * plan.virtual_stages)


def _recompute_units(layers: Sequence[Layer]) -> list[list[Layer]]:
    """The units full recomputation re-runs one at a time: a transformer layer
    (attention + MLP/MoE, Megatron-LM checkpoints whole TransformerLayers) or a block."""
    units: list[list[Layer]] = []
    for layer in layers:
        if layer.kind not in RECOMPUTED_KINDS:
            continue
        if layer.kind in ("mlp", "moe") and units and units[-1][-1].kind == "attention":
            units[-1].append(layer)
        else:
            units.append([layer])
    return units


def recompute_working_bytes(layers: Sequence[Layer], plan: Plan) -> float:
    """Under full recomputation, the backward of a checkpointed unit re-runs its forward
    and holds its full activations until that unit's backward ends (Chen et al. 2016,
    "Training Deep Nets with Sublinear Memory Cost", Section 4): the largest unit of the
    stage, for one micro-batch."""
    if plan.recompute != "full":
        return 0.0
    full = replace(plan, recompute="none")
    return max((activation_bytes_per_microbatch(u, full) for u in _recompute_units(layers)), default=0.0)


def params_per_gpu(layer: Layer, plan: Plan) -> tuple[float, float]:
    """(dense, expert) parameters of ``layer`` on one GPU. Tensor parallelism divides
    ``tp``-sharded parameters; expert parallelism divides a MoE layer's experts
    (Lepikhin et al. 2021, GShard; the router and norm stay whole)."""
    tp = plan.tp if layer.params_sharding == "tp" else 1
    dense = layer.params - layer.expert_params
    return dense / tp, layer.expert_params / (tp * plan.ep)


def _stage_params(stage_layers: Sequence[Layer], plan: Plan, graph: LayerGraph,
                  holds_tied_copy: bool) -> tuple[float, float]:
    dense = expert = 0.0
    for layer in stage_layers:
        d, e = params_per_gpu(layer, plan)
        dense += d
        expert += e
    if holds_tied_copy:
        # With tied embeddings and pp > 1 the last stage keeps its own copy of the word
        # embedding for the output layer, its gradient all-reduced with the first stage's
        # (Megatron-LM, Shoeybi et al. 2019 / Narayanan et al. 2021 implementation:
        # ``LanguageModule.setup_embeddings_and_output_layer``).
        dense += graph.spec.vocab * graph.spec.hidden / plan.tp
    return dense, expert


@dataclass(frozen=True)
class MemoryReport:
    peak_bytes_per_gpu: float
    """The largest per-stage total (every GPU of a stage holds the same)."""
    capacity_bytes: float
    fits: bool
    shortfall_bytes: float
    """How far the peak exceeds capacity (0 if it fits)."""
    peak_stage: int
    breakdown: dict[str, float]
    """The peak stage's bytes by BREAKDOWN key."""
    per_stage: list[dict[str, float]]

    def to_json(self) -> dict:
        return {
            "peak_bytes_per_gpu": self.peak_bytes_per_gpu,
            "capacity_bytes": self.capacity_bytes,
            "fits": self.fits,
            "shortfall_bytes": self.shortfall_bytes,
            "peak_stage": self.peak_stage,
            "breakdown": dict(self.breakdown),
            "per_stage_peak_bytes": [sum(s.values()) for s in self.per_stage],
        }


def memory_report(graph: LayerGraph, plan: Plan, profile: HardwareProfile,
                  chunks: Sequence[Sequence[Layer]]) -> MemoryReport:
    """Memory per GPU of each pipeline stage at its peak (everything counted live at
    once: activations peak at the end of the forwards, when gradients are already
    allocated, as in Megatron-LM and PyTorch DDP). ``chunks``: ``simplan.plan.partition.
    plan_chunks(graph, plan)``; chunk c runs on stage c % pp."""
    pp, v = plan.pp, plan.virtual_stages
    shard = plan.dp * plan.cp  # ZeRO shards across the data-parallel (and context-parallel) ranks
    expert_shard = max(shard // plan.ep, 1)  # experts are replicated only across dp*cp / ep ranks
    embedding_stage = next((c % pp for c, layers in enumerate(chunks)
                            if any(layer.kind == "embedding" for layer in layers)), None)
    per_stage: list[dict[str, float]] = []
    for stage in range(pp):
        local = [tuple(chunks[c]) for c in range(stage, len(chunks), pp)]
        layers = [layer for chunk in local for layer in chunk]
        has_head = any(layer.kind == "head" for layer in layers)
        tied_copy = graph.spec.tied_embeddings and has_head and embedding_stage not in (None, stage)
        dense, expert = _stage_params(layers, plan, graph, tied_copy)
        states = model_state_bytes(dense, plan.precision, plan.zero_stage, shard, plan.main_grads_fp32)
        expert_states = model_state_bytes(expert, plan.precision, plan.zero_stage, expert_shard, plan.main_grads_fp32)
        row = {k: states[k] + expert_states[k] for k in states}

        chunk_bytes = [activation_bytes_per_microbatch(chunk, plan) for chunk in local]
        row["activations"] = in_flight_peak_bytes(plan, stage, chunk_bytes) + recompute_working_bytes(layers, plan)
        row["comm_buffers"] = _comm_buffer_bytes(plan, graph, layers, local, dense + expert)
        # CUDA context, library workspaces, NCCL buffers, allocator reserve (HardwareProfile.memory_reserve_bytes)
        row["other"] = profile.memory_reserve_bytes
        per_stage.append({k: row[k] for k in BREAKDOWN})

    totals = [sum(s.values()) for s in per_stage]
    peak_stage = max(range(pp), key=lambda s: totals[s])
    peak = totals[peak_stage]
    capacity = profile.hbm_bytes
    return MemoryReport(
        peak_bytes_per_gpu=peak,
        capacity_bytes=capacity,
        fits=peak <= capacity,
        shortfall_bytes=max(peak - capacity, 0.0),
        peak_stage=peak_stage,
        breakdown=dict(per_stage[peak_stage]),
        per_stage=per_stage,
    )


def scenario_memory(scenario: "Scenario") -> MemoryReport:
    """The memory report of a checked scenario, with its plan's partition."""
    graph, plan = scenario.graph, scenario.plan
    return memory_report(graph, plan, scenario.hardware, plan_chunks(graph, plan))


def _comm_buffer_bytes(plan: Plan, graph: LayerGraph, layers: Sequence[Layer],
                       local: Sequence[Sequence[Layer]], stage_params: float) -> float:
    """Communication buffers a stage holds on top of its model states and activations.

    Data parallelism without ZeRO-3: one gradient bucket being reduced, 25 MiB by
    default in PyTorch DDP (capped by the gradients themselves). ZeRO-3 / FSDP: the
    gathered parameters of the layer being computed and of the next one prefetched
    (Rajbhandari et al. 2020, Section 7.2 and FSDP's forward prefetch): two of the
    largest layer, unsharded. Pipeline parallelism: one activation and one gradient in
    transit at the stage boundary (1F1B's steady state sends forward and receives
    backward at once, Narayanan et al. 2021, Section 2.2.1).
    """
    grad_bytes = model_state_bytes(1.0, plan.precision, 0, 1, plan.main_grads_fp32)["gradients"]
    weight_bytes = model_state_bytes(1.0, plan.precision, 0, 1)["weights"]
    out = 0.0
    if plan.dp * plan.cp > 1:
        if plan.zero_stage >= 3:
            largest = max((sum(params_per_gpu(layer, plan)) for layer in layers), default=0.0)
            out += 2 * largest * weight_bytes
        else:
            out += min(DDP_BUCKET_BYTES, stage_params * grad_bytes)
    if plan.pp > 1:
        boundary = max((chunk[-1].output_bytes for chunk in local if chunk), default=0.0)
        sp_div = plan.tp if plan.sequence_parallel else 1
        out += 2 * boundary * plan.micro_batch * ACTIVATION_SCALE[plan.precision] / (plan.cp * sp_div)
    return out
