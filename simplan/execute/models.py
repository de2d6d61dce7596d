"""Real torch models (GPT and LLaMA families) built from a :class:`ModelSpec`.

The module tree mirrors simplan's layer graph so pipeline stages cut the same places:
``units`` is ``[embedding, layer0, ..., layer{L-1}, head]`` where a ``TransformerLayer``
holds the graph's ``layer{i}.attention`` and ``layer{i}.mlp`` nodes.

Written the way Megatron-LM writes its layers so the tensors saved for backward match
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
Section 4.1): explicit attention (Q K^T, softmax, A V) unless ``flash_attention``,
LayerNorm/Linear/GeLU for GPT, RMSNorm and SwiGLU for LLaMA with fused-kernel autograd
(each saves its input only, as Apex's FusedRMSNorm and Megatron-LM's SwiGLUFunction do).
No dropout: the executor's first-step loss must be identical across plans.

Initialization is deterministic from a seed and independent of any parallelism: every
rank builds the full model, and the plan then shards it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from simplan.errors import SimplanError
from simplan.model.spec import ModelSpec

SUPPORTED_FAMILIES = ("gpt", "llama")


class _RMSNormFn(torch.autograd.Function):
    """y = x * rsqrt(mean(x^2) + eps) * w, saving x and rstd only (Apex FusedRMSNorm)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return x * rstd * weight

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        xhat = x * rstd
        grad_w = (grad * xhat).sum(dim=tuple(range(grad.dim() - 1)))
        gx = grad * weight
        grad_x = rstd * (gx - xhat * (gx * xhat).mean(-1, keepdim=True))
        return grad_x, grad_w, None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return _RMSNormFn.apply(x, self.weight, self.eps)


class _SwiGLUFn(torch.autograd.Function):
    """silu(gate) * up, saving gate and up (Megatron-LM's SwiGLUFunction recomputes silu)."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        sig = torch.sigmoid(gate)
        silu = gate * sig
        return grad * up * sig * (1 + gate * (1 - sig)), grad * silu


def _norm(spec: ModelSpec) -> nn.Module:
    return nn.LayerNorm(spec.hidden) if spec.family == "gpt" else RMSNorm(spec.hidden)


class AttentionCore(nn.Module):
    """softmax(Q K^T / sqrt(d) + causal) V on local heads. Grouped-query attention stacks
    the query heads of one KV head along the rows, so K and V are never expanded (what is
    saved is Q, K and V at their own widths, as Korthikanti et al. count them)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.head_dim = spec.head_dim
        self.group = spec.heads // spec.kv_heads
        self.flash = spec.flash_attention
        s = spec.seq_len
        causal = torch.full((s, s), float("-inf")).triu(1)
        # additive mask: ``add`` saves nothing for backward (masked_fill would save a mask)
        self.register_buffer("causal_bias", causal.repeat(self.group, 1), persistent=False)

    def forward(self, q, k, v):
        # q: [b, s, heads_local * d]; k, v: [b, s, kv_local * d]
        b, s, _ = q.shape
        d, g = self.head_dim, self.group
        q = q.view(b, s, -1, d).transpose(1, 2)  # [b, a, s, d]
        k = k.view(b, s, -1, d).transpose(1, 2)  # [b, kv, s, d]
        v = v.view(b, s, -1, d).transpose(1, 2)
        kv = k.shape[1]
        if self.flash:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=g > 1)
            return out.transpose(1, 2).reshape(b, s, -1)
        q = q.reshape(b, kv, g * s, d)  # heads of one group stacked along the rows
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        probs = torch.softmax(scores + self.causal_bias[: g * s, :s], dim=-1)
        out = torch.matmul(probs, v)  # [b, kv, g*s, d]
        return out.view(b, kv * g, s, d).transpose(1, 2).reshape(b, s, -1)


class SelfAttention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        h, kv_width = spec.hidden, spec.kv_heads * spec.head_dim
        bias = spec.family == "gpt"
        self.wq = nn.Linear(h, h, bias=bias)
        self.wk = nn.Linear(h, kv_width, bias=bias)
        self.wv = nn.Linear(h, kv_width, bias=bias)
        self.core = AttentionCore(spec)
        self.wo = nn.Linear(h, h, bias=bias)

    def forward(self, x):
        return self.wo(self.core(self.wq(x), self.wk(x), self.wv(x)))


class GeluMLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.fc1 = nn.Linear(spec.hidden, spec.ffn_hidden)
        self.fc2 = nn.Linear(spec.ffn_hidden, spec.hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SwiGLUMLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.w1 = nn.Linear(spec.hidden, spec.ffn_hidden, bias=False)  # gate
        self.w3 = nn.Linear(spec.hidden, spec.ffn_hidden, bias=False)  # up
        self.w2 = nn.Linear(spec.ffn_hidden, spec.hidden, bias=False)

    def forward(self, x):
        return self.w2(_SwiGLUFn.apply(self.w1(x), self.w3(x)))


class AttentionBlock(nn.Module):
    """The graph's ``layer{i}.attention`` node: pre-norm, attention, residual."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.norm = _norm(spec)
        self.attn = SelfAttention(spec)

    def forward(self, x):
        return x + self.attn(self.norm(x))


class MLPBlock(nn.Module):
    """The graph's ``layer{i}.mlp`` node: pre-norm, MLP, residual."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.norm = _norm(spec)
        self.mlp = GeluMLP(spec) if spec.family == "gpt" else SwiGLUMLP(spec)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class TransformerLayer(nn.Module):
    """One transformer layer: the unit a pipeline never cuts and full recomputation
    checkpoints (Korthikanti et al. 2022, Section 4.3)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.attention = AttentionBlock(spec)
        self.mlp = MLPBlock(spec)

    def forward(self, x):
        return self.mlp(self.attention(x))


class Embedding(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.tok = nn.Embedding(spec.vocab, spec.hidden)
        self.pos = nn.Embedding(spec.seq_len, spec.hidden) if spec.family == "gpt" else None

    def forward(self, tokens):
        x = self.tok(tokens)
        if self.pos is not None:
            x = x + self.pos.weight[: tokens.shape[1]]
        return x


class Head(nn.Module):
    """Final norm and the output projection to the vocabulary (logits)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.norm = _norm(spec)
        self.out = nn.Linear(spec.hidden, spec.vocab, bias=False)

    def forward(self, x):
        return self.out(self.norm(x))


class Chunk(nn.Module):
    """A contiguous run of units: the whole model, or one pipeline chunk."""

    def __init__(self, units: dict[str, nn.Module]):
        super().__init__()
        self.units = nn.ModuleDict(units)

    def forward(self, x):
        for unit in self.units.values():
            x = unit(x)
        return x


def check_supported(spec: ModelSpec) -> None:
    if spec.family not in SUPPORTED_FAMILIES:
        raise SimplanError(f"model.family: the torch executor builds {', '.join(SUPPORTED_FAMILIES)}, "
                           f"got {spec.family}")
    if spec.tied_embeddings:
        raise SimplanError("model.tied_embeddings: the torch executor does not tie embeddings "
                           "(a pipeline would need the shared weight on two stages); set it false")
    if spec.dropout:
        raise SimplanError("model.dropout: the torch executor runs without dropout so every plan computes "
                           "the same step; set it false")


def unit_names(spec: ModelSpec) -> list[str]:
    """Names of the units, in order: ``embedding``, ``layer0``..``layer{L-1}``, ``head``."""
    return ["embedding", *[f"layer{i}" for i in range(spec.layers)], "head"]


def build_units(spec: ModelSpec, seed: int) -> dict[str, nn.Module]:
    """All units of the model, initialized from ``seed`` (GPT-2 style: normal(0, 0.02),
    output projections of residual branches scaled by 1/sqrt(2 L), Radford et al. 2019)."""
    check_supported(spec)
    gen = torch.Generator().manual_seed(seed)
    units: dict[str, nn.Module] = {"embedding": Embedding(spec)}
    for i in range(spec.layers):
        units[f"layer{i}"] = TransformerLayer(spec)
    units["head"] = Head(spec)
    residual_std = 0.02 / math.sqrt(2 * spec.layers)
    with torch.no_grad():
        for name in unit_names(spec):
            for pname, p in units[name].named_parameters():
                if p.dim() == 1:
                    p.fill_(1.0 if pname.endswith("weight") else 0.0)
                else:
                    std = residual_std if pname.endswith(("wo.weight", "fc2.weight", "w2.weight")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
    return units


def build_model(spec: ModelSpec, seed: int = 0) -> Chunk:
    """The whole model as one chunk (single process, data and tensor parallel)."""
    return Chunk(build_units(spec, seed))


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy over the micro-batch, on fp32 logits."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1))
