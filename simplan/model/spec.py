"""ModelSpec: the sizes that define a model, before any cost is derived."""

from __future__ import annotations

from dataclasses import dataclass, fields

FAMILIES = ("gpt", "llama", "bert", "vit", "resnet", "moe")


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    """One model. Transformer fields are ignored by ``resnet``; see ``builders``."""

    name: str = "custom"
    family: str
    """gpt | llama | bert | vit | resnet | moe."""
    layers: int
    """Transformer blocks (ResNet: bottleneck blocks, fixed by the architecture)."""
    hidden: int = 0
    heads: int = 0
    kv_heads: int = 0
    """Key/value heads (grouped-query attention); equals ``heads`` for multi-head attention."""
    ffn_hidden: int = 0
    seq_len: int = 0
    """Tokens per sample (ViT: patches + class token; ResNet: 1)."""
    vocab: int = 0
    experts: int = 0
    """MoE: experts per MoE layer (0 for dense models)."""
    top_k: int = 0
    """MoE: experts each token is routed to."""
    image_size: int = 0
    """ViT / ResNet: input image side in pixels."""
    patch_size: int = 0
    """ViT: patch side in pixels."""
    num_classes: int = 0
    """ViT / ResNet: classifier outputs."""
    flash_attention: bool = False
    """Attention core fused (FlashAttention): the s^2 scores are not stored for backward."""
    dropout: bool = False
    """Trained with dropout (GPT-2/3, BERT, ViT presets): its 1-byte masks are saved for
    backward (Korthikanti et al. 2022, Section 4.1). Off for LLaMA/Mixtral and the tiny
    executor models (their first-step loss must match across plans)."""
    tied_embeddings: bool = False
    """Output projection shares the input embedding's weights."""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads if self.heads else 0

    @property
    def is_transformer(self) -> bool:
        return self.family != "resnet"

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


SPEC_FIELDS = tuple(f.name for f in fields(ModelSpec))
