"""Scenario files: the DESIGN.md format, defaults, normalization, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from simplan.errors import SimplanError
from simplan.scenario import load_scenario, scenario_problems, scenario_to_dict

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GPT3 = ROOT / "examples" / "gpt3-175b-1024xa100.yaml"


def base() -> dict:
    return yaml.safe_load(GPT3.read_text())


def error_of(source, **kw) -> str:
    with pytest.raises(SimplanError) as info:
        load_scenario(source, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_examples_exist_and_load():
    assert len(EXAMPLES) >= 4
    for path in EXAMPLES:
        s = load_scenario(path)
        assert s.plan.gpus == s.cluster.gpus


def test_megatron_gpt3_example_is_the_papers_configuration():
    s = load_scenario(GPT3)
    assert s.model.name == "gpt3-175b" and s.model.layers == 96 and s.model.hidden == 12288
    assert (s.plan.tp, s.plan.pp, s.plan.dp, s.plan.micro_batch, s.plan.global_batch) == (8, 16, 8, 1, 1536)
    assert (s.plan.schedule, s.plan.recompute, s.plan.precision) == ("1f1b", "full", "bf16")
    assert s.cluster.gpus == 1024 and s.hardware.name == "a100-sxm-80gb"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_normalized_scenario_reloads_equal(path, tmp_path):
    s = load_scenario(path)
    d = scenario_to_dict(s)
    assert load_scenario(d) == s
    # through files too, YAML and JSON
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "s.json").write_text(json.dumps(d))
    assert load_scenario(tmp_path / "s.yaml") == s
    assert load_scenario(tmp_path / "s.json") == s
    assert scenario_to_dict(load_scenario(d)) == d


def test_normalized_scenario_fills_every_default():
    d = scenario_to_dict(load_scenario(GPT3))
    assert set(d) == {"model", "hardware", "cluster", "plan", "framework"}
    assert d["hardware"] == "a100-sxm-80gb" and d["framework"] == "generic"
    assert d["cluster"] == {"nodes": 128, "gpus_per_node": 8, "nics_per_node": 8, "nic_gbit_per_s": 200}
    assert d["plan"]["cp"] == 1 and d["plan"]["zero_stage"] == 0 and d["plan"]["sequence_parallel"] is False
    assert d["model"]["kv_heads"] == 96 and d["model"]["ffn_hidden"] == 4 * 12288


def test_dp_defaults_to_gpus_over_model_parallel_degrees():
    d = base()
    del d["plan"]["dp"]
    assert load_scenario(d).plan.dp == 1024 // (8 * 16)


def test_gpus_per_node_defaults_to_the_profiles_and_overrides_apply():
    d = base()
    del d["cluster"]["gpus_per_node"]
    assert load_scenario(d).cluster.gpus_per_node == 8
    d["cluster"]["nic_gbit_per_s"] = 100
    d["cluster"]["nics_per_node"] = 4
    s = load_scenario(d)
    assert s.hardware.nic_bytes_per_s == 100e9 / 8  # Gbit/s to bytes/s
    assert s.hardware.nics_per_node == 4
    again = load_scenario(scenario_to_dict(s))
    assert again == s and again.hardware.nic_bytes_per_s == 100e9 / 8


def test_override_equal_to_the_profile_keeps_the_profiles_source():
    d = base()
    d["cluster"]["nics_per_node"] = 8  # what the profile says already
    s = load_scenario(d)
    assert "override" not in s.hardware.sources["network.nics_per_node"]


def test_model_as_preset_string_and_explicit_fields():
    d = base()
    d["model"] = "gpt3-175b"
    assert load_scenario(d).model.name == "gpt3-175b"
    d["model"] = {"family": "gpt", "layers": 96, "hidden": 12288, "heads": 96, "seq_len": 2048, "vocab": 51200}
    assert load_scenario(d).model.layers == 96


def test_json_scenario_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(base()))
    assert load_scenario(path).plan.tp == 8


def test_hardware_path_relative_to_the_scenario_file(tmp_path):
    profile = tmp_path / "hw" / "my.yaml"
    profile.parent.mkdir()
    profile.write_text((ROOT / "hardware_profiles" / "a100-sxm-80gb.yaml").read_text())
    d = base()
    d["hardware"] = "hw/my.yaml"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    s = load_scenario(tmp_path / "s.yaml")
    assert Path(s.hardware_ref) == profile.resolve()
    assert load_scenario(scenario_to_dict(s)) == s


def test_fp8_on_an_a100_is_an_error_naming_both():
    d = base()
    d["plan"]["precision"] = "fp8"
    message = error_of(d)
    assert "fp8" in message and "a100-sxm-80gb" in message


def test_every_plan_problem_is_reported():
    d = base()
    d["plan"]["tp"] = 7  # heads 96 not divisible, and 7 * 16 * 8 != 1024
    message = error_of(d)
    assert "heads(96)" in message and "!= GPUs(1024)" in message
    found = scenario_problems(load_scenario(d, check=False))
    assert len(found) >= 3  # degrees, heads, ffn_hidden


def test_memory_that_does_not_fit_is_not_an_error():
    d = base()
    d["plan"]["recompute"] = "none"
    d["plan"]["micro_batch"] = 8
    d["plan"]["global_batch"] = 1536
    d["hardware"] = "a100-sxm-40gb"
    s = load_scenario(d)
    from simplan.cost.memory import scenario_memory

    assert not scenario_memory(s).fits


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("plan"), "missing section(s) plan"),
    (lambda d: d.update(extra=1), "unknown section(s) extra"),
    (lambda d: d["plan"].update(tpp=2), "unknown field(s) tpp"),
    (lambda d: d["cluster"].update(nodes=0), "cluster.nodes: must be >= 1, got 0"),
    (lambda d: d["cluster"].pop("nodes"), "cluster.nodes: missing"),
    (lambda d: d["cluster"].update(nic_gbit_per_s=-200), "cluster.nic_gbit_per_s: must be > 0, got -200"),
    (lambda d: d.update(hardware="a100-sxm-81gb"), "unknown profile 'a100-sxm-81gb'"),
    (lambda d: d.update(hardware=3), "hardware: expected a profile name"),
    (lambda d: d["model"].update(preset="gpt-5"), "unknown preset 'gpt-5'"),
    (lambda d: d["plan"].update(tp=-8), "plan.tp: must be >= 1, got -8"),
    (lambda d: d["plan"].update(schedule="1F1B"), "plan.schedule: '1F1B' is not one of"),
    (lambda d: d["plan"].update(global_batch=1001), "global_batch: 1001 is not divisible by dp(8)"),
])
def test_mistakes_are_one_line_errors_naming_the_field(mutate, expected):
    d = base()
    mutate(d)
    message = error_of(d, where="s.yaml")
    assert expected in message
    assert message.startswith("s.yaml: ")


def test_file_errors(tmp_path):
    assert "no such scenario file" in error_of(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert "malformed YAML at line" in error_of(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{'model': 1}")
    assert "malformed JSON at line 1" in error_of(bad_json)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    assert "expected a mapping" in error_of(listing)
    assert "is a directory" in error_of(tmp_path)


TINY_TEXT = """model: tiny-gpt
hardware: cpu-host
cluster:
  nodes: 1
  gpus_per_node: 2
plan:
  dp: 2
  micro_batch: 4
  global_batch: 16
  precision: fp32
"""


@pytest.mark.parametrize("text, key, line", [
    (TINY_TEXT + "  micro_batch: 2\n", "micro_batch", 11),      # inside a section
    (TINY_TEXT + "hardware: a100-sxm-80gb\n", "hardware", 11),   # a section given twice
    (TINY_TEXT.replace("  nodes: 1\n", "  nodes: 1\n  nodes: 2\n"), "nodes", 5),
])
def test_duplicate_yaml_keys_are_refused(tmp_path, text, key, line):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    message = error_of(path)
    assert message == f"{path}: duplicate key {key!r} (line {line})"


def test_duplicate_keys_at_any_depth_and_in_json(tmp_path):
    from simplan.scenario import parse_document

    with pytest.raises(SimplanError, match=r"^f.yaml: duplicate key 'c' \(line 4\)$"):
        parse_document("a:\n  b:\n    c: 1\n    c: 2\n", "f.yaml", is_json=False)
    assert parse_document("a:\n  b:\n    c: 1\n  c: 2\n", "f.yaml", is_json=False) == {"a": {"b": {"c": 1}, "c": 2}}
    d = yaml.safe_load(TINY_TEXT)
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(d)[:-1] + ', "plan": {"dp": 2}}')
    assert error_of(path) == f"{path}: duplicate key 'plan' (each key once per mapping)"
    path.write_text(json.dumps(d).replace('"dp": 2', '"dp": 2, "dp": 1'))
    assert "duplicate key 'dp'" in error_of(path)


@pytest.mark.parametrize("value", ["yes", "'yes'", "on", "no", "off", "Y", '"true"'])
def test_booleans_are_true_or_false_only(tmp_path, value):
    # YAML 1.1 reads yes/on/no/off as booleans: a scenario file takes true and false only
    path = tmp_path / "s.yaml"
    path.write_text(TINY_TEXT + f"  sequence_parallel: {value}\n")
    message = error_of(path)
    assert "plan.sequence_parallel: expected true or false, got '" in message
    path.write_text(TINY_TEXT.replace("model: tiny-gpt\n", f"model:\n  preset: tiny-gpt\n  flash_attention: {value}\n"))
    assert "model.flash_attention: expected true or false" in error_of(path)


def test_yaml_true_and_false_still_read_as_booleans(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(TINY_TEXT + "  sequence_parallel: false\n  tp_inside_node: True\n")
    s = load_scenario(path)
    assert s.plan.sequence_parallel is False and s.plan.tp_inside_node is True
