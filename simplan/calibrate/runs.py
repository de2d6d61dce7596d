"""Measured training runs: rows of a CSV of real iteration times, as scenarios.

The format is the vTrain ground-truth format (Bang et al., MICRO 2024, VIA-Research/vTrain
``data/ground_truth_*.csv``), one row per measured configuration::

    [Parameters (billion),] # GPUs, global batch, micro batch, hidden size, attention heads,
    # layers, sequence length, tensor parallelism, data parallelism, pipeline parallelism,
    iteration time (ms)

What the source states about the runs (``shared/data/README.md``) becomes the scenario:
Megatron-DeepSpeed GPT (learned positions, 4h GeLU MLP, dropout, no fused attention), the
GPT-2 vocabulary padded as Megatron-LM pads it, full activation recomputation, 1F1B, one
gradient all-reduce after the backward (no buckets), 8 GPUs per node, 16-bit math.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from simplan.errors import SimplanError, read_text, require

GPT2_VOCAB = 50257
"""GPT-2 BPE tokenizer (Radford et al. 2019)."""
MEGATRON_VOCAB_MULTIPLE = 128
"""Megatron-LM ``--make-vocab-size-divisible-by`` default; the padded vocabulary is a
multiple of 128 x tp (megatron/training/tokenizer ``_vocab_size_with_padding``)."""
NODE_GPUS = 8
"""``node_size: 8`` of the vTrain configurations."""

COLUMNS = {
    "gpus": "# GPUs",
    "global_batch": "global batch",
    "micro_batch": "micro batch",
    "hidden": "hidden size",
    "heads": "attention heads",
    "layers": "# layers",
    "seq_len": "sequence length",
    "tp": "tensor parallelism",
    "dp": "data parallelism",
    "pp": "pipeline parallelism",
    "time_ms": "iteration time (ms)",
}


@dataclass(frozen=True, slots=True)
class MeasuredRun:
    """One measured configuration and its iteration time."""

    index: int
    """Row number in the file (0 = first data row)."""
    gpus: int
    global_batch: int
    micro_batch: int
    hidden: int
    heads: int
    layers: int
    seq_len: int
    tp: int
    dp: int
    pp: int
    measured_s: float

    @property
    def group(self) -> tuple[int, int, int, int, int]:
        """Rows a planner compares: same model (layers, hidden, heads), GPU count and global batch."""
        return (self.layers, self.hidden, self.heads, self.gpus, self.global_batch)

    @property
    def model_label(self) -> str:
        return f"l{self.layers}-h{self.hidden}-a{self.heads}"


def padded_vocab(tp: int, vocab: int = GPT2_VOCAB) -> int:
    """Megatron-LM pads the vocabulary to a multiple of 128 x tp (50257 -> 50304 at tp 1,
    51200 at tp 8), so each tensor-parallel rank holds an equal slice."""
    multiple = MEGATRON_VOCAB_MULTIPLE * tp
    return -(-vocab // multiple) * multiple


def shared_data_dir() -> Path:
    """``shared/data`` beside the repository (the measured runs are not copied into it)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _int(row: dict, key: str, where: str) -> int:
    text = row.get(COLUMNS[key])
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SimplanError(f"{where}: {COLUMNS[key]!r}: expected a number, got {text!r}") from None
    require(value.is_integer() and value >= 1, f"{where}: {COLUMNS[key]!r}: expected an integer >= 1, got {text}")
    return int(value)


def read_runs(path: str | Path) -> list[MeasuredRun]:
    """Rows of a measured-runs CSV (header as in ``COLUMNS``; other columns are ignored)."""
    path = Path(path)
    text = read_text(path, str(path), "measured-runs file", encoding="utf-8-sig")
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS.values() if c not in header]
    require(not missing, f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
    runs = []
    for i, raw in enumerate(reader):
        row = {(k or "").strip(): v for k, v in raw.items()}
        where = f"{path.name} row {i + 1}"
        values = {k: _int(row, k, where) for k in COLUMNS if k != "time_ms"}
        try:
            ms = float(row[COLUMNS["time_ms"]])
        except (TypeError, ValueError):
            raise SimplanError(f"{where}: {COLUMNS['time_ms']!r}: expected a number, got {row[COLUMNS['time_ms']]!r}") from None
        require(ms > 0, f"{where}: {COLUMNS['time_ms']!r}: must be > 0, got {ms}")
        run = MeasuredRun(index=i, measured_s=ms * 1e-3, **values)
        require(run.tp * run.dp * run.pp == run.gpus,
                f"{where}: tp {run.tp} x dp {run.dp} x pp {run.pp} != # GPUs {run.gpus}")
        runs.append(run)
    require(runs, f"{path}: no data rows")
    return runs


def run_scenario(run: MeasuredRun, hardware: str = "a100-sxm-80gb") -> dict:
    """The scenario mapping of a measured run (DESIGN.md's scenario format)."""
    nodes = max(1, run.gpus // NODE_GPUS)
    return {
        "model": {
            "family": "gpt", "layers": run.layers, "hidden": run.hidden, "heads": run.heads,
            "seq_len": run.seq_len, "vocab": padded_vocab(run.tp), "dropout": True, "flash_attention": False,
            # Megatron GPT ties the output layer to the word embedding; with pp > 1 the last
            # stage keeps its own copy (Megatron-LM ``initialize_word_embeddings``)
            "tied_embeddings": run.pp == 1,
        },
        "hardware": hardware,
        "cluster": {"nodes": nodes, "gpus_per_node": run.gpus // nodes},
        "plan": {
            "tp": run.tp, "pp": run.pp, "dp": run.dp, "micro_batch": run.micro_batch,
            "global_batch": run.global_batch, "schedule": "1f1b", "recompute": "full",
            "precision": "fp16", "dp_overlap": False,
        },
    }
