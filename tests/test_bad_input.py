"""Malformed scenarios, fed to ``load_scenario`` and to the CLI entry point, end in one
clean line (SimplanError / exit status 2), never a traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplan.cli import main
from simplan.errors import SimplanError
from simplan.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
BASES = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))}
TINY = "tiny-gpt-2xcpu.yaml"
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

garbage = st.one_of(
    st.none(), st.booleans(), st.integers(-100, 5000), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=6), st.integers(-5, 5), max_size=2),
)
small_garbage = st.one_of(st.none(), st.booleans(), st.integers(-64, 64), st.floats(-64, 64), st.text(max_size=8))


def paths(d, prefix=()):
    """Every key path in the nested mappings."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append(prefix + (k,))
            out += paths(v, prefix + (k,))
    return out


def mappings(d, prefix=()):
    out = [prefix] if isinstance(d, dict) else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += mappings(v, prefix + (k,))
    return out


def at(d, path):
    for k in path:
        d = d[k]
    return d


@st.composite
def mutated(draw, bases=tuple(BASES), values=garbage, max_mutations=3):
    d = copy.deepcopy(BASES[draw(st.sampled_from(bases))])
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(st.sampled_from(["delete", "swap", "negate", "unknown"]))
        keys = paths(d)
        if kind == "unknown" or not keys:
            where = at(d, draw(st.sampled_from(mappings(d) or [()]))) if mappings(d) else d
            if isinstance(where, dict):
                where[draw(st.text(min_size=1, max_size=8))] = draw(values)
            continue
        leaves = [p for p in keys if not isinstance(at(d, p), dict)]
        # mostly the fields inside sections; sometimes a whole section
        path = draw(st.sampled_from(leaves if leaves and draw(st.integers(0, 3)) else keys))
        parent = at(d, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        elif kind == "swap":
            parent[path[-1]] = draw(values)
        elif isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] = -parent[path[-1]]
    return d


def assert_clean(source) -> None:
    try:
        result = load_scenario(source)
    except SimplanError as e:
        message = str(e)
        assert len(message.splitlines()) == 1, repr(message)
    else:
        assert isinstance(result, Scenario)


@settings(max_examples=200, **SETTINGS)
@given(mutated())
def test_mutated_scenarios_load_or_fail_cleanly(d):
    assert_clean(d)


@settings(max_examples=100, **SETTINGS)
@given(st.text(max_size=200))
def test_garbage_yaml_text_fails_cleanly(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(text)
        assert_clean(path)


@settings(max_examples=50, **SETTINGS)
@given(st.binary(max_size=100), st.sampled_from([".yaml", ".json"]))
def test_garbage_bytes_fail_cleanly(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"s{suffix}"
        path.write_bytes(data)
        assert_clean(path)


@settings(max_examples=50, **SETTINGS)
@given(mutated(), st.integers(0, 60))
def test_truncated_scenario_files_fail_cleanly(d, cut):
    # a file cut short mid-way (an interrupted write), YAML and JSON
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("s.yaml", yaml.safe_dump(d)), ("s.json", json.dumps(d))):
            path = Path(tmp) / name
            path.write_text(text[: max(len(text) - cut, 0)])
            assert_clean(path)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def assert_cli_clean(code: int, out: str, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if err:
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, repr(err)


@settings(max_examples=60, **SETTINGS)
@given(mutated(values=small_garbage))
def test_cli_validate_on_mutated_scenarios(d):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(d))
        assert_cli_clean(*run_cli(["validate", str(path)]))


@settings(max_examples=40, **SETTINGS)
@given(mutated(bases=(TINY,), values=small_garbage, max_mutations=2))
def test_cli_simulate_on_mutated_tiny_scenarios(d):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(d))
        code, out, err = run_cli(["simulate", "--json", str(path)])
        assert_cli_clean(code, out, err)
        if code == 0:
            assert "step_time_s" in json.loads(out)


@settings(max_examples=40, **SETTINGS)
@given(st.text(max_size=120))
def test_cli_on_garbage_files(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(text)
        for command in ("validate", "simulate"):
            assert_cli_clean(*run_cli([command, str(path)]))


@settings(max_examples=40, **SETTINGS)
@given(st.lists(st.text(max_size=10), max_size=4))
def test_cli_on_garbage_arguments(args):
    with tempfile.TemporaryDirectory() as tmp, _chdir(tmp):  # a stray --trace FILE lands here
        code, out, err = run_cli(["simulate", str(ROOT / "examples" / TINY), "--json", *args])
    assert_cli_clean(code, out, err)


@contextlib.contextmanager
def _chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


PLAN = ["plan", "--model", "tiny-gpt", "--hardware", "cpu-host", "--gpus", "2", "--global-batch", "16",
        "--top-k", "1", "--workers", "1"]


@pytest.mark.parametrize("flag", ["--sequence-parallel", "--tp-inside-node"])
@pytest.mark.parametrize("value", ["yes", "no", "on", "1", "true,maybe"])
def test_cli_boolean_flags_take_true_or_false_only(flag, value):
    code, out, err = run_cli(PLAN + [flag, value])
    bad = value.split(",")[-1]
    assert (code, out) == (2, "") and err == f"error: {flag}: expected true or false, got {bad!r}\n"


def test_cli_boolean_flags_accept_true_and_false():
    code, _, err = run_cli(PLAN + ["--sequence-parallel", "False", "--tp-inside-node", "true,false", "--json"])
    assert code == 0, err


def test_cli_duplicate_scenario_key_is_one_line(tmp_path):
    text = (ROOT / "examples" / TINY).read_text() + "  dp: 2\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    for command in ("validate", "simulate"):
        code, out, err = run_cli([command, str(path)])
        assert (code, out) == (2, "") and err.startswith(f"error: {path}: duplicate key 'dp' (line ")
        assert err.count("\n") == 1
    code, out, err = run_cli(["plan", "--model", str(path), "--hardware", "cpu-host", "--gpus", "2",
                              "--global-batch", "16"])
    assert (code, out) == (2, "") and err.startswith(f"error: --model: {path}: duplicate key 'dp' (line ")
