"""Published runs (shared/data/published_runs.yaml) as scenarios: what is rebuilt, what is
skipped and why, the step time derived from each source's own metric, and bad files."""

from __future__ import annotations

import math

import pytest

from simplan.calibrate.published import (SOURCES, model_flops_megatron2021, model_flops_megatron_core,
                                         read_published, rebuild)
from simplan.calibrate.published_fit import band_quantiles, error_figures, gpu_of, usable_parameters
from simplan.calibrate.runs import shared_data_dir
from simplan.errors import SimplanError
from simplan.hardware.load import load_hardware
from simplan.scenario import load_scenario

FILE = shared_data_dir() / "published_runs.yaml"
needs_data = pytest.mark.skipif(not FILE.exists(), reason=f"published runs not found at {FILE}")


def record(**over) -> dict:
    """A minimal record in the file's schema (a Megatron-Core H100 row)."""
    r = {
        "id": "megatron2024-h100-weak-test",
        "source": {"ref": "test"},
        "model": {"name": "GPT test", "layers": 4, "hidden": 1024, "ffn_hidden": None, "heads": 8,
                  "kv_heads": None, "seq_len": 2048, "vocab": 51200},
        "hardware": {"gpu": "H100", "num_gpus": 16, "gpus_per_node": 8},
        "parallel": {"tp": 2, "pp": 1, "dp": 8, "cp": None},
        "batch": {"micro_batch": 2, "global_batch_seqs": 64},
        "settings": {"precision": "bf16", "activation_recompute": None},
        "measured": {"tflops_per_gpu": 400.0},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        r[section] = dict(r[section], **{field: value}) if field else value
    return r


def test_step_time_from_tflops_uses_the_sources_flop_count():
    run = rebuild(record())
    model = run.scenario["model"]
    flops = model_flops_megatron_core(model, 64)
    assert run.measured_step_s == pytest.approx(flops / (400e12 * 16), rel=1e-12)
    # every gap filled is said: ffn_hidden, recompute, the distributed optimizer, sp with tp
    text = " ".join(run.assumptions)
    for field in ("ffn_hidden", "recompute", "framework = megatron-core"):
        assert field in text
    load_scenario(run.scenario)  # the rebuilt scenario is valid


def test_megatron2021_flops_match_the_papers_training_days():
    # Narayanan et al. 2021, Table 2: GPT-3 175B on 1536 A100 at 141 TFLOP/s per GPU
    # trains 300B tokens in 23 days; Eq. 3's FLOP count turns one into the other (1%)
    model = {"seq_len": 2048, "layers": 96, "hidden": 12288, "vocab": 51200}
    step_s = model_flops_megatron2021(model, 1536) / (141e12 * 1536)
    days = 300e9 / (1536 * 2048) * step_s / 86400
    assert days == pytest.approx(23, rel=0.01)


def test_tokens_per_second_gives_the_step_time():
    run = rebuild(record(measured={"tokens_per_s_per_gpu": 1000.0}))
    assert run.measured_step_s == pytest.approx(64 * 2048 / (1000.0 * 16))


@pytest.mark.parametrize("over, reason", [
    ({"parallel": {"tp": None, "pp": None, "dp": None}}, "parallel.tp"),
    ({"parallel": {"tp": 2, "pp": 1, "dp": 2, "cp": 1}}, "!= GPUs 16"),
    ({"measured": {}}, "measured"),
    ({"hardware__gpu": "TPUv5"}, "hardware.gpu"),
    ({"settings__precision": "Float8 rowwise"}, "rowwise"),
    ({"parallel__async_tp": True}, "async_tp"),
    ({"model__layers": None}, "architecture"),
])
def test_records_that_cannot_be_rebuilt_say_why(over, reason):
    with pytest.raises(SimplanError, match=reason.replace(".", r"\.").replace("!", "!")):
        rebuild(record(**over))


def test_a_file_with_no_usable_record_is_one_error(tmp_path):
    bad = tmp_path / "runs.yaml"
    bad.write_text("- id: x\n  hardware: {gpu: H100, num_gpus: 8}\n")
    with pytest.raises(SimplanError, match="no record could be rebuilt"):
        read_published(bad)
    bad.write_text("{a: 1}\n")
    with pytest.raises(SimplanError, match="expected a list"):
        read_published(bad)


def test_band_quantiles_and_error_figures():
    import numpy as np

    e = np.linspace(-0.2, 0.2, 11)
    q = band_quantiles(e)
    assert q["p10"] == pytest.approx(-0.16) and q["p90"] == pytest.approx(0.16) and q["runs"] == 11
    f = error_figures(np.array([-0.1, 0.3]))
    assert f["mape"] == pytest.approx(0.2) and f["mean_signed"] == pytest.approx(0.1) and f["max_abs"] == 0.3
    assert gpu_of(load_hardware("h100-sxm-80gb")) == "H100"


@needs_data
def test_the_shipped_file_rebuilds_every_source():
    runs, skipped = read_published(FILE)
    assert {r.source for r in runs} == set(SOURCES.values())
    assert len(runs) + len(skipped) == 136
    for s in skipped:
        assert s.reason  # each skipped record has its reason
    for r in runs:
        assert r.oom or (math.isfinite(r.measured_step_s) and r.measured_step_s > 0)
        load_scenario(r.scenario, where=r.id)
    # the fp8 parameter is fitted only where an fp8 run is among the fitted rows
    h100 = [r for r in runs if r.gpu == "H100" and not r.oom]
    bf16 = [i for i, r in enumerate(h100) if r.scenario["plan"]["precision"] != "fp8"]
    assert "fp8_matmul_efficiency" not in usable_parameters(h100, bf16, ("matmul_efficiency", "fp8_matmul_efficiency"))


def test_calibrate_on_a_file_without_usable_runs_is_one_line_exit_2(tmp_path):
    import contextlib
    import io

    from simplan.cli import main

    bad = tmp_path / "runs.yaml"
    bad.write_text("- id: x\n  hardware: {gpu: H100, num_gpus: 8}\n")
    out = tmp_path / "fitted.yaml"
    for hardware in ("h100-sxm-80gb-stock", "b200"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["calibrate", "--from-runs", str(bad), "--hardware", hardware, "--out", str(out)])
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
        assert not out.exists()


def test_calibration_recovers_a_known_matmul_rate_and_scores_it_leave_one_source_out(tmp_path):
    """Runs whose 'measured' times were simulated with matmul_efficiency 0.6: the fit finds
    0.6 and every held-out source is predicted to well under 1%."""
    from dataclasses import replace as dc_replace

    import yaml

    from simplan.calibrate.predict import with_profile
    from simplan.calibrate.published_fit import calibrate_from_published
    from simplan.sim import simulate

    truth = dc_replace(load_hardware("h100-sxm-80gb-stock"), matmul_efficiency=0.6)
    records = []
    for prefix, layers in (("mpt-h100-test", 2), ("megatron2024-h100-test", 3)):
        for i, (hidden, mb) in enumerate(((512, 1), (768, 2), (1024, 4))):
            r = record(id=f"{prefix}-{i}", model={"name": "GPT test", "layers": layers, "hidden": hidden,
                                                  "ffn_hidden": None, "heads": 8, "kv_heads": None,
                                                  "seq_len": 1024, "vocab": 32000},
                       hardware={"gpu": "H100", "num_gpus": 8, "gpus_per_node": 8},
                       parallel={"tp": 1, "pp": 1, "dp": 8, "cp": None}, batch={"micro_batch": mb,
                                                                                "global_batch_seqs": 8 * mb * 2})
            run = rebuild(r)
            step = simulate(with_profile(load_scenario(run.scenario), truth)).step_time_s
            r["measured"] = {"tokens_per_s_per_gpu": 8 * mb * 2 * 1024 / (step * 8)}
            records.append(r)
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump(records))
    out = tmp_path / "h100-fitted.yaml"
    cal = calibrate_from_published(path, "h100-sxm-80gb-stock", out, processes=1, log=lambda line: None)
    assert cal["parameters"]["matmul_efficiency"]["fitted"] == pytest.approx(0.6, rel=0.01)
    assert cal["leave_one_source_out"]["all"]["mape"] < 0.01
    assert set(cal["step_time_error"]) >= {"p10", "p90"}
    fitted = load_hardware(str(out))
    assert fitted.matmul_efficiency == pytest.approx(0.6, rel=0.01)
    assert "fitted by simplan calibrate" in fitted.sources["gpu.matmul_efficiency"]
    # the band a prediction then carries brackets it
    result = simulate(with_profile(load_scenario(rebuild(records[0]).scenario), fitted))
    lo, hi = result.step_time_band_s
    assert lo <= result.step_time_s <= hi
