"""Pipeline schedules as per-stage orderings of actions.

Named and ordered as torch.distributed.pipelining does (ScheduleGPipe, Schedule1F1B,
ScheduleInterleaved1F1B; computation types F forward, B backward, I backward-input,
W backward-weight). An action is (type, micro-batch, chunk) where chunk is the global
model-chunk index: stage s with v virtual stages runs chunks s, s + pp, ..., s + (v-1) pp.
"""

from __future__ import annotations

from typing import NamedTuple


class Action(NamedTuple):
    type: str
    """F | B | I | W."""
    microbatch: int
    chunk: int


def gpipe(stage: int, pp: int, m: int) -> list[Action]:
    """All forwards, then all backwards (Huang et al. 2019, GPipe)."""
    return [Action("F", i, stage) for i in range(m)] + [Action("B", i, stage) for i in range(m)]


def one_f_one_b(stage: int, pp: int, m: int) -> list[Action]:
    """PipeDream-Flush 1F1B (Narayanan et al. 2021, Fig. 4 top): pp - 1 - stage warm-up
    forwards, then one forward one backward, then the remaining backwards."""
    warmup = min(pp - 1 - stage, m)
    out = [Action("F", i, stage) for i in range(warmup)]
    f, b = warmup, 0
    while f < m:
        out.append(Action("F", f, stage))
        f += 1
        out.append(Action("B", b, stage))
        b += 1
    out += [Action("B", i, stage) for i in range(b, m)]
    return out


def interleaved_1f1b(stage: int, pp: int, m: int, v: int) -> list[Action]:
    """Interleaved 1F1B (Narayanan et al. 2021, Section 2.2.2, Fig. 4 bottom), micro-batches
    in rounds of pp, as ScheduleInterleaved1F1B: warm-up (v - 1) pp + 2 (pp - 1 - stage)
    forwards, then alternate, then the remaining backwards."""
    total = m * v

    def fwd(k: int) -> Action:
        chunk_local = (k // pp) % v
        mb = (k // (pp * v)) * pp + k % pp
        return Action("F", mb, chunk_local * pp + stage)

    def bwd(k: int) -> Action:
        chunk_local = v - 1 - (k // pp) % v
        mb = (k // (pp * v)) * pp + k % pp
        return Action("B", mb, chunk_local * pp + stage)

    warmup = min((v - 1) * pp + 2 * (pp - 1 - stage), total)
    out = [fwd(k) for k in range(warmup)]
    f, b = warmup, 0
    while f < total:
        out.append(fwd(f))
        f += 1
        out.append(bwd(b))
        b += 1
    out += [bwd(k) for k in range(b, total)]
    return out


def zero_bubble_h1(stage: int, pp: int, m: int) -> list[Action]:
    """ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", Section 3.1): 1F1B with
    each backward split into I (input gradient, on the critical path) and W (weight
    gradient). Only I is on the backward critical path between stages. Stage s defers s
    weight gradients: the later stages, which in 1F1B idle longest at the end of the
    step, run their deferred W's there; peak activation memory stays close to 1F1B's."""
    base = one_f_one_b(stage, pp, m)
    lag = stage
    out: list[Action] = []
    pending: list[int] = []
    for a in base:
        if a.type == "F":
            out.append(a)
            continue
        out.append(Action("I", a.microbatch, a.chunk))
        pending.append(a.microbatch)
        if len(pending) > lag:
            out.append(Action("W", pending.pop(0), a.chunk))
    out += [Action("W", i, stage) for i in pending]
    return out


def stage_actions(schedule: str, stage: int, pp: int, m: int, v: int = 1) -> list[Action]:
    if schedule == "gpipe":
        return gpipe(stage, pp, m)
    if schedule == "1f1b":
        return one_f_one_b(stage, pp, m)
    if schedule == "interleaved-1f1b":
        return interleaved_1f1b(stage, pp, m, v)
    if schedule == "zero-bubble":
        return zero_bubble_h1(stage, pp, m)
    raise ValueError(f"unknown schedule {schedule!r}")
