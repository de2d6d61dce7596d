"""Plan: one way to split a model across the cluster (a frozen, hashable dataclass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from simplan.errors import SimplanError, require

SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble")
"""Named as torch.distributed.pipelining names them: ScheduleGPipe, Schedule1F1B,
ScheduleInterleaved1F1B, ScheduleInterleavedZeroBubble."""
RECOMPUTE = ("none", "selective", "full")
DP_SYNC = ("allreduce", "parameter-server")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "fp8")
ATTENTION_KERNELS = ("best", "fa2")


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    tp: int = 1
    """Tensor-parallel degree (Megatron-LM column/row-parallel layers)."""
    pp: int = 1
    """Pipeline-parallel stages."""
    dp: int = 1
    """Data-parallel replicas."""
    cp: int = 1
    """Context-parallel degree (sequence split across ranks, ring attention)."""
    ep: int = 1
    """Expert-parallel degree (MoE experts split across the data-parallel ranks)."""
    micro_batch: int = 1
    """Sequences per micro-batch per data-parallel rank."""
    global_batch: int = 1
    """Sequences per optimizer step."""
    schedule: str = "1f1b"
    virtual_stages: int = 1
    """Model chunks per pipeline rank (interleaved schedules)."""
    recompute: str = "none"
    sequence_parallel: bool = False
    zero_stage: int = 0
    """0: none; 1: optimizer states sharded; 2: + gradients; 3: + parameters (FSDP)."""
    dp_sync: str = "allreduce"
    precision: str = "bf16"
    dp_overlap: bool = True
    """Gradient buckets are reduced during the last micro-batch's backward (PyTorch DDP,
    Megatron-LM --overlap-grad-reduce). False: one reduction after the whole backward
    (Megatron-DeepSpeed without gradient buckets, as in the vTrain measurements)."""
    partition: tuple[int, ...] = ()
    """Pipeline units per model chunk (a unit: a transformer layer, the embedding, the
    head, a CNN block), pp x virtual_stages numbers; empty: Megatron-LM's uniform split."""
    main_grads_fp32: bool = False
    """16/8-bit training that accumulates and reduces gradients in fp32 buffers: Megatron-LM /
    Megatron-Core's ``main_grad`` (--accumulate-allreduce-grads-in-fp32, the default with
    bf16), DeepSpeed's bf16 optimizer, FSDP2 with ``reduce_dtype=float32``. Gradients then
    take 4 bytes per parameter in memory and in the data-parallel reduction (Megatron-Core
    distributed optimizer docs: 6 + 12/d bytes per parameter for bf16 parameters, fp32 grads)."""
    param_gather_overlap: bool = False
    """ZeRO-1/2: the all-gather of the updated parameters overlaps the next step's first
    forward (Megatron-Core's --overlap-param-gather with the distributed optimizer): only
    what outlasts that forward is exposed. False: it runs after the optimizer (DeepSpeed,
    torch's ZeroRedundancyOptimizer)."""
    tp_comm_overlap: bool = False
    """Tensor-parallel collectives overlapped with the layer's GEMMs (Megatron-Core
    --tp-comm-overlap through userbuffers; torchtitan's async TP): each layer's TP traffic
    runs under its compute and only what outlasts it is exposed. Needs sequence parallelism
    (Megatron-Core requires it; the overlap splits the all-gather / reduce-scatter pairs)."""
    attention_kernel: str = "best"
    """The fused attention kernel the stack runs: ``best`` (the fastest the GPU has: cuDNN /
    FlashAttention-3 on Hopper, FlashAttention-2 on Ampere; the profile's
    ``attention_efficiency``) or ``fa2`` (FlashAttention-2, also torch SDPA's flash backend;
    the profile's ``attention_fa2_efficiency``)."""
    tp_inside_node: bool = True
    """Rank placement: tensor-parallel groups on consecutive GPUs of one node (Megatron-LM's
    order tp, cp, dp, pp). False places data-parallel ranks innermost instead."""

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step: global batch / (dp x micro-batch)."""
        return self.global_batch // (self.dp * self.micro_batch)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["partition"] = list(self.partition)
        return out


PLAN_FIELDS = tuple(f.name for f in fields(Plan))
_INT = ("tp", "pp", "dp", "cp", "ep", "micro_batch", "global_batch", "virtual_stages", "zero_stage")
_BOOL = ("sequence_parallel", "tp_inside_node", "dp_overlap", "main_grads_fp32", "param_gather_overlap",
         "tp_comm_overlap")
_CHOICES = {"schedule": SCHEDULES, "recompute": RECOMPUTE, "dp_sync": DP_SYNC, "precision": PRECISIONS,
            "attention_kernel": ATTENTION_KERNELS}


def load_plan(section: dict, gpus: int | None = None, where: str = "plan") -> Plan:
    """Check types and ranges of a scenario's ``plan`` section. ``dp`` may be left out
    when ``gpus`` is known: it is then GPUs / (tp * pp * cp), which must divide."""
    if not isinstance(section, dict):
        raise SimplanError(f"{where}: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(PLAN_FIELDS))
    require(not unknown, f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(PLAN_FIELDS)}")
    values = dict(section)
    for key in _INT:
        if key in values:
            v = values[key]
            require(isinstance(v, int) and not isinstance(v, bool), f"{where}.{key}: expected an integer, got {v!r}")
            low = 0 if key == "zero_stage" else 1
            require(v >= low, f"{where}.{key}: must be >= {low}, got {v}")
    for key in _BOOL:
        if key in values:
            require(isinstance(values[key], bool), f"{where}.{key}: expected true or false, got {values[key]!r}")
    for key, choices in _CHOICES.items():
        if key in values:
            require(values[key] in choices, f"{where}.{key}: {values[key]!r} is not one of {', '.join(choices)}")
    require("zero_stage" not in values or values["zero_stage"] <= 3,
            f"{where}.zero_stage: must be 0..3, got {values.get('zero_stage')}")
    if "partition" in values:
        part = values["partition"]
        require(isinstance(part, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                         for x in part),
                f"{where}.partition: expected a list of positive integers (units per chunk), got {part!r}")
        values["partition"] = tuple(part)
    require("global_batch" in values, f"{where}.global_batch: missing (sequences per optimizer step)")
    if "dp" not in values:
        require(gpus is not None, f"{where}.dp: missing, and the GPU count is unknown")
        model_parallel = values.get("tp", 1) * values.get("pp", 1) * values.get("cp", 1)
        require(gpus % model_parallel == 0,
                f"{where}.dp: not given, and GPUs {gpus} are not divisible by tp*pp*cp = {model_parallel}")
        values["dp"] = gpus // model_parallel
    return Plan(**values)
