"""``simplan calibrate --local``: microbenchmarks of this host, written as a hardware profile.

What is measured (one thread per rank, fp32, as the CPU executor runs):

* matmul: ``torch.mm`` of n x n matrices over sizes. The simulator's compute model is
  time = (F + F_half) / (peak * efficiency) + kernel_overhead (``simplan.cost.compute``),
  so a least-squares line t = a F + b gives efficiency = 1 / (a peak) and F_half =
  (b - kernel_overhead) / a. ``peak`` is the core's theoretical fp32 rate: clock
  (/proc/cpuinfo) x FLOP per cycle from the vector flags (2 FMA pipes x lanes x 2).
* memory bandwidth: ``torch.add`` out of place on 64 MiB tensors (STREAM's "add", McCalpin
  1995: 3 x size bytes moved) is ``hbm_gbyte_per_s``; ``memory_efficiency`` is what the
  executor's memory-bound ops (GeLU, LayerNorm, residual add) reach on activation-sized
  tensors, relative to that.
* per-op framework overhead: a transformer layer of the executor at negligible width
  (hidden 8, 4 tokens), forward and backward, divided by the kernels the simulator
  charges for that layer: the eager dispatch cost per graph op (``kernel_overhead_us``).
  The AdamW step and ``zero_grad`` of that small model per layer give ``step_overhead_ms``.
* collectives: gloo between 2 processes over loopback, each collective over message
  sizes. gloo does not run the textbook ring, so every collective keeps its own table
  (``calibration.collectives``) and its own fitted latency and bandwidth in the
  simulator's ring form t = steps x alpha + wire_bytes / B (``simplan.cost.collectives``);
  the profile's in-node fabric numbers are the all-reduce fit (data-parallel gradients).
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
from pathlib import Path

from simplan.errors import SimplanError

MATMUL_SIZES = (32, 64, 96, 128, 192, 256, 384, 512)
COLLECTIVE_BYTES = (256, 4096, 65536, 262144, 1048576, 4194304)
COLLECTIVES = ("allreduce", "allgather", "reducescatter", "p2p")
STREAM_BYTES = 64 * 2**20


def _timeit(fn, repeat: int, inner: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeat`` timings of ``inner`` calls each."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def _fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least squares y = a x + b."""
    import numpy as np

    a, b = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    return float(a), float(b)


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


def bench_matmul() -> list[dict]:
    import torch

    rows = []
    for n in MATMUL_SIZES:
        a, b = torch.randn(n, n), torch.randn(n, n)
        t = _timeit(lambda: torch.mm(a, b), repeat=7, inner=max(1, 2000000 // n**3 * 8))
        rows.append({"n": n, "flops": 2.0 * n**3, "time_s": t})
    return rows


def bench_stream() -> float:
    import torch

    n = STREAM_BYTES // 4
    x, y, z = torch.randn(n), torch.randn(n), torch.empty(n)
    t = _timeit(lambda: torch.add(x, y, out=z), repeat=7)
    return 3 * STREAM_BYTES / t


def bench_elementwise(overhead_s: float) -> float:
    """Bytes per second the executor's memory-bound ops reach on activation-sized tensors
    (a 4 x 32 x 256 GeLU input, a 4 x 32 x 64 LayerNorm and residual), after the per-op
    overhead: the fraction of the stream bandwidth is ``memory_efficiency``."""
    import torch
    import torch.nn.functional as F

    big = torch.randn(64, 256, 256)  # large enough that the op, not the dispatch, is timed
    ln = torch.nn.LayerNorm(256)
    cases = [(lambda: F.gelu(big, approximate="tanh"), 2 * big.numel() * 4),
             (lambda: ln(big), 2 * big.numel() * 4),
             (lambda: big + big, 3 * big.numel() * 4)]
    rates = []
    with torch.no_grad():
        for fn, nbytes in cases:
            t = _timeit(fn, repeat=7) - overhead_s
            rates.append(nbytes / t)
    return statistics.median(rates)


def bench_framework(model_name: str) -> tuple[float, float, str]:
    """Per-graph-op eager overhead and per-layer optimizer overhead (seconds)."""
    import torch

    from simplan.execute.models import build_model, loss_fn
    from simplan.model import build_graph, load_model

    base = load_model(model_name)
    spec = load_model({"preset": model_name, "hidden": 8, "heads": 2, "kv_heads": min(2, base.kv_heads),
                       "ffn_hidden": 32, "seq_len": 4, "vocab": 8})
    model = build_model(spec, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, spec.vocab, (1, spec.seq_len + 1))

    def fwd_bwd():
        loss_fn(model(x[:, :-1]), x[:, 1:]).backward()

    def step():
        opt.step()
        opt.zero_grad(set_to_none=False)

    fwd_bwd()
    t_model = _timeit(fwd_bwd, repeat=15, inner=5)
    t_opt = _timeit(step, repeat=15, inner=5)
    graph = build_graph(spec)
    kernels = sum(1 + max(1, round(op.bwd_factor)) for layer in graph.order for op in layer.ops)
    per_op = t_model / kernels
    units = spec.layers + 2
    how = (f"{model_name} structure at hidden 8, 4 tokens: forward+backward {t_model * 1e3:.2f} ms over the "
           f"{kernels} kernels the simulator charges for it")
    return per_op, t_opt / units, how


# --------------------------------------------------------------------------- collectives
def _coll_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    table: dict[str, list[dict]] = {k: [] for k in COLLECTIVES}
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
            for i in range(12):
                dist.barrier()
                t0 = time.perf_counter()
                fn()
                if name == "p2p":  # one-way time: the receiver's ack closes the measurement
                    ack = torch.zeros(1)
                    dist.recv(ack, 1) if rank == 0 else dist.send(ack, 0)
                samples.append(time.perf_counter() - t0)
            t = statistics.median(samples[2:])
            table[name].append({"bytes": size, "time_s": t})
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
        fitted[name] = {"ranks": world, "sizes_bytes": [r["bytes"] for r in rows],
                        "times_s": [r["time_s"] for r in rows],
                        "latency_s": max(b, 0.0) / steps, "bytes_per_s": 1.0 / a if a > 0 else float("inf")}
    return fitted


# --------------------------------------------------------------------------- the profile
def calibrate_local(out: str | Path, model_name: str = "tiny-gpt", base: str = "cpu-host", log=print) -> dict:
    """Measure this host and write a profile to ``out`` (``base`` supplies the fields no
    microbenchmark measures: network, topology). Returns the measurements."""
    from dataclasses import replace

    import torch

    from simplan.hardware.load import dump_hardware, load_hardware

    torch.set_num_threads(1)
    profile = load_hardware(base)
    peak, peak_how = cpu_peak_flops()
    log(f"peak fp32 {peak / 1e9:.1f} GFLOP/s ({peak_how})")
    per_op, opt_per_unit, how = bench_framework(model_name)
    log(f"framework overhead {per_op * 1e6:.1f} us per graph op; optimizer {opt_per_unit * 1e6:.1f} us per unit")
    mm = bench_matmul()
    a, b = _fit_line([r["flops"] for r in mm], [r["time_s"] for r in mm])
    rate = 1.0 / a
    efficiency = rate / peak
    if efficiency > 1.0:
        raise SimplanError(f"calibrate --local: measured matmul rate {rate / 1e9:.1f} GFLOP/s exceeds the "
                           f"theoretical peak {peak / 1e9:.1f} GFLOP/s ({peak_how}); the clock reading is wrong")
    half = max(0.0, (b - per_op) / a)
    log(f"matmul {rate / 1e9:.1f} GFLOP/s asymptotic = {efficiency:.2f} of peak; F_half {half / 1e6:.2f} MFLOP")
    stream = bench_stream()
    elementwise = bench_elementwise(per_op)
    mem_eff = min(1.0, elementwise / stream)
    log(f"stream add {stream / 1e9:.1f} GB/s; elementwise ops {elementwise / 1e9:.1f} GB/s ({mem_eff:.2f})")
    coll = bench_collectives()
    ar = coll["allreduce"]
    log(f"gloo all-reduce: latency {ar['latency_s'] * 1e6:.1f} us per step, {ar['bytes_per_s'] / 1e9:.2f} GB/s")
    p2p = coll["p2p"]
    sources = dict(profile.sources)
    stamp = f"simplan calibrate --local, {time.strftime('%Y-%m-%d')}"
    sources.update({
        "gpu.peak_tflops": f"{stamp}: one core, {peak_how}",
        "gpu.hbm_gbyte_per_s": f"{stamp}: torch.add on 64 MiB fp32 tensors, 3 x size bytes (STREAM add)",
        "gpu.matmul_efficiency": f"{stamp}: least-squares line through torch.mm times, n = "
                                 f"{MATMUL_SIZES[0]}..{MATMUL_SIZES[-1]}, asymptotic rate / peak",
        "gpu.matmul_half_gflop": f"{stamp}: intercept of the torch.mm line less the per-op overhead, times the rate",
        "gpu.memory_efficiency": f"{stamp}: GeLU, LayerNorm and add on 16 MiB tensors / stream bandwidth",
        "gpu.kernel_overhead_us": f"{stamp}: {how}",
        "node.intra_gbyte_per_s": f"{stamp}: gloo all-reduce, 2 processes, fit t = 2(n-1) alpha + wire/B",
        "node.intra_latency_us": f"{stamp}: gloo all-reduce fit (per ring step)",
        "node.intra_efficiency": f"{stamp}: 1, the fitted bandwidth is already what gloo reaches",
        "software.step_overhead_ms": f"{stamp}: AdamW step + zero_grad of the {model_name} structure at hidden 8, "
                                     "per unit (layers + embedding + head), times the preset's units",
    })
    units = load_hardware_units(model_name)
    calibrated = replace(
        profile,
        name="local",
        description=f"This host, measured by `simplan calibrate --local` ({os.cpu_count()} cores; one thread per "
                    "rank, gloo over loopback)",
        peak_flops_per_s={"fp32": peak},
        hbm_bytes_per_s=stream,
        matmul_efficiency=efficiency,
        matmul_half_flops=half,
        memory_efficiency=mem_eff,
        kernel_overhead_s=per_op,
        intra_bytes_per_s=ar["bytes_per_s"],
        intra_latency_s=ar["latency_s"],
        intra_efficiency=1.0,
        step_overhead_s=opt_per_unit * units,
        sources=sources,
        calibration={"kind": "local microbenchmarks", "host_cores": os.cpu_count(), "torch": str(torch.__version__),
                     "threads_per_rank": 1, "matmul": mm, "stream_bytes_per_s": stream,
                     "elementwise_bytes_per_s": elementwise, "collectives": coll,
                     "p2p_latency_s": p2p["latency_s"], "p2p_bytes_per_s": p2p["bytes_per_s"],
                     "framework_model": model_name},
    )
    dump_hardware(calibrated, out)
    log(f"wrote {out}")
    return calibrated.calibration


def load_hardware_units(model_name: str) -> int:
    from simplan.model import load_model

    return load_model(model_name).layers + 2


if __name__ == "__main__":  # pragma: no cover
    calibrate_local(sys.argv[1] if len(sys.argv) > 1 else "hardware_profiles/local.yaml")
