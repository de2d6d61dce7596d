"""Layer and Op: the cost description of one node of the layer graph.

All per-sample quantities are for one sample (one sequence, one image) on one
device with no parallelism; the cost and memory models divide them by the
parallel degrees. Activation coefficients are in bytes for 16-bit activations
(the convention of Korthikanti et al. 2022, "Reducing Activation Recomputation
in Large Transformer Models", Section 4.1: 2-byte activations, 1-byte dropout
masks); the memory model rescales for fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARDINGS = ("tp", "sp", "none")
"""How tensor parallelism splits an op or tensor.

``tp``: always divided by the tensor-parallel degree (column/row-parallel matmuls,
the attention heads, the vocabulary-parallel embedding).
``sp``: replicated across tensor-parallel ranks unless sequence parallelism is on,
then divided (LayerNorm, dropout, residual: Korthikanti et al. 2022, Section 4.2.2).
``none``: never divided (e.g. a CNN layer)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Op:
    """One kernel-sized piece of work inside a layer (forward pass)."""

    name: str
    kind: str
    """matmul | attention (scores, softmax, A.V) | elementwise."""
    flops: float
    """Forward FLOPs per sample (a multiply-add counts 2)."""
    act_bytes: float
    """Forward HBM traffic per sample in activations read and written (16-bit)."""
    weight_bytes: float = 0.0
    """Forward HBM traffic in weights, per micro-batch, 16-bit (read once)."""
    sharding: str = "tp"
    bwd_factor: float = 2.0
    """Backward work relative to forward (matmul: grad-input + grad-weight = 2x)."""
    fused: bool = False
    """attention: one fused kernel (FlashAttention) that never writes the s^2 scores; it runs
    at the profile's attention-kernel rate, not the matmul rate."""
    causal: bool = False
    """attention: causal mask. A fused kernel skips the masked blocks, doing half of the
    (non-causal) ``flops`` (FlashAttention-2, Dao 2023, Section 4: causal FLOPs are half)."""
    seq_len: int = 0
    """attention: tokens per sequence (the fused kernel's efficiency depends on it)."""
    fp8: bool = False
    """matmul: a linear layer that an fp8 plan runs in fp8 (Transformer Engine, torchao
    float8): the blocks' projections. The output layer, the router and attention stay
    16-bit (Megatron-Core keeps the output layer out of fp8; torchtitan's float8
    converter skips ``output``)."""
    input_elems: float = 0.0
    """matmul: per sample, elements of the input activation (what an fp8 plan casts)."""
    output_elems: float = 0.0
    """matmul: per sample, elements of the output (its gradient is cast in backward)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Layer:
    """One node of the layer graph: a transformer sub-block, an embedding, a head, a CNN stage block."""

    name: str
    kind: str
    """embedding | attention | mlp | moe | head | conv | pool | classifier."""
    ops: tuple[Op, ...]
    params: int
    """Parameters of this layer (all experts for MoE)."""
    params_sharding: str = "tp"
    """How tensor parallelism shards the parameters (``tp``: divided; ``none``: replicated)."""
    act_saved_bytes: dict[str, float]
    """Bytes saved for backward per sample (16-bit), by sharding class ``tp``/``sp``/``none``."""
    act_core_bytes: float = 0.0
    """The attention-core part of the saved activations (softmax, its dropout mask and
    output: 5*a*s^2 per sample in Korthikanti et al.), sharded by tp; selective
    recomputation drops it."""
    act_fp32_bytes: float = 0.0
    """Saved bytes per sample that are fp32 whatever the precision (the loss's logits),
    sharded by tp; not rescaled for the precision."""
    input_bytes: float = 0.0
    """Bytes of the layer's input per sample (16-bit): what full recomputation keeps
    (Korthikanti et al. 2022, Section 4.3: 2*s*b*h per transformer layer)."""
    output_bytes: float = 0.0
    """Bytes of the layer's output per sample: the pipeline send size if a stage ends here."""
    tp_fwd_allreduce_bytes: float = 0.0
    """Per sample, bytes of the tensor-parallel all-reduce of the output in forward
    (Megatron-LM's g operator, Shoeybi et al. 2019, Fig. 3). With sequence parallelism
    it becomes a reduce-scatter plus an all-gather at the next block's input, the same
    bytes moved (Korthikanti et al. 2022, Section 4.2.2)."""
    tp_bwd_allreduce_bytes: float = 0.0
    """Per sample, bytes of the tensor-parallel all-reduce of the input gradient in
    backward (Megatron-LM's f operator)."""
    norm_params: float = 0.0
    """Parameters of the layer's norms (weight, and bias for LayerNorm), whole on every
    tensor-parallel rank. With sequence parallelism each rank's gradient of them is a
    partial sum over its sequence shard: Megatron-LM all-reduces them over the tp group
    once per step, in one buffer (finalize_model_grads, _allreduce_layernorm_grads)."""
    tp_fwd_fp32_allreduces: tuple[float, ...] = ()
    """Per sample, bytes of each further tensor-parallel all-reduce in forward whose
    values are fp32 whatever the precision (not rescaled): the vocabulary-parallel cross
    entropy's three, of one value per token each (max logit, target logit, sum of
    exponentials; Megatron-LM core/tensor_parallel/cross_entropy.py, and torch's
    loss_parallel). Latency-bound on every fabric."""
    cp_kv_bytes: float = 0.0
    """Per sample, bytes of keys and values that context parallelism gathers (attention)."""
    a2a_bytes: float = 0.0
    """MoE: per sample, bytes of token activations each all-to-all moves (dispatch, then
    combine; forward and backward each do both)."""
    experts: int = 0
    """MoE: experts in this layer (expert parallelism divides them)."""
    expert_params: int = 0
    """MoE: the part of ``params`` in the experts (the router and norm stay whole)."""

    @property
    def fwd_flops(self) -> float:
        return sum(op.flops for op in self.ops)

    @property
    def bwd_flops(self) -> float:
        return sum(op.flops * op.bwd_factor for op in self.ops)

    @property
    def matmul_flops(self) -> float:
        return sum(op.flops for op in self.ops if op.kind != "elementwise")

    @property
    def act_saved_total_bytes(self) -> float:
        """Saved activations per sample with no parallelism and no recomputation."""
        return sum(self.act_saved_bytes.values()) + self.act_core_bytes + self.act_fp32_bytes
