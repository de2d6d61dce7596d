"""Published training runs (``shared/data/published_runs.yaml``) as scenarios.

Each record of that file states a run's model, hardware, parallel layout, batch, settings and
what its source measured (step time, tokens/s, TFLOP/s, memory, out-of-memory). A record
becomes a :class:`PublishedRun`: a scenario mapping (DESIGN.md's format), the measured step
time, the measured peak memory where published, and every assumption made where the record
says null. A record that cannot be rebuilt (no parallel layout, no measured throughput, an
architecture the source does not state and no published config fills) is returned with the
reason instead, never guessed.

Step time from what the source measured, in this order: ``iter_time_s`` (BLOOM's logs);
tokens per step / measured tokens/s (llm-foundry, NeMo, torchtitan); model FLOPs per step
(in the source's own FLOP convention) / (measured TFLOP/s x GPUs) (Megatron-LM tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from simplan.errors import SimplanError, read_text, require
from simplan.units import GIGA, TERA

GPU_PROFILES = {"A100": "a100-sxm-80gb-stock", "H100": "h100-sxm-80gb-stock", "B200": "b200"}
"""Stock profile of each GPU the records name (one node: 8 GPUs on NVSwitch, 8 NICs): the
physical estimates a calibration starts from."""


@dataclass(frozen=True)
class PublishedRun:
    id: str
    source: str
    """Short name of the record's source (one of SOURCES), the unit of leave-one-source-out."""
    gpu: str
    scenario: dict
    measured_step_s: float
    measured_memory_bytes: float | None = None
    """Peak memory per GPU the source reports (BLOOM's max GPU memory), in bytes."""
    oom: bool = False
    """The source reports this configuration ran out of memory (no step time)."""
    assumptions: tuple[str, ...] = field(default_factory=tuple)
    not_fitted: str = ""
    """Why a calibration predicts this run but does not fit on it (empty: it fits on it)."""

    @property
    def measured_s(self) -> float:
        """The measured step time (the name the fit reads)."""
        return self.measured_step_s

    @property
    def gpus(self) -> int:
        c = self.scenario["cluster"]
        return c["nodes"] * c["gpus_per_node"]


@dataclass(frozen=True)
class Skipped:
    id: str
    source: str
    reason: str


SOURCES = {
    "megatron2021-weak-": "megatron2021-weak",
    "megatron2021-t2-": "megatron2021-table2",
    "megatron2024-h100-": "megatron-core-h100",
    "nemo2407-": "nemo-perf",
    "nemo-longseq-": "nemo-longseq",
    "torchtitan202506-": "torchtitan",
    "mpt-": "llm-foundry",
    "bloom-prequel-": "bloom",
}
"""Record id prefix -> source (the eight sources of the file)."""

# Architectures a record leaves null, from the model's own published configuration.
KNOWN_ARCH = {
    # NeMo's GPT-3 configs (NeMo examples/nlp/language_modeling/conf, gpt3 5b/20b/175b)
    "GPT3-5B": dict(family="gpt", layers=24, hidden=4096, heads=32, ffn_hidden=16384, vocab=51200),
    "GPT3-20B": dict(family="gpt", layers=44, hidden=6144, heads=48, ffn_hidden=24576, vocab=51200),
    "GPT3-175B": dict(family="gpt", layers=96, hidden=12288, heads=96, ffn_hidden=49152, vocab=51200),
    "GPT-3 174.6B": dict(family="gpt", layers=96, hidden=12288, heads=96, ffn_hidden=49152, vocab=51200),
    # Touvron et al. 2023, "Llama 2", Table 1 and the released configs
    "LLAMA2-7B": dict(family="llama", layers=32, hidden=4096, heads=32, ffn_hidden=11008, vocab=32000),
    "LLAMA2-13B": dict(family="llama", layers=40, hidden=5120, heads=40, ffn_hidden=13824, vocab=32000),
    "LLAMA2-70B": dict(family="llama", layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672,
                       vocab=32000),
}

FRAMEWORK = {"megatron-core-h100": "megatron-core", "nemo-perf": "megatron-core", "nemo-longseq": "megatron-core",
             "torchtitan": "torchtitan"}
"""Sources whose framework has a preset (simplan.plan.framework)."""

BLOOM_VOCAB = 250880
"""BLOOM's 250,680-token vocabulary padded for tensor parallelism (BigScience tr11 config)."""


def source_of(record_id: str) -> str:
    for prefix, name in SOURCES.items():
        if record_id.startswith(prefix):
            return name
    return record_id.split("-")[0]


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lower(value) -> str:
    return str(value or "").lower()


class _Rebuild:
    """One record being turned into a scenario; ``assume`` records each filled gap."""

    def __init__(self, record: dict):
        self.r = record
        self.id = str(record.get("id"))
        self.source = source_of(self.id)
        self.assumptions: list[str] = []

    def assume(self, text: str) -> None:
        self.assumptions.append(text)

    def get(self, section: str, key: str):
        return (self.r.get(section) or {}).get(key)


def _model(b: _Rebuild) -> dict:
    m = b.r.get("model") or {}
    name = str(m.get("name") or "")
    arch = {}
    for key, known in KNOWN_ARCH.items():
        if name.startswith(key):
            arch = dict(known)
    family = arch.get("family")
    if family is None:
        family = "llama" if "llama" in name.lower() else "gpt"
    out = {"family": family}
    for key in ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "seq_len", "vocab"):
        value = m.get(key)
        if value is not None:
            out[key] = int(value)
        elif key in arch:
            out[key] = arch[key]
            b.assume(f"model.{key} = {arch[key]} from {name}'s published configuration")
    if "layers" not in out or "hidden" not in out:
        raise SimplanError("the source does not state the architecture (layers, hidden) and no published "
                           f"configuration of {name!r} is known here")
    if "heads" not in out:
        out["heads"] = out["hidden"] // 128
        b.assume(f"model.heads = hidden / 128 = {out['heads']} (Megatron-LM's 128-wide heads; the table omits heads)")
    if "seq_len" not in out:
        if b.source == "bloom":
            out["seq_len"] = 2048
            b.assume("model.seq_len = 2048 (SEQ_LEN of the earlier sections of the same BLOOM document)")
        elif b.source == "torchtitan":
            out["seq_len"] = 8192
            b.assume("model.seq_len = 8192 (torchtitan's Llama 3 training configs)")
        else:
            raise SimplanError("model.seq_len: not stated")
    if "vocab" not in out:
        if b.source == "bloom":
            out["vocab"] = BLOOM_VOCAB
            b.assume(f"model.vocab = {BLOOM_VOCAB} (BLOOM's tokenizer, padded)")
        else:
            raise SimplanError("model.vocab: not stated")
    if "ffn_hidden" not in out:
        if family == "gpt":
            out["ffn_hidden"] = 4 * out["hidden"]
            b.assume("model.ffn_hidden = 4 x hidden (GPT)")
        else:
            raise SimplanError("model.ffn_hidden: not stated for a SwiGLU model")
    return out


def _precision(b: _Rebuild) -> str:
    text = _lower(b.get("settings", "precision"))
    require("rowwise" not in text, "settings.precision: fp8 with row-wise scales (torchao's rowwise recipe, its own "
                                   "GEMM and casts) is not modelled; simplan's fp8 is per-tensor scaling")
    if text.startswith("not stated") and b.source == "bloom":
        b.assume("plan.precision = fp16 (the BLOOM document's runs before its BF16 optimizer)")
        return "fp16"
    if "fp8" in text or "float8" in text:
        return "fp8"
    if "bf16" in text:
        return "bf16"
    if "fp16" in text and "not stated" not in text:
        return "fp16"
    b.assume("plan.precision = bf16 (not stated; 16-bit mixed precision)")
    return "bf16"


def _recompute(b: _Rebuild) -> str:
    text = _lower(b.get("settings", "activation_recompute"))
    if text.startswith("full"):
        return "full"
    if text.startswith("selective"):
        return "selective"
    if text.startswith("none"):
        return "none"
    if b.source in ("megatron2021-weak", "megatron2021-table2", "bloom"):
        b.assume("plan.recompute = full (Megatron-LM 2021 and Megatron-DeepSpeed checkpoint every layer's "
                 "activations: Narayanan et al. 2021, Section 5.1; BLOOM's --checkpoint-activations)")
        return "full"
    b.assume("plan.recompute = selective (Megatron-Core's attention-core recomputation; not stated)")
    return "selective"


def _megatron2021_split(mp: int) -> tuple[int, int]:
    """(tp, pp) of a model-parallel size: tensor parallelism fills the 8-GPU node first
    (Narayanan et al. 2021, Section 3.3, takeaway #1), then pipeline stages."""
    tp = min(8, mp)
    return tp, mp // tp


def _plan(b: _Rebuild, model: dict, gpus: int, precision: str) -> dict:
    p = b.r.get("parallel") or {}
    batch = b.r.get("batch") or {}
    require(not p.get("async_tp"), "parallel.async_tp: asynchronous tensor parallelism (TP communication overlapped "
                                   "with the GEMMs) is not modelled")
    tp, pp, dp, cp, vpp = (p.get(k) for k in ("tp", "pp", "dp", "cp", "vpp"))
    if tp is None and pp is None and p.get("model_parallel_size"):
        tp, pp = _megatron2021_split(int(p["model_parallel_size"]))
        b.assume(f"plan.tp = {tp}, plan.pp = {pp} from model-parallel size {p['model_parallel_size']} "
                 "(tensor parallelism inside the 8-GPU node first, Narayanan et al. 2021, Section 3.3)")
    if tp is None:
        raise SimplanError("parallel.tp: not stated")
    if pp is None:
        pp = 1
        b.assume("plan.pp = 1 (not stated; no pipeline)")
    cp = cp or 1
    if dp is None:
        require(gpus % (tp * pp * cp) == 0, f"GPUs {gpus} not divisible by tp*pp*cp = {tp * pp * cp}")
        dp = gpus // (tp * pp * cp)
    require(tp * pp * cp * dp == gpus, f"tp {tp} x pp {pp} x cp {cp} x dp {dp} != GPUs {gpus}")
    seq = model["seq_len"]
    global_batch = batch.get("global_batch_seqs")
    if global_batch is None and batch.get("global_batch_tokens"):
        global_batch = int(batch["global_batch_tokens"]) // seq
    if global_batch is None and batch.get("local_batch"):
        global_batch = int(batch["local_batch"]) * dp
        b.assume(f"plan.global_batch = local batch {batch['local_batch']} x dp {dp} (no gradient accumulation)")
    if global_batch is None:
        raise SimplanError("batch.global_batch_seqs: not stated")
    micro = batch.get("micro_batch") or batch.get("local_batch")
    if micro is None:
        micro = 1
        b.assume("plan.micro_batch = 1 (not stated; Megatron-LM's default)")
    micro = int(micro)
    require(global_batch % (dp * micro) == 0, f"global batch {global_batch} not divisible by dp {dp} x micro-batch {micro}")
    zero = 0
    fsdp = p.get("fsdp")
    if p.get("zero_stage") is not None:
        zero = int(p["zero_stage"])
    elif fsdp == "SHARD_GRAD_OP":
        zero = 2
    elif fsdp:
        zero = 3
    elif b.source == "bloom":
        zero = 1
        b.assume("plan.zero_stage = 1 (BLOOM's Megatron-DeepSpeed runs use ZeRO stage 1)")
    if zero and dp * cp == 1:
        zero = 0
    plan = {"tp": tp, "pp": pp, "dp": dp, "cp": cp, "micro_batch": micro, "global_batch": int(global_batch),
            "precision": precision, "recompute": _recompute(b)}
    if zero or FRAMEWORK.get(b.source) is None:
        plan["zero_stage"] = zero
    if b.source in ("nemo-perf", "nemo-longseq"):
        plan["main_grads_fp32"] = False
        b.assume("plan.main_grads_fp32 = false (NeMo's performance recipes set grad_reduce_in_fp32 = False)")
    if b.source == "llm-foundry":
        plan["attention_kernel"] = "fa2"
        b.assume("plan.attention_kernel = fa2 (llm-foundry's MPT configs run flash-attn 2 / its Triton port)")
    if b.source == "bloom" and precision == "bf16":
        plan["main_grads_fp32"] = True
        b.assume("plan.main_grads_fp32 = true (the BLOOM document's BF16 optimizer accumulates gradients in fp32)")
    if vpp and int(vpp) > 1:
        plan["schedule"] = "interleaved-1f1b"
        plan["virtual_stages"] = int(vpp)
    if FRAMEWORK.get(b.source):
        b.assume(f"framework = {FRAMEWORK[b.source]}: its defaults for what the record leaves out "
                 "(simplan.plan.framework: sequence parallelism with tp, its optimizer sharding, fp32 main gradients)")
    return plan


def _cluster(b: _Rebuild, gpus: int) -> dict:
    per_node = int(b.get("hardware", "gpus_per_node") or 8)
    if b.get("hardware", "gpus_per_node") is None:
        b.assume("cluster.gpus_per_node = 8 (DGX / HGX node)")
    if gpus < per_node:
        return {"nodes": 1, "gpus_per_node": gpus}
    require(gpus % per_node == 0, f"GPUs {gpus} not a multiple of {per_node} per node")
    return {"nodes": gpus // per_node, "gpus_per_node": per_node}


def model_flops_megatron2021(model: dict, global_batch: int) -> float:
    """FLOPs per step as Narayanan et al. 2021 count them (Eq. 3, with full activation
    recomputation): 96 B s l h^2 (1 + s / 6h + V / 16 l h)."""
    s, l, h, v = model["seq_len"], model["layers"], model["hidden"], model["vocab"]
    return 96.0 * global_batch * s * l * h * h * (1 + s / (6 * h) + v / (16 * l * h))


def model_flops_megatron_core(model: dict, global_batch: int) -> float:
    """Model FLOPs per step as Megatron-Core's ``num_floating_point_operations`` counts them
    (megatron/training/training.py, r0.8; no recomputation, full s^2 attention):
    12 B s L h^2 [(1 + G/H + s/h) + (ffn/h)(1.5 if SwiGLU) + V / (2 L h)]."""
    s, l, h, v = model["seq_len"], model["layers"], model["hidden"], model["vocab"]
    heads = model["heads"]
    groups = model.get("kv_heads", heads)
    ffn = model["ffn_hidden"] / h * (1.5 if model["family"] == "llama" else 1.0)
    return 12.0 * global_batch * s * l * h * h * ((1 + groups / heads + s / h) + ffn + v / (2 * l * h))


def _measured_step_s(b: _Rebuild, model: dict, plan: dict, gpus: int) -> float | None:
    me = b.r.get("measured") or {}
    if _num(me.get("iter_time_s")):
        return float(me["iter_time_s"])
    tokens = plan["global_batch"] * model["seq_len"]
    if _num(me.get("tokens_per_s")):
        return tokens / float(me["tokens_per_s"])
    if _num(me.get("tokens_per_s_per_gpu")):
        return tokens / (float(me["tokens_per_s_per_gpu"]) * gpus)
    tflops = _num(me.get("tflops_per_gpu"))
    if tflops:
        if b.source.startswith("megatron2021"):
            flops = model_flops_megatron2021(model, plan["global_batch"])
            b.assume("step time = FLOPs of Narayanan et al. 2021 Eq. 3 / (measured TFLOP/s x GPUs)")
        else:
            flops = model_flops_megatron_core(model, plan["global_batch"])
            b.assume("step time = Megatron-Core model FLOPs (full s^2 attention, no recomputation) / "
                     "(measured TFLOP/s x GPUs)")
        return flops / (tflops * TERA * gpus)
    return None


def rebuild(record: dict) -> PublishedRun:
    """The run of one record; SimplanError with the reason when it cannot be rebuilt."""
    b = _Rebuild(record)
    hw = record.get("hardware") or {}
    gpu = str(hw.get("gpu") or "")
    require(gpu in GPU_PROFILES, f"hardware.gpu: {gpu!r} has no profile here (known: {', '.join(GPU_PROFILES)})")
    gpus = hw.get("num_gpus")
    require(isinstance(gpus, int) and gpus > 0, f"hardware.num_gpus: expected a positive integer, got {gpus!r}")
    model = _model(b)
    precision = _precision(b)
    plan = _plan(b, model, gpus, precision)
    cluster = _cluster(b, gpus)
    me = record.get("measured") or {}
    oom = bool(me.get("oom"))
    step = _measured_step_s(b, model, plan, gpus)
    require(step is not None or oom, "measured: no step time, tokens/s or TFLOP/s")
    if precision in ("fp16", "bf16", "fp8") and b.source not in ("bloom", "megatron2021-weak", "megatron2021-table2"):
        model["flash_attention"] = True
    else:
        model["flash_attention"] = False
        b.assume("model.flash_attention = false (2021-2022 Megatron-LM / Megatron-DeepSpeed: unfused attention)")
    if b.source in ("megatron2021-weak", "megatron2021-table2", "bloom"):
        model["dropout"] = True
        plan["dp_overlap"] = False
        b.assume("plan.dp_overlap = false (2021-2022 Megatron-LM reduces gradients after the backward)")
    not_fitted = ""
    if b.source == "megatron2021-table2" and plan.get("zero_stage") == 3:
        not_fitted = ("DeepSpeed ZeRO-3 (2021) fetches parameters tensor by tensor in latency-bound collectives over "
                      "all ranks; simplan gathers per transformer layer as FSDP does: predicted, not fitted")
    mem_gb = _num(me.get("max_memory_gb"))
    scenario = {"model": model, "hardware": GPU_PROFILES[gpu], "cluster": cluster, "plan": plan}
    if FRAMEWORK.get(b.source):
        scenario["framework"] = FRAMEWORK[b.source]
    return PublishedRun(id=b.id, source=b.source, gpu=gpu, scenario=scenario,
                        measured_step_s=float(step) if step is not None else float("nan"),
                        measured_memory_bytes=mem_gb * GIGA if mem_gb else None, oom=oom,
                        assumptions=tuple(b.assumptions), not_fitted=not_fitted)


def read_published(path: str | Path) -> tuple[list[PublishedRun], list[Skipped]]:
    """Every record of a published-runs file: (rebuilt runs, skipped records with reasons).
    A file with no usable record is an error."""
    path = Path(path)
    text = read_text(path, str(path), "published-runs file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SimplanError(f"{path}: malformed YAML: {' '.join(str(e).split())[:200]}") from None
    require(isinstance(data, list), f"{path}: expected a list of run records, got {type(data).__name__}")
    runs, skipped = [], []
    for i, record in enumerate(data):
        if not isinstance(record, dict) or "id" not in record:
            skipped.append(Skipped(id=f"record {i + 1}", source="?", reason="not a mapping with an id"))
            continue
        try:
            runs.append(rebuild(record))
        except SimplanError as e:
            skipped.append(Skipped(id=str(record["id"]), source=source_of(str(record["id"])), reason=str(e)))
    require(runs, f"{path}: no record could be rebuilt into a run ({len(skipped)} skipped)")
    return runs, skipped
