"""What the simplan command prints for people: tables that fit the terminal, units that fit
the model, short explanations, readable summaries, and progress on stderr only."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import simplan.report.table
from simplan.cli import main
from simplan.report.table import why_line

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny-gpt-2xcpu.yaml"
RESNET = ROOT / "examples" / "resnet50-32xa100.yaml"
SMALL_PLAN = ["plan", "--model", "gpt2-small", "--hardware", "a100-sxm-80gb", "--gpus", "8", "--global-batch", "16",
              "--top-k", "3", "--workers", "1"]
# two Mixtral plans that differ only in expert parallelism
MIXTRAL_EP = ["plan", "--model", "mixtral-8x7b", "--hardware", "h100-sxm-80gb", "--gpus", "64", "--global-batch",
              "256", "--tp", "1", "--pp", "1", "--ep", "4,8", "--micro-batch", "1", "--recompute", "none",
              "--zero-stage", "2", "--sequence-parallel", "false", "--top-k", "2", "--workers", "1"]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[str]:
    """The ranked plans' rows: the lines starting with a rank."""
    return [line for line in out.splitlines() if line.split() and line.split()[0].rstrip("*").isdigit()]


# --- the plan table fits the terminal ---------------------------------------------------------

@pytest.mark.parametrize("columns", [None, "100", "80"])
def test_plan_table_fits_the_width(capsys, monkeypatch, columns):
    # off a terminal: $COLUMNS when set, else 100 columns
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    width = int(columns or 100)
    code, out, _ = run(capsys, *SMALL_PLAN)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= width
    assert "…" not in out  # columns were dropped, not cut
    header = next(line for line in out.splitlines() if "step s" in line)
    for column in ("tp", "pp", "dp", "schedule", "step s", "tokens/s", "GiB/GPU"):
        assert column in header, column
    assert len(table_rows(out)) == 3
    assert "(--wide shows every column)" in " ".join(out.split())


def test_plan_wide_shows_every_column(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, *SMALL_PLAN, "--wide")
    assert code == 0
    header = next(line for line in out.splitlines() if "step s" in line)
    for column in ("cp", "ep", "mb", "recompute", "options", "MFU", "dominant overhead", "band s"):
        assert column in header, column
    assert max(len(line) for line in out.splitlines()) > 100
    assert "--wide shows" not in out


def test_plan_table_ep_column_tells_mixtral_plans_apart(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, *MIXTRAL_EP)
    assert code == 0
    header = next(line for line in out.splitlines() if "step s" in line)
    assert " ep " in header
    first, second = table_rows(out)
    assert first[1:] != second[1:]
    obj_code = main(MIXTRAL_EP + ["--json"])
    plans = json.loads(capsys.readouterr().out)["plans"]
    assert obj_code == 0 and {p["scenario"]["plan"]["ep"] for p in plans} == {4, 8}


# --- units that fit the model -----------------------------------------------------------------

def test_plan_table_of_a_cnn_counts_samples_not_tokens(capsys):
    code, out, _ = run(capsys, "plan", "--model", "resnet-50", "--hardware", "a100-sxm-80gb", "--gpus", "8",
                       "--global-batch", "256", "--top-k", "2", "--workers", "1")
    assert code == 0
    assert "samples/s" in out and "tokens/s" not in out


def test_simulate_summary_of_a_cnn_counts_samples_not_tokens(capsys):
    code, out, _ = run(capsys, "simulate", RESNET)
    assert code == 0
    assert "samples/s (images/s)" in out and "tokens/s" not in out
    code, out, _ = run(capsys, "simulate", TINY)
    assert code == 0 and "tokens/s" in out


# --- why #1 -----------------------------------------------------------------------------------

def test_why_line_summarizes_a_partition_and_keeps_two_lines():
    balanced = tuple(range(1, 65))
    why = {"summary": f"wins by 0.1 s (1%) over the runner-up (virtual_stages 12->24, partition ()->{balanced}): "
                      "bubble 0.07 s less; " + "; ".join(f"part{i} 0.01 s more" for i in range(30)),
           "plan_differences": {"virtual_stages": {"winner": 24, "runner_up": 12},
                                "partition": {"winner": balanced, "runner_up": ()}}}
    line = why_line(why, 100)
    assert line.startswith("why #1: wins by 0.1 s") and len(line) <= 200
    assert "virtual_stages 12->24, partition uniform->balanced" in line and "(1, 2" not in line
    assert line.endswith("...")
    both = {"summary": f"ties with the runner-up (partition {balanced}->{balanced[::-1]}): the simulator sees no "
                       "difference",
            "plan_differences": {"partition": {"winner": balanced[::-1], "runner_up": balanced}}}
    expected = "why #1: ties with the runner-up (partition differs): the simulator sees no difference"
    assert why_line(both, 100) == expected


def test_why_line_of_a_real_search_summary():
    from simplan.scenario import load_scenario
    from simplan.search.search import explain
    from simplan.sim import simulate

    base = {"model": "tiny-gpt", "hardware": "cpu-host", "cluster": {"nodes": 1, "gpus_per_node": 2},
            "plan": {"pp": 2, "dp": 1, "micro_batch": 1, "global_batch": 8, "precision": "fp32"}}
    uniform = load_scenario(base)
    balanced = load_scenario({**base, "plan": {**base["plan"], "partition": [2, 4]}})
    why = explain([(balanced, simulate(balanced)), (uniform, simulate(uniform))])
    assert "partition" in why["plan_differences"]
    line = why_line(why, 100)
    assert "partition uniform->balanced" in line and "(2, 4)" not in line


# --- simulate --trace -------------------------------------------------------------------------

@pytest.mark.parametrize("where, reason", [("missing/t.json", "no such directory"), (".", "it is a directory")])
def test_trace_path_is_checked_before_simulating(capsys, monkeypatch, tmp_path, where, reason):
    def never(*args, **kwargs):
        raise AssertionError("simulated before checking --trace")

    monkeypatch.setattr("simplan.sim.simulate", never)
    path = tmp_path / where
    code, out, err = run(capsys, "simulate", TINY, "--trace", path)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: --trace: ") and str(path) in err and reason in err


def test_trace_confirms_on_stderr(capsys, tmp_path):
    path = tmp_path / "t.json"
    code, out, err = run(capsys, "simulate", TINY, "--json", "--trace", path)
    assert code == 0 and json.loads(out)["step_time_s"] > 0  # stdout stays one JSON object
    events = len(json.loads(path.read_text())["traceEvents"])
    assert err == f"trace: wrote {events:,} events to {path} (open in ui.perfetto.dev)\n"


# --- progress on stderr -----------------------------------------------------------------------

def test_simulate_draws_a_bar_over_files_only_on_a_terminal(capsys, monkeypatch):
    calls = []

    @contextmanager
    def recording(enabled=True):
        calls.append(enabled)
        yield (lambda phase, done, total: calls.append((phase, done, total))) if enabled else None

    monkeypatch.setattr(simplan.report.table, "progress_bar", recording)
    assert run(capsys, "simulate", "--json", TINY, TINY)[0] == 0
    assert calls == [False, False, False]  # stderr is not a terminal (over files, then runs per file)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    calls.clear()
    assert run(capsys, "simulate", "--json", TINY)[0] == 0
    assert calls == [False, False]  # one file, one deterministic step: nothing to count
    calls.clear()
    assert run(capsys, "simulate", "--json", TINY, TINY)[0] == 0
    assert calls == [True, False, ("simulating", 1, 2), False, ("simulating", 2, 2)]
    calls.clear()
    assert run(capsys, "simulate", "--json", "--jitter", "0.1", "--steps", "2", TINY)[0] == 0
    assert calls == [False, True, ("steps", 1, 2), ("steps", 2, 2)]  # a bar over the jittered steps
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    calls.clear()
    assert run(capsys, "simulate", "--json", TINY, TINY)[0] == 0
    assert calls == [False, False, False]  # the results on the same terminal show the progress


@pytest.mark.parametrize("as_json", [False, True])
def test_bar_on_a_terminal_leaves_piped_stdout_alone(capsys, monkeypatch, as_json):
    # rich would redirect stdout into the bar's console (stderr) while the bar is drawn
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run(capsys, "simulate", *(["--json"] if as_json else []), TINY, TINY)
    assert code == 0 and "simulating" in err
    if as_json:
        assert [json.loads(line)["scenario"]["model"]["name"] for line in out.splitlines()] == ["tiny-gpt"] * 2
    else:
        assert out.count("step time") == 2 and "step time" not in err


def test_progress_bar_sends_prints_to_a_piped_stdout(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with simplan.report.table.progress_bar(True) as progress:
        progress("simulating", 1, 2)
        print("a result")
    out, err = capsys.readouterr()
    assert out == "a result\n" and "simulating" in err and "a result" not in err


# --- simplan run ------------------------------------------------------------------------------

def fake_run_command(scenario, out, steps, warmup, device, *args):
    """What run_command returns, built by the launcher's own _combine from two ranks' reports."""
    from simplan.execute.commands import _write
    from simplan.execute.launch import RunOptions, _combine
    from simplan.scenario import load_scenario, scenario_to_dict

    s = load_scenario(scenario)
    reports = [{"rank": r, "activation_bytes": 3 * 2**20, "step_time_s": 0.25, "step_time_min_s": 0.2,
                "step_time_max_s": 0.3, "step_time_iqr_s": 0.05, "step_times_s": [0.2, 0.25, 0.3],
                "loss_per_step": [10.5, 10.1, 9.8], "pp_rank": 0, "peak_rss_bytes": 500 * 2**20} for r in range(2)]
    result = {"scenario": scenario_to_dict(s),
              **_combine(s.model, s.plan, RunOptions(steps=steps, warmup=warmup), reports, 3.0)}
    if out is not None:
        _write(out, result)
    return result


def test_run_prints_a_readable_summary(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("simplan.execute.commands.run_command", fake_run_command)
    out_file = tmp_path / "m.json"
    code, out, _ = run(capsys, "run", TINY, "--steps", "3", "--out", out_file)
    assert code == 0
    assert "step time" in out and "0.25 s" in out
    assert "2,048 tokens/s" in out  # 16 sequences of 32 tokens per 0.25 s
    assert "500.00 MiB" in out and "2 x cpu (gloo)" in out and str(out_file) in out
    assert '"scenario"' not in out and "{" not in out
    assert json.loads(out_file.read_text())["step_time_s"] == 0.25


def test_run_json_prints_the_raw_object_on_one_line(capsys, monkeypatch):
    monkeypatch.setattr("simplan.execute.commands.run_command", fake_run_command)
    code, out, _ = run(capsys, "run", TINY, "--json")
    assert code == 0 and out.count("\n") == 1
    obj = json.loads(out)
    assert obj["step_time_s"] == 0.25 and obj["scenario"]["model"]["name"] == "tiny-gpt"


def test_run_out_path_is_checked_before_running(capsys, monkeypatch, tmp_path):
    def never(*args, **kwargs):
        raise AssertionError("ran before checking --out")

    monkeypatch.setattr("simplan.execute.commands.run_command", never)
    code, _, err = run(capsys, "run", TINY, "--out", tmp_path / "no" / "m.json")
    assert code == 2 and err.startswith("error: --out: ") and "no such directory" in err


# --- help -------------------------------------------------------------------------------------

def test_help_names_all_five_parallelisms(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "data / tensor / pipeline / context / expert parallel (and hybrid) training" in " ".join(out.split())


def test_plan_help_groups_the_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run(capsys, "plan", "--help")
    assert code == 0
    text = " ".join(out.split())
    for panel in ("Model and cluster", "Fix the plan", "Limits of the search", "Search and output"):
        assert panel in text, panel
    for flag in ("--model", "--ep", "--sequence-parallel", "--max-tp", "--wide", "--out"):
        assert flag in text, flag
    assert "true|false" in text
