"""Executor faults and bad input: a killed, crashed or hung rank stops every process
within 10 s with an error naming the rank; impossible plans are exit status 2."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from simplan.cli import main  # noqa: E402
from simplan.errors import SimplanError  # noqa: E402
from simplan.execute.launch import RankFailure, RunOptions, _alive, _pids, run_plan  # noqa: E402
from simplan.model import load_model  # noqa: E402
from simplan.plan import Plan  # noqa: E402

SPEC = load_model("tiny-gpt")
DDP = Plan(dp=2, micro_batch=4, global_batch=8, precision="fp32")


def _training(run_dir: Path, rank: int) -> bool:
    beat = run_dir / f"rank{rank}.beat"
    try:
        return beat.read_text().startswith("step")
    except OSError:
        return False


def _run_with(fault_env, on_start, tmp_path, stall_s=60.0):
    seen = {}

    def start(run_dir):
        seen["dir"] = run_dir
        if on_start:
            on_start(run_dir, seen)

    old = os.environ.get("SIMPLAN_FAULT")
    if fault_env:
        os.environ["SIMPLAN_FAULT"] = fault_env
    try:
        with pytest.raises(RankFailure) as info:
            run_plan(SPEC, DDP, RunOptions(steps=10000, warmup=0, timeout_s=120, stall_s=stall_s),
                     workdir=tmp_path / "run", on_start=start)
    finally:
        if fault_env:
            if old is None:
                os.environ.pop("SIMPLAN_FAULT")
            else:
                os.environ["SIMPLAN_FAULT"] = old
    seen["end"] = time.monotonic()
    pids = _pids(seen["dir"])
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids.values()), "a rank outlived the teardown"
    return str(info.value), seen


@pytest.mark.slow
def test_killed_rank_stops_every_process_within_10_s(tmp_path):
    def killer(run_dir, seen):
        def go():
            deadline = time.monotonic() + 90
            while not (_training(run_dir, 0) and _training(run_dir, 1)) and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["killed_at"] = time.monotonic()
            os.kill(_pids(run_dir)[1], signal.SIGKILL)
        threading.Thread(target=go, daemon=True).start()

    message, seen = _run_with(None, killer, tmp_path)
    assert "rank 1" in message
    assert seen["end"] - seen["killed_at"] < 10


@pytest.mark.slow
def test_crashed_rank_is_named_with_its_message(tmp_path):
    message, _ = _run_with("1:2:crash", None, tmp_path)
    assert "rank 1 failed" in message and "injected crash at step 2" in message


@pytest.mark.slow
def test_hung_rank_is_stopped_and_named(tmp_path):
    message, seen = _run_with("1:2:hang", None, tmp_path, stall_s=3.0)
    assert "rank 1 hung" in message


def test_plan_needing_more_ranks_than_available():
    with pytest.raises(SimplanError, match=r"needs 2 ranks .* only 1"):
        run_plan(SPEC, DDP, RunOptions(max_ranks=1))


def _scenario(tmp_path, plan: str, gpus: int = 2) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"model: tiny-gpt\nhardware: cpu-host\ncluster:\n  nodes: 1\n  gpus_per_node: {gpus}\n"
                    f"plan:\n{plan}")
    return path


def test_cli_run_plan_torch_cannot_express_exits_2(tmp_path, capsys):
    path = _scenario(tmp_path, "  tp: 2\n  pp: 2\n  global_batch: 8\n  precision: fp32\n", gpus=4)
    assert main(["run", str(path), "--max-ranks", "4"]) == 2
    err = capsys.readouterr().err
    assert "tp(2) with pp(2)" in err and "Traceback" not in err


def test_cli_run_more_ranks_than_host_exits_2(tmp_path, capsys):
    path = _scenario(tmp_path, "  dp: 2\n  global_batch: 8\n  precision: fp32\n")
    assert main(["run", str(path), "--max-ranks", "1"]) == 2
    assert "needs 2 ranks" in capsys.readouterr().err


def test_cli_without_torch_exits_2(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a))
    path = _scenario(tmp_path, "  dp: 2\n  global_batch: 8\n  precision: fp32\n")
    assert main(["run", str(path)]) == 2
    assert "torch: not installed" in capsys.readouterr().err


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_dead_rank_skips_ranks_stopped_by_sigterm(tmp_path):
    """torchrun SIGTERMs the survivors of a failure; a survivor that is gone before the
    launcher looks must not be named instead of the rank that was killed."""
    from simplan.execute.launch import _dead_rank

    for rank in (0, 1):
        (tmp_path / f"rank{rank}.pid").write_text(str(_dead_pid()))
    (tmp_path / "rank0.stopped").write_text("SIGTERM")
    message, user_error = _dead_rank(tmp_path)
    assert message.startswith("rank 1 died") and not user_error
    (tmp_path / "rank1.error.json").write_text("{}")  # rank 1 reported its own failure
    assert _dead_rank(tmp_path) is None
