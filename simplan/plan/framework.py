"""Framework presets: a scenario's ``framework`` fills the plan fields a user left out with
what that framework does by default, so a plan is costed as the run users launch would be.

Nothing typed is replaced: a preset only supplies fields absent from the ``plan`` section.

- ``megatron-core`` (and NeMo, which runs it): sequence parallelism whenever tp > 1 (the
  NeMo / Megatron-Core recipes set ``sequence_parallel`` with tensor parallelism), the
  distributed optimizer (ZeRO-1 over the data-parallel ranks, ``--use-distributed-optimizer``)
  and fp32 main gradients in 16/8-bit training (``--accumulate-allreduce-grads-in-fp32``,
  implied by bf16; Megatron-Core docs, "Distributed Optimizer": 6 + 12/d bytes per
  parameter), gradient reduction overlapped with the backward (``--overlap-grad-reduce``)
  and the parameter all-gather with the next forward (``--overlap-param-gather``), TP
  communication under the GEMMs with sequence parallelism (``--tp-comm-overlap``), attention
  in Transformer Engine's cuDNN fused kernel (the GPU's best).
- ``torchtitan``: FSDP2 over the data-parallel ranks (ZeRO-3, ``data_parallel_shard_degree``),
  sequence parallelism with tp (its ``apply_tp`` shards the norms' sequence), gradients
  reduced in fp32 (``mixed_precision_reduce = "float32"``), attention through torch SDPA's
  flash backend, FlashAttention-2 (its cuDNN backend is not the default).
- ``deepspeed``: fp32 gradient accumulation in 16/8-bit (DeepSpeed's bf16 optimizer; ZeRO's
  fp16 path keeps fp32 partitions of the gradients), nothing else assumed.
- ``generic``: no preset (simplan's own defaults).
"""

from __future__ import annotations

from simplan.errors import require

FRAMEWORKS = ("generic", "megatron-core", "torchtitan", "deepspeed")
SIXTEEN_BIT = ("fp16", "bf16", "fp8")


def framework_defaults(framework: str, section: dict, tp: int, dp: int, cp: int, precision: str,
                       where: str = "framework") -> dict:
    """The plan fields ``framework`` supplies that ``section`` (the plan as typed) leaves out."""
    require(framework in FRAMEWORKS, f"{where}: {framework!r} is not one of {', '.join(FRAMEWORKS)}")
    out: dict = {}
    shard = dp * cp > 1
    if framework == "megatron-core":
        out = {"sequence_parallel": tp > 1, "zero_stage": 1 if shard else 0,
               "main_grads_fp32": precision in SIXTEEN_BIT, "dp_overlap": True,
               "param_gather_overlap": shard, "tp_comm_overlap": tp > 1 and section.get("sequence_parallel", True),
               "attention_kernel": "best"}
    elif framework == "torchtitan":
        out = {"sequence_parallel": tp > 1, "zero_stage": 3 if shard else 0,
               "main_grads_fp32": precision in SIXTEEN_BIT, "attention_kernel": "fa2"}
    elif framework == "deepspeed":
        out = {"main_grads_fp32": precision in SIXTEEN_BIT}
    return {k: v for k, v in out.items() if k not in section}
