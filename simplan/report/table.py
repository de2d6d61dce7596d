"""The ranked table of ``simplan plan`` (rich), and its progress bar on stderr."""

from __future__ import annotations

import io
import sys
from contextlib import contextmanager

from rich import box
from rich.console import Console
from rich.table import Table

from simplan.search.search import SearchResult, cost_per_step, dominant_overhead

GIB = 2**30
TEXT_COLUMNS = ("schedule", "recompute", "options", "dominant overhead")
"""Left-aligned; the only columns rich may wrap when the table still does not fit."""


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


def _seconds(t: float) -> str:
    return f"{t:.3f}" if t >= 1 else f"{t:.4g}"  # 0.0201, not 0.020, for a ResNet step


def per_second(per_s: float) -> str:
    """A throughput: 170,978 or 3.52 (no exponent)."""
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.3g}"


def _columns(result: SearchResult) -> list[tuple[str, int, list[str]]]:
    """(header, drop order, cells) of every column. Drop order 0 is always shown; when the
    table is wider than the terminal the highest goes first: a cp or ep column of ones, the
    step-time band, the dominant overhead, MFU, recompute, micro-batch."""
    plans = [(s.plan, r) for s, r in result.plans]
    per_token = not result.plans or result.plans[0][0].model.is_transformer

    def column(header: str, drop: int, cell) -> tuple[str, int, list[str]]:
        return header, drop, [cell(p, r) for p, r in plans]

    def overhead(r) -> str:
        key, value = dominant_overhead(r)
        return f"{key} {value:.3g} s"

    ones = {axis: 9 if all(getattr(p, axis) == 1 for p, _ in plans) else 0 for axis in ("cp", "ep")}
    cols = [("#", 0, [f"{i}{'' if uniform else '*'}" for i, uniform in enumerate(result.uniform, start=1)]),
            column("tp", 0, lambda p, r: str(p.tp)), column("pp", 0, lambda p, r: str(p.pp)),
            column("dp", 0, lambda p, r: str(p.dp)), column("cp", ones["cp"], lambda p, r: str(p.cp)),
            column("ep", ones["ep"], lambda p, r: str(p.ep)), column("mb", 3, lambda p, r: str(p.micro_batch)),
            column("schedule", 0, lambda p, r: plan_label(p)), column("recompute", 4, lambda p, r: p.recompute),
            column("options", 0, lambda p, r: options(p)), column("step s", 0, lambda p, r: _seconds(r.step_time_s))]
    if any(r.step_time_band_s for _, r in plans):
        cols.append(column("band s", 8, lambda p, r: band_label(r.step_time_band_s)))
    if per_token:
        cols.append(column("tokens/s", 0, lambda p, r: per_second(r.tokens_per_s)))
    else:  # a CNN has no tokens: images per second
        cols.append(column("samples/s", 0, lambda p, r: per_second(r.samples_per_s)))
    cols += [column("MFU", 5, lambda p, r: f"{100 * r.mfu:.1f}%"),
             column("GiB/GPU", 0, lambda p, r: f"{r.memory['peak_bytes_per_gpu'] / GIB:.1f}"),
             column("dominant overhead", 6, lambda p, r: overhead(r))]
    if result.price_per_gpu_hour is not None:
        price = result.price_per_gpu_hour
        cols.append(column("$/step", 0, lambda p, r: f"{cost_per_step(r.step_time_s, p.gpus, price):.4g}"))
    return cols


def _table(title: str, cols: list[tuple[str, int, list[str]]]) -> Table:
    # no vertical rules, two spaces between columns: 30-50 characters narrower than a boxed table
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for header, _, _ in cols:
        text = header in TEXT_COLUMNS
        table.add_column(header, justify="left" if text else "right", no_wrap=not text)
    for row in zip(*(cells for _, _, cells in cols)):
        table.add_row(*row)
    return table


def _natural_width(table: Table) -> int:
    """Characters the table takes when nothing wraps."""
    return Console(file=io.StringIO(), width=10_000).measure(table).maximum


def ranked_table(result: SearchResult, title: str, width: int | None = None) -> tuple[Table, list[str]]:
    """The ranked plans, and the headers of the columns left out: with ``width``, columns are
    dropped by priority until the table fits (``None``: every column)."""
    cols = _columns(result)
    hidden: list[str] = []
    table = _table(title, cols)
    while width is not None and _natural_width(table) > width and any(drop for _, drop, _ in cols):
        dropped = max(cols, key=lambda c: c[1])
        cols.remove(dropped)
        hidden.append(dropped[0])
        table = _table(title, cols)
    return table, hidden


def why_line(why: dict, width: int) -> str:
    """The search's "why #1" summary for a terminal: a plan difference with a long value (a
    pipeline partition of 64 sizes) summarized, and the line cut to about two terminal lines.
    ``--json`` keeps the whole of ``why``."""
    summary = why.get("summary", "")
    differs = why.get("plan_differences", {})
    full = ", ".join(f"{k} {v['runner_up']}->{v['winner']}" for k, v in differs.items())
    short = ", ".join(_difference(k, v["runner_up"], v["winner"]) for k, v in differs.items())
    line = "why #1: " + (summary.replace(full, short) if full else summary)
    limit = 2 * width - 10  # word wrapping loses a few characters per line
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


def _difference(key: str, runner_up, winner) -> str:
    if key == "partition":  # () is the uniform partition
        if runner_up and winner:
            return "partition differs"
        return f"partition {'balanced' if runner_up else 'uniform'}->{'balanced' if winner else 'uniform'}"
    return f"{key} {_elide(runner_up)}->{_elide(winner)}"


def _elide(value, limit: int = 16) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def print_plan_result(result: SearchResult, title: str, console: Console, wide: bool = False) -> None:
    """The ranked table fitted to the console's width (``wide``: every column, however wide),
    then the search's numbers, why #1 wins, the Pareto front and the notes."""
    table, hidden = ranked_table(result, title, None if wide else console.width)
    if wide and _natural_width(table) > console.width:
        console = Console(file=console.file, width=_natural_width(table))
    console.print(table)

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    if hidden:
        say(f"hidden to fit {console.width} columns: {', '.join(hidden)} (--wide shows every column)")
    say(f"considered {result.considered:,} plans, {result.fitting:,} fit in memory, "
        f"simulated {result.simulated} in {result.search_wall_s:.1f} s")
    if not all(result.uniform):
        say("* balanced (non-uniform) layer partition, kept in the plan's `partition` field")
    if result.why.get("summary"):
        say(why_line(result.why, console.width))
    front = ", ".join(f"#{row['rank'] + 1}" for row in result.pareto)
    axes = "step time, memory per GPU" + (", cost" if result.price_per_gpu_hour is not None else "")
    say(f"Pareto front ({axes}): {front}")
    for note in result.notes:
        say(f"note: {note}")


@contextmanager
def progress_bar(enabled: bool = True, eta: bool = False):
    """Yield a ``progress(phase, done, total)`` callback drawing a rich bar on stderr (``None``
    when not ``enabled``: callers draw it only when stderr is a terminal); ``eta`` adds the
    time remaining."""
    if not enabled:
        yield None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    # results printed meanwhile go above the bar when stdout is the same terminal; a piped
    # stdout is left alone (rich would send it to the bar's stderr)
    with Progress(*columns, console=Console(file=sys.stderr), transient=True,
                  redirect_stdout=sys.stdout.isatty()) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update
