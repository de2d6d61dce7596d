"""``simplan calibrate --local``: the CPU and GPU code paths (the GPU path run on this CPU with
small sizes), the fits, the optional DTensor field of a profile and what the simulator charges
for it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

torch = pytest.importorskip("torch")

from simplan.cli import main  # noqa: E402
from simplan.cost.compute import layer_time  # noqa: E402
from simplan.errors import SimplanError  # noqa: E402
from simplan.execute import calibrate_local as cal  # noqa: E402
from simplan.hardware.load import PROFILE_DIR, dump_hardware, load_hardware  # noqa: E402
from simplan.model import build_graph, load_model  # noqa: E402
from simplan.plan import Plan  # noqa: E402

EXACT = 1e-9


# --- fits on synthetic times: the formulas, no clock -----------------------------------------

def test_device_fit_recovers_the_rate_and_half_size_of_the_compute_model():
    rate, half, gap = 700e12, 3.7e9, 4e-6  # H100-like: F_half of the shipped h100 profile
    rows = [{"n": n, "flops": 2.0 * n**3, "time_s": (2.0 * n**3 + half) / rate} for n in (2048, 4096, 8192)]
    rows.insert(0, {"n": 256, "flops": 2.0 * 256**3, "time_s": gap})  # launch-bound: left out of the fit
    fit = cal.fit_device_matmul(rows, peak=989.5e12, launch_gap_s=gap)
    assert fit["sizes_used"] == [2048, 4096, 8192]
    assert fit["rate_flops_per_s"] == pytest.approx(rate, rel=1e-6)
    assert fit["half_flops"] == pytest.approx(half, rel=1e-6)
    assert fit["efficiency"] == pytest.approx(rate / 989.5e12, rel=1e-6)


def test_device_fit_needs_two_device_bound_sizes():
    rows = [{"n": n, "flops": 2.0 * n**3, "time_s": 1e-6} for n in (64, 128, 256)]
    with pytest.raises(SimplanError, match="launch gaps"):
        cal.fit_device_matmul(rows, peak=1e15, launch_gap_s=1e-6)


def test_host_fit_takes_the_per_op_overhead_out_of_the_intercept():
    rate, half, per_op = 80e9, 2e5, 30e-6
    rows = [{"n": n, "flops": 2.0 * n**3, "time_s": (2.0 * n**3 + half) / rate + per_op} for n in (64, 128, 512)]
    fit = cal.fit_host_matmul(rows, peak=160e9, per_op_s=per_op)
    assert fit["efficiency"] == pytest.approx(0.5, rel=1e-6)
    assert fit["half_flops"] == pytest.approx(half, rel=1e-4)


@pytest.mark.parametrize("name, profile", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm-80gb"), ("NVIDIA H200", "h200-sxm-141gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"), ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
    ("NVIDIA B200", "b200"), ("Tesla V100-SXM2-32GB", "v100-sxm-32gb"), ("AMD Instinct MI300X", "mi300x")])
def test_gpu_name_picks_its_shipped_profile(name, profile):
    assert cal.gpu_profile_name(name) == profile
    assert (PROFILE_DIR / f"{profile}.yaml").exists()


def test_unknown_gpu_asks_for_a_base():
    with pytest.raises(SimplanError, match="--base"):
        cal.gpu_profile_name("NVIDIA GeForce GT 710")


# --- the GPU path, run on this CPU ------------------------------------------------------------

@pytest.fixture(scope="module")
def accelerator_measurements():
    base = load_hardware("h100-sxm-80gb")
    m = cal.measure_accelerator(base, "tiny-gpt", device="cpu", log=lambda _: None, matmul_sizes=(128, 256, 384),
                                elementwise_shape=(128, 1024), copy_bytes=8 * 2**20, dtype=torch.float32)
    return base, m


def test_gpu_path_writes_a_profile_that_keeps_the_datasheet_and_records_the_measurements(accelerator_measurements,
                                                                                       tmp_path):
    base, m = accelerator_measurements
    assert m["launch_gap_s"] > 0 and m["copy_bytes_per_s"] > 0 and m["peak_dtype"] == "fp32"
    path = tmp_path / "gpu-local.yaml"
    dump_hardware(cal.accelerator_profile(base, m), path)
    p = load_hardware(str(path))
    assert p.name == "h100-sxm-80gb-local"
    assert p.peak_flops_per_s == base.peak_flops_per_s and p.hbm_bytes_per_s == base.hbm_bytes_per_s
    assert (p.fabric, p.intra_bytes_per_s, p.dtensor_op_overhead_s) == (base.fabric, base.intra_bytes_per_s, 0.0)
    assert p.matmul_efficiency == pytest.approx(m["matmul_fit"]["rate_flops_per_s"] / 67e12, rel=EXACT)
    assert p.memory_efficiency == pytest.approx(m["elementwise_bytes_per_s"] / 3350e9, rel=EXACT)
    assert p.kernel_overhead_s == pytest.approx(m["framework"]["per_op_s"], rel=EXACT)
    assert p.step_overhead_s == pytest.approx(m["framework"]["optimizer_s"], rel=EXACT)
    for key in ("gpu.matmul_efficiency", "gpu.memory_efficiency", "gpu.kernel_overhead_us",
                "software.step_overhead_ms"):
        assert "calibrate --local" in p.sources[key]
    assert p.sources["node.intra_gbyte_per_s"] == base.sources["node.intra_gbyte_per_s"]
    assert p.calibration["device"] == "cpu" and len(p.calibration["matmul"]) == 3
    yaml.safe_load(path.read_text())  # plain YAML: no Python objects in the calibration section


def test_gpu_path_refuses_a_base_slower_than_the_device(accelerator_measurements):
    base, m = accelerator_measurements
    slow = replace(base, hbm_bytes_per_s=m["elementwise_bytes_per_s"] / 2)
    with pytest.raises(SimplanError, match="memory_efficiency = 2.000"):
        cal.accelerator_profile(slow, m)


def test_gpu_path_runs_bf16_as_on_a_gpu():
    base = load_hardware("h100-sxm-80gb")
    m = cal.measure_accelerator(base, "tiny-gpt", device="cpu", log=lambda _: None, matmul_sizes=(128, 256),
                                elementwise_shape=(64, 256), copy_bytes=2**20)
    assert m["peak_dtype"] == "bf16" and m["dtype"] == "bf16"


# --- DTensor dispatch: measured, stored, charged ----------------------------------------------

def test_dtensor_dispatch_costs_time_per_sharded_kernel():
    d = cal.bench_dtensor("tiny-gpt", rounds=2)
    # tiny-gpt: 4 layers x (qkv, core, proj, fc1, act, fc2) + embedding + head are tp-sharded
    spec = cal._small_spec("tiny-gpt")
    assert d["sharded_kernels"] == sum(1 + max(1, round(op.bwd_factor)) for layer in build_graph(spec).order
                                       for op in layer.ops if op.sharding == "tp")
    # DTensor's host work on a 2-rank mesh (redistributions included) costs time in both parts of a step
    assert d["dtensor_fwd_bwd_ms"] > d["plain_fwd_bwd_ms"] and d["per_kernel_s"] > 0
    assert d["dtensor_update_ms"] > d["plain_update_ms"] and d["update_s"] > 0
    assert not torch.distributed.is_initialized()  # its fake process group is gone


def test_fsdp_host_work_is_measured_per_unit_gather():
    f = cal.bench_fsdp("tiny-gpt", rounds=2)
    spec = cal._small_spec("tiny-gpt")
    assert f["gathers"] == 2 * (spec.layers + 2)  # embedding, layers, head; forward and backward
    assert f["fsdp_fwd_bwd_s"] > f["plain_fwd_bwd_s"] and f["per_gather_s"] > 0


def _with_dtensor(tmp_path, value, source=True):
    data = yaml.safe_load((PROFILE_DIR / "cpu-host.yaml").read_text())
    data["software"]["dtensor_op_overhead_us"] = value
    if source:
        data["sources"]["software.dtensor_op_overhead_us"] = "test"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_dtensor_overhead_is_optional_in_a_profile_and_round_trips(tmp_path):
    assert load_hardware("cpu-host").dtensor_op_overhead_s == 0.0
    p = load_hardware(_with_dtensor(tmp_path, 250))
    assert p.dtensor_op_overhead_s == pytest.approx(250e-6, rel=EXACT)
    dump_hardware(p, tmp_path / "q.yaml")
    assert load_hardware(str(tmp_path / "q.yaml")).dtensor_op_overhead_s == pytest.approx(250e-6, rel=EXACT)
    dump_hardware(load_hardware("cpu-host"), tmp_path / "r.yaml")  # left out when 0 and unsourced
    assert "dtensor_op_overhead_us" not in (tmp_path / "r.yaml").read_text()


@pytest.mark.parametrize("value, source, message", [
    (-1, True, "software.dtensor_op_overhead_us: must be >= 0, got -1"),
    (10, False, r"sources: missing key\(s\) software.dtensor_op_overhead_us"),
    ("fast", True, "software.dtensor_op_overhead_us: expected a number"),
])
def test_bad_dtensor_overhead_is_a_user_error(tmp_path, value, source, message):
    with pytest.raises(SimplanError, match=message):
        load_hardware(_with_dtensor(tmp_path, value, source))


@pytest.mark.parametrize("fabric", ["host", "nvswitch"])
def test_dtensor_overhead_is_charged_per_kernel_of_the_ops_tensor_parallelism_shards(fabric):
    spec = load_model("tiny-gpt")
    hw0 = replace(load_hardware("cpu-host"), fabric=fabric, kernel_overhead_s=1.0)  # launch-bound on a GPU too
    d = 0.25
    hw = replace(hw0, dtensor_op_overhead_s=d)
    layer = next(layer for layer in build_graph(spec).order if layer.name == "layer0.mlp")
    kernels = {s: sum(1 + max(1, round(op.bwd_factor)) for op in layer.ops if op.sharding == s) for s in ("tp", "sp")}
    base = dict(micro_batch=1, global_batch=1, precision="fp32")
    for plan, charged in [(Plan(**base), 0), (Plan(tp=2, **base), kernels["tp"]),
                          (Plan(tp=2, sequence_parallel=True, **base), kernels["tp"] + kernels["sp"])]:
        t0, t = layer_time(layer, plan, hw0), layer_time(layer, plan, hw)
        assert t.fwd_s + t.bwd_s - t0.fwd_s - t0.bwd_s == pytest.approx(d * charged, rel=1e-9)


# --- the command ---------------------------------------------------------------------------------

def test_cuda_without_a_gpu_is_a_user_error(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    code = main(["calibrate", "--local", "--device", "cuda", "--out", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --device cuda: no CUDA GPU") and err.count("\n") == 1


def test_unknown_device_is_a_user_error(capsys, tmp_path):
    code = main(["calibrate", "--local", "--device", "tpu", "--out", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "--device: cpu or cuda, got 'tpu'" in err


def test_cpu_calibration_writes_a_profile_the_simulator_loads(tmp_path):
    out = tmp_path / "local.yaml"
    # the profile's content is tested here, not the host's quiet: a shared 2-core machine's
    # scatter is allowed (the refusal has its own tests, with a fake clock)
    try:
        calibration = cal.calibrate_local(out, log=lambda _: None, allow_noisy=True)
    except SimplanError as e:
        # a shared 2-core machine can be too noisy for one collective's line fit (the
        # calibration then refuses, as it should); measure once more before failing
        if "the host is too busy to measure" not in str(e):
            raise
        calibration = cal.calibrate_local(out, log=lambda _: None, allow_noisy=True)
    assert calibration["worst_scatter"]["repeats"] > 1 and calibration["max_scatter_cv"] == cal.MAX_SCATTER_CV
    p = load_hardware(str(out))
    assert p.name == "local" and p.fabric == "host" and set(p.peak_flops_per_s) == {"fp32"}
    assert p.dtensor_op_overhead_s > 0 and "fake 2-rank process group" in p.sources["software.dtensor_op_overhead_us"]
    assert p.dtensor_update_overhead_s == pytest.approx(calibration["dtensor"]["update_s"], rel=1e-9)
    assert p.dtensor_update_overhead_s > 0
    # a CPU host's cores slow each other down; GPU profiles leave it at 1
    assert p.busy_slowdown >= 1
    assert p.busy_slowdown == pytest.approx(max(1.0, calibration["concurrent"]["slowdown"]["model"]), rel=1e-9)
    assert 0 < p.matmul_efficiency <= 1 and 0 < p.memory_efficiency <= 1
    assert set(calibration["collectives"]) == set(cal.COLLECTIVES)
    # all-gather and reduce-scatter keep their own fits (gloo's are not the all-reduce's ring)
    for kind in ("allgather", "reducescatter"):
        fit = calibration["collectives"][kind]
        assert p.measured_collective(kind) == pytest.approx((fit["latency_s"], fit["bytes_per_s"]), rel=1e-9)
        assert len(fit["times_s"]) == len(fit["median_times_s"]) == len(cal.COLLECTIVE_BYTES)
    assert p.fsdp_gather_overhead_s == pytest.approx(calibration["fsdp"]["per_gather_s"], rel=1e-9)
    assert "one-rank mesh" in p.sources["software.fsdp_gather_overhead_us"]
    assert calibration["device"] == "cpu" and calibration["wall_s"] > 0


def test_ranks_measuring_at_once_are_charged_at_the_slowest_ones_pace():
    fast = {"per_op_s": 1e-5, "optimizer_s": 2e-3, "rate_flops_per_s": 7e10, "raw_half_flops": 1e6,
            "elementwise_bytes_per_s": 1.1e10, "model_fwd_bwd_s": 0.3}
    slow = {"per_op_s": 2e-5, "optimizer_s": 1e-3, "rate_flops_per_s": 5e10, "raw_half_flops": 3e5,
            "elementwise_bytes_per_s": 1.2e10, "model_fwd_bwd_s": 0.2}
    assert cal._slowest([fast, slow]) == {"per_op_s": 2e-5, "optimizer_s": 2e-3, "rate_flops_per_s": 5e10,
                                          "raw_half_flops": 3e5, "elementwise_bytes_per_s": 1.1e10,
                                          "model_fwd_bwd_s": 0.3}


# --- torch.profiler's C-level noise, and a busy host (issue 15) ---------------------------------

def test_the_in_model_matmul_measurement_prints_no_profiler_lines(capfd):
    # kineto writes "USDT: ... profiler_start / profiler_stop" to fd 2 at every profile()
    cal.bench_model_matmul("tiny-gpt", hiddens=(64,), iters=1)
    out, err = capfd.readouterr()
    assert "USDT" not in out + err and "profiler_st" not in out + err


def test_quiet_c_output_hides_file_descriptor_writes_and_keeps_python_output(capfd):
    import os
    import sys

    with cal.quiet_c_output():
        os.write(1, b"C to stdout\n")
        os.write(2, b"C to stderr\n")
        print("python to stderr", file=sys.stderr)
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert "C to" not in out + err
    assert "python to stderr" in err and "after" in err


def _scattering_clock(monkeypatch, durations):
    """A fake _timeit clock: each timing takes the next of ``durations`` seconds."""
    ticks = []
    t = 0.0
    for d in durations:
        ticks += [t, t + d]
        t += d + 1.0
    it = iter(ticks)
    monkeypatch.setattr(cal, "_clock", lambda: next(it))


def test_timeit_keeps_the_scatter_of_its_repeats(monkeypatch):
    _scattering_clock(monkeypatch, [1.0, 1.0, 1.0, 2.0, 1.0])
    with cal.collect_scatter() as scatter:
        assert cal._timeit(lambda: None, repeat=5, what="matmul n=512") == 1.0  # the median
    (s,) = scatter
    assert (s["what"], s["repeats"], s["max_over_min"]) == ("matmul n=512", 5, 2.0)
    assert s["cv"] == pytest.approx(0.4472 / 1.2, rel=1e-3)  # stdev / mean
    assert cal._scatter is None  # nothing is kept outside collect_scatter


def _fake_host(monkeypatch, durations):
    """calibrate_local's CPU path with one measurement timed by a fake clock."""
    def measure_host(model_name, log, world):
        _scattering_clock(monkeypatch, durations)
        cal._timeit(lambda: None, repeat=len(durations), what="matmul n=512")
        return {}

    monkeypatch.setattr(cal, "measure_host", measure_host)
    monkeypatch.setattr(cal, "host_profile", lambda base, m: replace(base, name="local"))


def test_a_busy_host_is_refused_and_no_profile_is_written(monkeypatch, tmp_path):
    _fake_host(monkeypatch, [1.0, 1.5, 1.0, 2.0, 1.1])
    out = tmp_path / "local.yaml"
    with pytest.raises(SimplanError, match=r"matmul n=512: 5 repeats scatter 3\d% \(cv; max/min 2.00\), above 15%: "
                                           "the host is busy; rerun when idle or pass --allow-noisy"):
        cal.calibrate_local(out, log=lambda _: None)
    assert not out.exists()


def test_the_command_exits_2_with_one_line_on_a_busy_host(monkeypatch, tmp_path, capsys):
    _fake_host(monkeypatch, [1.0, 1.5, 1.0, 2.0, 1.1])
    out = tmp_path / "local.yaml"
    code = main(["calibrate", "--local", "--out", str(out)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # after the progress log
    assert code == 2 and len(errors) == 1 and "the host is busy" in errors[0] and "Traceback" not in err
    assert not out.exists()


def test_a_noisy_host_may_be_allowed_with_a_warning(monkeypatch, tmp_path):
    from simplan.execute.commands import calibrate_local_command

    _fake_host(monkeypatch, [1.0, 1.5, 1.0, 2.0, 1.1])
    out = tmp_path / "local.yaml"
    logged = []
    monkeypatch.setattr("simplan.execute.commands._log", logged.append)
    calibration = calibrate_local_command(out, allow_noisy=True)
    assert out.exists() and calibration["worst_scatter"]["what"] == "matmul n=512"
    assert any(line.startswith("warning: matmul n=512: 5 repeats scatter") for line in logged)


def test_a_quiet_host_writes_its_profile(monkeypatch, tmp_path):
    _fake_host(monkeypatch, [1.0, 1.02, 0.99, 1.01, 1.0])
    out = tmp_path / "local.yaml"
    calibration = cal.calibrate_local(out, log=lambda _: None)
    assert out.exists() and calibration["worst_scatter"]["cv"] < 0.02
