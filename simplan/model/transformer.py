"""Transformer layer graphs: GPT-2/3, LLaMA 2/3, BERT, ViT and Mixtral-style MoE.

Per-sample costs (one sequence of ``s`` tokens, micro-batch 1, no parallelism).
Notation as in Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training
on GPU Clusters Using Megatron-LM", Appendix, Eq. 2): s sequence, h hidden, a heads,
f ffn hidden, V vocabulary. A transformer layer is two nodes, attention and MLP, each
with its preceding norm and its residual/dropout.

FLOPs (forward, 2 per multiply-add): attention block 2sh(h + 2 kv d) for QKV, 4s^2h for
scores and A.V, 2sh^2 for the output projection; MLP 2sh f per matrix (2 matrices for
GeLU, 3 for SwiGLU). With f = 4h and kv = a this is 24sh^2 + 4s^2h per layer and the
logits 2shV, so forward + backward (x3) gives Megatron-LM's 72 B s l h^2 (1 + s/6h + V/12lh).

Saved activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", Section 4.1, Eq. 1): per layer 34 s h + 5 a s^2 bytes with
16-bit activations and dropout, of which 10 s h are replicated across tensor-parallel
ranks unless sequence parallelism is on (class ``sp``), 24 s h are split (class ``tp``)
and 5 a s^2 are the attention core (dropped by selective recomputation).
"""

from __future__ import annotations

from simplan.model.graph import LayerGraph
from simplan.model.layer import Layer, Op
from simplan.model.spec import ModelSpec

ACT = 2  # bytes per 16-bit activation element (Korthikanti et al. 2022, Section 4.1)


def _uses_dropout(spec: ModelSpec) -> bool:
    return spec.dropout


def _causal(spec: ModelSpec) -> bool:
    """Decoder-only language models mask attention causally; BERT and ViT attend both ways."""
    return spec.family in ("gpt", "llama", "moe")


def _swiglu(spec: ModelSpec) -> bool:
    return spec.family in ("llama", "moe")


def attention_block(spec: ModelSpec, i: int) -> Layer:
    s, h, a = spec.seq_len, spec.hidden, spec.heads
    kv_width = spec.kv_heads * spec.head_dim
    qkv_width = h + 2 * kv_width
    dropout = _uses_dropout(spec)
    mask = 1 if dropout else 0  # 1-byte dropout mask per element
    if spec.flash_attention:
        core_traffic = ACT * s * (qkv_width + h)  # read Q, K, V; write the output
        core_saved = 4 * a * s  # fp32 log-sum-exp per row (FlashAttention-2)
    else:
        # scores written and read, softmax out, dropout mask and output: 11 a s^2 (a s^2
        # each for scores, softmax and dropout, 2 bytes per element, plus the mask)
        core_traffic = (ACT * 5 + mask) * a * s * s
        core_saved = (ACT + (ACT + 1 if dropout else 0)) * a * s * s  # 5 a s^2 with dropout
    ops = (
        Op(name="norm", kind="elementwise", flops=0.0, act_bytes=2 * ACT * s * h, sharding="sp", bwd_factor=2.0),
        Op(name="qkv", kind="matmul", flops=2.0 * s * h * qkv_width, act_bytes=ACT * s * (h + qkv_width),
           weight_bytes=ACT * h * qkv_width, fp8=True, input_elems=s * h, output_elems=s * qkv_width),
        Op(name="attn_core", kind="attention", flops=4.0 * s * s * h, act_bytes=core_traffic,
           fused=spec.flash_attention, causal=_causal(spec), seq_len=s),
        Op(name="proj", kind="matmul", flops=2.0 * s * h * h, act_bytes=2 * ACT * s * h, weight_bytes=ACT * h * h,
           fp8=True, input_elems=s * h, output_elems=s * h),
        Op(name="residual", kind="elementwise", flops=0.0, act_bytes=(3 * ACT + mask) * s * h, sharding="sp"),
    )
    params = h * qkv_width + h * h + (4 if spec.family in ("gpt", "bert", "vit") else 1) * h
    return Layer(
        name=f"layer{i}.attention",
        kind="attention",
        ops=ops,
        params=params,
        # LayerNorm input, QKV input, dropout mask: 5sh (Korthikanti Eq. 1, attention block)
        act_saved_bytes={"sp": (2 * ACT + mask) * s * h,
                         # Q and K (4sh for MHA), V (2sh), output-projection input (2sh)
                         "tp": ACT * s * (h + kv_width) + ACT * s * kv_width + ACT * s * h},
        act_core_bytes=core_saved,
        input_bytes=ACT * s * h,  # one checkpoint per transformer layer (Section 4.3)
        output_bytes=ACT * s * h,
        tp_fwd_allreduce_bytes=ACT * s * h,
        tp_bwd_allreduce_bytes=ACT * s * h,
        norm_params=_norm_params(spec),
        cp_kv_bytes=2 * ACT * s * kv_width,
    )


def _mlp_ops(spec: ModelSpec, f: int, tokens_factor: float = 1.0) -> tuple[Op, ...]:
    s, h = spec.seq_len, spec.hidden
    up = 2 if _swiglu(spec) else 1  # SwiGLU has a gate and an up projection
    t = s * tokens_factor
    return (
        Op(name="fc1", kind="matmul", flops=2.0 * t * h * f * up, act_bytes=ACT * t * (h + up * f),
           weight_bytes=ACT * h * f * up, fp8=True, input_elems=t * h, output_elems=t * f * up),
        Op(name="act", kind="elementwise", flops=0.0, act_bytes=ACT * t * f * (up + 1)),
        Op(name="fc2", kind="matmul", flops=2.0 * t * f * h, act_bytes=ACT * t * (f + h), weight_bytes=ACT * f * h,
           fp8=True, input_elems=t * f, output_elems=t * h),
    )


def _mlp_saved_tp(spec: ModelSpec, f: int) -> float:
    s = spec.seq_len
    # GeLU: fc1 output and GeLU output, 2 x 2sf = 16sh at f = 4h (Korthikanti Eq. 1).
    # SwiGLU: gate and up outputs and fc2 input, 3 x 2sf (as Megatron-LM's fused SwiGLU saves them).
    return (3 if _swiglu(spec) else 2) * ACT * s * f


def _norm_params(spec: ModelSpec) -> int:
    """Parameters of one norm: LayerNorm's weight and bias (GPT, BERT, ViT), RMSNorm's weight."""
    return (2 if spec.family in ("gpt", "bert", "vit") else 1) * spec.hidden


def mlp_block(spec: ModelSpec, i: int) -> Layer:
    s, h, f = spec.seq_len, spec.hidden, spec.ffn_hidden
    mask = 1 if _uses_dropout(spec) else 0
    up = 2 if _swiglu(spec) else 1
    norm = Op(name="norm", kind="elementwise", flops=0.0, act_bytes=2 * ACT * s * h, sharding="sp")
    residual = Op(name="residual", kind="elementwise", flops=0.0, act_bytes=(3 * ACT + mask) * s * h, sharding="sp")
    return Layer(
        name=f"layer{i}.mlp",
        kind="mlp",
        ops=(norm, *_mlp_ops(spec, f), residual),
        params=(up + 1) * h * f + (f + h + 2 * h if spec.family in ("gpt", "bert", "vit") else h),
        act_saved_bytes={"sp": (2 * ACT + mask) * s * h, "tp": _mlp_saved_tp(spec, f)},
        output_bytes=ACT * s * h,
        tp_fwd_allreduce_bytes=ACT * s * h,
        tp_bwd_allreduce_bytes=ACT * s * h,
        norm_params=_norm_params(spec),
    )


def moe_block(spec: ModelSpec, i: int) -> Layer:
    """Mixtral-style sparse MLP: a router and ``experts`` SwiGLU experts, each token sent
    to ``top_k`` of them (Jiang et al. 2024, "Mixtral of Experts", Section 2.1)."""
    s, h, f, k, e = spec.seq_len, spec.hidden, spec.ffn_hidden, spec.top_k, spec.experts
    norm = Op(name="norm", kind="elementwise", flops=0.0, act_bytes=2 * ACT * s * h, sharding="sp")
    router = Op(name="router", kind="matmul", flops=2.0 * s * h * e, act_bytes=ACT * s * (h + e),
                weight_bytes=ACT * h * e, sharding="none")
    residual = Op(name="residual", kind="elementwise", flops=0.0, act_bytes=3 * ACT * s * h, sharding="sp")
    return Layer(
        name=f"layer{i}.moe",
        kind="moe",
        ops=(norm, router, *_mlp_ops(spec, f, tokens_factor=k), residual),
        params=e * 3 * h * f + h * e + h,
        act_saved_bytes={"sp": 2 * ACT * s * h + ACT * s * h * k, "tp": k * _mlp_saved_tp(spec, f)},
        output_bytes=ACT * s * h,
        tp_fwd_allreduce_bytes=ACT * s * h,
        tp_bwd_allreduce_bytes=ACT * s * h,
        norm_params=_norm_params(spec),
        a2a_bytes=ACT * s * h * k,  # each token's hidden state to each of its k experts
        experts=e,
        expert_params=e * 3 * h * f,
    )


def embedding(spec: ModelSpec) -> Layer:
    s, h, v = spec.seq_len, spec.hidden, spec.vocab
    mask = 1 if _uses_dropout(spec) else 0
    if spec.family == "vit":
        # patch embedding: a (3 p^2) x h matmul per patch, plus class token and positions
        patch_in = 3 * spec.patch_size**2
        patches = s - 1
        return Layer(
            name="embedding", kind="embedding",
            ops=(Op(name="patch", kind="matmul", flops=2.0 * patches * patch_in * h,
                    act_bytes=ACT * patches * (patch_in + h), weight_bytes=ACT * patch_in * h, sharding="none"),),
            params=patch_in * h + h + h + s * h,
            params_sharding="none",
            act_saved_bytes={"none": ACT * patches * patch_in + mask * s * h},
            output_bytes=ACT * s * h,
        )
    learned_positions = spec.family in ("gpt", "bert")
    return Layer(
        name="embedding", kind="embedding",
        ops=(Op(name="lookup", kind="elementwise", flops=0.0, act_bytes=(2 * ACT + mask) * s * h,
                weight_bytes=0.0, sharding="sp"),),
        # the position table is small and replicated; the word table is vocabulary-parallel
        params=v * h + (s * h if learned_positions else 0),
        act_saved_bytes={"sp": mask * s * h},
        output_bytes=ACT * s * h,
        # vocabulary-parallel lookup ends in an all-reduce (Megatron-LM VocabParallelEmbedding)
        tp_fwd_allreduce_bytes=ACT * s * h,
    )


def head(spec: ModelSpec) -> Layer:
    s, h, v = spec.seq_len, spec.hidden, spec.vocab
    norm = Op(name="final_norm", kind="elementwise", flops=0.0, act_bytes=2 * ACT * s * h, sharding="sp")
    if spec.family == "vit":
        c = spec.num_classes
        return Layer(
            name="head", kind="head",
            ops=(norm, Op(name="classifier", kind="matmul", flops=2.0 * h * c, act_bytes=ACT * (h + c),
                          weight_bytes=ACT * h * c, sharding="none")),
            params=h * c + c + 2 * h, params_sharding="none",
            act_saved_bytes={"sp": 2 * ACT * s * h},
            output_bytes=4 * c,
        )
    return Layer(
        name="head", kind="head",
        ops=(norm,
             Op(name="logits", kind="matmul", flops=2.0 * s * h * v, act_bytes=ACT * s * (h + v),
                weight_bytes=ACT * h * v),
             # vocabulary-parallel cross entropy on fp32 logits: read, softmax, write
             Op(name="cross_entropy", kind="elementwise", flops=0.0, act_bytes=3 * 4 * s * v, bwd_factor=1.0)),
        params=(0 if spec.tied_embeddings else v * h) + (2 if spec.family in ("gpt", "bert") else 1) * h,
        # final norm input and logits input (replicated), fp32 logits for the loss:
        # 4 s v / t (Korthikanti et al. 2022, Section 4.4)
        act_saved_bytes={"sp": 2 * ACT * s * h},
        act_fp32_bytes=4 * s * v,
        output_bytes=4.0,
        # the logits input is copied to every rank: its gradient is all-reduced (f operator)
        tp_bwd_allreduce_bytes=ACT * s * h,
        norm_params=_norm_params(spec),
        # vocabulary-parallel cross entropy: all-reduce max, target logit and sum of exps
        tp_fwd_fp32_allreduces=(4.0 * s,) * 3,
    )


def build_transformer(spec: ModelSpec) -> LayerGraph:
    layers: list[Layer] = [embedding(spec)]
    for i in range(spec.layers):
        layers.append(attention_block(spec, i))
        layers.append(moe_block(spec, i) if spec.is_moe else mlp_block(spec, i))
    layers.append(head(spec))
    return LayerGraph.chain(spec, layers)
