"""Launch configurations for a plan: Megatron-LM arguments, a torchtitan TOML, a DeepSpeed JSON.

``export(scenario, fmt) -> Export`` gives the text to print and notes for stderr (what the
framework sets elsewhere). A plan a framework cannot express (a parameter server, a
schedule it does not have) is a SimplanError naming the field. Flag and key names are
the frameworks' documented ones; tests/test_export.py lists where each is documented.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from simplan.errors import SimplanError
from simplan.scenario import Scenario

FORMATS = ("megatron", "torchtitan", "deepspeed")

TORCHTITAN_SCHEDULES = {"gpipe": "GPipe", "1f1b": "1F1B", "interleaved-1f1b": "Interleaved1F1B",
                        "zero-bubble": "InterleavedZeroBubble"}
"""torch.distributed.pipelining schedule names, as torchtitan's pipeline_parallel_schedule takes them."""


@dataclass
class Export:
    text: str
    notes: list[str] = field(default_factory=list)


def export(scenario: Scenario, fmt: str) -> Export:
    if fmt not in FORMATS:
        raise SimplanError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    p = scenario.plan
    if p.dp_sync == "parameter-server":
        raise SimplanError(f"plan.dp_sync: parameter-server has no {fmt} equivalent (they all-reduce gradients)")
    if not scenario.model.is_transformer:
        raise SimplanError(f"model.family: {scenario.model.family} has no {fmt} launch configuration here "
                           "(the exports describe transformer language models)")
    return {"megatron": megatron_args, "torchtitan": torchtitan_toml, "deepspeed": deepspeed_json}[fmt](scenario)


def _layers_per_chunk(scenario: Scenario) -> int:
    p, layers = scenario.plan, scenario.model.layers
    chunks = p.pp * p.virtual_stages
    if layers % chunks:
        raise SimplanError(f"plan: {layers} layers do not split evenly into pp({p.pp}) * virtual_stages"
                           f"({p.virtual_stages}) = {chunks} chunks")
    return layers // chunks


def megatron_args(scenario: Scenario) -> Export:
    """Arguments of Megatron-LM's pretrain_gpt.py (megatron/training/arguments.py)."""
    m, p = scenario.model, scenario.plan
    notes: list[str] = []
    if p.schedule in ("gpipe", "zero-bubble"):
        raise SimplanError(f"plan.schedule: Megatron-LM runs 1f1b and interleaved-1f1b, not {p.schedule}")
    if not p.tp_inside_node:
        raise SimplanError("plan.tp_inside_node: false; Megatron-LM orders ranks tp-cp-ep-dp-pp "
                           "(tensor-parallel groups inside a node)")
    if p.precision in ("fp32", "tf32"):
        notes.append(f"precision {p.precision}: Megatron-LM trains in fp32 without --bf16/--fp16")
    args: list[tuple[str, object]] = [
        ("--num-layers", m.layers), ("--hidden-size", m.hidden), ("--num-attention-heads", m.heads),
        ("--ffn-hidden-size", m.ffn_hidden), ("--seq-length", m.seq_len), ("--max-position-embeddings", m.seq_len),
    ]
    if m.kv_heads != m.heads:
        args += [("--group-query-attention", None), ("--num-query-groups", m.kv_heads)]
    if m.family in ("llama", "moe"):
        args += [("--swiglu", None), ("--normalization", "RMSNorm"), ("--position-embedding-type", "rope"),
                 ("--disable-bias-linear", None)]
    if not m.tied_embeddings:
        args.append(("--untie-embeddings-and-output-weights", None))
    if not m.dropout:
        args += [("--attention-dropout", 0.0), ("--hidden-dropout", 0.0)]
    if m.is_moe:
        args += [("--num-experts", m.experts), ("--moe-router-topk", m.top_k)]
    args += [("--tensor-model-parallel-size", p.tp), ("--pipeline-model-parallel-size", p.pp)]
    if p.pp > 1:
        per_chunk = _layers_per_chunk(scenario)
        if p.virtual_stages > 1:
            args.append(("--num-layers-per-virtual-pipeline-stage", per_chunk))
    if p.cp > 1:
        args.append(("--context-parallel-size", p.cp))
    if p.ep > 1:
        args.append(("--expert-model-parallel-size", p.ep))
    args += [("--micro-batch-size", p.micro_batch), ("--global-batch-size", p.global_batch)]
    if p.sequence_parallel:
        args.append(("--sequence-parallel", None))
    if p.recompute == "full":
        args += [("--recompute-granularity", "full"), ("--recompute-method", "uniform"), ("--recompute-num-layers", 1)]
    elif p.recompute == "selective":
        args.append(("--recompute-granularity", "selective"))
    if p.zero_stage == 1:
        args.append(("--use-distributed-optimizer", None))
    elif p.zero_stage == 2:
        args += [("--use-torch-fsdp2", None), ("--torch-fsdp2-no-reshard-after-forward", None)]
    elif p.zero_stage == 3:
        args.append(("--use-torch-fsdp2", None))
    if p.dp_overlap and p.dp * p.cp > 1:
        args.append(("--overlap-grad-reduce", None))
    if p.precision in ("bf16", "fp8"):
        args.append(("--bf16", None))
    elif p.precision == "fp16":
        args.append(("--fp16", None))
    if p.precision == "fp8":
        args += [("--fp8-format", "hybrid")]
    if m.flash_attention:
        args.append(("--use-flash-attn", None))
    lines = [flag if value is None else f"{flag} {value}" for flag, value in args]
    notes.append(f"vocabulary {m.vocab}: give Megatron-LM the tokenizer that has it (--tokenizer-type ...)")
    return Export(" \\\n    ".join(lines) + "\n", notes)


def torchtitan_toml(scenario: Scenario) -> Export:
    """A torchtitan job config (torchtitan/config/job_config.py: [training], [parallelism],
    [activation_checkpoint])."""
    m, p = scenario.model, scenario.plan
    notes: list[str] = []
    if not p.tp_inside_node:
        raise SimplanError("plan.tp_inside_node: false; torchtitan's device mesh puts tensor parallelism innermost")
    if p.precision not in ("bf16", "fp32", "fp8"):
        raise SimplanError(f"plan.precision: torchtitan's mixed_precision_param is bfloat16 or float32, "
                           f"got {p.precision}")
    if p.zero_stage == 1:
        raise SimplanError(f"plan.zero_stage: {p.zero_stage} has no torchtitan form (it runs DDP or FSDP2, i.e. "
                           "ZeRO-0, ZeRO-2 with reshard_after_forward never, or ZeRO-3)")
    if p.tp > 1 and not p.sequence_parallel:
        notes.append("torchtitan's tensor parallelism always shards norms and dropout by sequence "
                     "(sequence parallelism on); this plan has it off")
    replicate, shard = (1, p.dp) if p.zero_stage >= 2 else (p.dp, 1)
    training = {"local_batch_size": p.global_batch // p.dp, "global_batch_size": p.global_batch,
                "seq_len": m.seq_len, "mixed_precision_param": "float32" if p.precision == "fp32" else "bfloat16"}
    parallelism: dict = {"data_parallel_replicate_degree": replicate, "data_parallel_shard_degree": shard,
                         "tensor_parallel_degree": p.tp, "context_parallel_degree": p.cp,
                         "pipeline_parallel_degree": p.pp, "expert_parallel_degree": p.ep}
    if p.zero_stage == 2:
        parallelism["fsdp_reshard_after_forward"] = "never"
    if p.pp > 1:
        parallelism["pipeline_parallel_schedule"] = TORCHTITAN_SCHEDULES[p.schedule]
        parallelism["pipeline_parallel_layers_per_stage"] = _layers_per_chunk(scenario)
        parallelism["pipeline_parallel_microbatch_size"] = p.micro_batch
    elif p.micro_batch != p.global_batch // p.dp:
        notes.append(f"micro-batch {p.micro_batch} without a pipeline: torchtitan runs local_batch_size "
                     f"{p.global_batch // p.dp} at once (gradient accumulation is not a job-config field here)")
    parallelism["enable_async_tensor_parallel"] = False
    ac = {"mode": p.recompute}
    if p.recompute == "selective":
        ac["selective_ac_option"] = "op"
    sections = {"training": training, "parallelism": parallelism, "activation_checkpoint": ac}
    if p.precision == "fp8":
        sections["model"] = {"converters": ["float8"]}
    return Export(_toml(sections), notes)


def _toml(sections: dict) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        for key, value in values.items():
            out.append(f"{key} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def deepspeed_json(scenario: Scenario) -> Export:
    """A DeepSpeed config (docs/_pages/config-json.md): batch sizes, ZeRO, precision,
    activation checkpointing. Tensor and pipeline degrees are launcher settings."""
    p = scenario.plan
    notes: list[str] = []
    if p.zero_stage >= 2 and p.pp > 1:
        raise SimplanError(f"plan.zero_stage: DeepSpeed runs ZeRO-{p.zero_stage} without pipeline parallelism only")
    micro_batches = p.micro_batches
    config: dict = {
        "train_batch_size": p.global_batch,
        "train_micro_batch_size_per_gpu": p.micro_batch,
        "gradient_accumulation_steps": micro_batches,
        "zero_optimization": {"stage": p.zero_stage, "overlap_comm": p.dp_overlap},
        "bf16": {"enabled": p.precision in ("bf16", "fp8")},
        "fp16": {"enabled": p.precision == "fp16"},
    }
    if p.recompute != "none":
        config["activation_checkpointing"] = {"partition_activations": p.sequence_parallel,
                                              "contiguous_memory_optimization": False, "cpu_checkpointing": False}
    if p.recompute == "selective":
        notes.append("selective recomputation (attention core only) is Megatron-DeepSpeed's "
                     "--recompute-granularity selective; DeepSpeed's checkpointing API recomputes whole layers")
    if p.tp > 1 or p.pp > 1 or p.cp > 1 or p.ep > 1:
        notes.append(f"tp {p.tp}, pp {p.pp}, cp {p.cp}, ep {p.ep}: set them in the launcher (Megatron-DeepSpeed "
                     "--tensor-model-parallel-size / --pipeline-model-parallel-size, or deepspeed.pipe.PipelineModule("
                     "num_stages=...)); the DeepSpeed config holds batch sizes, ZeRO and precision")
    if p.schedule != "1f1b" and p.pp > 1:
        notes.append(f"schedule {p.schedule}: DeepSpeed's pipeline engine runs 1F1B")
    return Export(json.dumps(config, indent=2) + "\n", notes)
