"""``simplan calibrate --local``: microbenchmarks of this host or its GPU, written as a hardware profile.

The simulator's compute model (``simplan.cost.compute``) is, per op,
time = (F + F_half) / (peak * efficiency) for matmuls, bytes / (hbm * memory_efficiency)
for memory-bound ops, and a host launch gap per kernel (``kernel_overhead_s``), plus
DTensor's dispatch per kernel of a tensor-parallel-sharded op (``dtensor_op_overhead_s``,
and ``dtensor_update_overhead_s`` in the optimizer step).
A host device runs them in sequence; a GPU overlaps the gaps with the kernels.

``--device cpu`` (one thread per rank, fp32, as the CPU executor runs):

* matmul: ``torch.mm`` of n x n matrices; the least-squares line t = a F + b gives
  efficiency = 1 / (a peak) and F_half = (b - kernel_overhead) / a. ``peak`` is the core's
  theoretical fp32 rate: clock (/proc/cpuinfo) x FLOP per cycle from the vector flags.
* memory bandwidth: ``torch.add`` out of place on 64 MiB tensors (STREAM's "add", McCalpin
  1995: 3 x size bytes moved) is ``hbm_gbyte_per_s``; ``memory_efficiency`` is what the
  executor's memory-bound ops (GeLU, LayerNorm, residual add) reach relative to that.
* collectives: gloo between 2 processes over loopback, each collective over message sizes,
  fitted to the simulator's ring form t = steps x alpha + wire_bytes / B
  (``simplan.cost.collectives``); every collective keeps its own table. Each one is issued
  the way a training step issues it, after a compute phase on both ranks (not after a
  barrier), and the figure is the mean over the samples: a step sums its collectives, so
  it costs their expected time, and gloo's is bimodal (a collective that finds its worker
  thread asleep waits for the scheduler to wake it, milliseconds on a busy host; the
  median of a few samples shows the fast mode only).
* DTensor host work: the executor's own tensor-parallel step (tp = 2) at negligible width
  on a fake 2-rank process group (collectives complete at once: DTensor's redistributions
  run, nothing is communicated) against the plain model; per kernel of the
  tensor-parallel-sharded ops the simulator charges, what forward+backward adds per
  micro-batch is ``dtensor_op_overhead_us`` and what the optimizer step adds
  ``dtensor_update_overhead_us``.
* FSDP2 host work: the same at negligible width with ``fully_shard`` per unit on a
  one-rank mesh and without; the difference over its unit gathers is
  ``fsdp_gather_overhead_us`` (FSDP2's hooks and copies, paid on the rank's core).
* concurrency: the in-model matmul line, the elementwise rate, the per-op overhead and the
  optimizer step are measured again in ``world`` (2) single-threaded processes at once,
  as the executor's ranks run on the host's cores; the profile takes the slowest
  process's figures (ranks that synchronize run at the slowest one's pace), the median
  over rounds, and records the slowdown against alone. That of the model's whole
  forward+backward is ``node.busy_slowdown``: a plan that runs fewer ranks on the host
  (one process) computes at the pace of fewer busy cores.

``--device cuda`` (bf16, one GPU; peaks and HBM bandwidth stay the datasheet's in ``--base``):

* matmul: bf16 ``torch.mm`` over sizes, back to back on the stream; the weighted line
  t = (F + F_half) / rate through the device-bound sizes gives efficiency = rate / peak
  and F_half (the launch gap is not in a GPU kernel's device time).
* memory: GeLU, LayerNorm and add on 128 MiB bf16 tensors / the datasheet bandwidth is
  ``memory_efficiency``; the device-to-device copy rate is recorded beside it.
* launch gap: ``add_`` on a one-element tensor in a loop without synchronizing (recorded).
* collectives and DTensor dispatch are not measured (one GPU): the base's values stay.

Both: per-op framework overhead is a transformer of the executor at negligible width
(hidden 8, 4 tokens), forward and backward, divided by the kernels the simulator charges
for it (``kernel_overhead_us``, the eager dispatch and launch cost per graph op); the AdamW
step and ``zero_grad`` of that model is ``step_overhead_ms``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from simplan.errors import SimplanError

CPU_MATMUL_SIZES = (32, 64, 96, 128, 192, 256, 384, 512)
GPU_MATMUL_SIZES = (2048, 3072, 4096, 6144, 8192)
COLLECTIVE_BYTES = (256, 4096, 65536, 262144, 1048576, 4194304)
COLLECTIVES = ("allreduce", "allgather", "reducescatter", "p2p")
MEASURED_IN_NODE = ("allgather", "reducescatter")
"""Collectives the profile keeps its own fit of (``HardwareProfile.measured_collective``)."""
COLLECTIVE_SAMPLES = 30
COLLECTIVE_WARMUP = 3
COLLECTIVE_BURST = (512, 256, 1024)
"""The compute phase before each timed collective: an (m, k) x (k, n) matmul, the first MLP
projection of one micro-batch of the verify suite's model (4 x 128 tokens, hidden 256)."""
STREAM_BYTES = 64 * 2**20
GPU_ELEMENTWISE_SHAPE = (8192, 8192)  # 128 MiB in bf16: well past an H100's 50 MiB L2
GPU_COPY_BYTES = 512 * 2**20
DEVICE_BOUND = 3.0
"""A GPU matmul enters the fit when it takes this many launch gaps or more (below, the
loop measures the host, not the kernel)."""
DEFAULT_BASE = {"cpu": "cpu-host"}
DEFAULT_MODEL = {"cpu": "tiny-gpt", "cuda": "gpt2-small"}
GPU_PROFILES = (("H200", "h200-sxm-141gb"), ("H100", "h100-sxm-80gb"), ("B200", "b200"),
                ("A100-SXM4-40GB", "a100-sxm-40gb"), ("A100", "a100-sxm-80gb"), ("V100", "v100-sxm-32gb"),
                ("MI300X", "mi300x"))
"""Substring of ``torch.cuda.get_device_name()`` -> shipped profile, first match wins."""


MAX_SCATTER_CV = 0.15
"""Repeats of one microbenchmark that scatter more than this (coefficient of variation,
stdev / mean) mean other work shared the cores or the GPU while it was timed: the median
is then a sample of the load, not of the hardware, and a profile built on it makes
predictions worse (issue 15). Repeats of a few milliseconds each agree within a few
percent on an idle host."""

_clock = time.perf_counter
"""The timer of ``_timeit`` (tests replace it with a fake one)."""
_scatter: list[dict] | None = None
"""The scatter of each ``_timeit`` while :func:`collect_scatter` is open (None: not kept)."""


@contextmanager
def collect_scatter():
    """Keep the scatter of every ``_timeit`` of this process in the yielded list."""
    global _scatter
    outer, _scatter = _scatter, []
    try:
        yield _scatter
    finally:
        _scatter = outer


def worst_scatter(records: list[dict]) -> dict | None:
    """The measurement whose repeats scatter most (by coefficient of variation)."""
    return max(records, key=lambda r: r["cv"], default=None)


def noisy_message(worst: dict) -> str:
    return (f"{worst['what']}: {worst['repeats']} repeats scatter {worst['cv']:.0%} (cv; max/min "
            f"{worst['max_over_min']:.2f}), above {MAX_SCATTER_CV:.0%}: the host is busy; rerun when idle "
            "or pass --allow-noisy")


@contextmanager
def quiet_c_output():
    """Send what C and C++ code writes to file descriptors 1 and 2 to /dev/null: torch.profiler's
    kineto logs ``USDT: ... profiler_start`` and ``profiler_stop`` lines there at every
    ``profile()`` (torch 2.13 on CPU; ~40 per calibration). Python's own output (warnings,
    log lines) keeps its destination: a ``sys`` stream on fd 1 or 2 writes to a copy of it."""
    streams = {"stdout": sys.stdout, "stderr": sys.stderr}
    for stream in streams.values():
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for (name, stream), fd in zip(streams.items(), (1, 2)):
            if _fileno(stream) == fd:
                setattr(sys, name, open(saved[fd], "w", buffering=1, closefd=False, encoding=stream.encoding,
                                        errors=stream.errors))
            os.dup2(null, fd)
        yield
    finally:
        for name, stream in streams.items():
            if getattr(sys, name) is not stream:
                getattr(sys, name).close()  # flushes; the saved descriptor stays open
                setattr(sys, name, stream)
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _timeit(fn, repeat: int, inner: int = 1, device: str = "cpu", what: str = "") -> float:
    """Median seconds of ``fn()`` over ``repeat`` timings of ``inner`` calls each; on a GPU
    the stream is drained before and after each timing (the calls themselves run back to
    back, as a training step issues them). Under :func:`collect_scatter` the scatter of the
    repeats is kept, named ``what``."""
    fn()
    _sync(device)
    samples = []
    for _ in range(repeat):
        t0 = _clock()
        for _ in range(inner):
            fn()
        _sync(device)
        samples.append((_clock() - t0) / inner)
    if _scatter is not None and repeat > 1:
        mean = statistics.fmean(samples)
        _scatter.append({"what": what or getattr(fn, "__name__", "a measurement"), "repeats": repeat,
                         "cv": statistics.stdev(samples) / mean if mean > 0 else 0.0,
                         "max_over_min": max(samples) / min(samples) if min(samples) > 0 else float("inf")})
    return statistics.median(samples)


def _fit_line(x: list[float], y: list[float], weights: list[float] | None = None) -> tuple[float, float]:
    """Least squares y = a x + b (``weights`` multiply the residuals, as numpy's polyfit)."""
    import numpy as np

    a, b = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1,
                      w=None if weights is None else np.asarray(weights, dtype=float))
    return float(a), float(b)


def gpu_profile_name(device_name: str) -> str:
    """The shipped profile of a GPU named ``device_name`` (``torch.cuda.get_device_name``)."""
    for key, profile in GPU_PROFILES:
        if key.lower() in device_name.lower():
            return profile
    raise SimplanError(f"calibrate --local: no shipped profile matches the GPU {device_name!r}; "
                       "give the closest one with --base")


def stock_gpu_profile() -> str:
    """The shipped profile of GPU 0 (scripts/gpu_verify.sh compares against it)."""
    import torch

    return gpu_profile_name(torch.cuda.get_device_name(0))


def cpu_peak_flops() -> tuple[float, str]:
    """Theoretical fp32 FLOP/s of one core and how it was derived."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    flags = set(re.search(r"flags\s*:(.*)", text).group(1).split()) if "flags" in text else set()
    if mhz is None:
        raise SimplanError("calibrate --local: cannot read the CPU clock from /proc/cpuinfo (needed for the peak)")
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * lanes * 2 if "fma" in flags or "avx512f" in flags else lanes * 2
    ghz = float(mhz.group(1)) / 1e3
    return ghz * 1e9 * per_cycle, (f"{ghz:.3f} GHz (/proc/cpuinfo) x {per_cycle} fp32 FLOP/cycle "
                                   f"({'AVX-512' if lanes == 16 else 'AVX2' if lanes == 8 else 'SSE'}, 2 FMA pipes)")


# --------------------------------------------------------------------------- microbenchmarks
def bench_matmul(device: str = "cpu", sizes=CPU_MATMUL_SIZES, dtype=None) -> list[dict]:
    """Seconds per n x n ``torch.mm`` (fp32 on a CPU, bf16 on a GPU unless ``dtype``)."""
    import torch

    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    if device == "cuda":  # ~0.5 s of the largest matmul first: the clocks ramp up before the sweep
        n = max(sizes)
        a = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(max(1, int(0.5 * 5e14 / (2.0 * n**3)))):
            torch.mm(a, a)
        _sync(device)
        del a
    rows = []
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        flops = 2.0 * n**3
        # enough calls for ~2 ms of work at 1 GFLOP/s (CPU) or 500 TFLOP/s (GPU)
        inner = max(3, min(200, int(2e-3 * (5e14 if device == "cuda" else 1e9) / flops)))
        t = _timeit(lambda: torch.mm(a, b), repeat=5 if device == "cuda" else 7, inner=inner, device=device,
                    what=f"matmul n={n}")
        rows.append({"n": n, "flops": flops, "time_s": t})
        del a, b
    return rows


def bench_launch_gap(device: str = "cpu", calls: int = 2000) -> float:
    """Host launch-to-launch gap: ``add_`` on a one-element tensor, ``calls`` times without
    synchronizing (the kernel is far shorter than its launch, so the host sets the pace)."""
    import torch

    x = torch.zeros(1, device=device)
    return _timeit(lambda: x.add_(1.0), repeat=5, inner=calls, device=device, what="launch gap")


def bench_stream() -> float:
    """CPU: STREAM add bandwidth (bytes per second) on 64 MiB fp32 tensors."""
    import torch

    n = STREAM_BYTES // 4
    x, y, z = torch.randn(n), torch.randn(n), torch.empty(n)
    t = _timeit(lambda: torch.add(x, y, out=z), repeat=7, what="stream add")
    return 3 * STREAM_BYTES / t


def bench_copy(device: str = "cuda", nbytes: int = GPU_COPY_BYTES) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    t = _timeit(lambda: dst.copy_(src), repeat=5, inner=5, device=device, what="copy")
    return 2 * nbytes / t


def bench_elementwise(device: str = "cpu", overhead_s: float = 0.0, shape=None, dtype=None,
                      combine: str = "median") -> float:
    """Bytes per second the executor's memory-bound ops (GeLU, LayerNorm, residual add)
    reach on tensors large enough that the op, not its dispatch, is timed, each time less
    ``overhead_s`` (the host's per-op cost on a CPU; 0 on a GPU, where back-to-back kernels
    hide their launches). ``combine``: "median" of the three rates, or "total" bytes over
    total time (what a layer that runs each op once sees: on a CPU the tanh GeLU is
    compute bound at a quarter of the add's rate, and a median would hide it)."""
    import torch
    import torch.nn.functional as F

    cuda = device == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    shape = shape or (GPU_ELEMENTWISE_SHAPE if cuda else (64, 256, 256))
    big = torch.randn(*shape, device=device, dtype=dtype)
    ln = torch.nn.LayerNorm(shape[-1], device=device, dtype=dtype)
    size = big.numel() * big.element_size()
    cases = [("GeLU", lambda: F.gelu(big, approximate="tanh"), 2 * size), ("LayerNorm", lambda: ln(big), 2 * size),
             ("add", lambda: big + big, 3 * size)]
    rates = []
    with torch.no_grad():
        for name, fn, nbytes in cases:
            t = _timeit(fn, repeat=7, inner=5 if cuda else 1, device=device, what=name) - overhead_s
            rates.append((nbytes, t))
    if combine == "total":
        return sum(b for b, _ in rates) / sum(t for _, t in rates)
    return statistics.median(b / t for b, t in rates)


def _small_spec(model_name: str):
    """``model_name``'s structure (layers, family) at negligible width."""
    from simplan.model import load_model

    base = load_model(model_name)
    return load_model({"preset": model_name, "hidden": 8, "heads": 2, "kv_heads": min(2, base.kv_heads),
                       "ffn_hidden": 32, "seq_len": 4, "vocab": 8, "dropout": False, "tied_embeddings": False})


def _graph_kernels(spec, sharded_only: bool = False) -> int:
    """Forward + backward kernels the simulator charges for ``spec`` (``simplan.cost.compute``),
    all or only those of tensor-parallel-sharded ops (``sharding == "tp"``, no sequence parallelism)."""
    from simplan.cost.compute import op_kernels
    from simplan.model import build_graph

    return int(sum(op_kernels(op) for layer in build_graph(spec).order for op in layer.ops
                   if not sharded_only or op.sharding == "tp"))


def bench_framework(model_name: str, device: str = "cpu", dtype=None) -> dict:
    """Per-graph-op eager overhead and the optimizer step of the executor's model at
    negligible width (seconds)."""
    import torch

    from simplan.execute.models import build_model, loss_fn

    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    spec = _small_spec(model_name)
    model = build_model(spec, seed=0).to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, spec.vocab, (1, spec.seq_len + 1), device=device)

    def fwd_bwd():
        loss_fn(model(x[:, :-1]), x[:, 1:]).backward()

    def step():
        opt.step()
        opt.zero_grad(set_to_none=False)

    fwd_bwd()
    t_model = _timeit(fwd_bwd, repeat=15, inner=5, device=device, what="forward+backward at hidden 8")
    t_opt = _timeit(step, repeat=15, inner=5, device=device, what="optimizer step")
    kernels = _graph_kernels(spec)
    how = (f"{model_name} structure at hidden 8, 4 tokens: forward+backward {t_model * 1e3:.2f} ms over the "
           f"{kernels} kernels the simulator charges for it")
    return {"per_op_s": t_model / kernels, "optimizer_s": t_opt, "fwd_bwd_s": t_model, "kernels": kernels,
            "how": how}


MODEL_MATMUL_HIDDEN = (128, 256)
MODEL_MATMUL_TOKENS = (32,)
"""Widths and sequence lengths of the in-model matmul measurement (4 sequences each). Open
question (issue 6): with 128-token shapes added the line rises from ~68 to ~80-88 GFLOP/s
on this host and matches the matmuls of the executor's model run alone (torch.profiler),
but the executor's 2-rank runs were then under-predicted by 10-20% (MAPE 21% against 7-9%):
they run slower than the isolated measurements in a way not yet modelled, so the line stays
at the 32-token shapes it has been validated with."""


def bench_model_matmul(model_name: str, hiddens=MODEL_MATMUL_HIDDEN, tokens=MODEL_MATMUL_TOKENS,
                       iters: int = 5) -> dict:
    """CPU: the rate matmuls reach inside the executor's forward+backward, not in a hot loop.
    ``model_name``'s structure at ``hiddens`` x ``tokens`` (ffn 4x, 4 sequences) runs under
    ``torch.profiler`` (``with_flops``); every ``mm``/``addmm``/``bmm`` shape is a point
    (FLOPs, self time per call) and the line t = (F + F_half) / rate through them gives the
    rate and F_half. Inside a training step the weights, saved activations and gradients
    of every layer stream through the caches between one matmul and the next, which a
    loop over one pair of small matrices never sees (it stays in L1/L2); on this host the
    in-model rate is about half the hot-loop rate (issue 6). The profiler's self time is
    the kernel's: the dispatch before it is the per-op overhead, charged apart."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from simplan.execute.models import build_model, loss_fn
    from simplan.model import load_model

    points: dict[tuple, list[float]] = {}
    model_s = 0.0
    for hidden in hiddens:
        for seq in tokens:
            spec = load_model({"preset": model_name, "hidden": hidden, "heads": 4, "kv_heads": min(4, load_model(
                model_name).kv_heads), "ffn_hidden": 4 * hidden, "seq_len": seq, "dropout": False,
                               "tied_embeddings": False})
            model = build_model(spec, seed=0)
            x = torch.randint(0, spec.vocab, (4, spec.seq_len + 1))

            def fwd_bwd():
                loss_fn(model(x[:, :-1]), x[:, 1:]).backward()

            for _ in range(3):
                fwd_bwd()
            with quiet_c_output(), profile(activities=[ProfilerActivity.CPU], with_flops=True,
                                           record_shapes=True) as prof:
                for _ in range(iters):
                    fwd_bwd()
            for e in prof.key_averages(group_by_input_shape=True):
                if e.key in ("aten::mm", "aten::addmm", "aten::bmm") and e.count and e.flops:
                    key = (hidden, seq, e.key, str(e.input_shapes))
                    points[key] = [e.flops / e.count, e.self_cpu_time_total * 1e-6 / e.count]
            # the whole forward+backward, without the profiler
            model_s += _timeit(fwd_bwd, repeat=3, what=f"forward+backward at hidden {hidden}")
    flops = [f for f, _ in points.values()]
    times = [t for _, t in points.values()]
    a, b = _fit_line(flops, times)
    if a <= 0:
        raise SimplanError(f"calibrate --local: in-model matmul time does not grow with FLOPs ({len(flops)} shapes); "
                           "the host is too noisy")
    rate = 1.0 / a
    return {"rate_flops_per_s": rate, "half_flops": max(0.0, b / a), "raw_half_flops": b / a,
            "mean_rate_flops_per_s": sum(flops) / sum(times), "shapes": len(flops), "model_fwd_bwd_s": model_s,
            "how": f"{model_name} structure at hidden {', '.join(map(str, hiddens))}, 4 x "
                   f"{' and '.join(map(str, tokens))} tokens, forward+backward under torch.profiler: line through "
                   f"the self time of its {len(flops)} matmul shapes"}


def _added_time(model_name: str, wrap, rounds: int) -> dict:
    """The executor's model at negligible width (``_small_spec``), forward and backward,
    plain and with ``wrap(model, mesh)`` applied on a one-rank mesh (the wrapper's host
    work runs, nothing is communicated), alternated ``rounds`` times so that a load change
    on the host hits both alike: the median times and the median difference."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from simplan.execute.models import build_model, loss_fn

    spec = _small_spec(model_name)
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        plain, wrapped = build_model(spec, seed=0), build_model(spec, seed=0)
        wrap(wrapped, mesh)
        x = torch.randint(0, spec.vocab, (1, spec.seq_len + 1))

        def fwd_bwd(model):
            return lambda: loss_fn(model(x[:, :-1]), x[:, 1:]).backward()

        diffs, plain_s, wrapped_s = [], [], []
        for _ in range(rounds):
            plain_s.append(_timeit(fwd_bwd(plain), repeat=5, inner=3, what="forward+backward at hidden 8"))
            wrapped_s.append(_timeit(fwd_bwd(wrapped), repeat=5, inner=3,
                                     what="forward+backward at hidden 8, wrapped"))
            diffs.append(wrapped_s[-1] - plain_s[-1])
    finally:
        if own_group:
            dist.destroy_process_group()
    return {"added_s": statistics.median(diffs), "plain_s": statistics.median(plain_s),
            "wrapped_s": statistics.median(wrapped_s), "spec": spec}


DTENSOR_RANKS = 2
"""Tensor-parallel ranks of the DTensor measurement (the verify suite's)."""


def _step_parts(micro_batches, update, steps: int) -> tuple[float, float]:
    """Median seconds of a step's forward+backward (``micro_batches``) and of its optimizer
    ``update``, each timed on its own (an update needs the gradients of a backward)."""
    fwd_bwd, opt = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        micro_batches()
        t1 = time.perf_counter()
        update()
        opt.append(time.perf_counter() - t1)
        fwd_bwd.append(t1 - t0)
    return statistics.median(fwd_bwd), statistics.median(opt)


def bench_dtensor(model_name: str, rounds: int = 3, steps: int = 10) -> dict:
    """CPU: the host time DTensor adds to the executor's tensor-parallel step. The executor's
    own ``Runner`` with tp = 2 (its embedding, attention, MLP and head layouts, loss
    parallel, the gradient finalization and AdamW over DTensor parameters) runs steps of
    two micro-batches (the second adds into the first's gradients) at negligible width
    (``_small_spec``) against the plain model and AdamW, alternated ``rounds`` times so that
    a load change on the host hits both alike. Its ranks are torch's fake process group
    (every collective completes at once, moving nothing): what is measured is DTensor's
    host work on a 2-rank mesh (sharding propagation, redistribution through functional
    collectives, wrap and unwrap), not communication, which the collective fits charge.
    Both figures are per kernel of the tp-sharded ops the simulator charges (those ops and
    the DTensor parameters grow together, layer by layer): ``per_kernel_s`` what
    forward+backward adds per micro-batch, ``update_s`` what the optimizer step (gradient
    finalization, AdamW, ``zero_grad``) adds, once per step."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend

    from simplan.execute.models import build_model, loss_fn
    from simplan.execute.worker import Runner
    from simplan.plan.plan import Plan

    spec = _small_spec(model_name)
    micro_batches = 2
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=DTENSOR_RANKS)
    try:
        runner = Runner(spec, Plan(tp=DTENSOR_RANKS, micro_batch=1, global_batch=micro_batches, precision="fp32"),
                        0, torch.device("cpu"))
        plain = build_model(spec, seed=0)
        opt = torch.optim.AdamW(plain.parameters(), lr=1e-3)
        x, y = runner.inputs, runner.targets

        def plain_fwd_bwd():
            for i in range(micro_batches):
                (loss_fn(plain(x[i:i + 1]), y[i:i + 1]) / micro_batches).backward()

        def plain_update():
            opt.step()
            opt.zero_grad(set_to_none=True)

        def tp_update():
            runner.update()
            runner.optimizer.zero_grad(set_to_none=True)

        _step_parts(runner.forward_backward, tp_update, 2)  # warm-up
        rows = [_step_parts(plain_fwd_bwd, plain_update, steps) + _step_parts(runner.forward_backward, tp_update, steps)
                for _ in range(rounds)]
    finally:
        dist.destroy_process_group()
    kernels = _graph_kernels(spec, sharded_only=True)
    raw = statistics.median((row[2] - row[0]) / micro_batches / kernels for row in rows)
    raw_update = statistics.median((row[3] - row[1]) / kernels for row in rows)
    plain_fb, plain_up, tp_fb, tp_up = (statistics.median(row[i] for row in rows) * 1e3 for i in range(4))
    return {"per_kernel_s": max(0.0, raw), "raw_per_kernel_s": raw, "update_s": max(0.0, raw_update),
            "raw_update_s": raw_update, "sharded_kernels": kernels, "plain_fwd_bwd_ms": plain_fb,
            "dtensor_fwd_bwd_ms": tp_fb, "plain_update_ms": plain_up, "dtensor_update_ms": tp_up,
            "how": f"the executor's tp = {DTENSOR_RANKS} step of the {model_name} structure at hidden 8, 4 tokens, "
                   f"{micro_batches} micro-batches, on a fake {DTENSOR_RANKS}-rank process group (DTensor's host "
                   f"work, no communication), less the plain model's, over the {kernels} kernels of its "
                   f"tp-sharded ops: forward+backward of the {micro_batches} micro-batches {tp_fb:.2f} - "
                   f"{plain_fb:.2f} ms, optimizer step {tp_up:.2f} - {plain_up:.2f} ms"}


def bench_fsdp(model_name: str, rounds: int = 5) -> dict:
    """CPU: the host time FSDP2 adds each time it gathers a unit (its pre- and post-forward
    and -backward hooks, the all-gather's copy in and out, the unsharded parameters'
    bookkeeping): the time ``fully_shard`` per unit (``apply_fsdp``, reshard after forward,
    no gradient reduction: the micro-batches before the last) adds to the model
    (:func:`_added_time`) over its unit gathers, each unit once in forward and once in
    backward."""
    from simplan.execute.apply import apply_fsdp

    def wrap(model, mesh):
        apply_fsdp(model, mesh, reshard_after_forward=True)
        model.set_requires_gradient_sync(False)

    m = _added_time(model_name, wrap, rounds)
    gathers = 2 * (m["spec"].layers + 2)  # embedding, the layers, head
    raw = m["added_s"] / gathers
    return {"per_gather_s": max(0.0, raw), "raw_per_gather_s": raw, "gathers": gathers,
            "plain_fwd_bwd_s": m["plain_s"], "fsdp_fwd_bwd_s": m["wrapped_s"],
            "how": f"{model_name} structure at hidden 8, 4 tokens, forward+backward with FSDP2 per unit on a "
                   f"one-rank mesh ({m['wrapped_s'] * 1e3:.2f} ms) less without "
                   f"({m['plain_s'] * 1e3:.2f} ms), over its {gathers} unit gathers"}


# --------------------------------------------------------------------------- concurrency (CPU)
CONCURRENT_RANKS = 2
"""Processes that run the compute microbenchmarks at once: the executor's verify suite runs
2 ranks on a 2-core host, and there the ops of a 2-rank step took 1.3-1.7x the time a
single-process calibration measured (issue 6); cores busy together share caches, memory
bandwidth and clock, so the rates are measured under the same load."""


CONCURRENT_ROUNDS = 3
"""Rounds of (rank 0 alone, all ranks at once): alternating them in the same processes lets
a change of the host's speed (a shared virtual machine) hit both alike, as in
:func:`bench_dtensor`; the median of three is less at the mercy of one round than the mean
of two (the busy matmul rate moved 57-88 GFLOP/s between calibrations on this host)."""


def _compute_phase(phase: str, model_name: str, done: dict) -> dict:
    if phase == "framework":
        fw = bench_framework(model_name)
        return {"per_op_s": fw["per_op_s"], "optimizer_s": fw["optimizer_s"]}
    if phase == "matmul":
        inm = bench_model_matmul(model_name)
        return {"rate_flops_per_s": inm["rate_flops_per_s"], "raw_half_flops": inm["raw_half_flops"],
                "model_fwd_bwd_s": inm["model_fwd_bwd_s"]}
    return {"elementwise_bytes_per_s": bench_elementwise("cpu", done["per_op_s"], combine="total")}


def _filler(model_name: str):
    """Untimed work that keeps a core busy in steps of ~10 ms: forward+backward of
    ``model_name``'s structure at hidden 128, 4 x 32 tokens."""
    import torch

    from simplan.execute.models import build_model, loss_fn
    from simplan.model import load_model

    spec = load_model({"preset": model_name, "hidden": 128, "heads": 4, "kv_heads": min(4, load_model(
        model_name).kv_heads), "ffn_hidden": 512, "seq_len": 32, "dropout": False, "tied_embeddings": False})
    model = build_model(spec, seed=0)
    x = torch.randint(0, spec.vocab, (4, spec.seq_len + 1))
    return lambda: loss_fn(model(x[:, :-1]), x[:, 1:]).backward()


def _concurrent_worker(rank: int, world: int, model_name: str, rounds: int, barrier, finished, out: str) -> None:
    """One of ``world`` single-threaded processes: each round, rank 0 measures alone while
    the others wait, then all measure at once, every phase started together (``barrier``).
    A process that finishes a busy phase first keeps its core busy (``_filler``) until every
    process has finished (``finished`` counts them): the slowest one's figures are then
    taken with all cores busy to the end, as in a training step, not with a tail alone."""
    import torch

    torch.set_num_threads(1)
    filler = _filler(model_name)
    rows: dict[str, list[dict]] = {"alone": [], "busy": []}
    for _ in range(rounds):
        for mode in ("alone", "busy"):
            active = mode == "busy" or rank == 0
            res: dict = {}
            for phase in ("framework", "matmul", "elementwise"):
                barrier.wait()
                if active:
                    res.update(_compute_phase(phase, model_name, res))
                if mode == "busy":
                    with finished.get_lock():
                        finished.value += 1
                    while finished.value < world:
                        filler()
                    barrier.wait()
                    if rank == 0:
                        finished.value = 0  # before the next phase's barrier, which rank 0 has not reached
            if active:
                rows[mode].append(res)
    Path(out, f"{rank}.json").write_text(json.dumps(rows))


def _slowest(rows: list[dict]) -> dict:
    """The figures of the slowest of processes measuring at once: the largest times, and
    the matmul line (rate with its intercept) and elementwise rate of the slowest."""
    matmul = min(rows, key=lambda row: row["rate_flops_per_s"])
    return {"per_op_s": max(row["per_op_s"] for row in rows), "optimizer_s": max(row["optimizer_s"] for row in rows),
            "rate_flops_per_s": matmul["rate_flops_per_s"], "raw_half_flops": matmul["raw_half_flops"],
            "elementwise_bytes_per_s": min(row["elementwise_bytes_per_s"] for row in rows),
            "model_fwd_bwd_s": max(row["model_fwd_bwd_s"] for row in rows)}


def bench_concurrent(model_name: str, world: int = CONCURRENT_RANKS, rounds: int = CONCURRENT_ROUNDS) -> dict:
    """CPU: the per-op overhead and optimizer (:func:`bench_framework`), the in-model matmul
    line (:func:`bench_model_matmul`) and the elementwise rate (:func:`bench_elementwise`)
    measured in ``world`` single-threaded processes at once, as the executor's ranks run;
    each figure is the slowest process's in a round (ranks that synchronize every step
    run at the pace of the slowest: on a shared host one core can be 25% slower than the
    other for minutes), the median over rounds. ``alone`` holds the same figures of rank 0 measuring alone
    in the rounds between, and ``slowdown`` the time busy / time alone; ``slowdown["model"]``, that of
    the whole forward+backward of the in-model matmul measurement, is the profile's
    ``node.busy_slowdown``."""
    import multiprocessing

    import torch.multiprocessing as mp

    ctx = multiprocessing.get_context("spawn")
    barrier, finished = ctx.Barrier(world), ctx.Value("i", 0)
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_concurrent_worker, args=(world, model_name, rounds, barrier, finished, d), nprocs=world,
                           start_method="spawn")
        per_rank = [json.loads(Path(d, f"{r}.json").read_text()) for r in range(world)]
    slowest = [_slowest([rank["busy"][r] for rank in per_rank]) for r in range(rounds)]
    alone_rows = per_rank[0]["alone"]
    busy = {k: statistics.median(row[k] for row in slowest) for k in slowest[0]}
    alone = {k: statistics.median(row[k] for row in alone_rows) for k in alone_rows[0]}
    slowdown = {"per_op": busy["per_op_s"] / alone["per_op_s"], "optimizer": busy["optimizer_s"] / alone["optimizer_s"],
                "matmul": alone["rate_flops_per_s"] / busy["rate_flops_per_s"],
                "elementwise": alone["elementwise_bytes_per_s"] / busy["elementwise_bytes_per_s"],
                "model": busy["model_fwd_bwd_s"] / alone["model_fwd_bwd_s"]}
    return {"ranks": world, "rounds": rounds, **busy, "half_flops": max(0.0, busy["raw_half_flops"]),
            "alone": alone, "slowdown": slowdown, "per_rank": per_rank}


# --------------------------------------------------------------------------- collectives (CPU)
def _coll_worker(rank: int, world: int, port: int, out: str) -> None:
    import warnings

    import torch
    import torch.distributed as dist

    warnings.simplefilter("ignore", FutureWarning)  # all_gather_into_tensor's rename notice
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    table: dict[str, list[dict]] = {k: [] for k in COLLECTIVES}
    m, k, n_out = COLLECTIVE_BURST
    act, weight = torch.randn(m, k), torch.randn(k, n_out)
    for size in COLLECTIVE_BYTES:
        n = size // 4
        full, shard = torch.randn(n), torch.randn(n // world)
        ops = {
            "allreduce": lambda: dist.all_reduce(full),
            "allgather": lambda: dist.all_gather_into_tensor(full, shard),
            "reducescatter": lambda: dist.reduce_scatter_tensor(shard, full),
            "p2p": (lambda: dist.send(full, 1) if rank == 0 else dist.recv(full, 0)),
        }
        for name, fn in ops.items():
            samples = []
            dist.barrier()
            for i in range(COLLECTIVE_WARMUP + COLLECTIVE_SAMPLES):
                torch.mm(act, weight)  # the compute a step runs between two collectives
                t0 = time.perf_counter()
                fn()
                if name == "p2p":  # one-way time: the receiver's ack closes the measurement
                    ack = torch.zeros(1)
                    dist.recv(ack, 1) if rank == 0 else dist.send(ack, 0)
                samples.append(time.perf_counter() - t0)
            kept = samples[COLLECTIVE_WARMUP:]
            table[name].append({"bytes": size, "time_s": statistics.fmean(kept),
                                "median_s": statistics.median(kept)})
    if rank == 0:
        Path(out).write_text(json.dumps(table))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_collectives(world: int = 2) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "coll.json")
        mp.start_processes(_coll_worker, args=(world, _free_port(), out), nprocs=world, start_method="spawn")
        table = json.loads(Path(out).read_text())
    from simplan.cost.collectives import ring_steps, ring_wire_bytes

    fitted = {}
    for name, rows in table.items():
        # t = steps * alpha + wire / B, with steps fixed for a fixed group: a line in wire bytes
        steps = ring_steps(name, world)
        wire = [ring_wire_bytes(name, world, r["bytes"]) for r in rows]
        a, b = _fit_line(wire, [r["time_s"] for r in rows])
        if a <= 0:
            times = ", ".join(f"{r['time_s'] * 1e3:.2f}" for r in rows)
            sizes = ", ".join(str(r["bytes"]) for r in rows)
            raise SimplanError(f"calibrate --local: gloo {name} did not take longer for larger messages "
                               f"({times} ms over {sizes} bytes); the host is too busy to measure, "
                               "run it again on a quiet host")
        fitted[name] = {"ranks": world, "sizes_bytes": [r["bytes"] for r in rows],
                        "times_s": [r["time_s"] for r in rows], "median_times_s": [r["median_s"] for r in rows],
                        "latency_s": max(b, 0.0) / steps, "bytes_per_s": 1.0 / a}
    return fitted


# --------------------------------------------------------------------------- fits
def fit_host_matmul(rows: list[dict], peak: float, per_op_s: float) -> dict:
    """CPU: each op runs after its dispatch, t = (F + F_half) / rate + per_op."""
    a, b = _fit_line([r["flops"] for r in rows], [r["time_s"] for r in rows])
    rate = 1.0 / a
    return {"rate_flops_per_s": rate, "efficiency": rate / peak, "half_flops": max(0.0, (b - per_op_s) / a),
            "raw_half_flops": (b - per_op_s) / a, "sizes_used": [r["n"] for r in rows]}


def fit_device_matmul(rows: list[dict], peak: float, launch_gap_s: float) -> dict:
    """GPU: back-to-back kernels, t = (F + F_half) / rate, through the sizes that take at
    least ``DEVICE_BOUND`` launch gaps; weighted by 1/t so every size counts by its
    relative error (the small ones fix F_half, the large ones the rate)."""
    used = [r for r in rows if r["time_s"] >= DEVICE_BOUND * launch_gap_s]
    if len(used) < 2:
        raise SimplanError(f"calibrate --local: only {len(used)} matmul size(s) ran longer than "
                           f"{DEVICE_BOUND:g} launch gaps ({launch_gap_s * 1e6:.1f} us); cannot fit the rate")
    a, b = _fit_line([r["flops"] for r in used], [r["time_s"] for r in used], [1.0 / r["time_s"] for r in used])
    if a <= 0:
        raise SimplanError(f"calibrate --local: matmul time does not grow with size ({used}); the GPU is shared?")
    rate = 1.0 / a
    return {"rate_flops_per_s": rate, "efficiency": rate / peak, "half_flops": max(0.0, b / a),
            "raw_half_flops": b / a, "sizes_used": [r["n"] for r in used]}


def _check_efficiency(what: str, value: float, measured: str, reference: str) -> None:
    if not 0.0 < value <= 1.0:
        raise SimplanError(f"calibrate --local: {what} = {value:.3f} ({measured} against {reference}) is not in "
                           "(0, 1]; the base profile does not describe this device (choose it with --base)")


# --------------------------------------------------------------------------- the profile
def _stamp() -> str:
    return f"simplan calibrate --local, {time.strftime('%Y-%m-%d')}"


def host_profile(base, m: dict):
    """The CPU profile from the measurements ``m`` (see :func:`measure_host`)."""
    stamp = _stamp()
    mm, fw, dt, ar = m["matmul_fit"], m["framework"], m["dtensor"], m["collectives"]["allreduce"]
    conc = m["concurrent"]
    busy = (f"slowest of {conc['ranks']} processes measuring at once, median over {conc['rounds']} rounds "
            f"(per rank with {conc['ranks']} ranks busy)")
    sources = dict(base.sources)
    sources.update({
        "gpu.peak_tflops": f"{stamp}: one core, {m['peak_how']}",
        "gpu.hbm_gbyte_per_s": f"{stamp}: torch.add on 64 MiB fp32 tensors, 3 x size bytes (STREAM add)",
        "gpu.matmul_efficiency": f"{stamp}: {mm['in_model']['how']}, {busy}: rate / peak (alone "
                                 f"{mm['rate_flops_per_s'] / 1e9:.1f} GFLOP/s; a hot torch.mm loop, n = "
                                 f"{CPU_MATMUL_SIZES[0]}..{CPU_MATMUL_SIZES[-1]}, reaches "
                                 f"{mm['hot_loop_rate_flops_per_s'] / 1e9:.1f} GFLOP/s alone)",
        "gpu.matmul_half_gflop": f"{stamp}: intercept x rate of the same in-model line, {busy}",
        "gpu.memory_efficiency": f"{stamp}: GeLU, LayerNorm and add on 16 MiB tensors, total bytes over total "
                                 f"time, {busy} / stream bandwidth (one process)",
        "gpu.kernel_overhead_us": f"{stamp}: {fw['how']}; {busy}",
        "node.busy_slowdown": f"{stamp}: forward+backward time of the in-model matmul measurement ({mm['in_model']['how']}"
                              f"), {busy}, over rank 0 alone in the rounds between (measured "
                              f"{conc['slowdown']['model']:.3f}; below 1 is noise and is written as 1)",
        "node.intra_gbyte_per_s": f"{stamp}: gloo all-reduce, 2 processes, fit t = 2(n-1) alpha + wire/B",
        "node.intra_latency_us": f"{stamp}: gloo all-reduce fit (per ring step)",
        "node.intra_efficiency": f"{stamp}: 1, the fitted bandwidth is already what gloo reaches",
        **{f"node.{kind}_{key}": f"{stamp}: gloo {kind}, 2 processes, its own fit t = (n-1) alpha + wire/B "
                                  "(gloo's is not the ring the all-reduce's fit implies)"
           for kind in MEASURED_IN_NODE for key in ("gbyte_per_s", "latency_us")},
        "software.step_overhead_ms": f"{stamp}: AdamW step + zero_grad of the {m['model']} structure at hidden 8, "
                                     f"{busy}",
        "software.dtensor_op_overhead_us": f"{stamp}: {dt['how']}",
        "software.dtensor_update_overhead_us": f"{stamp}: {dt['how']}",
        "software.fsdp_gather_overhead_us": f"{stamp}: {m['fsdp']['how']}",
    })
    return replace(
        base,
        name="local",
        description=f"This host, measured by `simplan calibrate --local` ({os.cpu_count()} cores; one thread per "
                    "rank, gloo over loopback)",
        peak_flops_per_s={"fp32": m["peak_flops_per_s"]},
        hbm_bytes_per_s=m["stream_bytes_per_s"],
        matmul_efficiency=conc["rate_flops_per_s"] / m["peak_flops_per_s"],
        matmul_half_flops=conc["half_flops"],
        memory_efficiency=min(1.0, conc["elementwise_bytes_per_s"] / m["stream_bytes_per_s"]),
        kernel_overhead_s=conc["per_op_s"],
        intra_bytes_per_s=ar["bytes_per_s"],
        intra_latency_s=ar["latency_s"],
        intra_efficiency=1.0,
        **{f"{kind}_{key}": m["collectives"][kind][key] for kind in MEASURED_IN_NODE
           for key in ("latency_s", "bytes_per_s")},
        step_overhead_s=conc["optimizer_s"],
        busy_slowdown=max(1.0, conc["slowdown"]["model"]),
        dtensor_op_overhead_s=dt["per_kernel_s"],
        dtensor_update_overhead_s=dt["update_s"],
        fsdp_gather_overhead_s=m["fsdp"]["per_gather_s"],
        sources=sources,
        calibration=_calibration(m),
    )


def accelerator_profile(base, m: dict):
    """The GPU profile from the measurements ``m`` (see :func:`measure_accelerator`): the
    base's peaks, HBM bandwidth, fabric and network, with the measured efficiencies and
    overheads."""
    stamp = _stamp()
    mm, fw = m["matmul_fit"], m["framework"]
    peak_key = m["peak_dtype"]
    memory_efficiency = m["elementwise_bytes_per_s"] / base.hbm_bytes_per_s
    _check_efficiency("matmul_efficiency", mm["efficiency"], f"{mm['rate_flops_per_s'] / 1e12:.1f} TFLOP/s",
                      f"{base.name}'s {peak_key} peak {base.peak(peak_key) / 1e12:.1f}")
    _check_efficiency("memory_efficiency", memory_efficiency, f"{m['elementwise_bytes_per_s'] / 1e9:.0f} GB/s",
                      f"{base.name}'s HBM {base.hbm_bytes_per_s / 1e9:.0f} GB/s")
    sizes = ", ".join(str(n) for n in mm["sizes_used"])
    sources = dict(base.sources)
    sources.update({
        "gpu.matmul_efficiency": f"{stamp}: {m['device_name']}, {peak_key} torch.mm back to back, n = {sizes}: "
                                 f"fitted rate / the {peak_key} peak ({base.name})",
        "gpu.matmul_half_gflop": f"{stamp}: {m['device_name']}, intercept x rate of the same fit (t = (F + F_half) "
                                 "/ rate, weighted by 1/t)",
        "gpu.memory_efficiency": f"{stamp}: {m['device_name']}, GeLU, LayerNorm and add on "
                                 f"{'x'.join(map(str, m['elementwise_shape']))} {m['dtype']} tensors / the HBM "
                                 f"bandwidth of {base.name}",
        "gpu.kernel_overhead_us": f"{stamp}: {m['device_name']}, {fw['how']}",
        "software.step_overhead_ms": f"{stamp}: {m['device_name']}, AdamW step + zero_grad of the {m['model']} "
                                     "structure at hidden 8",
    })
    return replace(
        base,
        name=f"{base.name}-local",
        description=f"{base.name} with efficiencies and overheads measured on {m['device_name']} by "
                    "`simplan calibrate --local --device cuda`",
        matmul_efficiency=mm["efficiency"],
        matmul_half_flops=mm["half_flops"],
        memory_efficiency=memory_efficiency,
        kernel_overhead_s=fw["per_op_s"],
        step_overhead_s=fw["optimizer_s"],
        sources=sources,
        calibration=_calibration(m),
    )


def _calibration(m: dict) -> dict:
    """What was measured, as plain numbers (the profile's ``calibration:`` section)."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return float(v) if isinstance(v, float) else v

    return {"kind": "local microbenchmarks", **plain(m)}


def measure_host(model_name: str, log=print, world: int = CONCURRENT_RANKS) -> dict:
    """Every CPU measurement (one thread, fp32): alone, then the compute rates again with
    ``world`` processes busy (:func:`bench_concurrent`), which the profile keeps."""
    import torch

    torch.set_num_threads(1)
    peak, peak_how = cpu_peak_flops()
    log(f"peak fp32 {peak / 1e9:.1f} GFLOP/s ({peak_how})")
    fw = bench_framework(model_name)
    log(f"framework overhead {fw['per_op_s'] * 1e6:.1f} us per graph op; optimizer {fw['optimizer_s'] * 1e3:.2f} ms")
    dt = bench_dtensor(model_name)
    fsdp = bench_fsdp(model_name)
    log(f"FSDP2 {fsdp['raw_per_gather_s'] * 1e6:.1f} us per unit gather (forward+backward "
        f"{fsdp['plain_fwd_bwd_s'] * 1e3:.2f} ms plain, {fsdp['fsdp_fwd_bwd_s'] * 1e3:.2f} ms FSDP2)")
    log(f"DTensor {dt['raw_per_kernel_s'] * 1e6:.1f} us per kernel of a tp-sharded op and micro-batch, "
        f"{dt['raw_update_s'] * 1e6:.1f} us per kernel and optimizer step ({dt['how']})")
    mm = bench_matmul("cpu", CPU_MATMUL_SIZES)
    hot = fit_host_matmul(mm, peak, fw["per_op_s"])
    log(f"matmul in a hot loop {hot['rate_flops_per_s'] / 1e9:.1f} GFLOP/s = {hot['efficiency']:.2f} of peak")
    inm = bench_model_matmul(model_name)
    fit = {**hot, "rate_flops_per_s": inm["rate_flops_per_s"], "efficiency": inm["rate_flops_per_s"] / peak,
           "half_flops": inm["half_flops"], "raw_half_flops": inm["raw_half_flops"], "in_model": inm,
           "hot_loop_rate_flops_per_s": hot["rate_flops_per_s"]}
    if fit["efficiency"] > 1.0:
        raise SimplanError(f"calibrate --local: measured matmul rate {fit['rate_flops_per_s'] / 1e9:.1f} GFLOP/s "
                           f"exceeds the theoretical peak {peak / 1e9:.1f} GFLOP/s ({peak_how}); the clock reading is "
                           "wrong")
    log(f"matmul in the model {fit['rate_flops_per_s'] / 1e9:.1f} GFLOP/s = {fit['efficiency']:.2f} of peak; "
        f"F_half {fit['raw_half_flops'] / 1e6:.2f} MFLOP")
    stream = bench_stream()
    elementwise = bench_elementwise("cpu", fw["per_op_s"], combine="total")
    log(f"stream add {stream / 1e9:.1f} GB/s; elementwise ops {elementwise / 1e9:.1f} GB/s")
    conc = bench_concurrent(model_name, world)
    sd = conc["slowdown"]
    log(f"with {world} ranks busy: {conc['per_op_s'] * 1e6:.1f} us per graph op (x{sd['per_op']:.2f}), optimizer "
        f"{conc['optimizer_s'] * 1e3:.2f} ms (x{sd['optimizer']:.2f}), matmul in the model "
        f"{conc['rate_flops_per_s'] / 1e9:.1f} GFLOP/s (x{sd['matmul']:.2f}), elementwise "
        f"{conc['elementwise_bytes_per_s'] / 1e9:.1f} GB/s (x{sd['elementwise']:.2f}); the model's "
        f"forward+backward x{sd['model']:.2f} (node.busy_slowdown)")
    coll = bench_collectives()
    ar = coll["allreduce"]
    log(f"gloo all-reduce: latency {ar['latency_s'] * 1e6:.1f} us per step, {ar['bytes_per_s'] / 1e9:.2f} GB/s")
    return {"device": "cpu", "device_name": "cpu", "host_cores": os.cpu_count(), "torch": str(torch.__version__),
            "threads_per_rank": 1, "dtype": "fp32", "model": model_name, "peak_flops_per_s": peak,
            "peak_how": peak_how, "framework": fw, "dtensor": dt, "fsdp": fsdp, "matmul": mm, "matmul_fit": fit,
            "stream_bytes_per_s": stream, "elementwise_bytes_per_s": elementwise, "concurrent": conc,
            "rates": f"per rank with {world} ranks busy (compute rates, per-op overhead and optimizer: the slowest "
                     f"of {world} single-threaded processes measuring at once, median over rounds, concurrent.*; "
                     "the figures outside "
                     "concurrent are one process alone; concurrent.slowdown = time busy / time alone, measured "
                     "in alternating rounds)",
            "collectives": coll,
            "p2p_latency_s": coll["p2p"]["latency_s"], "p2p_bytes_per_s": coll["p2p"]["bytes_per_s"],
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def measure_accelerator(base, model_name: str, device: str = "cuda", log=print, *, matmul_sizes=GPU_MATMUL_SIZES,
                        elementwise_shape=GPU_ELEMENTWISE_SHAPE, copy_bytes: int = GPU_COPY_BYTES,
                        dtype=None) -> dict:
    """Every GPU measurement. ``device``, sizes and ``dtype`` are parameters so the same
    code runs on a CPU in the tests (bf16 on a GPU by default)."""
    import torch

    torch.set_num_threads(1)
    dtype = dtype or torch.bfloat16
    peak_dtype = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    if peak_dtype not in base.peak_flops_per_s:
        raise SimplanError(f"calibrate --local: the base profile {base.name} lists no {peak_dtype} peak")
    name = torch.cuda.get_device_name(torch.cuda.current_device()) if device == "cuda" else device
    log(f"{name}: torch {torch.__version__}, base profile {base.name}")
    gap = bench_launch_gap(device)
    log(f"launch-to-launch gap {gap * 1e6:.2f} us (add_ on one element, no sync)")
    fw = bench_framework(model_name, device, dtype)
    log(f"framework overhead {fw['per_op_s'] * 1e6:.1f} us per graph op; optimizer {fw['optimizer_s'] * 1e3:.2f} ms")
    mm = bench_matmul(device, matmul_sizes, dtype)
    fit = fit_device_matmul(mm, base.peak(peak_dtype), gap)
    log(f"matmul {fit['rate_flops_per_s'] / 1e12:.2f} TFLOP/s = {fit['efficiency']:.3f} of the {peak_dtype} peak; "
        f"F_half {fit['raw_half_flops'] / 1e9:.3f} GFLOP (sizes {fit['sizes_used']})")
    copy = bench_copy(device, copy_bytes)
    elementwise = bench_elementwise(device, 0.0, elementwise_shape, dtype)
    log(f"copy {copy / 1e9:.0f} GB/s, elementwise ops {elementwise / 1e9:.0f} GB/s "
        f"(HBM {base.hbm_bytes_per_s / 1e9:.0f} GB/s in {base.name})")
    return {"device": device, "device_name": name, "torch": str(torch.__version__), "dtype": peak_dtype,
            "peak_dtype": peak_dtype, "model": model_name, "base": base.name, "launch_gap_s": gap, "framework": fw,
            "matmul": mm, "matmul_fit": fit, "copy_bytes_per_s": copy,
            "copy_fraction_of_hbm": copy / base.hbm_bytes_per_s, "elementwise_bytes_per_s": elementwise,
            "elementwise_shape": list(elementwise_shape),
            "not_measured": "collectives and DTensor dispatch (one GPU): the base profile's values are kept"}


def calibrate_local(out: str | Path, model_name: str | None = None, base: str | None = None, device: str = "cpu",
                    log=print, world: int = CONCURRENT_RANKS, allow_noisy: bool = False) -> dict:
    """Measure this host (``device="cpu"``) or its GPU 0 (``"cuda"``) and write a profile
    to ``out``; ``base`` supplies what no microbenchmark measures (default: cpu-host on a
    CPU, the shipped profile of the GPU's model on cuda). Returns the ``calibration``
    section written. ``world`` (CPU): ranks the compute rates are measured under.
    A measurement whose repeats scatter beyond MAX_SCATTER_CV is a SimplanError and
    nothing is written, unless ``allow_noisy`` (then a warning)."""
    import torch

    from simplan.hardware.load import dump_hardware, load_hardware

    if device not in ("cpu", "cuda"):
        raise SimplanError(f"--device: cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SimplanError(f"--device cuda: no CUDA GPU visible to torch {torch.__version__}")
    t0 = time.perf_counter()
    model_name = model_name or DEFAULT_MODEL[device]
    if base is None:
        base = DEFAULT_BASE["cpu"] if device == "cpu" else stock_gpu_profile()
        log(f"base profile: {base}")
    profile = load_hardware(base)
    if device == "cpu" and world < 1:
        raise SimplanError(f"calibrate --local: world (ranks busy while measuring) must be >= 1, got {world}")
    with collect_scatter() as scatter:
        if device == "cpu":
            measured = measure_host(model_name, log, world)
        else:
            measured = measure_accelerator(profile, model_name, device, log)
    worst = worst_scatter(scatter)
    if worst is not None and worst["cv"] > MAX_SCATTER_CV:
        if not allow_noisy:
            raise SimplanError(f"calibrate --local: {noisy_message(worst)}; no profile written")
        log(f"warning: {noisy_message(worst)}; writing it anyway (allowed)")
    calibrated = host_profile(profile, measured) if device == "cpu" else accelerator_profile(profile, measured)
    calibrated = replace(calibrated, calibration={**calibrated.calibration, "wall_s": time.perf_counter() - t0,
                                                 "worst_scatter": worst, "max_scatter_cv": MAX_SCATTER_CV})
    dump_hardware(calibrated, out)
    log(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return calibrated.calibration


if __name__ == "__main__":  # pragma: no cover
    calibrate_local(sys.argv[1] if len(sys.argv) > 1 else "hardware_profiles/local.yaml")
