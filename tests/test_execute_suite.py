"""The verify suite, quick: one launch per plan of examples/verify (gloo, 1 step).

Every plan computes the same training step: its first-step loss equals the single-process
loss computed here, and each rank's activation count equals the same chunks counted in
this process (DDP, FSDP2 and pipelines change where layers run, not what they save).
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from simplan.execute.launch import RunOptions, run_plan  # noqa: E402
from simplan.execute.models import build_model, loss_fn  # noqa: E402
from simplan.execute.worker import batches  # noqa: E402
from simplan.scenario import load_scenario  # noqa: E402

SUITE = sorted((Path(__file__).resolve().parents[1] / "examples" / "verify").glob("*.yaml"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_loss():
    s = load_scenario(SUITE[0])
    model = build_model(s.model, seed=0)
    x, y = batches(s.model, s.plan, 0, 0)
    mb = s.plan.micro_batch
    with torch.no_grad():
        losses = [loss_fn(model(x[i:i + mb]), y[i:i + mb]) for i in range(0, len(x), mb)]
    return torch.stack(losses).mean().item()


def test_suite_has_the_plans_of_the_issue():
    assert len(SUITE) >= 10
    plans = [load_scenario(p).plan for p in SUITE]
    assert {p.schedule for p in plans if p.pp > 1} == {"gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"}
    for schedule in ("gpipe", "1f1b", "interleaved-1f1b", "zero-bubble"):
        assert len({p.micro_batches for p in plans if p.pp > 1 and p.schedule == schedule}) == 2
    assert any(p.tp > 1 and p.sequence_parallel for p in plans)
    assert any(p.tp > 1 and not p.sequence_parallel for p in plans)
    assert any(p.zero_stage == 3 for p in plans)
    assert {p.recompute for p in plans} == {"none", "selective", "full"}
    assert any(p.gpus == 1 for p in plans) and any(p.dp == 2 and p.zero_stage == 0 for p in plans)


@pytest.mark.parametrize("path", SUITE, ids=[p.stem for p in SUITE])
def test_plan_runs_and_computes_the_same_step(path, reference_loss):
    s = load_scenario(path)
    result = run_plan(s.model, s.plan, RunOptions(steps=1, warmup=0, timeout_s=120, stall_s=60))
    assert result["nproc"] == s.plan.gpus
    assert result["first_step_loss"] == pytest.approx(reference_loss, abs=1e-5)
    assert result["step_time_s"] > 0
    # activation bytes of rank 0's chunks, measured here on the plain model
    from simplan.execute.apply import apply_ac
    from simplan.execute.models import Chunk, build_units
    from simplan.execute.saved import count_saved
    from simplan.execute.worker import chunk_units

    if s.plan.tp == 1:
        units = build_units(s.model, 0)
        x, y = batches(s.model, s.plan, 0, 0)
        mb = s.plan.micro_batch
        expected = 0
        chunks = chunk_units(s.model, s.plan)
        for c, names in enumerate(chunks):
            if c % s.plan.pp:
                continue
            chunk = Chunk({n: units[n] for n in names})
            apply_ac(chunk, s.plan.recompute)
            inp = x[:mb] if c == 0 else torch.randn(mb, s.model.seq_len, s.model.hidden, requires_grad=True)
            with count_saved() as counter:
                out = chunk(inp)
                if c == len(chunks) - 1:
                    loss_fn(out, y[:mb])
            expected += counter.total_bytes
        assert result["activation_bytes_per_rank"][0] == expected
