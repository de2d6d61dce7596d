"""validate(plan, model, gpus): every arithmetic problem of a plan, with the numbers."""

from __future__ import annotations

from simplan.errors import SimplanError
from simplan.model.spec import ModelSpec
from simplan.plan.plan import Plan

# Sanity bounds (issue 15): far beyond any training run published, yet small enough that the
# planner's enumeration and the engine's events stay bounded. A value past one is a typo (an
# exponent, tokens where sequences belong), answered in a second instead of minutes of work.
MAX_GPUS = 2**20
"""1,048,576 GPUs: ~10x the largest clusters built (xAI Colossus ~100k-200k H100; Meta's
two 24k-GPU clusters; Llama 3 405B trained on 16k H100s)."""
MAX_GLOBAL_BATCH = 2**24
"""16,777,216 sequences (images) per step: ~1000x LLM batches (GPT-3: 1,536 sequences; Llama 3
405B: 16M tokens = 2,048 x 8,192) and ~100x the largest ImageNet batches (64k-128k images)."""
MAX_SEQ_LEN = 2**24
"""16,777,216 tokens per sequence: beyond the longest contexts trained (Llama 4 Scout: 10M)."""
MAX_TOKENS_PER_STEP = 2**30
"""~1.1e9 tokens per step: ~16x the largest published (DeepSeek-V3: 15,360 x 4,096 = 6.3e7)."""
MAX_MICRO_BATCHES = 2**16
"""65,536 micro-batches per pipeline per step (global batch / (dp x micro-batch)): the engine
schedules events per micro-batch; published runs accumulate tens to a few thousand."""

SCENARIO_NAMES = {"gpus": "cluster", "global_batch": "plan.global_batch", "seq_len": "model.seq_len",
                  "micro_batches": "plan.micro_batch"}
"""How scale_problems names its fields in a scenario (validate, simulate)."""
FLAG_NAMES = {"gpus": "--gpus", "global_batch": "--global-batch", "seq_len": "--seq-len",
              "micro_batches": "--micro-batch"}
"""How scale_problems names its fields on the ``simplan plan`` command line."""


def scale_problems(gpus: int, global_batch: int, seq_len: int, micro_batches: int | None = None, *,
                   names: dict[str, str] = SCENARIO_NAMES) -> list[str]:
    """Values beyond the sanity bounds above, one message each naming the field, the value
    and the limit (empty if none). Pure arithmetic: call it before enumerating anything.
    ``seq_len`` <= 0: a model without sequences (a CNN); ``micro_batches`` per pipeline per
    step, None when unknown (the planner enumerates micro-batch sizes itself)."""
    out: list[str] = []
    if gpus > MAX_GPUS:
        out.append(f"{names['gpus']}: {gpus} GPUs, above the limit of {MAX_GPUS:,} (2^20, ~10x the largest "
                   "clusters built)")
    tokens = global_batch * seq_len if 0 < seq_len <= MAX_SEQ_LEN else 0
    if global_batch > MAX_GLOBAL_BATCH:
        out.append(f"{names['global_batch']}: {global_batch} sequences per step, above the limit of "
                   f"{MAX_GLOBAL_BATCH:,} (2^24){_tokens_hint(global_batch, seq_len)}")
    elif tokens > MAX_TOKENS_PER_STEP:
        out.append(f"{names['global_batch']}: {global_batch} sequences x seq_len {seq_len} = {_sci(tokens)} tokens "
                   f"per step, above the limit of {_sci(MAX_TOKENS_PER_STEP)} (2^30)"
                   f"{_tokens_hint(global_batch, seq_len)}")
    elif micro_batches is not None and micro_batches > MAX_MICRO_BATCHES:
        out.append(f"{names['micro_batches']}: {micro_batches} micro-batches per pipeline per step (global batch / "
                   f"(dp x micro_batch)), above the limit of {MAX_MICRO_BATCHES:,} (2^16); raise micro_batch")
    if seq_len > MAX_SEQ_LEN:
        out.append(f"{names['seq_len']}: {seq_len} tokens, above the limit of {MAX_SEQ_LEN:,} (2^24, beyond the "
                   "longest contexts trained, ~10M)")
    return out


def _sci(x: int) -> str:
    return f"{x:.2g}".replace("e+0", "e").replace("e+", "e")


def _tokens_hint(global_batch: int, seq_len: int) -> str:
    """A hint when the global batch reads as tokens: a multiple of seq_len whose sequence
    count is within the bounds."""
    if not 0 < seq_len <= MAX_SEQ_LEN or global_batch % seq_len:
        return ""
    sequences = global_batch // seq_len
    if sequences > MAX_GLOBAL_BATCH or sequences * seq_len > MAX_TOKENS_PER_STEP:
        return ""
    return f"; did you give tokens? {global_batch} tokens are {sequences} sequences of {seq_len}"


def problems(plan: Plan, model: ModelSpec, gpus: int) -> list[str]:
    """All the reasons ``plan`` cannot run ``model`` on ``gpus`` GPUs (empty if none)."""
    p = plan
    divisible = p.global_batch % (p.dp * p.micro_batch) == 0
    out = scale_problems(gpus, p.global_batch, model.seq_len, p.micro_batches if divisible else None)
    if p.gpus != gpus:
        out.append(f"plan: dp({p.dp}) * tp({p.tp}) * pp({p.pp}) * cp({p.cp}) = {p.gpus} != GPUs({gpus})")
    if not divisible:
        out.append(f"plan.global_batch: {p.global_batch} is not divisible by dp({p.dp}) * micro_batch({p.micro_batch})")
    if not model.is_transformer:
        if p.tp > 1:
            out.append(f"plan.tp: {model.family} layers have no tensor-parallel form here, got tp={p.tp}")
        if p.cp > 1:
            out.append(f"plan.cp: {model.family} has no sequence to split, got cp={p.cp}")
        if p.sequence_parallel:
            out.append(f"plan.sequence_parallel: needs a transformer, got family {model.family}")
    else:
        if model.heads % p.tp:
            out.append(f"plan.tp: heads({model.heads}) is not divisible by tp({p.tp})")
        if model.kv_heads % p.tp and p.tp % model.kv_heads:
            out.append(f"plan.tp: kv_heads({model.kv_heads}) and tp({p.tp}) do not divide one another")
        if model.ffn_hidden % p.tp:
            out.append(f"plan.tp: ffn_hidden({model.ffn_hidden}) is not divisible by tp({p.tp})")
        if model.seq_len % p.cp:
            out.append(f"plan.cp: seq_len({model.seq_len}) is not divisible by cp({p.cp})")
        if p.tp_comm_overlap and not p.sequence_parallel:
            out.append("plan.tp_comm_overlap: needs sequence_parallel (Megatron-Core overlaps its all-gather / "
                       "reduce-scatter pairs), got sequence_parallel=false")
        if p.sequence_parallel and p.tp == 1:
            out.append("plan.sequence_parallel: needs tp > 1, got tp=1")
        if p.sequence_parallel and model.seq_len % p.tp:
            out.append(f"plan.sequence_parallel: seq_len({model.seq_len}) is not divisible by tp({p.tp})")
    if p.ep > 1:
        if not model.is_moe:
            out.append(f"plan.ep: {p.ep} > 1 needs a mixture-of-experts model, got family {model.family}")
        elif model.experts % p.ep:
            out.append(f"plan.ep: experts({model.experts}) is not divisible by ep({p.ep})")
        if (p.dp * p.cp) % p.ep:
            out.append(f"plan.ep: ep({p.ep}) must divide dp({p.dp}) * cp({p.cp}) = {p.dp * p.cp}")
    chunks = p.pp * p.virtual_stages
    blocks = model.layers
    # uneven splits are allowed (the partitioner balances them), but every chunk needs a layer
    if chunks > blocks + 2:
        out.append(f"plan: pp({p.pp}) * virtual_stages({p.virtual_stages}) = {chunks} exceeds the "
                   f"{blocks} layers (+ embedding and head) of the model")
    if p.partition:
        from simplan.model.load import build_graph
        from simplan.plan.partition import units

        n_units = len(units(build_graph(model)))
        if len(p.partition) != chunks:
            out.append(f"plan.partition: {len(p.partition)} chunks given, pp({p.pp}) * virtual_stages"
                       f"({p.virtual_stages}) = {chunks} needed")
        elif sum(p.partition) != n_units:
            out.append(f"plan.partition: {sum(p.partition)} units given, the model has {n_units} "
                       "(its layers, the embedding and the head)")
    if p.virtual_stages > 1 and p.schedule != "interleaved-1f1b":
        out.append(f"plan.virtual_stages: {p.virtual_stages} > 1 needs schedule interleaved-1f1b "
                   f"(zero-bubble here is ZB-H1, one chunk per stage), got {p.schedule}")
    if p.schedule == "interleaved-1f1b":
        if p.virtual_stages < 2:
            out.append(f"plan.virtual_stages: interleaved-1f1b needs virtual_stages >= 2, got {p.virtual_stages}")
        if p.pp < 2:
            out.append(f"plan.schedule: interleaved-1f1b needs pp >= 2, got pp={p.pp}")
        if p.global_batch % (p.dp * p.micro_batch) == 0 and p.micro_batches % p.pp:
            out.append(f"plan.schedule: interleaved-1f1b needs micro-batches({p.micro_batches}) divisible by "
                       f"pp({p.pp}) (Megatron-LM and torch.distributed.pipelining require it)")
    if p.zero_stage and p.dp_sync == "parameter-server":
        out.append(f"plan.zero_stage: {p.zero_stage} shards over data-parallel all-reduce groups; "
                   "it does not combine with dp_sync parameter-server")
    if p.zero_stage and p.dp * p.cp == 1:
        out.append(f"plan.zero_stage: {p.zero_stage} needs dp * cp > 1 to shard across, got dp={p.dp} cp={p.cp}")
    if p.zero_stage >= 2 and p.pp > 1:
        # DeepSpeed refuses ZeRO-2/3 with pipeline parallelism: gradients are accumulated over micro-batches
        out.append(f"plan.zero_stage: {p.zero_stage} does not combine with pp({p.pp}) > 1 "
                   "(DeepSpeed and Megatron-LM accumulate gradients across micro-batches)")
    return out


def validate(plan: Plan, model: ModelSpec, gpus: int) -> None:
    """Raise one SimplanError listing every problem (``; ``-joined, one line)."""
    found = problems(plan, model, gpus)
    if found:
        raise SimplanError("; ".join(found))
