"""The simplan command: exit codes, one-line errors, the --json contract of DESIGN.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simplan.cli import main, parse_slow_ranks
from simplan.errors import SimplanError

ROOT = Path(__file__).resolve().parents[1]
GPT3 = ROOT / "examples" / "gpt3-175b-1024xa100.yaml"
TINY = ROOT / "examples" / "tiny-gpt-2xcpu.yaml"

CONTRACT = ("step_time_s", "tokens_per_s", "samples_per_s", "model_flops_per_step", "hardware_flops_per_step",
            "model_tflops_per_gpu", "hardware_tflops_per_gpu", "mfu", "memory", "breakdown_s", "engine",
            "events", "sim_wall_s", "scenario")
MEMORY_KEYS = ("peak_bytes_per_gpu", "capacity_bytes", "fits", "breakdown")
BREAKDOWN_S_KEYS = ("compute", "recompute", "tp_comm_exposed", "pp_comm_exposed", "dp_comm_exposed", "bubble",
                    "optimizer")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1 and "Traceback" not in err


# --- validate, models, hardware -------------------------------------------------------------

def test_validate_ok(capsys):
    code, out, err = run(capsys, "validate", GPT3)
    assert (code, out, err) == (0, "ok\n", "")


def test_validate_lists_every_problem_and_exits_2(capsys, tmp_path):
    d = yaml.safe_load(GPT3.read_text())
    d["plan"]["tp"] = 7
    code, out, _ = run(capsys, "validate", write(tmp_path, d))
    assert code == 2
    lines = out.splitlines()
    assert len(lines) >= 3
    assert any("heads(96)" in line for line in lines) and any("!= GPUs(1024)" in line for line in lines)


def test_validate_reports_memory_that_does_not_fit(capsys, tmp_path):
    d = yaml.safe_load(GPT3.read_text())
    d["hardware"] = "a100-sxm-40gb"
    d["plan"].update(recompute="none", micro_batch=8)
    code, out, _ = run(capsys, "validate", write(tmp_path, d))
    assert code == 2 and "memory: stage" in out and "more than the 40.00 GiB" in out


def test_models_json_lists_presets_with_params(capsys):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert rows["gpt3-175b"]["params"] == pytest.approx(175e9, rel=0.005)
    assert rows["gpt3-175b"]["layers"] == 96
    code, out, _ = run(capsys, "models")
    assert code == 0 and "llama3-70b" in out


def test_hardware_json_lists_profiles(capsys):
    code, out, _ = run(capsys, "hardware", "--json")
    assert code == 0
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    a100 = rows["a100-sxm-80gb"]
    assert a100["hbm_gib"] == 80 and a100["peak_tflops"]["bf16"] == pytest.approx(312)
    code, out, _ = run(capsys, "hardware")
    assert code == 0 and "h100-sxm-80gb" in out


# --- errors -------------------------------------------------------------------------------

def test_missing_file_is_one_line_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "validate", tmp_path / "nope.yaml")
    assert_one_line_error(code, err)
    assert "no such scenario file" in err and out == ""


def test_malformed_yaml_is_one_line_exit_2(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("plan: {tp: 8\nmodel: [\n")
    code, _, err = run(capsys, "simulate", path)
    assert_one_line_error(code, err)
    assert "malformed YAML" in err


def test_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "simulate")
    assert_one_line_error(code, err)
    code, _, err = run(capsys, "frobnicate")
    assert_one_line_error(code, err)
    code, _, err = run(capsys, "validate", GPT3, "--bogus")
    assert_one_line_error(code, err)


def test_bad_options_exit_2(capsys):
    for args in (["--jitter", "-1"], ["--steps", "0"], ["--slow-rank", "x"], ["--slow-rank", "5000:2"]):
        code, _, err = run(capsys, "simulate", GPT3, *args)
        assert_one_line_error(code, err)


def test_parse_slow_ranks():
    assert parse_slow_ranks(["3:1.5", "0:2"]) == {3: 1.5, 0: 2.0}
    for bad in ("3", "3:", ":2", "a:b", "-1:2", "3:0", "3:-2"):
        with pytest.raises(SimplanError):
            parse_slow_ranks([bad])
    with pytest.raises(SimplanError, match="given twice"):
        parse_slow_ranks(["1:2", "1:3"])


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "simulate" in out and "validate" in out


def test_console_script_subprocess_exit_codes(tmp_path):
    # the real entry point, as a user runs it: status 2 and one stderr line, no traceback
    cmd = [sys.executable, "-c", "import sys; from simplan.cli import main; sys.exit(main())"]
    done = subprocess.run([*cmd, "validate", str(tmp_path / "nope.yaml")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    done = subprocess.run([*cmd, "validate", str(GPT3)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n"


# --- simulate -------------------------------------------------------------------------------



def test_simulate_json_has_every_contract_key(capsys):
    code, out, _ = run(capsys, "simulate", GPT3, "--json")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for key in CONTRACT:
        assert key in r, key
    for key in MEMORY_KEYS:
        assert key in r["memory"], key
    for key in BREAKDOWN_S_KEYS:
        assert key in r["breakdown_s"], key
    assert r["engine"] in ("simpy", "analytic")
    assert r["scenario"]["plan"]["tp"] == 8 and r["scenario"]["hardware"] == "a100-sxm-80gb"
    assert r["memory"]["fits"] is True


def test_simulate_json_lines_in_order(capsys):
    code, out, _ = run(capsys, "simulate", "--json", TINY, GPT3, TINY)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["scenario"]["model"]["name"] for r in rows] == ["tiny-gpt", "gpt3-175b", "tiny-gpt"]
    assert rows[0]["step_time_s"] == rows[2]["step_time_s"]


def test_simulate_reports_memory_that_does_not_fit(capsys, tmp_path):
    d = yaml.safe_load(GPT3.read_text())
    d["hardware"] = "a100-sxm-40gb"
    d["plan"].update(recompute="none", micro_batch=8)
    code, out, _ = run(capsys, "simulate", "--json", write(tmp_path, d))
    assert code == 0
    mem = json.loads(out)["memory"]
    assert mem["fits"] is False
    assert mem["shortfall_bytes"] == pytest.approx(mem["peak_bytes_per_gpu"] - mem["capacity_bytes"])


def test_simulate_readable_summary_and_trace(capsys, tmp_path):
    trace = tmp_path / "t.json"
    code, out, _ = run(capsys, "simulate", TINY, "--trace", trace, "--jitter", "0.05", "--steps", "3",
                       "--slow-rank", "1:1.5")
    assert code == 0 and "step time" in out and "memory per GPU" in out
    assert json.loads(trace.read_text())["traceEvents"]
    code, _, err = run(capsys, "simulate", TINY, TINY, "--trace", trace)
    assert_one_line_error(code, err)
