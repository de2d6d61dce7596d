"""One rank of an executor run (started by torchrun, see ``launch.py``).

``python -m simplan.execute.worker JOB.json``: builds the model, applies the plan, trains
``warmup + steps`` optimizer steps on fixed synthetic token batches, and writes
``rank{r}.json`` into the job's run folder. Progress goes to ``rank{r}.beat`` (the
launcher's hang detector) and a failure to ``rank{r}.error.json`` (its error message).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from simplan.errors import SimplanError
from simplan.execute.support import check_expressible
from simplan.execute import apply, saved
from simplan.execute.models import Chunk, build_units, loss_fn
from simplan.model.load import build_graph
from simplan.model.spec import ModelSpec
from simplan.plan.partition import plan_chunks
from simplan.plan.plan import Plan

LR = 1e-3


def unit_of(layer_name: str) -> str:
    """Graph node name -> torch unit name (``layer3.mlp`` -> ``layer3``)."""
    return layer_name.split(".")[0]


def chunk_units(spec: ModelSpec, plan: Plan) -> list[list[str]]:
    """Unit names of each pipeline chunk, from the same partition the simulator uses."""
    out = []
    for layers in plan_chunks(build_graph(spec), plan):
        names: list[str] = []
        for layer in layers:
            if unit_of(layer.name) not in names:
                names.append(unit_of(layer.name))
        out.append(names)
    return out


def batches(spec: ModelSpec, plan: Plan, seed: int, dp_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This data-parallel rank's share of the fixed global batch: inputs and next-token targets."""
    gen = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, spec.vocab, (plan.global_batch, spec.seq_len + 1), generator=gen)
    per = plan.global_batch // plan.dp
    mine = tokens[dp_rank * per:(dp_rank + 1) * per]
    return mine[:, :-1].contiguous(), mine[:, 1:].contiguous()


class Beat:
    def __init__(self, run_dir: Path, rank: int):
        self.path = run_dir / f"rank{rank}.beat"

    def __call__(self, what: str) -> None:
        self.path.write_text(what)


def _fault(rank: int, step: int) -> None:
    """Test hook: ``SIMPLAN_FAULT=RANK:STEP:crash|hang`` makes one rank fail on purpose."""
    spec = os.environ.get("SIMPLAN_FAULT")
    if not spec:
        return
    r, s, kind = spec.split(":")
    if int(r) == rank and int(s) == step:
        if kind == "crash":
            raise RuntimeError(f"injected crash at step {step}")
        while True:  # hang
            time.sleep(1)


class Runner:
    """The rank's model pieces and one training step for the plan."""

    def __init__(self, spec: ModelSpec, plan: Plan, seed: int, device: torch.device):
        from torch.distributed.device_mesh import init_device_mesh

        self.spec, self.plan, self.device = spec, plan, device
        check_expressible(spec, plan, device.type)
        self.mesh = init_device_mesh(device.type, (plan.pp, plan.dp, plan.tp), mesh_dim_names=("pp", "dp", "tp"))
        self.pp_rank = self.mesh["pp"].get_local_rank()
        self.dp_rank = self.mesh["dp"].get_local_rank()
        self.loss_parallel = plan.tp > 1 and plan.pp == 1
        units = build_units(spec, seed)
        chunks = chunk_units(spec, plan)
        self.local = {c: Chunk({n: units[n] for n in names}) for c, names in enumerate(chunks)
                      if c % plan.pp == self.pp_rank}
        self.raw: dict[int, Chunk] = {}
        wrapped: dict[int, torch.nn.Module] = {}
        self.dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32
        if plan.precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
        for c, chunk in self.local.items():
            chunk.to(device=device, dtype=self.dtype)
            if plan.tp > 1:
                apply.apply_tp(chunk, self.mesh["tp"], plan.sequence_parallel, self.loss_parallel)
            apply.apply_ac(chunk, plan.recompute)
            self.raw[c] = chunk
            wrapped[c] = apply.apply_dp(chunk, plan, self.mesh["dp"], device)
        self.wrapped = wrapped
        self.optimizer = apply.build_optimizer(list(wrapped.values()), plan, self.mesh["dp"], LR)
        self.first = 0 in self.local
        self.last = plan.pp * plan.virtual_stages - 1 in self.local
        if plan.pp > 1:
            self.schedule, _ = apply.apply_pp(wrapped, plan, self.mesh["pp"], device, loss_fn)
        inputs, targets = batches(spec, plan, seed, self.dp_rank)
        self.inputs, self.targets = inputs.to(device), targets.to(device)

    def _loss_ctx(self):
        from contextlib import nullcontext

        if self.loss_parallel:
            from torch.distributed.tensor.parallel import loss_parallel

            return loss_parallel()
        return nullcontext()

    def step(self) -> float:
        """One optimizer step; returns this rank's mean micro-batch loss (nan off the last stage)."""
        if self.plan.tp > 1 and self.plan.sequence_parallel:
            with saved.hooks():  # gathered inputs saved as sequence shards (simplan.execute.saved)
                return self._step()
        return self._step()

    def _step(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_backward()
        self.update()
        return loss

    def forward_backward(self) -> float:
        """Forward and backward of every micro-batch (the pipeline schedule with pp > 1);
        returns this rank's mean micro-batch loss (nan off the last stage)."""
        if self.plan.pp > 1:
            losses: list = []
            args = (self.inputs,) if self.first else ()
            kwargs = {"target": self.targets, "losses": losses} if self.last else {}
            self.schedule.step(*args, **kwargs)
            return torch.stack([x.detach() for x in losses]).mean().item() if self.last else float("nan")
        return sum(self.micro_step(i) for i in range(self.plan.micro_batches))

    def micro_step(self, i: int) -> float:
        """Forward and backward of micro-batch ``i`` without a pipeline (pp = 1), its
        gradients accumulated (data-parallel reduction on the last); returns its loss / m."""
        model = self.wrapped[0]
        m = self.plan.micro_batches
        mb = self.plan.micro_batch
        sync = i == m - 1
        ctx = model.no_sync() if (not sync and hasattr(model, "no_sync")) else _null()
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(sync)
        with ctx, self._loss_ctx():
            x = self.inputs[i * mb:(i + 1) * mb]
            y = self.targets[i * mb:(i + 1) * mb]
            loss = loss_fn(model(x), y) / m
            loss.backward()
        return _full(loss.detach()).item()

    def update(self) -> None:
        """The optimizer step on the accumulated gradients."""
        self._finalize_grads()
        self.optimizer.step()

    def _finalize_grads(self) -> None:
        """Reduce the pending (Partial) DTensor gradients before the optimizer, in one
        all-reduce over the tp group. With sequence parallelism the norms' replicated
        weights see sequence shards, so their gradients are partial sums over the tp ranks;
        Megatron-LM all-reduces them together, one flat buffer (finalize_model_grads,
        _allreduce_layernorm_grads), which the simulator charges. Left alone, every foreach
        pass of AdamW would reduce each of them again."""
        if self.plan.tp == 1:
            return
        from torch.distributed.tensor import DTensor, Partial

        pending = [param for model in self.wrapped.values() for param in model.parameters()
                   if isinstance(param.grad, DTensor) and any(isinstance(pl, Partial) for pl in param.grad.placements)]
        if not pending:
            return
        mesh = pending[0].grad.device_mesh
        if any(p.grad.device_mesh != mesh or p.grad.placements != (Partial(),) for p in pending):
            for param in pending:  # not one flat sum: one redistribution each
                param.grad = param.grad.redistribute(param.grad.device_mesh, param.placements)
            return
        flat = torch.cat([param.grad.to_local().reshape(-1) for param in pending])
        dist.all_reduce(flat, group=mesh.get_group())
        offset = 0
        for param in pending:
            local = param.grad.to_local()
            summed = flat[offset:offset + local.numel()].view_as(local)
            offset += local.numel()
            param.grad = DTensor.from_local(summed, mesh, param.placements, run_check=False)

    def activation_bytes(self) -> int:
        """Bytes one micro-batch leaves saved for backward through this rank's chunks
        (forward only, on the unwrapped chunks; the graph is then dropped)."""
        mb = self.plan.micro_batch
        total = 0
        for c, chunk in self.raw.items():
            if c == 0:
                x = self.inputs[:mb]
            else:
                width = self.spec.hidden
                seq = self.spec.seq_len // (self.plan.tp if self.plan.sequence_parallel else 1)
                x = torch.randn(mb, seq, width, device=self.device, dtype=self.dtype, requires_grad=True)
            module = self.wrapped[c] if self.plan.zero_stage >= 2 else chunk
            with saved.count_saved() as counter, self._loss_ctx():
                out = module(x)
                if c == self.plan.pp * self.plan.virtual_stages - 1:
                    out = loss_fn(out, self.targets[:mb])
            if self.plan.zero_stage >= 2:  # FSDP2 expects each forward's backward (pp = 1 here)
                with self._loss_ctx():
                    out.backward()
            del out
            total += counter.total_bytes
        if self.plan.zero_stage >= 2:
            self.optimizer.zero_grad(set_to_none=True)
        return total


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def run(job: dict) -> dict:
    rank = int(os.environ["RANK"])
    run_dir = Path(job["run_dir"])
    beat = Beat(run_dir, rank)
    beat("init")
    cuda = job["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    # one intra-op thread per rank (the launcher's OMP_NUM_THREADS) and no inter-op pool beyond
    # the calling thread, so that ranks do not oversubscribe the host's cores
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.set_num_interop_threads(1)
    from datetime import timedelta

    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=job["collective_timeout_s"]))
    spec = ModelSpec(**job["model"])
    plan = Plan(**job["plan"])
    runner = Runner(spec, plan, job["seed"], device)
    beat("activation")
    act = runner.activation_bytes()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(job["warmup"] + job["steps"]):
        _fault(rank, step)
        beat(f"step {step}")
        t0 = time.perf_counter()
        loss = runner.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    beat("report")
    # step time of the job = slowest rank's; the loss is reported by the last pipeline stage
    t = torch.tensor(times, dtype=torch.float64, device=device)  # NCCL reduces device tensors only
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    loss_t = torch.tensor([0.0 if v != v else v for v in losses], dtype=torch.float64, device=device)
    dist.all_reduce(loss_t)
    t, loss_t = t.cpu(), loss_t.cpu()
    loss_t /= plan.dp * plan.tp  # every dp and tp rank of the last stage reports (tp ranks the same loss)
    measured = t[job["warmup"]:].tolist()
    out = {
        "rank": rank,
        "pp_rank": runner.pp_rank,
        "chunks": sorted(runner.local),
        "activation_bytes": act,
        "step_times_s": measured,
        "step_time_s": statistics.median(measured),
        "step_time_min_s": min(measured),
        "step_time_max_s": max(measured),
        "step_time_iqr_s": _iqr(measured),
        "loss_per_step": loss_t.tolist(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if cuda:
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    dist.barrier()
    dist.destroy_process_group()
    return out


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    run_dir = Path(job["run_dir"])
    (run_dir / f"rank{rank}.pid").write_text(str(os.getpid()))

    def stopped(signum, _frame):
        # torchrun (or the launcher) stops the surviving ranks with SIGTERM when one fails;
        # the mark tells the launcher this rank was stopped, not the one that died first
        (run_dir / f"rank{rank}.stopped").write_text(signal.Signals(signum).name)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)
    try:
        out = run(job)
    except BaseException as exc:  # report every failure, including a SimplanError, with its rank
        (run_dir / f"rank{rank}.error.json").write_text(json.dumps({
            "rank": rank, "type": type(exc).__name__, "message": str(exc).strip().splitlines()[0] if str(exc).strip()
            else type(exc).__name__, "user_error": isinstance(exc, SimplanError), "time": time.time(),
            "traceback": traceback.format_exc()}))
        raise
    (run_dir / f"rank{rank}.json").write_text(json.dumps(out))
    return 0


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown once the result is on disk. The process
    group is destroyed by then, but a torch background thread can still be joinable when
    C++ statics are destroyed: about one FSDP2 launch in 30 on this host died at exit with
    "terminate called without an active exception" (SIGABRT) after writing its result, and
    torchrun reports that as a failed rank."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
