"""Launch an executor run: ``torchrun`` (``python -m torch.distributed.run``) over the ranks
a plan needs, gloo on CPU and NCCL on GPUs, one thread per rank, with a timeout and a
clean teardown.

Teardown: torchrun starts every worker in a session of its own, so killing torchrun's
process group does not reach them. Each worker writes its pid, a heartbeat and (on
failure) an error file into the run folder; the launcher watches them every 0.1 s and,
when a rank fails, dies or stops making progress, or the run times out, sends SIGTERM to
each worker by pid and to torchrun's group, then SIGKILL 2 s later to whatever is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from simplan.errors import SimplanError
from simplan.execute.support import check_expressible, check_ranks, require_torch
from simplan.model.spec import ModelSpec
from simplan.plan.plan import Plan
from simplan.plan.validate import validate

REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.1
KILL_GRACE_S = 2.0


class RankFailure(RuntimeError):
    """A rank crashed, died or hung; the message names the rank and what it said."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunOptions:
    steps: int = 5
    """Measured optimizer steps (after ``warmup``)."""
    warmup: int = 2
    seed: int = 0
    device: str = "cpu"
    """cpu (gloo) or cuda (NCCL, one GPU per rank)."""
    threads: int = 1
    """Intra-op threads per rank (OMP_NUM_THREADS, torch.set_num_threads)."""
    timeout_s: float = 600.0
    """Whole run, start to teardown."""
    stall_s: float = 60.0
    """Once every rank trains, a rank whose heartbeat (one per step) is this old counts as hung."""
    max_ranks: int | None = None
    """Ranks this host may run (default: CPU cores on cpu, visible GPUs on cuda)."""
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    """host:port of the rendezvous for multi-node runs (torchrun's c10d rendezvous)."""

    def check(self) -> None:
        for name in ("steps", "threads", "nnodes"):
            if getattr(self, name) < 1:
                raise SimplanError(f"run.{name}: must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise SimplanError(f"run.warmup: must be >= 0, got {self.warmup}")
        if self.device not in ("cpu", "cuda"):
            raise SimplanError(f"run.device: cpu or cuda, got {self.device!r}")
        if self.timeout_s <= 0 or self.stall_s <= 0:
            raise SimplanError(f"run.timeout_s/stall_s: must be > 0, got {self.timeout_s}/{self.stall_s}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise SimplanError(f"run.rdzv_endpoint: needed for nnodes={self.nnodes} (host:port of node 0)")


def available_ranks(opts: RunOptions) -> tuple[int, str]:
    if opts.max_ranks is not None:
        return opts.max_ranks, "ranks (max_ranks)"
    if opts.device == "cuda":
        import torch

        return torch.cuda.device_count() * opts.nnodes, "GPUs"
    return (os.cpu_count() or 1) // opts.threads * opts.nnodes, f"CPU cores / {opts.threads} thread(s) per rank"


def run_plan(model: ModelSpec, plan: Plan, opts: RunOptions = RunOptions(), *, workdir: Path | None = None,
             on_start=None) -> dict:
    """Run ``plan`` on ``model`` for real and return the measurement (see ``_combine``).
    ``on_start(run_dir)`` is called once the processes are started (tests use it)."""
    require_torch()
    opts.check()
    validate(plan, model, plan.gpus)
    check_expressible(model, plan, opts.device)
    nproc = plan.gpus
    available, what = available_ranks(opts)
    check_ranks(nproc, available, what)
    if nproc % opts.nnodes:
        raise SimplanError(f"run.nnodes: {nproc} ranks do not split evenly over {opts.nnodes} nodes")
    own_dir = workdir is None
    run_dir = Path(tempfile.mkdtemp(prefix="simplan-run-")) if own_dir else Path(workdir)
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {"model": model.to_dict(), "plan": plan.to_dict(), "seed": opts.seed, "steps": opts.steps,
           "warmup": opts.warmup, "device": opts.device, "run_dir": str(run_dir),
           "collective_timeout_s": max(opts.stall_s * 2, 60.0)}
    job_file = run_dir / "job.json"
    job_file.write_text(json.dumps(job))
    per_node = nproc // opts.nnodes
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={per_node}", "--max-restarts=0",
           "--monitor-interval=0.1"]
    if opts.nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={opts.nnodes}", f"--node-rank={opts.node_rank}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={opts.rdzv_endpoint}", "--rdzv-id=simplan"]
    cmd += ["-m", "simplan.execute.worker", str(job_file)]
    env = dict(os.environ)
    threads = str(opts.threads)
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    if opts.device == "cpu":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo" if opts.nnodes == 1 else env.get("GLOO_SOCKET_IFNAME", ""))
    t0 = time.perf_counter()
    with open(run_dir / "torchrun.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=str(REPO))
    if on_start is not None:
        on_start(run_dir)
    try:
        failure = _watch(proc, run_dir, per_node, opts, opts.node_rank * per_node)
    finally:
        _teardown(proc, run_dir)
    wall_s = time.perf_counter() - t0
    if failure is not None:
        message, user_error = failure
        if user_error:
            raise SimplanError(message)
        raise RankFailure(f"{message} (logs: {run_dir})")
    results = [json.loads((run_dir / f"rank{r}.json").read_text())
               for r in range(opts.node_rank * per_node, (opts.node_rank + 1) * per_node)]
    if own_dir:  # kept only when a run fails (its logs are named in the error)
        shutil.rmtree(run_dir, ignore_errors=True)
    return _combine(model, plan, opts, results, wall_s)


def _rank_error(run_dir: Path) -> tuple[str, bool] | None:
    errors = []
    for path in run_dir.glob("rank*.error.json"):
        try:
            errors.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # being written: seen on the next poll
    if not errors:
        return None
    # the first failure is the cause; the others are usually the broken collectives that follow
    first = min(errors, key=lambda e: e["time"])
    return f"rank {first['rank']} failed: {first['type']}: {first['message']}", bool(first.get("user_error"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _pids(run_dir: Path) -> dict[int, int]:
    out = {}
    for path in run_dir.glob("rank*.pid"):
        try:
            out[int(path.name[4:-4])] = int(path.read_text())
        except ValueError:
            continue
    return out


def _dead_rank(run_dir: Path) -> tuple[str, bool] | None:
    """The first rank whose process is gone with neither a result nor an error report.
    Ranks stopped by a SIGTERM (torchrun stops the survivors of a failure that way; the
    worker leaves a mark) are not a cause and are skipped."""
    def silent(rank: int) -> bool:
        return not any((run_dir / f"rank{rank}.{what}").exists() for what in ("json", "error.json", "stopped"))

    dead = [(rank, pid) for rank, pid in sorted(_pids(run_dir).items()) if not _alive(pid) and silent(rank)]
    if not dead:
        return None
    time.sleep(POLL_S)  # a report or a mark being written lands now
    dead = [(rank, pid) for rank, pid in dead if silent(rank)]
    if not dead:
        return None
    rank, pid = dead[0]
    return f"rank {rank} died without a result (pid {pid}, killed or crashed: {_exit_of(run_dir, rank)})", False


def _watch(proc: subprocess.Popen, run_dir: Path, nproc: int, opts: RunOptions, first_rank: int):
    """Poll until the run ends; return (message, user_error) on failure, None on success."""
    start = time.monotonic()
    while True:
        time.sleep(POLL_S)
        err = _rank_error(run_dir)
        if err is not None:
            time.sleep(POLL_S)  # let a near-simultaneous earlier failure land, then take the first
            # a rank that died without a word (killed) is the cause of its peers' broken
            # collectives, whichever of them reported first
            return _dead_rank(run_dir) or _rank_error(run_dir)
        dead = _dead_rank(run_dir)
        if dead is not None:
            return dead
        rc = proc.poll()
        if rc is not None:
            missing = [r for r in range(first_rank, first_rank + nproc) if not (run_dir / f"rank{r}.json").exists()]
            if rc == 0 and not missing:
                return None
            err = _rank_error(run_dir)
            if err is not None:
                return err
            return f"torchrun exited with status {rc}; ranks without a result: {missing}: {_tail(run_dir)}", False
        now = time.monotonic()
        if now - start > opts.timeout_s:
            return f"run timed out after {opts.timeout_s:g} s; last progress: {_beats(run_dir)}", False
        beats = _beat_ages(run_dir)
        # setup (imports, rendezvous, model build) is covered by timeout_s; the training
        # loop beats every step, so a stale beat there means a hung rank
        if len(beats) == nproc and all(what.startswith("step") for _, what in beats.values()):
            rank, (age, what) = max(beats.items(), key=lambda kv: kv[1][0])
            if age > opts.stall_s:
                return (f"rank {rank} hung: no progress for {age:.0f} s since {what!r} "
                        f"(all ranks: {_beats(run_dir)})"), False


def _beat_ages(run_dir: Path) -> dict[int, tuple[float, str]]:
    now = time.time()
    out = {}
    for path in run_dir.glob("rank*.beat"):
        try:
            out[int(path.name[4:-5])] = (now - path.stat().st_mtime, path.read_text())
        except (OSError, ValueError):
            continue
    return out


def _beats(run_dir: Path) -> str:
    return ", ".join(f"rank {r}: {w!r}" for r, (_, w) in sorted(_beat_ages(run_dir).items()))


def _exit_of(run_dir: Path, rank: int) -> str:
    return f"see {run_dir / 'torchrun.log'}"


def _tail(run_dir: Path) -> str:
    try:
        lines = (run_dir / "torchrun.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [line for line in lines if "Error" in line or "error" in line]
    return (interesting or lines or [""])[-1][:300]


def _teardown(proc: subprocess.Popen, run_dir: Path) -> None:
    """Stop torchrun and every worker it started (each worker is in its own session)."""
    targets = [pid for pid in _pids(run_dir).values() if _alive(pid)]
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None and not any(_alive(p) for p in targets):
            break
        time.sleep(0.05)
    for pid in targets:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _combine(model: ModelSpec, plan: Plan, opts: RunOptions, results: list[dict], wall_s: float) -> dict:
    """One measurement from the ranks' reports. Step times are the slowest rank's per step
    (each rank already holds them after an all-reduce MAX)."""
    r0 = min(results, key=lambda r: r["rank"])
    acts = [r["activation_bytes"] for r in sorted(results, key=lambda r: r["rank"])]
    out = {
        "model": model.to_dict(),
        "plan": plan.to_dict(),
        "backend": "nccl" if opts.device == "cuda" else "gloo",
        "device": opts.device,
        "nproc": len(results),
        "threads_per_rank": opts.threads,
        "warmup": opts.warmup,
        "steps": opts.steps,
        "step_time_s": r0["step_time_s"],
        "step_time_min_s": r0["step_time_min_s"],
        "step_time_max_s": r0["step_time_max_s"],
        "step_time_iqr_s": r0["step_time_iqr_s"],
        "step_times_s": r0["step_times_s"],
        "loss_per_step": r0["loss_per_step"],
        "first_step_loss": r0["loss_per_step"][0],
        "activation_bytes": max(acts),
        "activation_bytes_per_rank": acts,
        "pp_rank_of_rank": [r["pp_rank"] for r in sorted(results, key=lambda r: r["rank"])],
        "peak_rss_bytes_per_rank": [r["peak_rss_bytes"] for r in sorted(results, key=lambda r: r["rank"])],
        "wall_s": wall_s,
    }
    if opts.device == "cuda":
        out["peak_allocated_bytes_per_rank"] = [r["peak_allocated_bytes"] for r in results]
    return out
