"""What the torch executor can run: checked before any process starts.

A plan simplan can simulate but PyTorch's parallel APIs (as used here) cannot express is a
user error with the field and the numbers, not a crash on some rank.
"""

from __future__ import annotations

import importlib.util

from simplan.errors import SimplanError, require
from simplan.model.spec import ModelSpec
from simplan.plan.plan import Plan

DTYPES = ("fp32", "tf32", "bf16")
"""Precisions the executor runs: the model's parameters and activations in that dtype (bf16
without fp32 master weights; fp16 would need a loss scaler, fp8 Transformer Engine)."""
TORCH_HINT = "install it with `make .venv/.dev` (torch==2.13.0, CPU build) or `pip install torch`"


def require_torch() -> None:
    """The executor's commands need torch; simplan's simulator does not."""
    if importlib.util.find_spec("torch") is None:
        raise SimplanError(f"torch: not installed; the executor (run, verify, calibrate --local) needs it: {TORCH_HINT}")


def problems(spec: ModelSpec, plan: Plan, device: str = "cpu") -> list[str]:
    out: list[str] = []
    if spec.family not in ("gpt", "llama"):
        out.append(f"model.family: the torch executor builds gpt and llama, got {spec.family}")
    if spec.dropout:
        out.append("model.dropout: the torch executor runs without dropout (every plan must compute the same "
                   "step); set it false")
    if spec.tied_embeddings:
        out.append("model.tied_embeddings: the torch executor does not tie the embedding and output weights; "
                   "set it false")
    if plan.cp > 1:
        out.append(f"plan.cp: the torch executor has no context parallelism, got cp={plan.cp}")
    if plan.ep > 1:
        out.append(f"plan.ep: the torch executor has no expert parallelism, got ep={plan.ep}")
    if plan.dp_sync != "allreduce":
        out.append(f"plan.dp_sync: the torch executor synchronizes with all-reduce (DDP, FSDP2), got {plan.dp_sync}")
    if plan.tp > 1 and spec.kv_heads and spec.kv_heads % plan.tp:
        out.append(f"plan.tp: kv_heads({spec.kv_heads}) is not divisible by tp({plan.tp}); ColwiseParallel cannot "
                   "replicate key/value heads")
    if plan.tp > 1 and spec.vocab % plan.tp:
        out.append(f"plan.tp: vocab({spec.vocab}) is not divisible by tp({plan.tp}) (vocabulary-parallel embedding)")
    if plan.dp > 1 and plan.tp > 1 and plan.zero_stage < 2:
        out.append(f"plan.zero_stage: dp({plan.dp}) with tp({plan.tp}) runs on FSDP2 in the torch executor "
                   f"(DDP takes no DTensor parameters); use zero_stage 2 or 3, got {plan.zero_stage}")
    if plan.tp > 1 and plan.pp > 1:
        out.append(f"plan: tp({plan.tp}) with pp({plan.pp}) is not supported by this executor "
                   "(pipeline stages of DTensor modules)")
    if plan.recompute == "selective" and spec.flash_attention:
        out.append("plan.recompute: selective recomputes the attention core, which flash attention already "
                   "recomputes; use none or full")
    if plan.pp > 1 and plan.schedule in ("gpipe", "1f1b") and plan.virtual_stages != 1:
        out.append(f"plan.virtual_stages: {plan.schedule} runs one stage per rank, got {plan.virtual_stages}")
    if plan.pp > 1 and plan.schedule == "1f1b" and plan.micro_batches < plan.pp:
        out.append(f"plan.global_batch: Schedule1F1B needs micro-batches({plan.micro_batches}) >= pp({plan.pp})")
    if plan.pp > 1 and plan.schedule == "zero-bubble" and plan.micro_batches % max(1, plan.micro_batches // plan.pp):
        out.append(f"plan.global_batch: ScheduleInterleavedZeroBubble needs micro-batches({plan.micro_batches}) "
                   f"to be a multiple of micro-batches // pp = {plan.micro_batches // plan.pp}")
    if plan.precision not in DTYPES:
        out.append(f"plan.precision: the torch executor runs {', '.join(DTYPES)}, got {plan.precision}")
    if device == "cpu" and plan.precision != "fp32":
        out.append(f"plan.precision: CPU runs use fp32 (the memory model's fp32 accounting), got {plan.precision}")
    return out


def check_expressible(spec: ModelSpec, plan: Plan, device: str = "cpu") -> None:
    found = problems(spec, plan, device)
    require(not found, "; ".join(found))


def check_ranks(needed: int, available: int, what: str) -> None:
    if needed > available:
        raise SimplanError(f"plan: needs {needed} ranks (dp*tp*pp*cp), but only {available} {what} are available")
