"""Build a ModelSpec from a scenario's ``model`` section, and its LayerGraph."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from simplan.errors import SimplanError, require
from simplan.model.graph import LayerGraph
from simplan.model.hf import load_hf_config, resolve
from simplan.model.presets import PRESETS
from simplan.model.spec import FAMILIES, SPEC_FIELDS, ModelSpec

_INT_FIELDS = ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "seq_len", "vocab", "experts", "top_k",
               "image_size", "patch_size", "num_classes")
_BOOL_FIELDS = ("flash_attention", "tied_embeddings", "dropout")


def model_names() -> list[str]:
    return sorted(PRESETS)


FULL_PRECISIONS = ("fp32", "tf32")


def load_model(section: dict | str, where: str = "model", precision: str | None = None,
               base_dir: str | Path | None = None) -> ModelSpec:
    """``section``: a preset name, or a mapping with an optional ``preset`` or
    ``hf_config`` (a Hugging Face config.json, relative to ``base_dir``, the scenario file's
    folder, when it is there; see ``simplan.model.hf``) whose fields the explicit ones
    override. Derived defaults (kv_heads = heads, ffn_hidden = 4 hidden
    for GeLU models, seq_len of a ViT) apply only to fields nobody set.

    ``precision``: the plan's, when known. A transformer trained in 16 or 8 bits (or at an
    unknown precision: the plans default to bf16) runs FlashAttention unless the section or
    its preset says otherwise: every current framework does (Megatron-Core through
    Transformer Engine, torchtitan and llm-foundry through SDPA / flash-attn); fp32 runs
    keep the unfused attention (FlashAttention needs 16-bit inputs, Dao 2023)."""
    if isinstance(section, str):
        section = {"preset": section}
    if not isinstance(section, dict):
        raise SimplanError(f"{where}: expected a preset name or a mapping, got {type(section).__name__}")
    fields = dict(section)
    preset = fields.pop("preset", None)
    hf_config = fields.pop("hf_config", None)
    unknown = sorted(set(fields) - set(SPEC_FIELDS))
    require(not unknown, f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(SPEC_FIELDS)}")
    base: dict = {}
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise SimplanError(f"{where}.preset: unknown preset {preset!r}; known: {', '.join(model_names())}")
        base = dict(PRESETS[preset], name=preset)
    if hf_config is not None:
        require(preset is None, f"{where}: give preset or hf_config, not both")
        require(isinstance(hf_config, str) and hf_config != "",
                f"{where}.hf_config: expected a path to a Hugging Face config.json, got {hf_config!r}")
        base = load_hf_config(resolve(hf_config, base_dir), f"{where}.hf_config")
    merged = {**base, **fields}
    if (preset is not None or hf_config is not None) and fields and "name" not in fields:
        merged["name"] = f"{base['name']}+custom"
    require("family" in merged, f"{where}.family: missing (one of {', '.join(FAMILIES)}), or give a preset")
    require(merged["family"] in FAMILIES,
            f"{where}.family: {merged['family']!r} is not one of {', '.join(FAMILIES)}")
    for key in _INT_FIELDS:
        if key in merged:
            value = merged[key]
            require(isinstance(value, int) and not isinstance(value, bool),
                    f"{where}.{key}: expected an integer, got {value!r}")
            require(value >= 0, f"{where}.{key}: must be >= 0, got {value}")
    for key in _BOOL_FIELDS:
        if key in merged:
            require(isinstance(merged[key], bool), f"{where}.{key}: expected true or false, got {merged[key]!r}")
    if "name" in merged:
        require(isinstance(merged["name"], str), f"{where}.name: expected a string, got {merged['name']!r}")
    _fill_derived(merged, where)
    if "flash_attention" not in merged and merged["family"] != "resnet" and precision not in FULL_PRECISIONS:
        merged["flash_attention"] = True
    spec = ModelSpec(**merged)
    _check(spec, where)
    return spec


def _fill_derived(m: dict, where: str) -> None:
    family = m["family"]
    if family == "resnet":
        m.setdefault("layers", 16)
        require(m["layers"] == 16, f"{where}.layers: resnet is ResNet-50 with 16 bottleneck blocks, got {m['layers']}")
        m.setdefault("seq_len", 1)
        return
    if "heads" in m:
        m.setdefault("kv_heads", m["heads"])
    if family in ("gpt", "bert", "vit") and "hidden" in m:
        m.setdefault("ffn_hidden", 4 * m["hidden"])
    if family == "vit" and m.get("patch_size"):
        patches = (m.get("image_size", 0) // m["patch_size"]) ** 2
        m.setdefault("seq_len", patches + 1)


def _check(spec: ModelSpec, where: str) -> None:
    def positive(*names: str) -> None:
        for n in names:
            require(getattr(spec, n) > 0, f"{where}.{n}: must be > 0 for family {spec.family}, got {getattr(spec, n)}")

    if spec.family == "resnet":
        positive("image_size", "num_classes")
        require(spec.image_size % 32 == 0, f"{where}.image_size: must be a multiple of 32, got {spec.image_size}")
        return
    positive("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "seq_len")
    require(spec.hidden % spec.heads == 0,
            f"{where}.hidden: {spec.hidden} is not divisible by heads {spec.heads}")
    require(spec.heads % spec.kv_heads == 0,
            f"{where}.kv_heads: heads {spec.heads} is not divisible by kv_heads {spec.kv_heads}")
    if spec.family == "vit":
        positive("image_size", "patch_size", "num_classes")
        require(spec.image_size % spec.patch_size == 0,
                f"{where}.image_size: {spec.image_size} is not divisible by patch_size {spec.patch_size}")
        expected = (spec.image_size // spec.patch_size) ** 2 + 1
        require(spec.seq_len == expected,
                f"{where}.seq_len: a {spec.image_size}px image in {spec.patch_size}px patches is {expected} tokens, "
                f"got {spec.seq_len}")
    else:
        positive("vocab")
    if spec.family == "moe":
        positive("experts", "top_k")
        require(spec.top_k <= spec.experts, f"{where}.top_k: {spec.top_k} exceeds experts {spec.experts}")
    else:
        require(spec.experts == 0, f"{where}.experts: only family moe has experts, got {spec.experts}")


@lru_cache(maxsize=64)
def build_graph(spec: ModelSpec) -> LayerGraph:
    """The layer graph of a spec (cached: specs are frozen and hashable)."""
    if spec.family == "resnet":
        from simplan.model.resnet import build_resnet50

        return build_resnet50(spec)
    from simplan.model.transformer import build_transformer

    return build_transformer(spec)
