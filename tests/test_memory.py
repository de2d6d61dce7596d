"""Memory model: pinned against the ZeRO paper (Rajbhandari et al. 2020) and Korthikanti
et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models")."""

from __future__ import annotations

import dataclasses

import pytest

from simplan.cost.memory import (
    DDP_BUCKET_BYTES,
    activation_bytes_per_microbatch,
    in_flight_peak_bytes,
    memory_report,
    micro_batches_in_flight,
    model_state_bytes,
)
from simplan.hardware.profile import HardwareProfile
from simplan.model import build_graph, load_model
from simplan.plan.partition import uniform
from simplan.plan.plan import Plan

GB = 1e9
EXACT = 1e-12  # the graph builders use the paper's coefficients: agreement is exact up to rounding


def profile(hbm_bytes: float = 80 * 2**30) -> HardwareProfile:
    return HardwareProfile(
        name="test", peak_flops_per_s={"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12, "tf32": 156e12},
        hbm_bytes=hbm_bytes, hbm_bytes_per_s=2e12, matmul_efficiency=0.8, matmul_half_flops=1e9,
        memory_efficiency=0.8, kernel_overhead_s=0.0, gpus_per_node=8, fabric="nvswitch",
        intra_bytes_per_s=300e9, intra_latency_s=1e-6, intra_efficiency=0.8, nics_per_node=8,
        nic_bytes_per_s=25e9, inter_latency_s=5e-6, inter_efficiency=0.8, topology="fat-tree",
        oversubscription=1.0)


def report(graph, plan, hbm_bytes: float = 80 * 2**30):
    return memory_report(graph, plan, profile(hbm_bytes), uniform(graph, plan.pp * plan.virtual_stages))


# --- ZeRO paper, Fig. 1 and Table 1: 7.5B parameters, data parallel 64, K = 12 -----------

@pytest.mark.parametrize("stage, expected_gb", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_model_states_per_device(stage, expected_gb):
    states = model_state_bytes(7.5e9, "fp16", stage, 64)
    # the paper prints one decimal: tolerance half a unit of the last digit
    assert sum(states.values()) / GB == pytest.approx(expected_gb, abs=0.05)


def test_fp32_training_keeps_four_byte_weights_and_gradients():
    assert model_state_bytes(1.0, "fp32", 0, 1) == {"weights": 4, "gradients": 4, "optimizer": 8}
    assert model_state_bytes(1.0, "bf16", 0, 1) == {"weights": 2, "gradients": 2, "optimizer": 12}


# --- Korthikanti et al. 2022, Table 2 (per transformer layer, micro-batch b, 16-bit) -----

# Table 3 of the paper: (heads a, hidden h, layers L), sequence 2048, tensor parallel 8
PAPER_MODELS = {"gpt3-175b": (96, 12288, 96), "mt-nlg-530b": (128, 20480, 105), "1t": (160, 25600, 128)}
S, T = 2048, 8


def paper_graph(name: str):
    a, h, layers = PAPER_MODELS[name]
    # the paper's models run explicit (unfused) attention: its 5as/h term is the stored scores
    return build_graph(load_model({"family": "gpt", "layers": layers, "hidden": h, "heads": a,
                                   "seq_len": S, "vocab": 51200, "dropout": True, "flash_attention": False}))


def one_layer(graph):
    attention, mlp = graph.order[1], graph.order[2]
    assert (attention.kind, mlp.kind) == ("attention", "mlp")
    return [attention, mlp]


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
@pytest.mark.parametrize("b", [1, 4])
def test_korthikanti_table2_per_layer_activations(name, b):
    a, h, _ = PAPER_MODELS[name]
    g = paper_graph(name)
    layer = one_layer(g)
    sbh = S * b * h
    core = 5 * a * S / h

    def act(**kw):
        return activation_bytes_per_microbatch(layer, Plan(micro_batch=b, global_batch=b, **kw))

    cases = [
        (act(), sbh * (34 + core)),                                                   # no parallelism
        (act(tp=T), sbh * (10 + 24 / T + core / T)),                                   # tensor parallel
        (act(tp=T, sequence_parallel=True), sbh / T * (34 + core)),                    # + sequence parallel
        (act(tp=T, recompute="selective"), sbh * (10 + 24 / T)),                       # TP + selective
        (act(tp=T, sequence_parallel=True, recompute="selective"), sbh * 34 / T),      # TP + SP + selective
        (act(tp=T, recompute="full"), 2 * sbh),                                        # full recomputation
        (act(tp=T, sequence_parallel=True, recompute="full"), 2 * sbh / T),            # Megatron-LM splits the checkpoint
    ]
    for got, expected in cases:
        assert got == pytest.approx(expected, rel=EXACT)


def test_attention_core_term_matches_the_papers_5as_over_h():
    # Section 4.1: the 5as/h term dominates 34 for these models (80 for GPT-3 175B)
    for name, expected in (("gpt3-175b", 80), ("mt-nlg-530b", 64), ("1t", 64)):
        attention = one_layer(paper_graph(name))[0]
        assert attention.act_core_bytes / (S * PAPER_MODELS[name][1]) == pytest.approx(expected, rel=EXACT)


def test_first_stage_1f1b_holds_all_layers_worth_korthikanti_section_4_2_3():
    # 1F1B: the first stage holds p micro-batches of L/p layers = L layers' worth, plus the
    # embedding's dropout mask p sbh / t (Section 4.4); TP + SP, no recomputation.
    a, h, layers = PAPER_MODELS["mt-nlg-530b"]
    g = paper_graph("mt-nlg-530b")
    p = 35
    plan = Plan(tp=T, pp=p, dp=1, micro_batch=1, global_batch=280, sequence_parallel=True)
    rep = report(g, plan)
    sbh = S * h
    expected = sbh * layers / T * (34 + 5 * a * S / h) + p * sbh / T
    assert rep.per_stage[0]["activations"] == pytest.approx(expected, rel=EXACT)


@pytest.mark.parametrize("pp, v", [(4, 2), (8, 3), (8, 4)])
def test_interleaved_first_stage_factor_korthikanti(pp, v):
    # Korthikanti et al. 2022, Section 4.2.3: interleaving multiplies the first stage's
    # activation memory by 1 + (p - 1) / (p m), m the interleaving stages.
    plan = Plan(pp=pp, dp=1, global_batch=4 * pp, schedule="interleaved-1f1b", virtual_stages=v)
    assert micro_batches_in_flight(plan, 0) == pytest.approx(pp * (1 + (pp - 1) / (pp * v)), rel=EXACT)


def test_interleaved_gpt3_first_stage_within_half_percent_of_paper():
    a, h, layers = PAPER_MODELS["gpt3-175b"]
    g = paper_graph("gpt3-175b")
    pp, v = 8, 3
    plan = Plan(tp=T, pp=pp, dp=1, global_batch=64, schedule="interleaved-1f1b", virtual_stages=v,
                sequence_parallel=True)
    rep = report(g, plan)
    expected = S * h * layers / T * (34 + 5 * a * S / h) * (1 + (pp - 1) / (pp * v))
    # the paper's expression leaves out the embedding's dropout mask (< 0.1% here)
    assert rep.per_stage[0]["activations"] == pytest.approx(expected, rel=5e-3)


# --- micro-batches in flight per schedule -----------------------------------------------

@pytest.mark.parametrize("m", [2, 4, 8, 16])
def test_in_flight_per_schedule(m):
    pp = 4
    for stage in range(pp):
        assert micro_batches_in_flight(Plan(pp=pp, global_batch=m, schedule="gpipe"), stage) == m
        assert micro_batches_in_flight(Plan(pp=pp, global_batch=m, schedule="1f1b"), stage) == min(pp - stage, m)
        # zero-bubble (ZB-H1 bound): every stage up to the first stage's 1F1B peak
        assert micro_batches_in_flight(Plan(pp=pp, global_batch=m, schedule="zero-bubble"), stage) == min(pp, m)


def _brute_force_peak(pp, v, stage, m, chunk_bytes, schedule):
    """Replay Megatron-LM's pass order pass by pass (schedules.py), no shortcuts."""
    total = m * v
    if schedule == "zero-bubble":
        stage = 0
    if schedule == "gpipe":
        warmup = total
    elif v == 1:
        warmup = min(pp - stage - 1, total)
    else:
        warmup = min(2 * (pp - stage - 1) + (v - 1) * pp, total)
    fwd = [(k % (pp * v)) // pp for k in range(total)]
    bwd = [v - 1 - (k % (pp * v)) // pp for k in range(total)]
    ops = [(+1, fwd[k]) for k in range(warmup)]
    for i in range(total - warmup):
        ops += [(+1, fwd[warmup + i]), (-1, bwd[i])]
    ops += [(-1, bwd[k]) for k in range(total - warmup, total)]
    held = peak = 0.0
    for sign, chunk in ops:
        held += sign * chunk_bytes[chunk]
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize("schedule, v", [("gpipe", 1), ("1f1b", 1), ("zero-bubble", 1), ("zero-bubble", 2),
                                         ("interleaved-1f1b", 2), ("interleaved-1f1b", 3)])
@pytest.mark.parametrize("m", [4, 8, 12, 40])
def test_periodic_shortcut_equals_pass_by_pass_replay(schedule, v, m):
    pp = 4
    chunk_bytes = [3.0, 1.0, 7.0][:v]  # unequal chunks (an embedding or head makes them so)
    plan = Plan(pp=pp, global_batch=m, schedule=schedule, virtual_stages=v)
    for stage in range(pp):
        assert in_flight_peak_bytes(plan, stage, chunk_bytes) == pytest.approx(
            _brute_force_peak(pp, v, stage, m, chunk_bytes, schedule), rel=EXACT)


def test_in_flight_is_fast_for_many_micro_batches():
    plan = Plan(pp=8, dp=1, global_batch=10**9, schedule="interleaved-1f1b", virtual_stages=4)
    assert micro_batches_in_flight(plan, 0) == pytest.approx(8 * (1 + 7 / 32))


def test_last_stage_holds_one_micro_batch_under_1f1b_and_all_under_gpipe():
    g = build_graph(load_model("gpt3-1.3b"))
    one = report(g, Plan(pp=4, global_batch=16, schedule="1f1b"))
    all_ = report(g, Plan(pp=4, global_batch=16, schedule="gpipe"))
    assert all_.per_stage[3]["activations"] == pytest.approx(16 * one.per_stage[3]["activations"], rel=EXACT)


# --- full recomputation ----------------------------------------------------------------

def test_full_recompute_keeps_inputs_non_recomputed_layers_and_one_working_layer():
    g = build_graph(load_model("gpt3-1.3b"))
    plan = Plan(pp=1, global_batch=1, recompute="full")
    rep = report(g, plan)
    s, h, L = 2048, 2048, 24
    layer_full = activation_bytes_per_microbatch(one_layer(g), dataclasses.replace(plan, recompute="none"))
    emb, head = g.order[0], g.order[-1]
    kept = activation_bytes_per_microbatch([emb, head], dataclasses.replace(plan, recompute="none"))
    assert rep.breakdown["activations"] == pytest.approx(L * 2 * s * h + kept + layer_full, rel=EXACT)
    # the head keeps its fp32 logits (4 s V) even under full recomputation
    assert activation_bytes_per_microbatch([head], plan) >= 4 * s * 51200


def test_fp32_doubles_activations_except_the_fp32_logits_and_cp_divides_them():
    g = build_graph(load_model("gpt3-1.3b"))
    layers = g.order
    base = activation_bytes_per_microbatch(layers, Plan(global_batch=1))
    logits = 4 * 2048 * 51200  # the loss's logits are fp32 at any precision (Korthikanti et al. 2022, 4.4)
    assert activation_bytes_per_microbatch(layers, Plan(global_batch=1, precision="fp32")) == pytest.approx(
        2 * base - logits)
    assert activation_bytes_per_microbatch(layers, Plan(global_batch=1, cp=2)) == pytest.approx(base / 2)
    assert activation_bytes_per_microbatch(layers, Plan(global_batch=4, micro_batch=4)) == pytest.approx(4 * base)


def test_resnet_activations_do_not_shrink_with_tp_sharding_classes():
    g = build_graph(load_model("resnet-50"))
    one = activation_bytes_per_microbatch(g.order, Plan(global_batch=1))
    assert activation_bytes_per_microbatch(g.order, Plan(tp=2, global_batch=1)) == one
    assert one > 0


# --- parameters, sharding, buffers ---------------------------------------------------------

def test_weights_divide_by_tp_and_pipeline_stages():
    g = build_graph(load_model("gpt3-175b"))
    rep = report(g, Plan(tp=8, pp=16, dp=8, global_batch=1536, recompute="full"))
    total_weights = sum(s["weights"] for s in rep.per_stage)
    # every parameter once (2 bytes, sharded 8 ways), plus the last stage's tied
    # word-embedding copy (Megatron-LM keeps it for the output layer)
    assert total_weights == pytest.approx(2 * (g.params + 51200 * 12288) / 8, rel=EXACT)


def test_moe_experts_divide_by_ep():
    g = build_graph(load_model("mixtral-8x7b"))
    one = report(g, Plan(dp=8, ep=1, global_batch=8))
    eight = report(g, Plan(dp=8, ep=8, global_batch=8))
    moe_params = sum(layer.params - 4096 * 9 for layer in g.order if layer.kind == "moe")
    saved = one.breakdown["weights"] - eight.breakdown["weights"]
    assert saved == pytest.approx(2 * moe_params * (1 - 1 / 8), rel=EXACT)


def test_zero3_shards_weights_and_buffers_two_gathered_layers():
    g = build_graph(load_model("gpt3-1.3b"))
    plan = Plan(dp=8, global_batch=8, zero_stage=3)
    rep = report(g, plan)
    assert rep.breakdown["weights"] == pytest.approx(2 * g.params / 8, rel=EXACT)
    assert rep.breakdown["optimizer"] == pytest.approx(12 * g.params / 8, rel=EXACT)
    largest = max(layer.params for layer in g.order)
    assert rep.breakdown["comm_buffers"] == pytest.approx(2 * 2 * largest, rel=EXACT)


def test_ddp_bucket_and_no_buffer_without_data_parallelism():
    g = build_graph(load_model("gpt3-1.3b"))
    assert report(g, Plan(dp=2, global_batch=2)).breakdown["comm_buffers"] == DDP_BUCKET_BYTES
    assert report(g, Plan(dp=1, global_batch=1)).breakdown["comm_buffers"] == 0.0


def test_fits_and_shortfall():
    g = build_graph(load_model("gpt3-1.3b"))
    plan = Plan(global_batch=1)
    big = report(g, plan)
    assert big.fits and big.shortfall_bytes == 0
    small = report(g, plan, hbm_bytes=big.peak_bytes_per_gpu / 2)
    assert not small.fits
    assert small.shortfall_bytes == pytest.approx(big.peak_bytes_per_gpu / 2)
    js = small.to_json()
    assert set(js) >= {"peak_bytes_per_gpu", "capacity_bytes", "fits", "shortfall_bytes", "breakdown",
                       "per_stage_peak_bytes"}
    assert js["peak_bytes_per_gpu"] == max(js["per_stage_peak_bytes"])


def test_megatron_gpt3_175b_configuration_fits_an_80gb_a100():
    # Narayanan et al. 2021 trained GPT-3 175B on 1024 A100-80GB with tp 8, pp 16, full recomputation
    g = build_graph(load_model("gpt3-175b"))
    rep = report(g, Plan(tp=8, pp=16, dp=8, global_batch=1536, recompute="full"))
    assert rep.fits
