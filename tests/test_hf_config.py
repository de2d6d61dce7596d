"""Models from Hugging Face config.json files (``model: {hf_config: PATH}``, ``--model PATH``).

The fixtures in tests/data/hf/ carry the published config.json values of each model
(the fields simplan reads plus a few of the others)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from simplan.cli import main
from simplan.errors import SimplanError
from simplan.model import build_graph, load_model
from simplan.scenario import load_scenario
from simplan.search.inputs import model_from_flag
from simplan.sim import simulate

HF = Path(__file__).resolve().parent / "data" / "hf"

TOLERANCE = 0.01  # published parameter counts, relative


def hf(config: str, **overrides) -> dict:
    return {"hf_config": str(HF / f"{config}.json"), **overrides}


def params(section) -> int:
    return build_graph(load_model(section)).params


def error_of(section, **kw) -> str:
    with pytest.raises(SimplanError) as info:
        load_model(section, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the presets, from their models' config.json ---------------------------------------------

@pytest.mark.parametrize("name, preset, overrides", [
    ("llama3-8b", "llama3-8b", {}),
    ("llama3-70b", "llama3-70b", {}),
    # Llama 3.1: rope_scaling (llama3 type) changes neither parameters nor FLOPs; its
    # max_position_embeddings is 131072, the preset's 8192 is the pre-training length
    ("llama3.1-8b", "llama3-8b", {"seq_len": 8192}),
    # max_position_embeddings 32768; the preset trains at 4096
    ("mixtral-8x7b-v0.1", "mixtral-8x7b", {"seq_len": 4096}),
    # the published vocabulary (50257) padded to a multiple of 128, as the preset is (Megatron-LM)
    ("gpt2", "gpt2-small", {"vocab": 50304}),
])
def test_hf_config_gives_the_presets_model(name, preset, overrides):
    spec = load_model(hf(name, **overrides))
    expected = load_model(preset)
    assert build_graph(spec).params == build_graph(expected).params
    assert replace(spec, name=preset) == expected  # every field, seq_len included


def test_fields_map_as_transformers_reads_them():
    llama = load_model(hf("llama3-8b"))
    assert (llama.name, llama.family, llama.kv_heads, llama.seq_len, llama.tied_embeddings) == \
        ("llama3-8b", "llama", 8, 8192, False)
    assert load_model(hf("llama3.1-8b")).seq_len == 131072  # max_position_embeddings unless overridden
    mixtral = load_model(hf("mixtral-8x7b-v0.1"))
    assert (mixtral.family, mixtral.experts, mixtral.top_k, mixtral.ffn_hidden) == ("moe", 8, 2, 14336)
    gpt2 = load_model(hf("gpt2"))
    # GPT2Config: no tie_word_embeddings key means tied; n_inner null means 4 x n_embd; pdrop 0.1
    assert (gpt2.family, gpt2.vocab, gpt2.ffn_hidden, gpt2.tied_embeddings, gpt2.dropout) == \
        ("gpt", 50257, 3072, True, True)
    neox = load_model(hf("gpt-neox-20b"))
    assert (neox.family, neox.ffn_hidden, neox.kv_heads, neox.tied_embeddings, neox.dropout) == \
        ("gpt", 24576, 64, False, False)
    assert load_model(hf("qwen2-7b")).kv_heads == 4


def test_explicit_fields_override_the_config_and_rename():
    spec = load_model(hf("mistral-7b-v0.1", seq_len=4096, flash_attention=False))
    assert (spec.seq_len, spec.flash_attention, spec.name) == (4096, False, "mistral-7b-v0.1+custom")
    assert load_model(hf("mistral-7b-v0.1", name="m7")).name == "m7"


# -- published parameter counts ------------------------------------------------------------

@pytest.mark.parametrize("name, published", [
    # Hugging Face model page mistralai/Mistral-7B-v0.1, safetensors "Model size 7.24B params"
    ("mistral-7b-v0.1", 7.24e9),
    # Hugging Face model page Qwen/Qwen2-7B, safetensors "Model size 7.62B params"
    ("qwen2-7b", 7.62e9),
    # Hugging Face model page Qwen/Qwen3-8B, safetensors "Model size 8.19B params"
    # (model card: "Number of Parameters: 8.2B")
    ("qwen3-8b", 8.19e9),
    # EleutherAI/gpt-neox-20b model card, hyperparameter table: "Num. parameters 20,556,201,984"
    ("gpt-neox-20b", 20_556_201_984),
    # openai-community/gpt2 (Hugging Face), GPT2LMHeadModel: 124,439,808 parameters with the
    # 50257-token vocabulary and the 1024 x 768 position table
    ("gpt2", 124_439_808),
])
def test_parameter_count_matches_the_published_one(name, published):
    got = params(hf(name))
    assert abs(got - published) / published < TOLERANCE, f"{name}: {got:,} vs published {published:,.0f}"


# -- scenarios and the CLI -----------------------------------------------------------------

def scenario(model: dict) -> dict:
    return {"model": model, "hardware": "h100-sxm-80gb", "cluster": {"nodes": 1},
            "plan": {"tp": 2, "pp": 2, "dp": 2, "micro_batch": 1, "global_batch": 16, "recompute": "selective"}}


def test_scenario_with_hf_config_simulates_as_the_preset():
    from_hf = simulate(load_scenario(scenario(hf("llama3-8b"))))
    from_preset = simulate(load_scenario(scenario({"preset": "llama3-8b"})))
    assert from_hf.step_time_s > 0
    assert from_hf.step_time_s == from_preset.step_time_s
    assert from_hf.memory == from_preset.memory


def test_relative_path_resolves_against_the_base_dir(tmp_path):
    shutil.copy(HF / "qwen2-7b.json", tmp_path / "config.json")
    spec = load_model({"hf_config": "config.json"}, base_dir=tmp_path)
    assert (spec.name, spec.hidden) == (tmp_path.name, 3584)  # a config.json is named after its folder
    # a model file given to --model: its hf_config is relative to that file
    (tmp_path / "model.yaml").write_text("model: {hf_config: config.json, seq_len: 4096}\n")
    assert model_from_flag(str(tmp_path / "model.yaml")).seq_len == 4096


def test_plan_takes_a_config_json(capsys):
    rc = main(["plan", "--model", str(HF / "llama3-8b.json"), "--hardware", "h100-sxm-80gb", "--gpus", "8",
               "--global-batch", "64", "--top-k", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    best = out["plans"][0]
    assert best["scenario"]["model"]["name"] == "llama3-8b" and best["scenario"]["model"]["seq_len"] == 8192
    assert best["result"]["step_time_s"] > 0
    assert model_from_flag(str(HF / "llama3-8b.json"), seq_len=2048).seq_len == 2048


# -- what is not supported: one line, exit 2 -----------------------------------------------

def write(tmp_path: Path, config: dict) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_unknown_model_type_is_one_line_exit_2(tmp_path, capsys):
    path = write(tmp_path, {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "hidden_size": 3072})
    message = error_of({"hf_config": path})
    assert path in message and "model_type: 'gemma' is not supported" in message and "qwen3" in message
    rc = main(["plan", "--model", path, "--hardware", "h100-sxm-80gb", "--gpus", "8", "--global-batch", "64"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --model.hf_config: ") and "gemma" in err


def test_missing_key_names_the_file_and_the_field(tmp_path):
    config = json.loads((HF / "mistral-7b-v0.1.json").read_text())
    del config["num_key_value_heads"]  # MistralConfig's default (8) is not guessed
    path = write(tmp_path, config)
    assert error_of({"hf_config": path}, where="s.yaml: model") == \
        f"s.yaml: model.hf_config: {path}: num_key_value_heads: missing (required for model_type mistral)"
    del config["model_type"]  # found from architectures instead
    config["num_key_value_heads"] = 8
    assert load_model({"hf_config": write(tmp_path, config)}).kv_heads == 8


def test_head_dim_other_than_hidden_over_heads_is_refused():
    # Qwen3-30B-A3B: 32 heads of 128 on a 2048-wide residual stream
    message = error_of(hf("qwen3-30b-a3b"))
    assert "head_dim: 128 x num_attention_heads 32 = 4096 != hidden_size 2048" in message


def test_qwen_moe_maps_routed_experts_and_refuses_shared_ones(tmp_path):
    config = json.loads((HF / "qwen3-30b-a3b.json").read_text())
    config.update(hidden_size=4096)  # head_dim 128 x 32 heads: expressible
    spec = load_model({"hf_config": write(tmp_path, config)})
    assert (spec.family, spec.experts, spec.top_k, spec.ffn_hidden) == ("moe", 128, 8, 768)
    config.update(model_type="qwen2_moe", shared_expert_intermediate_size=5632)
    assert "shared_expert_intermediate_size: 5632" in error_of({"hf_config": write(tmp_path, config)})


@pytest.mark.parametrize("section, needle", [
    ({"hf_config": "nowhere/config.json"}, "no such Hugging Face config.json"),
    ({"hf_config": 3}, "expected a path"),
    ({"hf_config": str(HF / "gpt2.json"), "preset": "gpt2-small"}, "not both"),
])
def test_bad_hf_config_fields(section, needle):
    assert needle in error_of(section)


def test_hf_config_path_is_relative_to_the_scenario_file(tmp_path):
    from simplan.scenario import load_scenario

    (tmp_path / "cfg").mkdir()
    shutil.copy(Path(__file__).parent / "data" / "hf" / "llama3-8b.json", tmp_path / "cfg" / "config.json")
    path = tmp_path / "scenario.yaml"
    path.write_text("model: {hf_config: cfg/config.json}\nhardware: h100-sxm-80gb\ncluster: {nodes: 1}\n"
                    "plan: {tp: 8, global_batch: 8}\n")
    assert load_scenario(path).model.layers == 32
