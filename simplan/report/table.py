"""The ranked table of ``simplan plan`` (rich), and its progress bar on stderr."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from simplan.search.search import SearchResult, cost_per_step, dominant_overhead

GIB = 2**30


def plan_label(plan) -> str:
    sched = plan.schedule if plan.virtual_stages == 1 else f"{plan.schedule} v{plan.virtual_stages}"
    return sched


def options(plan) -> str:
    """The plan's switches in a few characters: sp, ZeRO stage, parameter server, placement."""
    out = []
    if plan.sequence_parallel:
        out.append("sp")
    if plan.zero_stage:
        out.append(f"zero{plan.zero_stage}")
    if plan.dp_sync == "parameter-server":
        out.append("ps")
    if not plan.tp_inside_node:
        out.append("dp-inner")
    return " ".join(out) or "-"


def band_label(band) -> str:
    """A step-time band as ``lo-hi`` (three significant digits), or ``-``."""
    return f"{band[0]:.3g}-{band[1]:.3g}" if band else "-"


def ranked_table(result: SearchResult, title: str) -> Table:
    price = result.price_per_gpu_hour
    table = Table(title=title, title_justify="left")
    left = ("schedule", "recompute", "options", "dominant overhead")
    for name in ("#", "tp", "pp", "dp", "cp", "mb", "schedule", "recompute", "options", "step s", "tokens/s", "MFU",
                 "GiB/GPU", "dominant overhead"):
        table.add_column(name, justify="left" if name in left else "right", no_wrap=True)
    banded = any(r.step_time_band_s for _, r in result.plans)
    if banded:
        table.add_column("band s", justify="right", no_wrap=True)
    if price is not None:
        table.add_column("$/step", justify="right")
    for rank, ((scenario, r), uniform) in enumerate(zip(result.plans, result.uniform), start=1):
        p = scenario.plan
        key, value = dominant_overhead(r)
        row = [str(rank) + ("" if uniform else "*"), str(p.tp), str(p.pp), str(p.dp), str(p.cp), str(p.micro_batch),
               plan_label(p), p.recompute, options(p), f"{r.step_time_s:.3f}", f"{r.tokens_per_s:,.0f}",
               f"{100 * r.mfu:.1f}%", f"{r.memory['peak_bytes_per_gpu'] / GIB:.1f}", f"{key} {value:.3g} s"]
        if banded:
            row.append(band_label(r.step_time_band_s))
        if price is not None:
            row.append(f"{cost_per_step(r.step_time_s, p.gpus, price):.4g}")
        table.add_row(*row)
    return table


def print_plan_result(result: SearchResult, title: str, console: Console) -> None:
    console.print(ranked_table(result, title))
    console.print(f"considered {result.considered:,} plans, {result.fitting:,} fit in memory, "
                  f"simulated {result.simulated} in {result.search_wall_s:.1f} s")
    if not all(result.uniform):
        console.print("* balanced (non-uniform) layer partition, kept in the plan's `partition` field")
    if result.why.get("summary"):
        console.print(f"why #1: {result.why['summary']}")
    front = ", ".join(f"#{row['rank'] + 1}" for row in result.pareto)
    axes = "step time, memory per GPU" + (", cost" if result.price_per_gpu_hour is not None else "")
    console.print(f"Pareto front ({axes}): {front}")
    for note in result.notes:
        console.print(f"note: {note}")


@contextmanager
def progress_bar(enabled: bool = True):
    """Yield a ``progress(phase, done, total)`` callback drawing a rich bar on stderr."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(file=sys.stderr), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update
