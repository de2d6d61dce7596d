"""Model fields from a Hugging Face ``config.json`` (``model: {hf_config: PATH}``).

The keys read are the ones the ``transformers`` configuration classes define
(``LlamaConfig``, ``MistralConfig``, ``MixtralConfig``, ``Qwen2Config``, ``Qwen3Config``,
``Qwen2MoeConfig``, ``Qwen3MoeConfig``, ``GPT2Config``, ``GPTNeoXConfig``); where a key is
optional, its default is that class's. Everything else in the file (rope_theta,
rope_scaling, norm epsilons, token ids) changes neither parameters nor FLOPs and is ignored.

Families (``simplan/model/transformer.py``): ``llama`` is SwiGLU (3 matrices) + RMSNorm +
rotary positions, ``moe`` the same with a routed SwiGLU MLP, ``gpt`` is a GeLU 2-matrix MLP +
LayerNorm with biases + learned positions.

What simplan's spec cannot say, and what is done about it:

* ``head_dim`` other than ``hidden_size / num_attention_heads`` (Qwen3-0.6B/4B/32B, the
  Qwen3-MoE models, Mistral-Nemo): rejected, one line naming both numbers.
* Shared experts (Qwen2-MoE ``shared_expert_intermediate_size``) and dense layers between
  MoE layers (``decoder_sparse_step`` > 1, ``mlp_only_layers``): rejected.
* Sliding-window attention (Mistral-7B-v0.1 ``sliding_window: 4096``): costed as full
  causal attention over ``seq_len``; exact for ``seq_len <= sliding_window``, and an
  overestimate of the attention core beyond it.
* Small tensors the families do not hold: Qwen2's QKV biases, Qwen3's q/k RMSNorm weights
  (under 0.01% of parameters), and GPT-NeoX's rotary positions (simplan's ``gpt`` family
  counts ``seq_len x hidden`` learned position parameters instead: +0.06% on GPT-NeoX-20B).
"""

from __future__ import annotations

from pathlib import Path

from simplan.errors import load_json, read_text, require

_LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe")
SUPPORTED_MODEL_TYPES = (*_LLAMA_LIKE, "gpt2", "gpt_neox")

# ``architectures[0]`` -> model_type, for a config.json without ``model_type``
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe", "GPT2LMHeadModel": "gpt2", "GPTNeoXForCausalLM": "gpt_neox",
}

# LlamaConfig alone derives a missing num_key_value_heads from num_attention_heads; the
# other classes default it to a fixed number (Mistral 8, Qwen2 32, ...) that a published
# file always overrides, so there it is required rather than guessed.
_KV_HEADS_OPTIONAL = ("llama",)


def is_hf_config(data: object) -> bool:
    """A parsed JSON document that is a Hugging Face model config (not a simplan model section)."""
    return isinstance(data, dict) and ("model_type" in data or "architectures" in data)


def resolve(path: str, base_dir: str | Path | None) -> Path:
    """``path`` relative to ``base_dir`` (the scenario file's folder) when it exists there,
    else as given (relative to the working directory), as scenario hardware paths resolve."""
    p = Path(path)
    if not p.is_absolute() and base_dir is not None and (Path(base_dir) / p).exists():
        return Path(base_dir) / p
    return p


def load_hf_config(path: str | Path, where: str) -> dict:
    """The simplan model fields of the config.json at ``path`` (``where`` labels errors)."""
    path = Path(path)
    label = f"{where}: {path}"
    text = read_text(path, label, "Hugging Face config.json")
    config = load_json(text, label)
    require(isinstance(config, dict), f"{label}: expected a JSON object, got {type(config).__name__}")
    fields = hf_fields(config, label)
    fields["name"] = path.parent.name if path.stem == "config" and path.parent.name else path.stem
    return fields


def hf_fields(config: dict, label: str) -> dict:
    """simplan model fields (family, sizes, seq_len, tied embeddings, dropout, experts)."""
    model_type = _model_type(config, label)
    if model_type == "gpt2":
        return _gpt2(config, label)
    if model_type == "gpt_neox":
        return _gpt_neox(config, label)
    return _llama_like(config, model_type, label)


def _model_type(config: dict, label: str) -> str:
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    model_type = config.get("model_type")
    if model_type is None:
        archs = config.get("architectures")
        arch = archs[0] if isinstance(archs, list) and archs else archs
        require(isinstance(arch, str) and arch in _ARCHITECTURES,
                f"{label}: architectures: {arch!r} is not supported and model_type is missing; "
                f"supported model_type: {supported}")
        return _ARCHITECTURES[arch]
    require(model_type in SUPPORTED_MODEL_TYPES,
            f"{label}: model_type: {model_type!r} is not supported; supported: {supported}")
    return model_type


def _int(config: dict, key: str, label: str, model_type: str, default: int | None = None) -> int:
    value = config.get(key)
    if value is None:
        require(default is not None, f"{label}: {key}: missing (required for model_type {model_type})")
        return default
    require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
            f"{label}: {key}: expected a positive integer, got {value!r}")
    return value


def _bool(config: dict, key: str, label: str, default: bool) -> bool:
    value = config.get(key, default)
    require(isinstance(value, bool), f"{label}: {key}: expected true or false, got {value!r}")
    return value


def _positive_rate(config: dict, keys: tuple[str, ...], label: str, default: float) -> bool:
    """Whether any of the dropout probabilities ``keys`` is above 0."""
    out = False
    for key in keys:
        value = config.get(key, default)
        require(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1,
                f"{label}: {key}: expected a probability in [0, 1), got {value!r}")
        out = out or value > 0
    return out


def _llama_like(config: dict, model_type: str, label: str) -> dict:
    """Llama, Mistral, Qwen2/3 (dense) and Mixtral, Qwen2/3-MoE: SwiGLU + RMSNorm + rotary."""
    def need(key: str, default: int | None = None) -> int:
        return _int(config, key, label, model_type, default)

    heads = need("num_attention_heads")
    hidden = need("hidden_size")
    fields = dict(
        family="llama",
        layers=need("num_hidden_layers"),
        hidden=hidden,
        heads=heads,
        kv_heads=need("num_key_value_heads", heads if model_type in _KV_HEADS_OPTIONAL else None),
        vocab=need("vocab_size"),
        seq_len=need("max_position_embeddings"),
        tied_embeddings=_bool(config, "tie_word_embeddings", label, False),
        dropout=_positive_rate(config, ("attention_dropout",), label, 0.0),
    )
    if config.get("head_dim") is not None:
        head_dim = need("head_dim")
        require(head_dim * heads == hidden,
                f"{label}: head_dim: {head_dim} x num_attention_heads {heads} = {head_dim * heads} != hidden_size "
                f"{hidden}; simplan's attention has heads x head_dim = hidden")
    if model_type not in ("qwen2_moe", "qwen3_moe"):
        fields["ffn_hidden"] = need("intermediate_size")  # Mixtral: each expert's width
    if model_type == "mixtral":
        fields.update(family="moe", experts=need("num_local_experts"), top_k=need("num_experts_per_tok"))
    elif model_type in ("qwen2_moe", "qwen3_moe"):
        shared = config.get("shared_expert_intermediate_size") or 0
        require(shared == 0, f"{label}: shared_expert_intermediate_size: {shared}: shared experts are not "
                             f"supported (simplan's MoE layer holds routed experts only)")
        step = config.get("decoder_sparse_step", 1)
        dense = config.get("mlp_only_layers") or []
        require(step == 1 and not dense,
                f"{label}: decoder_sparse_step {step}, mlp_only_layers {dense}: dense layers between MoE layers "
                f"are not supported (every layer must be MoE: decoder_sparse_step 1, mlp_only_layers [])")
        # the routed experts' width (intermediate_size is a dense MLP's, unused when every layer is MoE)
        fields.update(family="moe", ffn_hidden=need("moe_intermediate_size"), experts=need("num_experts"),
                      top_k=need("num_experts_per_tok"))
    return fields


def _gpt2(config: dict, label: str) -> dict:
    """GPT-2: learned positions, LayerNorm, GeLU 4h MLP, tied embeddings (GPT2Config defaults)."""
    def need(key: str, default: int | None = None) -> int:
        return _int(config, key, label, "gpt2", default)

    hidden = need("n_embd")
    return dict(
        family="gpt",
        layers=need("n_layer"),
        hidden=hidden,
        heads=need("n_head"),
        ffn_hidden=need("n_inner", 4 * hidden),  # n_inner: null means 4 x n_embd
        vocab=need("vocab_size"),
        seq_len=need("n_positions"),
        tied_embeddings=_bool(config, "tie_word_embeddings", label, True),
        dropout=_positive_rate(config, ("resid_pdrop", "embd_pdrop", "attn_pdrop"), label, 0.1),
    )


def _gpt_neox(config: dict, label: str) -> dict:
    """GPT-NeoX / Pythia: GeLU MLP and LayerNorm with biases, so simplan's ``gpt`` family
    (the ``llama`` family's 3-matrix SwiGLU would count 50% more MLP weights); NeoX's rotary
    positions have no parameters where ``gpt`` counts seq_len x hidden (0.06% of 20B)."""
    def need(key: str, default: int | None = None) -> int:
        return _int(config, key, label, "gpt_neox", default)

    return dict(
        family="gpt",
        layers=need("num_hidden_layers"),
        hidden=need("hidden_size"),
        heads=need("num_attention_heads"),
        ffn_hidden=need("intermediate_size"),
        vocab=need("vocab_size"),
        seq_len=need("max_position_embeddings"),
        tied_embeddings=_bool(config, "tie_word_embeddings", label, False),
        # GPTNeoXConfig's keys (older files' attention_probs_dropout_prob / hidden_dropout_prob
        # are not read by transformers, so not here either)
        dropout=_positive_rate(config, ("attention_dropout", "hidden_dropout"), label, 0.0),
    )
