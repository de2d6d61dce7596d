"""The accuracy report: its figures on hand-made numbers, and a run on a few real rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from simplan.calibrate.predict import Predictor
from simplan.calibrate.runs import MeasuredRun, read_runs, shared_data_dir
from simplan.hardware.load import load_hardware
from simplan.report.accuracy import file_report, format_report, group_regret, summarize

DATA = shared_data_dir()
SINGLE = DATA / "vtrain_a100_single_node.csv"
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"


def run(i: int, gb: int, ms: float, tp: int = 1) -> MeasuredRun:
    return MeasuredRun(index=i, gpus=2, global_batch=gb, micro_batch=1, hidden=64, heads=4, layers=2, seq_len=32,
                       tp=tp, dp=2 // tp, pp=1, measured_s=ms * 1e-3)


def test_figures_on_hand_made_numbers():
    # one group of three (gb 8) and one of two (gb 16)
    runs = [run(0, 8, 100), run(1, 8, 200), run(2, 8, 300, tp=2), run(3, 16, 100), run(4, 16, 120, tp=2)]
    predicted = np.array([110, 180, 330, 130, 110]) * 1e-3
    s = summarize(runs, predicted)
    errors = [0.1, 0.1, 0.1, 0.3, 110 / 120 - 1]
    assert s.mape == pytest.approx(np.mean(np.abs(errors)), rel=1e-12)
    assert s.max_error == pytest.approx(0.3, rel=1e-12) and s.max_row == 3
    assert s.groups == 1 and s.spearman_median == pytest.approx(1.0)  # ranks agree in the group of three
    # gb 16: the prediction picks row 4 (120 ms) over the measured-best row 3 (100 ms): 20% regret
    assert group_regret(predicted, np.array([r.measured_s for r in runs]), [3, 4]) == pytest.approx(0.2)
    assert s.regret_median == pytest.approx(0.1) and s.regret_max == pytest.approx(0.2)


@pytest.mark.skipif(not SINGLE.exists(), reason=f"measured runs not found at {DATA} (shared/data beside the repo)")
def test_report_runs_on_a_few_real_rows():
    runs = read_runs(SINGLE)[:12]
    with Predictor(runs) as predict:
        predicted = predict(load_hardware("a100-sxm-vtrain"))
    assert np.all(np.isfinite(predicted)) and np.all(predicted > 0)
    report = file_report(runs, predicted, held_out=list(range(1, 12, 2)))
    all_rows = report["summaries"]["all rows"]
    measured = np.array([r.measured_s for r in runs])
    assert all_rows["mape"] == pytest.approx(np.mean(np.abs(predicted / measured - 1)), rel=1e-12)
    assert report["summaries"]["held-out rows"]["rows"] == 6
    assert len(report["worst_rows"]) == 6
    text = format_report("single", report)
    assert "held-out rows" in text and "largest errors" in text


def _bench():
    spec = importlib.util.spec_from_file_location("accuracy_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_says_clearly_when_the_data_is_absent(tmp_path, capsys):
    assert _bench().main(["--data", str(tmp_path / "nowhere")]) == 0
    assert "no measured runs" in capsys.readouterr().out


@pytest.mark.skipif(not SINGLE.exists(), reason=f"measured runs not found at {DATA} (shared/data beside the repo)")
def test_benchmark_prints_per_file_and_gpu_count(capsys):
    assert _bench().main(["--hardware", "a100-sxm-vtrain", "--rows", "6", "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "vtrain_a100_single_node.csv: 6 rows" in out and "GPUs" in out and "vtrain_a100_multi_node.csv" in out
