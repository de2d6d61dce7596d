"""Kernel-class microbenchmark for one CUDA GPU (H100/H200): the figures a compute cost model needs.

    python benchmarks/gpu_kernels.py [--device cuda] [--quick] [--json PATH] [--only gemm,attn]

Sections (names for --only): gemm (bf16/fp16 TFLOP/s by shape), fp8 (torch._scaled_mm e4m3 TFLOP/s, and the
bf16->fp8 cast in GB/s), attn (scaled_dot_product_attention forward, backward and fwd+bwd TFLOP/s on the flash
and cuDNN backends, plus one GQA case), memops (copy, add, RMSNorm, SiLU*mul, LayerNorm, softmax,
cross-entropy fwd+bwd, fused AdamW: GB/s for a stated byte count), launch (microseconds per tiny kernel),
reserve (mem_get_info against the caching allocator after the run). The same memory split is always taken
right after CUDA init + one matmul: total - free - reserved is the CUDA context and library overhead.

Conventions. Timing: 3 warm-up calls, then the median of N timed samples (torch.cuda.Event on CUDA,
time.perf_counter on CPU); one sample of a fast kernel batches several calls. GEMM FLOPs = 2*M*N*K.
Attention FLOPs follow FlashAttention-2 (Dao 2023, arXiv:2307.08691): forward 4*b*s^2*h*d (b batch,
s sequence, h query heads, d head_dim), halved when causal; backward 2.5x forward, so fwd+bwd 3.5x; backward
time = fwd+bwd time - forward time. Bandwidth: bytes_min counts each input read once and each output written
once (what one fused kernel must move); bytes_eager counts the traffic of the unfused eager ops as written
here. GB/s = bytes / median time, 1 GB = 1e9 B. A benchmark: it prints figures, it does not assert on them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
SECTIONS = ("gemm", "fp8", "attn", "memops", "launch", "reserve")
GIB = 1 << 30


class Bench:
    """Device, repetition count, and a wall-clock budget after which remaining cases are skipped."""

    def __init__(self, device: str, reps: int, budget_s: float, case_s: float):
        self.dev = torch.device(device)
        self.cuda = self.dev.type == "cuda"
        self.reps, self.case_s = reps, case_s
        self.deadline = time.perf_counter() + budget_s

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def free_cache(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def time(self, fn, warmup: int = 3) -> float:
        """Median seconds per call of fn; fast calls are batched so one sample lasts about 1 ms."""
        for _ in range(warmup):
            fn()
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        est = max(time.perf_counter() - t0, 1e-7)
        inner = max(1, min(100, int(1e-3 / est)))
        reps = max(3, min(self.reps, int(self.case_s / (est * inner))))
        if not self.cuda:
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                samples.append((time.perf_counter() - t0) / inner)
            return statistics.median(samples)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            start.record()
            for _ in range(inner):
                fn()
            end.record()
        self.sync()
        return statistics.median(s.elapsed_time(e) / 1e3 / inner for s, e in events)

    def case(self, fn) -> dict:
        """Run one measurement: its dict, or {'skipped': ...} (OOM, time budget) or {'failed': ...}."""
        if time.perf_counter() > self.deadline:
            return {"skipped": "time budget"}
        try:
            return fn()
        except OOM:
            result = {"skipped": "OOM"}
        except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not stop
            result = {"failed": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]}
        self.free_cache()
        return result


def show(title: str, rows: list[dict], cols: list[tuple[str, str, str]]) -> None:
    """Print rows as a table; cols are (key, header, format spec); skips and failures go to the note."""
    print(f"\n== {title}")
    head = [h for _, h, _ in cols] + ["note"]
    body = []
    for r in rows:
        cells = ["-" if r.get(k) is None else format(r[k], f) for k, _, f in cols]
        note = f"skipped ({r['skipped']})" if "skipped" in r else f"failed: {r['failed']}" if "failed" in r else ""
        body.append(cells + [note or r.get("note", "")])
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    left = [f in ("s", "") for _, _, f in cols]  # text left, numbers right
    for line in [head] + body:
        cells = [c.ljust(w) if lj else c.rjust(w) for c, w, lj in zip(line, widths, left)]
        print("  " + "  ".join(cells + [line[-1]]).rstrip())


def nvidia_smi() -> str | None:
    query = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                             capture_output=True, text=True, timeout=15, check=True).stdout.strip()
        return out or None
    except Exception:  # noqa: BLE001 - optional
        return None


def mem_split(b: Bench) -> dict:
    free, total = torch.cuda.mem_get_info(b.dev)
    reserved, allocated = torch.cuda.memory_reserved(b.dev), torch.cuda.memory_allocated(b.dev)
    return {"free": free, "total": total, "reserved": reserved, "allocated": allocated,
            "non_pytorch": total - free - reserved}


def print_mem(label: str, m: dict) -> None:
    print(f"  {label}: total {m['total'] / GIB:.2f} GiB, free {m['free'] / GIB:.2f} GiB, reserved "
          f"{m['reserved'] / GIB:.3f} GiB, allocated {m['allocated'] / GIB:.3f} GiB, "
          f"non-PyTorch {m['non_pytorch'] / 2**20:.0f} MiB (total - free - reserved)")


def info(b: Bench) -> dict:
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(b.dev)}
    if b.cuda:
        p = torch.cuda.get_device_properties(b.dev)
        out.update(name=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   cudnn=torch.backends.cudnn.version())
        x = torch.randn(1024, 1024, device=b.dev, dtype=torch.bfloat16)
        (x @ x).sum().item()  # CUDA init + cuBLAS handle/workspace
        out["memory_after_init"] = mem_split(b)
        out["nvidia_smi_start"] = nvidia_smi()
    else:
        out.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    print(f"== {out['name']} ({out['device']}), torch {out['torch']}, CUDA {out['cuda']}, "
          f"cuDNN {out.get('cudnn')}, SMs {out.get('sms', '-')}, CPU threads {out.get('threads', '-')}")
    if out.get("nvidia_smi_start"):
        print("  " + out["nvidia_smi_start"].replace("\n", "\n  "))
    if "memory_after_init" in out:
        print_mem("after CUDA init + one matmul", out["memory_after_init"])
    return out


def gemm_shapes(quick: bool) -> list[tuple[int, int, int]]:
    """(M, K, N): tokens x hidden x out for the transformer-like shapes."""
    if quick:
        return [(128, 128, 128), (256, 256, 256), (256, 256, 768), (128, 256, 256)]
    square = [(n, n, n) for n in (512, 1024, 2048, 4096, 8192, 16384)]
    kn = ((4096, 4096), (4096, 12288), (4096, 14336), (14336, 4096), (8192, 8192), (8192, 28672), (12288, 49152))
    return square + [(8192, k, n) for k, n in kn] + [(1024, 4096, 4096), (2048, 4096, 4096)]


def bench_gemm(b: Bench, quick: bool) -> list[dict]:
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        for m, k, n in gemm_shapes(quick):
            def run():
                x = torch.randn(m, k, device=b.dev, dtype=dtype)
                w = torch.randn(k, n, device=b.dev, dtype=dtype)
                out = torch.empty(m, n, device=b.dev, dtype=dtype)
                t = b.time(lambda: torch.mm(x, w, out=out))
                return {"ms": t * 1e3, "tflops": 2 * m * n * k / t / 1e12}
            rows.append({"dtype": str(dtype).split(".")[-1], "M": m, "K": k, "N": n, **b.case(run)})
    show("GEMM torch.mm (TFLOP/s = 2MNK / time)", rows,
         [("dtype", "dtype", "s"), ("M", "M", "d"), ("K", "K", "d"), ("N", "N", "d"), ("ms", "ms", ".3f"),
          ("tflops", "TFLOP/s", ".1f")])
    return rows


def bench_fp8(b: Bench, quick: bool) -> dict:
    f8, out = getattr(torch, "float8_e4m3fn", None), {}
    one = torch.tensor(1.0, device=b.dev)  # float32 scalar scales

    def mm(a, bt, fast=False):
        return torch._scaled_mm(a, bt, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=fast)
    try:
        probe = torch.randn(32, 32, device=b.dev).to(f8)
        mm(probe, probe.t())
    except Exception as e:  # noqa: BLE001
        out["gemm"] = {"unsupported": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]}
        print(f"\n== fp8 GEMM: unsupported on {b.dev} ({out['gemm']['unsupported']})")
    if "gemm" not in out:
        square = [(n, n, n) for n in ((256, 512) if quick else (2048, 4096, 8192, 16384))]
        shapes = square + ([(256, 256, 768)] if quick else [(8192, 4096, 14336), (8192, 8192, 28672)])
        rows = []
        for m, k, n in shapes:
            def run():
                a = torch.randn(m, k, device=b.dev).to(f8)
                bt = torch.randn(n, k, device=b.dev).to(f8).t()  # column-major B
                t, tf = b.time(lambda: mm(a, bt)), b.time(lambda: mm(a, bt, True))
                return {"ms": t * 1e3, "tflops": 2 * m * n * k / t / 1e12, "tflops_fast": 2 * m * n * k / tf / 1e12}
            rows.append({"M": m, "K": k, "N": n, **b.case(run)})
        show("fp8 e4m3 GEMM torch._scaled_mm, bf16 out (TFLOP/s = 2MNK / time)", rows,
             [("M", "M", "d"), ("K", "K", "d"), ("N", "N", "d"), ("ms", "ms", ".3f"),
              ("tflops", "TFLOP/s", ".1f"), ("tflops_fast", "fast_accum TFLOP/s", ".1f")])
        out["gemm"] = rows
    side = 512 if quick else 8192

    def cast():
        x = torch.randn(side, side, device=b.dev, dtype=torch.bfloat16)
        t = b.time(lambda: x.to(f8))
        return {"ms": t * 1e3, "bytes": 3 * side * side, "gbps": 3 * side * side / t / 1e9}
    out["cast"] = {"shape": f"{side}x{side}", **(b.case(cast) if f8 else {"failed": "no float8_e4m3fn"})}
    show("bf16 -> fp8 e4m3 cast (bytes = 2 read + 1 written per element)", [out["cast"]],
         [("shape", "shape", "s"), ("ms", "ms", ".3f"), ("gbps", "GB/s", ".0f")])
    return out


def attn_time(b: Bench, q, k, v, causal: bool, backends, gqa: bool) -> tuple[float, float]:
    """(forward s, fwd+bwd s) under sdpa_kernel(backends); backends None = default dispatch."""
    from torch.nn.attention import sdpa_kernel
    kw = {"is_causal": causal, **({"enable_gqa": True} if gqa else {})}
    grad = torch.randn_like(q)

    def fwd():
        return F.scaled_dot_product_attention(q, k, v, **kw)
    ctx = sdpa_kernel(backends) if backends else contextlib.nullcontext()
    with ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return b.time(fwd), b.time(lambda: torch.autograd.grad(fwd(), (q, k, v), grad))


def attn_case(b: Bench, batch, heads, kv_heads, seq, hd, causal, backend) -> dict:
    from torch.nn.attention import SDPBackend

    def run():
        def t(h):
            return torch.randn(batch, h, seq, hd, device=b.dev, dtype=torch.bfloat16, requires_grad=True)
        q, k, v, note, gqa = t(heads), t(kv_heads), t(kv_heads), "", kv_heads != heads
        if gqa:
            try:
                F.scaled_dot_product_attention(q[:, :, :8], k[:, :, :8], v[:, :, :8], enable_gqa=True)
            except TypeError:  # torch without enable_gqa: expand k/v to the query heads
                rep = heads // kv_heads
                k, v = (x.detach().repeat_interleave(rep, 1).requires_grad_() for x in (k, v))
                gqa, note = False, "kv expanded"
        if backend == "cudnn":
            tf, tfb, used = *attn_time(b, q, k, v, causal, [SDPBackend.CUDNN_ATTENTION], gqa), "cudnn"
        else:
            try:
                tf, tfb, used = *attn_time(b, q, k, v, causal, [SDPBackend.FLASH_ATTENTION], gqa), "flash"
            except OOM:
                raise
            except RuntimeError:
                tf, tfb, used = *attn_time(b, q, k, v, causal, None, gqa), "default"
        flops = 4 * batch * seq * seq * heads * hd / (2 if causal else 1)
        return {"backend": used, "fwd_ms": tf * 1e3, "fwdbwd_ms": tfb * 1e3, "fwd_tflops": flops / tf / 1e12,
                "bwd_tflops": 2.5 * flops / (tfb - tf) / 1e12 if tfb > tf else None,
                "fwdbwd_tflops": 3.5 * flops / tfb / 1e12, "note": note}
    return {"seq": seq, "hd": hd, "heads": heads, "kv_heads": kv_heads, "batch": batch, "causal": causal,
            "backend": backend, **b.case(run)}


def bench_attn(b: Bench, quick: bool) -> list[dict]:
    tokens, seqs = (512, (128, 256)) if quick else (16384, (512, 1024, 2048, 4096, 8192, 16384))
    backends = ["flash"] + (["cudnn"] if b.cuda else [])
    if not b.cuda:
        print("\n  cuDNN attention: skipped (needs CUDA)")
    rows = []
    for hd in (64, 128):
        heads = 2048 // hd
        for seq in seqs:
            for causal in (False, True):
                for be in backends:
                    rows.append(attn_case(b, max(1, tokens // seq), heads, heads, seq, hd, causal, be))
    gqa_seq = 256 if quick else 8192
    for causal in (False, True):
        for be in backends:
            rows.append(attn_case(b, max(1, tokens // gqa_seq), 32, 8, gqa_seq, 128, causal, be))
    show("attention SDPA bf16 (FLOPs: FlashAttention-2 convention, fwd 4bs^2hd, /2 causal, bwd 2.5x fwd)", rows,
         [("seq", "seq", "d"), ("hd", "hd", "d"), ("heads", "h", "d"), ("kv_heads", "kv_h", "d"),
          ("batch", "b", "d"), ("causal", "causal", ""), ("backend", "backend", "s"), ("fwd_ms", "fwd ms", ".3f"),
          ("fwdbwd_ms", "f+b ms", ".3f"), ("fwd_tflops", "fwd TF/s", ".1f"), ("bwd_tflops", "bwd TF/s", ".1f"),
          ("fwdbwd_tflops", "f+b TF/s", ".1f")])
    return rows


def bench_memops(b: Bench, quick: bool) -> list[dict]:
    elems = (4 << 20) if quick else (512 << 20)  # bf16: 1 GiB per tensor
    if b.cuda:
        elems = min(elems, torch.cuda.mem_get_info(b.dev)[0] // (2 * 8))  # room for ~8 such tensors
    hidden = 8192
    tokens = max(1, elems // hidden)
    n = tokens * hidden
    ce_t, ce_v = (64, 32000) if quick else (8192, 128256)
    adam_n = (1 << 20) if quick else (256 << 20)

    adam_kind = []

    def t(*shape, dtype=torch.bfloat16, grad=False):
        return torch.randn(*shape, device=b.dev, dtype=dtype, requires_grad=grad)

    def make(op: str):
        """Allocate one op's inputs (inside its case, so they are freed after it); return the call to time."""
        if op == "cross_entropy f+b":
            logits, target = t(ce_t, ce_v, grad=True), torch.randint(0, ce_v, (ce_t,), device=b.dev)
            return lambda: torch.autograd.grad(F.cross_entropy(logits.float(), target), logits)
        if op == "adamw step fp32":
            params = [torch.nn.Parameter(t(adam_n // 8, dtype=torch.float32)) for _ in range(8)]
            for p in params:
                p.grad = torch.randn_like(p)
            try:
                opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
                opt.step()
                adam_kind.append("fused")
            except (RuntimeError, ValueError, TypeError):
                opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
                adam_kind.append("foreach")
            return opt.step
        x, w, bias = t(tokens, hidden), t(hidden), t(hidden)
        y = t(tokens, hidden) if op in ("copy", "add", "silu*mul") else None
        return {"copy": lambda: y.copy_(x), "add": lambda: x + y, "silu*mul": lambda: F.silu(x) * y,
                "rmsnorm": lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w,
                "layer_norm": lambda: F.layer_norm(x, (hidden,), w, bias),
                "softmax": lambda: torch.softmax(x, -1)}[op]

    # (name, elements, shape, bytes_min/elem, bytes_eager/elem, the eager count); min for cross-entropy:
    # logits read in fwd and again in bwd + grad written (2+2+2)
    rows_shape = [tokens, hidden]
    ops = [("copy", n, rows_shape, 4, 4, "read 2 + write 2"),
           ("add", n, rows_shape, 6, 6, "read 2x2 + write 2"),
           ("rmsnorm", n, rows_shape, 4, 14, "pow 4, mean 2, *rsqrt 4, *w 4"),
           ("silu*mul", n, rows_shape, 6, 10, "silu 4, mul 6"),
           ("layer_norm", n, rows_shape, 4, 4, "one kernel: read 2 + write 2"),
           ("softmax", n, rows_shape, 4, 4, "one kernel: read 2 + write 2"),
           ("cross_entropy f+b", ce_t * ce_v, [ce_t, ce_v], 6, 36,
            "upcast 6, log_softmax 8, zero-fill 4, lsm bwd 12, downcast 6"),
           ("adamw step fp32", adam_n, [adam_n], 28, 28, "read p,g,m,v 16 + write p,m,v 12")]
    rows = []
    for name, count, shape, bmin, beager, how in ops:
        def run():
            t_s = b.time(make(name))
            return {"ms": t_s * 1e3, "bytes_min": bmin * count, "bytes_eager": beager * count,
                    "gbps_min": bmin * count / t_s / 1e9, "gbps_eager": beager * count / t_s / 1e9}
        row = {"op": name, "shape": "x".join(map(str, shape)), **b.case(run), "count": how}
        if name.startswith("adamw") and adam_kind:
            row["op"] = f"{name} ({adam_kind[-1]})"
        rows.append(row)
    show("memory-bound ops (bf16 unless noted; GB/s = stated bytes / time)", rows,
         [("op", "op", "s"), ("shape", "shape", "s"), ("ms", "ms", ".3f"), ("gbps_min", "GB/s (min bytes)", ".0f"),
          ("gbps_eager", "GB/s (eager bytes)", ".0f"), ("count", "eager bytes per element", "s")])
    return rows


def bench_launch(b: Bench, quick: bool) -> list[dict]:
    n = 200 if quick else 2000
    x = torch.zeros(1, device=b.dev)
    a = torch.randn(64, 64, device=b.dev)
    rows = []
    for name, fn in (("x.add_(1), 1 element", lambda: x.add_(1)), ("a @ a, 64x64 fp32", lambda: a @ a)):
        walls, issues = [], []
        for _ in range(3):
            for _ in range(20):
                fn()
            b.sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            issues.append(time.perf_counter() - t0)
            b.sync()
            walls.append(time.perf_counter() - t0)
        rows.append({"op": name, "calls": n, "us_per_kernel": statistics.median(walls) / n * 1e6,
                     "us_issue": statistics.median(issues) / n * 1e6})
    show("launch overhead (back-to-back calls; wall includes the final synchronize)", rows,
         [("op", "op", "s"), ("calls", "calls", "d"), ("us_per_kernel", "us/kernel (wall)", ".2f"),
          ("us_issue", "us/call (host issue)", ".2f")])
    return rows


def bench_reserve(b: Bench, quick: bool) -> dict:
    if not b.cuda:
        print("\n== memory reserve: skipped (needs CUDA)")
        return {"skipped": "needs CUDA"}
    print("\n== memory reserve (mem_get_info against the caching allocator)")
    out = {"after_run": mem_split(b)}
    print_mem("after the run", out["after_run"])
    b.free_cache()
    out["after_empty_cache"] = mem_split(b)
    print_mem("after empty_cache", out["after_empty_cache"])
    out["nvidia_smi_end"] = nvidia_smi()
    if out["nvidia_smi_end"]:
        print("  " + out["nvidia_smi_end"].replace("\n", "\n  "))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (logic check)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, default=None, help="timed samples per case (default 20, quick 3)")
    parser.add_argument("--budget-s", type=float, default=140.0, help="skip remaining cases after this long")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if bad := [s for s in only if s not in SECTIONS]:
        parser.error(f"unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: CUDA is not available (use --device cpu)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    b = Bench(args.device, args.reps or (3 if args.quick else 20), args.budget_s, 0.05 if args.quick else 0.3)
    torch.manual_seed(0)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        result["info"] = info(b)
    except Exception as e:  # noqa: BLE001
        print(f"== info failed: {e}")
    funcs = {"gemm": bench_gemm, "fp8": bench_fp8, "attn": bench_attn, "memops": bench_memops,
             "launch": bench_launch, "reserve": bench_reserve}
    for name in SECTIONS:
        if name not in only:
            continue
        try:
            result[name] = funcs[name](b, args.quick)
        except Exception as e:  # noqa: BLE001 - one section failing leaves the rest running
            result[name] = {"failed": f"{type(e).__name__}: {e}"}
            print(f"\n== {name}: failed: {type(e).__name__}: {e}")
        if name != "reserve":
            b.free_cache()
    result["elapsed_s"] = time.perf_counter() - started
    print(f"\ndone in {result['elapsed_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
