"""Lowering: (layer graph, plan, cluster) -> the work of every pipeline stage.

The result, a :class:`Program`, is plain data the SimPy engine replays: for each model
chunk the forward, backward (input-gradient and weight-gradient parts), and
recomputation steps per micro-batch, each a compute time plus the collectives that
block it; the pipeline send sizes; the gradient buckets of data-parallel
synchronization; the optimizer step. Every number is per rank of one tensor-parallel
group (all ranks of a group do the same work at the same time).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from simplan.cost import collectives as coll
from simplan.cost.compute import (dtensor_update_s, fsdp_gather_copy_s, fsdp_reduce_copy_s, layer_time, ops_time_s,
                                  optimizer_time_s, shard_factor)
from simplan.cost.memory import (ACTIVATION_SCALE, activation_bytes_per_microbatch, grad_element_bytes,
                                 param_element_bytes, params_per_gpu)
from simplan.hardware.cluster import Cluster
from simplan.model.graph import RECOMPUTED_KINDS, LayerGraph
from simplan.model.layer import Layer
from simplan.plan.partition import group_units, plan_chunks
from simplan.plan.placement import group_span, joint_group_ranks, rank_of, span_of
from simplan.plan.plan import Plan
from simplan.units import BYTES_PER_ELEMENT

DDP_BUCKET_BYTES = 25 * 2**20
"""PyTorch DDP's default bucket_cap_mb=25 (torch.nn.parallel.DistributedDataParallel)."""


@dataclass(frozen=True, slots=True)
class Comm:
    """One collective on the critical path of a step, as bandwidth phases."""

    name: str
    """tp | cp | ep | dp | pp | zero | ps."""
    phases: tuple[coll.Phase, ...]
    idle_s: float
    """Its time alone on the network."""


@dataclass(frozen=True, slots=True)
class Step:
    """One layer's share of a phase: compute, then blocking collectives."""

    layer: str
    compute_s: float
    comms: tuple[Comm, ...] = ()
    """Blocking collectives after the compute (tensor- and expert-parallel)."""
    overlapped: tuple[Comm, ...] = ()
    """Collectives that run alongside the compute (context-parallel key/value exchange)."""
    grad_bytes: float = 0.0
    """Gradient bytes this step produces (backward), for data-parallel buckets."""
    param_bytes: float = 0.0
    """Bytes of this layer's parameter shard (ZeRO-3 gathers them before use)."""
    gather: Comm | None = None
    """ZeRO-3 / FSDP: the all-gather of this layer's parameters before it runs."""


@dataclass(frozen=True, slots=True)
class ChunkProgram:
    chunk: int
    stage: int
    fwd: tuple[Step, ...]
    bwd: tuple[Step, ...]
    """Backward of the layers in reverse order. With the zero-bubble schedule this is the
    input-gradient part only and ``wgrad`` holds the weight-gradient part."""
    wgrad: tuple[Step, ...]
    recompute: tuple[Step, ...]
    send_bytes: float
    """Activation bytes sent to the next chunk per micro-batch (the same back as gradient)."""
    act_bytes: float
    """Activation bytes this chunk keeps per micro-batch in flight (trace memory counter)."""
    grad_bytes: float
    params: float


@dataclass(frozen=True, slots=True)
class Program:
    plan: Plan
    chunks: tuple[ChunkProgram, ...]
    optimizer_s: tuple[float, ...]
    """Per stage."""
    dp_comm: Comm | None
    """The data-parallel gradient collective for one full bucket (per bucket size below)."""
    bucket_bytes: float
    dp_after_optimizer: Comm | None
    """ZeRO-1/2: the parameter all-gather after the optimizer step."""
    zero3: bool
    stage_node: tuple[int, ...]
    """Node of each stage's first rank: a pipeline send between stages on one node uses
    the in-node fabric, otherwise the NICs."""
    intra_latency_s: float
    inter_latency_s: float
    intra_bytes_per_s: float
    inter_bytes_per_s: float
    ps_bytes_per_s: float
    """Parameter server: each worker's share of the servers' NIC bandwidth."""
    exclusive_links: bool
    """Tensor-parallel collectives have their links to themselves: nothing else crosses the
    in-node fabric of a rank while they run, so their time is their idle time."""
    step_overhead_s: float
    comm_uses_compute_core: bool = False
    """Collectives run on the rank's own compute core (``fabric: host``, gloo on a CPU):
    ProcessGroupGloo runs gloo's allreduce algorithms (gloo/allreduce_ring.h and friends)
    on worker threads of the rank's process, which sum and copy the buffers on the CPU, so
    with one core per rank a data-parallel bucket cannot be reduced while backward
    computes; the engine then reduces the gradients after the backward, as with
    ``dp_overlap`` off."""
    norm_grad_allreduce: tuple[Comm | None, ...] = ()
    """Per stage, sequence parallelism's all-reduce of the norms' gradients over the tp
    group before the optimizer step (``Layer.norm_params``), None without it (empty: none anywhere)."""
    grad_copy_s: tuple[float, ...] = ()
    """ZeRO-3 (FSDP2): per stage, the time to copy its gradients into the reduce-scatter
    inputs, once per step before the gradients are reduced (empty: none)."""


def _comm(name: str, kind: str, size_bytes: float, span, hw, algorithm: str | None = None) -> Comm | None:
    if size_bytes <= 0 or (span.size <= 1 and kind != "p2p"):
        return None
    intra, inter = link_rates(hw)
    ph = collective_phases(kind, size_bytes, span, hw, algorithm)
    return Comm(name, ph, coll.idle_time_s(ph, intra, inter))


def collective_phases(kind: str, size_bytes: float, span, hw, algorithm: str | None = None) -> tuple[coll.Phase, ...]:
    """The phases of one collective over ``span``: the profile's own measurement of an
    in-node ``kind`` where it has one, else the ring/tree model from the link's alpha and
    bandwidth (``algorithm``, or the one NCCL's tuner would pick)."""
    intra, inter = link_rates(hw)
    measured = hw.measured_collective(kind)
    if measured is not None and span.nodes == 1:
        return coll.measured_phases(kind, size_bytes, span.size, *measured, intra)
    alg = algorithm or coll.best_algorithm(kind, size_bytes, span.ranks_per_node, span.nodes, hw.intra_latency_s,
                                           hw.inter_latency_s, intra, inter)
    return coll.phases(kind, alg, size_bytes, span.ranks_per_node, span.nodes, hw.intra_latency_s, hw.inter_latency_s)


def link_rates(hw) -> tuple[float, float]:
    """Per-rank bytes/s a collective reaches in the node and across nodes (NCCL bus
    bandwidth = link bandwidth x efficiency; across nodes one rank's share of the NICs,
    reduced by the fabric's oversubscription)."""
    intra = hw.intra_bytes_per_s * hw.intra_efficiency
    inter = hw.nic_bytes_per_s_per_gpu * hw.inter_efficiency / hw.oversubscription
    return intra, min(intra, inter)


def tp_collectives(layer: Layer, plan: Plan, backward: bool, split_sp: bool = True) -> tuple[tuple[str, float], ...]:
    """(kind, bytes) of each tensor-parallel collective one micro-batch of ``layer`` issues
    in forward or backward: Megatron-LM's g (forward) or f (backward) all-reduce, rescaled
    for the precision, then in forward the fp32 ones (the cross entropy's). With sequence
    parallelism (and ``split_sp``) the all-reduce is a reduce-scatter and an all-gather of
    the same tensor (Korthikanti et al. 2022, Section 4.2.2): the same ring volume, but a
    profile that measures the two on their own (gloo) times them apart. (For the embedding
    and the head one of the two belongs to the other pass; only its placement differs.)
    Empty ones are left out."""
    main = _tp_main_bytes(layer, plan, backward)
    out: list[tuple[str, float]] = []
    if main > 0:
        sp = sequence_parallel_on(plan) and split_sp
        out += [("reducescatter", main), ("allgather", main)] if sp else [("allreduce", main)]
    if not backward:
        per_microbatch = plan.micro_batch / plan.cp
        out += [("allreduce", nbytes * per_microbatch) for nbytes in layer.tp_fwd_fp32_allreduces if nbytes > 0]
    return tuple(out)


def _tp_main_bytes(layer: Layer, plan: Plan, backward: bool) -> float:
    """Bytes of one micro-batch's g (forward) or f (backward) tensor, at the plan's precision."""
    main = layer.tp_bwd_allreduce_bytes if backward else layer.tp_fwd_allreduce_bytes
    return main * plan.micro_batch / plan.cp * ACTIVATION_SCALE[plan.precision]


def sequence_parallel_on(plan: Plan) -> bool:
    """Sequence parallelism in effect: asked for, and tensor parallelism to split over."""
    return plan.sequence_parallel and plan.tp > 1


def sp_regather_bytes(layer: Layer, plan: Plan) -> float:
    """Bytes of the all-gather that recovers a column-parallel layer's full-sequence input
    in backward under sequence parallelism (it was saved as this rank's sequence shard,
    Korthikanti et al. 2022, Section 4.2.2; Megatron-LM's
    LinearWithGradAccumulationAndAsyncCommunication): the layers whose input gradient is
    reduced across tp (``tp_bwd_allreduce_bytes``, the blocks and the head); 0 without
    sequence parallelism."""
    return _tp_main_bytes(layer, plan, backward=True) if sequence_parallel_on(plan) else 0.0


def norm_grad_bytes(layers, plan: Plan) -> float:
    """Bytes of the norms' gradients of ``layers`` that sequence parallelism all-reduces over
    the tp group once per step, before the optimizer (each rank saw only its sequence
    shard: Megatron-LM's allreduce_layernorm_grads, Korthikanti et al. 2022, Section 4.2.2);
    0 without sequence parallelism."""
    if not sequence_parallel_on(plan):
        return 0.0
    return sum(layer.norm_params for layer in layers) * grad_element_bytes(plan)


def _steps(layers: tuple[Layer, ...], plan: Plan, hw, spans, backward: bool, part: str = "all",
           gathers: bool = True) -> tuple[Step, ...]:
    """``part``: "all", "input" (zero-bubble B: everything but weight gradients) or "weight";
    ``gathers``: whether ZeRO-3 gathers each unit's parameters before it."""
    out = []
    act = max(BYTES_PER_ELEMENT[plan.precision], 2) / 2
    # FSDP gathers a unit's parameters at the unit's first layer in the pass's order
    unit_bytes = {}
    for unit in group_units(layers):
        first = unit[-1] if backward else unit[0]
        unit_bytes[first.name] = sum(_local_params(x, plan) for x in unit) * param_element_bytes(plan.precision)
    for layer in (reversed(layers) if backward else layers):
        if backward:
            weight = ops_time_s((op for op in layer.ops if op.weight_bytes > 0), plan, hw)
            if part == "weight":
                compute = weight
            else:
                compute = layer_time(layer, plan, hw).bwd_s
                if part == "input":
                    compute = max(0.0, compute - weight)
        else:
            compute = layer_time(layer, plan, hw).fwd_s
        comms = []
        overlapped = []
        if part != "weight":
            for kind, nbytes in tp_collectives(layer, plan, backward):
                c = _comm("tp", kind, nbytes, spans["tp"], hw, algorithm="ring")
                if c:
                    # Plan.tp_comm_overlap: under the layer's compute (not on a host fabric,
                    # where gloo runs on the compute core)
                    (overlapped if tp_overlapped(plan, hw) else comms).append(c)
            regather = sp_regather_bytes(layer, plan) if backward else 0.0
            if regather:
                # the column-parallel input, saved as the sequence shard, is all-gathered again
                # for the weight gradient: Megatron-LM overlaps it with the input-gradient GEMM;
                # on a host fabric it runs on the compute core, so it blocks
                c = _comm("tp", "allgather", regather, spans["tp"], hw, algorithm="ring")
                if c:
                    (comms if hw.fabric == "host" else overlapped).append(c)
            if layer.a2a_bytes and plan.ep > 1:
                a2a = layer.a2a_bytes * plan.micro_batch / plan.cp / shard_factor("sp", plan) * act
                for _ in range(2):  # dispatch and combine
                    c = _comm("ep", "alltoall", a2a, spans["ep"], hw)
                    if c:
                        comms.append(c)
            if layer.cp_kv_bytes and plan.cp > 1:
                # ring attention passes each rank's keys and values around the ring
                # (Liu et al. 2023, "Ring Attention"; Megatron-LM context parallelism)
                kv = layer.cp_kv_bytes * plan.micro_batch / plan.cp / plan.tp * act
                c = _comm("cp", "allgather", kv * plan.cp * (2 if backward else 1), spans["cp"], hw)
                if c:
                    overlapped.append(c)
        grad = 0.0
        if backward and part != "input":
            grad = _local_params(layer, plan) * grad_element_bytes(plan)
        param_bytes = _local_params(layer, plan) * param_element_bytes(plan.precision)
        gather = None
        if plan.zero_stage == 3 and gathers and part != "weight" and layer.name in unit_bytes:
            # FSDP all-gathers a unit's parameters before its forward and its backward
            # (Zhao et al. 2023, "PyTorch FSDP", Section 3.2), one unit per transformer layer
            # (attention and MLP together, as torchtitan's apply_fsdp wraps each block)
            gather = _comm("zero", "allgather", unit_bytes[layer.name], spans["dpcp"], hw, algorithm="ring")
            if gather is not None:
                # FSDP2's host work for the gather, and its copies in and out
                compute += hw.fsdp_gather_overhead_s + fsdp_gather_copy_s(unit_bytes[layer.name],
                                                                          plan.dp * plan.cp, hw)
        out.append(Step(layer.name, compute, tuple(comms), tuple(overlapped), grad, param_bytes, gather))
    return tuple(out)


def tp_overlapped(plan: Plan, hw) -> bool:
    """Whether tensor-parallel collectives run under the compute (``Plan.tp_comm_overlap``)."""
    return plan.tp_comm_overlap and sequence_parallel_on(plan) and hw.fabric != "host"


def _recompute_steps(layers: tuple[Layer, ...], plan: Plan, hw, spans) -> tuple[Step, ...]:
    if plan.recompute == "none":
        return ()
    recomputed = tuple(layer for layer in layers if layer.kind in RECOMPUTED_KINDS)
    if plan.recompute == "full":
        # the forward of each checkpointed layer runs again before its backward
        # (Korthikanti et al. 2022, Section 2; Chen et al. 2016); under FSDP2 the unit's
        # parameters are already gathered by its pre-backward hook, so the recomputed forward
        # gathers nothing (torch/distributed/fsdp/_fully_shard/_fsdp_state.py, _pre_forward:
        # "the pre-backward hook is responsible for the unshard")
        return _steps(recomputed, plan, hw, spans, backward=False, gathers=False)
    # selective: only the attention core (Korthikanti et al. 2022, Section 4.2.1)
    return tuple(Step(layer.name, ops_time_s((op for op in layer.ops if op.kind == "attention"), plan, hw))
                 for layer in recomputed if any(op.kind == "attention" for op in layer.ops))


def _local_params(layer: Layer, plan: Plan) -> float:
    return sum(params_per_gpu(layer, plan))


def _act_keep_bytes(layers: tuple[Layer, ...], plan: Plan) -> float:
    """Per micro-batch bytes kept for backward (the trace's memory counter)."""
    return activation_bytes_per_microbatch(layers, plan)


def lower(graph: LayerGraph, plan: Plan, cluster: Cluster, chunks=None) -> Program:
    """``chunks``: the layers of each model chunk (default: the plan's partition)."""
    hw = cluster.profile
    if chunks is None:
        chunks = plan_chunks(graph, plan)
    spans = {axis: group_span(plan, cluster, axis) for axis in ("tp", "cp", "dp", "ep")}
    spans["dpcp"] = spans["dp"] if plan.cp == 1 else _dp_cp_span(plan, cluster)
    intra, inter = link_rates(hw)
    act = max(BYTES_PER_ELEMENT[plan.precision], 2) / 2
    programs = []
    for c, layers in enumerate(chunks):
        out_bytes = layers[-1].output_bytes if layers else 0.0
        # Megatron-LM's scatter/gather optimization sends 1/t of the activation per rank
        # (Narayanan et al. 2021, Section 4.1); with sequence parallelism it is already split
        send = out_bytes * plan.micro_batch / plan.cp / plan.tp * act
        zb = plan.schedule == "zero-bubble"
        programs.append(ChunkProgram(
            chunk=c, stage=c % plan.pp,
            fwd=_steps(layers, plan, hw, spans, backward=False),
            bwd=_steps(layers, plan, hw, spans, backward=True, part="input" if zb else "all"),
            wgrad=_steps(layers, plan, hw, spans, backward=True, part="weight") if zb else (),
            recompute=_recompute_steps(layers, plan, hw, spans),
            send_bytes=send,
            act_bytes=_act_keep_bytes(layers, plan),
            grad_bytes=sum(_local_params(layer, plan) for layer in layers) * grad_element_bytes(plan),
            params=sum(_local_params(layer, plan) for layer in layers),
        ))
    dp_size = plan.dp * plan.cp  # gradients are averaged over data- and context-parallel ranks
    dp_span = spans["dpcp"]
    stage_layers = [[layer for c, layers in enumerate(chunks) if c % plan.pp == s for layer in layers]
                    for s in range(plan.pp)]
    optimizer_s = []
    for s in range(plan.pp):
        params = sum(p.params for p in programs if p.stage == s)
        shard = dp_size if plan.zero_stage >= 1 else 1
        optimizer_s.append(optimizer_time_s(params / shard, plan, hw) + dtensor_update_s(stage_layers[s], plan, hw))
    grad_copy_s = [0.0] * plan.pp
    if plan.zero_stage == 3 and dp_size > 1:
        # FSDP2 copies each unit's gradients into its reduce-scatter input
        grad_copy_s = [fsdp_reduce_copy_s(sum(p.grad_bytes for p in programs if p.stage == s), hw)
                       for s in range(plan.pp)]
    norm_grads = [None] * plan.pp
    if sequence_parallel_on(plan):
        for s in range(plan.pp):
            norm_grads[s] = _comm("tp", "allreduce", norm_grad_bytes(stage_layers[s], plan), spans["tp"], hw,
                                  algorithm="ring")
    bucket = DDP_BUCKET_BYTES
    # parameter server (Li et al. 2014, OSDI): one server per node behind one NIC; all
    # workers of the cluster push gradients to and pull weights from the servers, so a
    # worker's share of server bandwidth is one NIC over the GPUs of a node
    ps_bw = hw.nic_bytes_per_s * hw.inter_efficiency / hw.gpus_per_node
    dp_comm = after_opt = None
    if dp_size > 1:
        if plan.dp_sync == "parameter-server":
            # push the gradient bucket, pull the updated weights
            dp_comm = Comm("ps", (coll.Phase(2.0 * bucket, "ps", 2 * hw.inter_latency_s),),
                           2.0 * bucket / ps_bw + 2 * hw.inter_latency_s)
        elif plan.zero_stage == 0:
            dp_comm = _comm("dp", "allreduce", bucket, dp_span, hw)
        else:
            dp_comm = _comm("dp", "reducescatter", bucket, dp_span, hw, algorithm="ring")
        if plan.zero_stage in (1, 2):
            # updated 16-bit parameters are all-gathered after the step (ZeRO, Section 5.1)
            params_bytes = max(p.params for p in programs) * param_element_bytes(plan.precision)
            after_opt = _comm("zero", "allgather", params_bytes, dp_span, hw, algorithm="ring")
    stage_node = tuple(rank_of(plan, pp=s) // cluster.gpus_per_node for s in range(plan.pp))
    boundaries = [stage_node[s] == stage_node[(s + 1) % plan.pp] for s in range(plan.pp) if plan.pp > 1]
    sp_overlapped = sequence_parallel_on(plan) and hw.fabric != "host"
    others_on_fabric = (plan.cp > 1 or plan.ep > 1 or plan.zero_stage == 3 or any(boundaries) or sp_overlapped
                        or (dp_size > 1 and dp_span.nodes == 1) or spans["tp"].nodes > 1)
    return Program(
        plan=plan, chunks=tuple(programs), optimizer_s=tuple(optimizer_s), dp_comm=dp_comm, bucket_bytes=bucket,
        dp_after_optimizer=after_opt, norm_grad_allreduce=tuple(norm_grads), grad_copy_s=tuple(grad_copy_s),
        zero3=plan.zero_stage == 3, stage_node=stage_node,
        intra_latency_s=hw.intra_latency_s, inter_latency_s=hw.inter_latency_s,
        intra_bytes_per_s=intra, inter_bytes_per_s=inter, ps_bytes_per_s=ps_bw,
        exclusive_links=not others_on_fabric, step_overhead_s=hw.step_overhead_s,
        comm_uses_compute_core=hw.fabric == "host",
    )


def _dp_cp_span(plan: Plan, cluster: Cluster):
    """Gradients are averaged over the data- and context-parallel ranks together."""
    return span_of(joint_group_ranks(plan, ("dp", "cp")), cluster)
