"""Exports against the names the frameworks document.

Sources (read for this test, see each set):
* Megatron-LM ``megatron/training/arguments.py`` (NVIDIA/Megatron-LM, commit 000c4ac2):
  _add_network_size_args, _add_regularization_args, _add_training_args, _add_distributed_args.
* torchtitan ``torchtitan/config/job_config.py`` (pytorch/torchtitan, commit 000204a4):
  dataclasses Training, Parallelism, ActivationCheckpoint, Model.
* DeepSpeed ``docs/_pages/config-json.md`` (microsoft/DeepSpeed): batch size, ZeRO, fp16/bf16
  and activation checkpointing sections.
"""

import json
import tomllib
from dataclasses import replace

import pytest

from simplan.errors import SimplanError
from simplan.model import load_model
from simplan.plan.plan import Plan
from simplan.report.export import TORCHTITAN_SCHEDULES, export
from simplan.scenario import Scenario
from simplan.search.inputs import cluster_from_flags

MEGATRON_FLAGS = {
    # _add_network_size_args
    "--num-layers", "--hidden-size", "--ffn-hidden-size", "--num-attention-heads", "--group-query-attention",
    "--num-query-groups", "--max-position-embeddings", "--position-embedding-type", "--normalization", "--swiglu",
    "--untie-embeddings-and-output-weights",
    # _add_regularization_args
    "--attention-dropout", "--hidden-dropout",
    # _add_training_args
    "--micro-batch-size", "--global-batch-size", "--recompute-granularity", "--recompute-method",
    "--recompute-num-layers", "--sequence-parallel", "--use-flash-attn", "--disable-bias-linear",
    # _add_distributed_args
    "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--num-layers-per-virtual-pipeline-stage",
    "--overlap-grad-reduce", "--use-distributed-optimizer", "--use-torch-fsdp2",
    "--torch-fsdp2-no-reshard-after-forward", "--context-parallel-size",
}
MEGATRON_FLAGS_ELSEWHERE = {
    # the same file's mixed-precision, MoE and data/sequence groups (not among the groups read above)
    "--bf16", "--fp16", "--seq-length", "--expert-model-parallel-size", "--num-experts", "--moe-router-topk",
    "--fp8-format",
}
TORCHTITAN_KEYS = {
    "training": {"local_batch_size", "global_batch_size", "seq_len", "mixed_precision_param"},
    "parallelism": {"data_parallel_replicate_degree", "data_parallel_shard_degree", "fsdp_reshard_after_forward",
                    "tensor_parallel_degree", "enable_async_tensor_parallel", "pipeline_parallel_degree",
                    "pipeline_parallel_layers_per_stage", "pipeline_parallel_schedule",
                    "pipeline_parallel_microbatch_size", "context_parallel_degree", "expert_parallel_degree"},
    "activation_checkpoint": {"mode", "selective_ac_option"},
    "model": {"converters"},
}
# torch.distributed.pipelining's schedule names (ScheduleGPipe, Schedule1F1B, ...), which
# pipeline_parallel_schedule takes
TORCH_SCHEDULES = {"GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble"}
DEEPSPEED_KEYS = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                  "zero_optimization", "bf16", "fp16", "activation_checkpointing"}
DEEPSPEED_SUBKEYS = {"zero_optimization": {"stage", "overlap_comm"}, "bf16": {"enabled"}, "fp16": {"enabled"},
                     "activation_checkpointing": {"partition_activations", "contiguous_memory_optimization",
                                                  "cpu_checkpointing"}}


def scenario(model="gpt3-175b", gpus=1024, **plan) -> Scenario:
    base = dict(tp=8, pp=16, dp=8, micro_batch=1, global_batch=1536, schedule="1f1b", recompute="full")
    base.update(plan)
    if "dp" not in plan:
        base["dp"] = gpus // (base["tp"] * base["pp"] * base.get("cp", 1))
    return Scenario(model=load_model(model), cluster=cluster_from_flags("a100-sxm-80gb", gpus),
                    plan=Plan(**base), hardware_ref="a100-sxm-80gb")


def megatron_flags(text: str) -> dict:
    out = {}
    for line in text.replace("\\\n", "\n").split("\n"):
        parts = line.split()
        if parts:
            out[parts[0]] = parts[1] if len(parts) > 1 else None
    return out


def test_megatron_gpt3_reference_configuration():
    flags = megatron_flags(export(scenario(), "megatron").text)
    assert set(flags) <= MEGATRON_FLAGS | MEGATRON_FLAGS_ELSEWHERE
    assert flags["--tensor-model-parallel-size"] == "8" and flags["--pipeline-model-parallel-size"] == "16"
    assert flags["--micro-batch-size"] == "1" and flags["--global-batch-size"] == "1536"
    assert flags["--recompute-granularity"] == "full" and flags["--recompute-method"] == "uniform"
    assert flags["--num-layers"] == "96" and flags["--hidden-size"] == "12288" and "--bf16" in flags
    assert "--num-layers-per-virtual-pipeline-stage" not in flags


@pytest.mark.parametrize("plan, expected", [
    (dict(schedule="interleaved-1f1b", virtual_stages=2), {"--num-layers-per-virtual-pipeline-stage": "3"}),
    (dict(sequence_parallel=True, recompute="selective"), {"--sequence-parallel": None,
                                                           "--recompute-granularity": "selective"}),
    (dict(zero_stage=1), {"--use-distributed-optimizer": None}),
    (dict(precision="fp16"), {"--fp16": None}),
])
def test_megatron_plan_options(plan, expected):
    flags = megatron_flags(export(scenario(**plan), "megatron").text)
    assert set(flags) <= MEGATRON_FLAGS | MEGATRON_FLAGS_ELSEWHERE
    for flag, value in expected.items():
        assert flags[flag] == value


def test_megatron_gqa_model():
    flags = megatron_flags(export(scenario("llama3-8b", 8, tp=8, pp=1, global_batch=8), "megatron").text)
    assert flags["--num-query-groups"] == "8" and "--group-query-attention" in flags and "--swiglu" in flags
    assert set(flags) <= MEGATRON_FLAGS | MEGATRON_FLAGS_ELSEWHERE


@pytest.mark.parametrize("plan", [dict(schedule="gpipe"), dict(schedule="zero-bubble"),
                                  dict(dp_sync="parameter-server"), dict(tp_inside_node=False)])
def test_megatron_refuses_what_it_cannot_run(plan):
    with pytest.raises(SimplanError, match="plan."):
        export(scenario(**plan), "megatron")


@pytest.mark.parametrize("schedule, v", [("gpipe", 1), ("1f1b", 1), ("interleaved-1f1b", 2), ("zero-bubble", 1)])
def test_torchtitan_toml(schedule, v):
    doc = tomllib.loads(export(scenario(schedule=schedule, virtual_stages=v, sequence_parallel=True),
                               "torchtitan").text)
    for section, keys in doc.items():
        assert set(keys) <= TORCHTITAN_KEYS[section], section
    par = doc["parallelism"]
    assert par["pipeline_parallel_schedule"] in TORCH_SCHEDULES
    assert par["pipeline_parallel_schedule"] == TORCHTITAN_SCHEDULES[schedule]
    assert par["tensor_parallel_degree"] == 8 and par["pipeline_parallel_degree"] == 16
    assert par["data_parallel_replicate_degree"] * par["data_parallel_shard_degree"] == 8
    assert par["pipeline_parallel_layers_per_stage"] == 96 // (16 * v)
    assert doc["training"]["local_batch_size"] * 8 == doc["training"]["global_batch_size"] == 1536
    assert doc["activation_checkpoint"]["mode"] == "full"


def test_torchtitan_fsdp_is_the_shard_degree():
    doc = tomllib.loads(export(scenario("gpt3-1.3b", 8, tp=2, pp=1, zero_stage=3, global_batch=8),
                               "torchtitan").text)
    assert doc["parallelism"]["data_parallel_shard_degree"] == 4
    assert doc["parallelism"]["data_parallel_replicate_degree"] == 1
    with pytest.raises(SimplanError, match="zero_stage"):
        export(scenario("gpt3-1.3b", 8, tp=2, pp=1, zero_stage=1, global_batch=8), "torchtitan")


def test_deepspeed_json():
    s = scenario("gpt3-1.3b", 8, tp=2, pp=1, zero_stage=2, micro_batch=2, global_batch=32)
    result = export(s, "deepspeed")
    config = json.loads(result.text)
    assert set(config) <= DEEPSPEED_KEYS
    for key, sub in DEEPSPEED_SUBKEYS.items():
        assert set(config.get(key, {})) <= sub
    # DeepSpeed: train_batch_size = micro batch x gradient accumulation x data-parallel size
    assert config["train_batch_size"] == config["train_micro_batch_size_per_gpu"] * \
        config["gradient_accumulation_steps"] * s.plan.dp
    assert config["zero_optimization"]["stage"] == 2 and config["bf16"]["enabled"] is True
    assert any("tp 2" in n for n in result.notes)


def test_export_command(tmp_path, capsys):
    from simplan.cli import main
    from simplan.search.inputs import write_scenario

    path = tmp_path / "plan.yaml"
    write_scenario(scenario(), path)
    assert main(["export", str(path), "--format", "megatron"]) == 0
    assert "--tensor-model-parallel-size 8" in capsys.readouterr().out
    assert main(["export", str(path), "--format", "nemo"]) == 2
    assert "--format" in capsys.readouterr().err
