"""Compute per kernel class: fused attention (causal half, its own rate, sequence length),
fp8 matmuls (their peak and efficiency, the casts, what stays 16-bit), the memory reserve,
and FlashAttention on by default where frameworks run it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simplan.cost.compute import fp8_cast_bytes, memory_time_s, op_time_s
from simplan.cost.memory import memory_report
from simplan.hardware.load import load_hardware
from simplan.model import build_graph, load_model
from simplan.plan.partition import plan_chunks
from simplan.plan.plan import Plan
from simplan.scenario import load_scenario

H100 = load_hardware("h100-sxm-80gb")


def ops(spec, layer_kind: str):
    layer = next(x for x in build_graph(spec).order if x.kind == layer_kind)
    return {op.name: op for op in layer.ops}


def test_fused_causal_attention_does_half_the_work_at_the_attention_rate():
    spec = load_model({"preset": "llama3-8b"}, precision="bf16")
    core = ops(spec, "attention")["attn_core"]
    assert core.fused and core.causal and core.seq_len == 8192
    hw = replace(H100, kernel_overhead_s=0.0)
    plan = Plan(micro_batch=1, global_batch=1)
    s = 8192
    eff = hw.attention_efficiency * s / (s + hw.attention_half_seq)
    expected = 0.5 * core.flops / (989.5e12 * eff)
    assert op_time_s(core, plan, hw) == pytest.approx(expected, rel=1e-9)
    # non-causal (BERT-style) attention does the whole count
    assert op_time_s(replace(core, causal=False), plan, hw) == pytest.approx(2 * expected, rel=1e-9)
    # shorter sequences per rank run the kernel at a lower rate: cp 4 halves... less than 4x faster per token
    t_cp = op_time_s(core, replace(plan, cp=4), hw)
    assert t_cp > op_time_s(core, plan, hw) / 4


def test_fp8_runs_the_blocks_matmuls_in_fp8_and_keeps_the_rest_16_bit():
    spec = load_model({"preset": "llama3-8b"}, precision="fp8")
    hw = replace(H100, kernel_overhead_s=0.0, matmul_half_flops=0.0)
    mlp = ops(spec, "mlp")
    head = ops(spec, "head")
    fp8, bf16 = Plan(precision="fp8", global_batch=1), Plan(precision="bf16", global_batch=1)
    fc1 = mlp["fc1"]
    math_fp8 = fc1.flops / (1979e12 * hw.fp8_matmul_efficiency)
    cast = memory_time_s(fp8_cast_bytes(fc1, backward=False), hw)
    memory = memory_time_s(fc1.act_bytes + fc1.weight_bytes, hw) + cast
    assert op_time_s(fc1, fp8, hw) == pytest.approx(max(math_fp8, memory), rel=1e-9)
    assert op_time_s(fc1, fp8, hw) < op_time_s(fc1, bf16, hw)
    # the output layer and attention are not fp8: the same time as under bf16
    assert not head["logits"].fp8
    assert op_time_s(head["logits"], fp8, hw) == pytest.approx(op_time_s(head["logits"], bf16, hw), rel=1e-9)
    core = ops(spec, "attention")["attn_core"]
    assert op_time_s(core, fp8, hw) == pytest.approx(op_time_s(core, bf16, hw), rel=1e-9)
    # the backward casts the output gradient
    assert fp8_cast_bytes(fc1, backward=True) == 4 * fc1.output_elems


def test_memory_reserve_is_counted_and_decides_fitting():
    sc = load_scenario("examples/llama3-70b-512xh100.yaml")
    graph, plan = sc.graph, sc.plan
    chunks = plan_chunks(graph, plan)
    with_reserve = memory_report(graph, plan, H100, chunks)
    none = memory_report(graph, plan, replace(H100, memory_reserve_bytes=0.0), chunks)
    assert with_reserve.breakdown["other"] == H100.memory_reserve_bytes == 3 * 2**30
    assert with_reserve.peak_bytes_per_gpu == pytest.approx(none.peak_bytes_per_gpu + 3 * 2**30)
    # a plan whose tensors fill the card exactly no longer fits
    tight = replace(H100, hbm_bytes=none.peak_bytes_per_gpu, memory_reserve_bytes=1.0)
    assert not memory_report(graph, plan, tight, chunks).fits


@pytest.mark.parametrize("precision, expected", [("bf16", True), ("fp8", True), ("fp16", True), (None, True),
                                                 ("fp32", False), ("tf32", False)])
def test_flash_attention_default_follows_the_precision(precision, expected):
    assert load_model({"preset": "gpt3-175b"}, precision=precision).flash_attention is expected


def test_flash_attention_as_typed_is_kept():
    assert load_model({"preset": "gpt3-175b", "flash_attention": False}, precision="bf16").flash_attention is False
    assert load_model({"preset": "resnet-50"}, precision="bf16").flash_attention is False
    sc = load_scenario({"model": {"preset": "gpt2-small"}, "hardware": "h100-sxm-80gb",
                        "cluster": {"nodes": 1, "gpus_per_node": 1}, "plan": {"global_batch": 8, "precision": "fp32"}})
    assert sc.model.flash_attention is False
