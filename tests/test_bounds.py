"""Sanity bounds (issue 15): a typo such as --gpus 10**30, a global batch given in tokens or
a huge seq_len is a one-line error naming the field, the value and the limit, found by
arithmetic before anything is enumerated or simulated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simplan.errors import SimplanError
from simplan.model import load_model
from simplan.plan.plan import Plan
from simplan.plan.validate import (MAX_GLOBAL_BATCH, MAX_GPUS, MAX_MICRO_BATCHES, MAX_SEQ_LEN, MAX_TOKENS_PER_STEP,
                                   problems, scale_problems)
from simplan.search import space
from simplan.search.space import Constraints, all_plans, divisors, plans

REPO = Path(__file__).resolve().parents[1]
GPT2 = load_model("gpt2-small")  # seq_len 1024
HANG_GUARD_S = 30  # a hang guard only: the check itself is arithmetic


def test_values_at_the_limits_pass():
    assert scale_problems(MAX_GPUS, MAX_TOKENS_PER_STEP // 1024, 1024, MAX_MICRO_BATCHES) == []
    assert scale_problems(8, MAX_GLOBAL_BATCH, 0) == []  # a CNN: no sequence, no token bound
    assert scale_problems(8, 1, MAX_SEQ_LEN) == []


def test_too_many_gpus_names_the_count_and_the_limit():
    (msg,) = scale_problems(10**30, 16, 1024)
    assert msg == (f"cluster: {10**30} GPUs, above the limit of 1,048,576 (2^20, ~10x the largest clusters built)")


def test_a_global_batch_beyond_2_24_sequences_is_refused():
    (msg,) = scale_problems(8, 8 * 10**30, 1024)
    assert msg.startswith(f"plan.global_batch: {8 * 10**30} sequences per step, above the limit of 16,777,216 (2^24)")


def test_a_global_batch_given_in_tokens_gets_a_hint():
    (msg,) = scale_problems(8, 3_145_728, 8192)
    assert msg == ("plan.global_batch: 3145728 sequences x seq_len 8192 = 2.6e10 tokens per step, above the limit "
                   "of 1.1e9 (2^30); did you give tokens? 3145728 tokens are 384 sequences of 8192")


def test_a_huge_sequence_is_refused_once():
    (msg,) = scale_problems(8, 16, 10**11)
    assert msg.startswith(f"model.seq_len: {10**11} tokens, above the limit of 16,777,216 (2^24")


def test_too_many_micro_batches_name_the_micro_batch():
    (msg,) = scale_problems(8, 2**20, 16, micro_batches=2**20)
    assert msg.startswith(f"plan.micro_batch: {2**20} micro-batches per pipeline per step")
    assert "65,536" in msg


def test_the_planner_names_its_flags():
    found = scale_problems(10**30, 8 * 10**30, 10**11, names=space.FLAG_NAMES)
    assert [m.split(":")[0] for m in found] == ["--gpus", "--global-batch", "--seq-len"]


def test_problems_include_the_bounds():
    plan = Plan(dp=8, global_batch=8 * 10**30)
    assert problems(plan, GPT2, 8)[0].startswith("plan.global_batch: 8000")
    assert any(p.startswith("plan.micro_batch: 1048576 micro-batches") for p in
               problems(Plan(dp=1, global_batch=2**20), GPT2, 1))


def test_the_space_checks_the_bounds_before_enumerating(monkeypatch):
    def no_enumeration(n):
        raise AssertionError("enumerated")

    monkeypatch.setattr(space, "divisors", no_enumeration)
    with pytest.raises(SimplanError, match=r"^--gpus: 10{30} GPUs, above the limit"):
        plans(GPT2, 10**30, 16, Constraints())
    with pytest.raises(SimplanError, match=r"^--global-batch: 3145728 sequences x seq_len 1024"):
        list(all_plans(GPT2, 8, 3_145_728))


def test_divisors_are_found_up_to_the_square_root_and_refuse_huge_numbers():
    for n in (1, 2, 12, 36, 97, 1024, 720720):
        assert divisors(n) == [d for d in range(1, n + 1) if n % d == 0]
    with pytest.raises(SimplanError, match="too large"):
        divisors(10**30)


def test_the_space_leaves_out_plans_with_too_many_micro_batches():
    found = list(all_plans(GPT2, 1, 2**20, constraints=Constraints(recompute="none")))
    assert found and min(p.micro_batch for p in found) == 2**20 // MAX_MICRO_BATCHES
    assert [p for p in found if problems(p, GPT2, 1)] == []


def _scenario(tmp_path: Path, global_batch) -> Path:
    path = tmp_path / "big.yaml"
    text = yaml.safe_dump({"model": "tiny-gpt", "hardware": "cpu-host", "cluster": {"nodes": 1, "gpus_per_node": 2},
                           "plan": {"dp": 2, "micro_batch": 4, "global_batch": 16, "precision": "fp32"}})
    path.write_text(text.replace("global_batch: 16", f"global_batch: {global_batch}"))
    return path


@pytest.mark.parametrize("command", ["validate", "simulate"])
@pytest.mark.parametrize("global_batch", ["8e30", str(8 * 10**30)])
def test_the_cli_refuses_a_huge_global_batch_in_one_line(tmp_path, command, global_batch):
    path = _scenario(tmp_path, global_batch)
    done = subprocess.run([sys.executable, "-m", "simplan.cli", command, str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "plan.global_batch" in lines[0] and ("8e+30" in lines[0] or str(8 * 10**30) in lines[0])
