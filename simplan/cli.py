"""The ``simplan`` command: parse, call the library, print.

Each command is a small function over one library module; results go to stdout (``--json``
for machines: one object per line), errors to stderr. A user mistake
(:class:`SimplanError`) is one line ``error: <message>`` and exit status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from simplan.errors import SimplanError, require

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a bug shows Python's plain traceback
    help="Plan and simulate data / tensor / pipeline / context / expert parallel (and hybrid) training "
         "before renting the cluster.",
)

EXIT_USER_ERROR = 2


OFF_TERMINAL_WIDTH = 100
"""Columns of the tables when stdout is not a terminal and $COLUMNS is not set."""


def _console():
    """stdout for rich: the terminal's width; off a terminal $COLUMNS, else 100 columns."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(file=sys.stdout)
    columns = os.environ.get("COLUMNS", "")
    return Console(file=sys.stdout, width=int(columns) if columns.isdigit() and int(columns) > 0
                   else OFF_TERMINAL_WIDTH)


def _check_writable(flag: str, path: Path) -> None:
    """Refuse an output file before the work that fills it: a folder, a missing folder, a
    file or folder without write permission."""
    require(not path.is_dir(), f"{flag}: cannot write {path} (it is a directory)")
    require(path.parent.is_dir(), f"{flag}: cannot write {path} (no such directory {path.parent})")
    require(os.access(path if path.exists() else path.parent, os.W_OK),
            f"{flag}: cannot write {path} (permission denied)")


def _echo_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, allow_nan=False))


# --- simulate ------------------------------------------------------------------------------

def parse_slow_ranks(values: list[str]) -> dict[int, float]:
    """``--slow-rank RANK:FACTOR`` (repeatable): rank ``RANK`` runs ``FACTOR`` times slower."""
    out: dict[int, float] = {}
    for text in values:
        rank_text, sep, factor_text = text.partition(":")
        try:
            rank, factor = int(rank_text), float(factor_text)
        except ValueError:
            raise SimplanError(f"--slow-rank: expected RANK:FACTOR (e.g. 3:1.5), got {text!r}") from None
        require(sep == ":", f"--slow-rank: expected RANK:FACTOR (e.g. 3:1.5), got {text!r}")
        require(rank >= 0, f"--slow-rank: rank must be >= 0, got {rank}")
        require(factor > 0 and factor != float("inf"), f"--slow-rank: factor must be > 0 and finite, got {factor}")
        require(rank not in out, f"--slow-rank: rank {rank} given twice")
        out[rank] = factor
    return out


@app.command()
def simulate(
    scenarios: list[Path] = typer.Argument(..., help="Scenario files (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per scenario per line."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a Chrome/Perfetto trace (one scenario)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for jitter."),
    jitter: float = typer.Option(0.0, "--jitter", help="Relative per-operation jitter (standard deviation)."),
    steps: int = typer.Option(1, "--steps", help="Optimizer steps to simulate."),
    slow_rank: list[str] = typer.Option([], "--slow-rank", help="RANK:FACTOR, a straggler (repeatable)."),
) -> None:
    """Simulate one training step of each scenario."""
    from simplan.report.table import progress_bar
    from simplan.scenario import load_scenario
    from simplan.sim import simulate as run

    require(jitter >= 0 and jitter != float("inf"), f"--jitter: must be >= 0 and finite, got {jitter}")
    require(steps >= 1, f"--steps: must be >= 1, got {steps}")
    require(trace is None or len(scenarios) == 1,
            f"--trace: writes one trace, give one scenario (got {len(scenarios)})")
    if trace is not None:
        _check_writable("--trace", trace)
    slow = parse_slow_ranks(slow_rank)
    # a bar over files, on a terminal's stderr; not when the results go to that terminal too
    # (each one printed there would tear the bar, and shows the progress itself)
    over_files = len(scenarios) > 1 and sys.stderr.isatty() and not sys.stdout.isatty()
    # otherwise a bar over the replicas or steps that variability simulates (one bar at a time)
    over_runs = not over_files and sys.stderr.isatty() and (jitter > 0 or bool(slow) or steps > 1)
    with progress_bar(over_files) as progress:
        for done, path in enumerate(scenarios, start=1):
            scenario = load_scenario(path)
            for rank in slow:
                require(rank < scenario.gpus,
                        f"--slow-rank: rank {rank} does not exist in {path} ({scenario.gpus} GPUs)")
            with progress_bar(over_runs) as runs:
                result = run(scenario, seed=seed, jitter=jitter, steps=steps, slow_ranks=slow or None,
                             trace=trace is not None, progress=runs)
            if as_json:
                _echo_json(result.to_json())
            else:
                _print_result(str(path), result.to_json(), scenario.model.is_transformer)
            if trace is not None:
                _write_trace(trace, result.trace or [])
            if progress:
                progress("simulating", done, len(scenarios))


def _write_trace(path: Path, events: list) -> None:
    from simplan.sim.trace import write_trace

    try:
        write_trace(events, path)
    except OSError as e:
        raise SimplanError(f"--trace: cannot write {path} ({e.strerror})") from None
    typer.echo(f"trace: wrote {len(events):,} events to {path} (open in ui.perfetto.dev)", err=True)


def _bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def _print_result(name: str, r: dict, per_token: bool = True) -> None:
    from rich.table import Table

    from simplan.report.table import per_second
    from simplan.sim.result import BREAKDOWN_KEYS

    mem = r["memory"]
    table = Table(title=f"{name}  (engine: {r['engine']})", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("step time", f"{r['step_time_s']:.4g} s")
    if r.get("step_time_band_s"):
        lo, hi = r["step_time_band_s"]
        table.add_row("  expected range", f"{lo:.4g} - {hi:.4g} s (published runs, held out by source, p10-p90)")
    if per_token:
        table.add_row("throughput", f"{r['tokens_per_s']:,.0f} tokens/s, {r['samples_per_s']:,.4g} samples/s")
    else:  # a CNN has no tokens
        table.add_row("throughput", f"{per_second(r['samples_per_s'])} samples/s (images/s)")
    table.add_row("model TFLOP/s per GPU", f"{r['model_tflops_per_gpu']:.4g} (MFU {100 * r['mfu']:.1f}%)")
    table.add_row("hardware TFLOP/s per GPU", f"{r['hardware_tflops_per_gpu']:.4g}")
    fits = "fits" if mem["fits"] else f"DOES NOT FIT: {_bytes(mem.get('shortfall_bytes', 0))} short"
    table.add_row("memory per GPU", f"{_bytes(mem['peak_bytes_per_gpu'])} of {_bytes(mem['capacity_bytes'])}, {fits}")
    for key, value in mem["breakdown"].items():
        table.add_row(f"  {key}", _bytes(value))
    for key, value in r["breakdown_s"].items():
        if key in BREAKDOWN_KEYS or value:
            table.add_row(f"time: {key}", f"{value:.4g} s")
    if r.get("distribution"):
        d = r["distribution"]
        table.add_row("step time p50 / p99", f"{d['p50_s']:.4g} / {d['p99_s']:.4g} s over {d['steps']} steps")
    table.add_row("events", f"{r['events']:,} ({r['sim_wall_s']:.2f} s wall)")
    _console().print(table)


# --- models, hardware ---------------------------------------------------------------------

@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="One JSON object per preset per line.")) -> None:
    """List the model presets."""
    from simplan.model import build_graph, load_model, model_names

    rows = []
    for name in model_names():
        spec = load_model(name)
        rows.append({"name": name, "family": spec.family, "params": build_graph(spec).params,
                     "layers": spec.layers, "hidden": spec.hidden, "heads": spec.heads, "seq_len": spec.seq_len})
    if as_json:
        for row in rows:
            _echo_json(row)
        return
    from rich.table import Table

    table = Table("preset", "family", "params", "layers", "hidden", "heads", "seq_len")
    for row in rows:
        table.add_row(row["name"], row["family"], f"{row['params'] / 1e9:.2f} B", str(row["layers"]),
                      str(row["hidden"] or "-"), str(row["heads"] or "-"), str(row["seq_len"]))
    _console().print(table)


@app.command()
def hardware(as_json: bool = typer.Option(False, "--json", help="One JSON object per profile per line.")) -> None:
    """List the hardware profiles with their key numbers."""
    from simplan.hardware.load import hardware_names, load_hardware

    rows = []
    for name in hardware_names():
        p = load_hardware(name)
        rows.append({"name": name, "peak_tflops": {k: v / 1e12 for k, v in p.peak_flops_per_s.items()},
                     "hbm_gib": p.hbm_bytes / 2**30, "hbm_gbyte_per_s": p.hbm_bytes_per_s / 1e9,
                     "gpus_per_node": p.gpus_per_node, "fabric": p.fabric,
                     "intra_gbyte_per_s": p.intra_bytes_per_s / 1e9, "nics_per_node": p.nics_per_node,
                     "nic_gbit_per_s": p.nic_bytes_per_s * 8 / 1e9})
    if as_json:
        for row in rows:
            _echo_json(row)
        return
    from rich.table import Column, Table

    # the name is what the user types: never cut it (the other columns wrap)
    table = Table(Column("profile", no_wrap=True), "dense TFLOP/s", "HBM", "HBM GB/s", "node", "in-node GB/s",
                  "NICs per node")
    for r in rows:
        peaks = ", ".join(f"{k} {v:g}" for k, v in r["peak_tflops"].items())
        table.add_row(r["name"], peaks, f"{r['hbm_gib']:g} GiB", f"{r['hbm_gbyte_per_s']:g}",
                      f"{r['gpus_per_node']} x {r['fabric']}", f"{r['intra_gbyte_per_s']:g}",
                      f"{r['nics_per_node']} x {r['nic_gbit_per_s']:g} Gbit/s")
    _console().print(table)


# --- validate ------------------------------------------------------------------------------

@app.command()
def validate(scenario: Path = typer.Argument(..., help="Scenario file (YAML or JSON).")) -> None:
    """Print "ok", or every problem of the scenario's plan (exit status 2)."""
    from simplan.cost.memory import scenario_memory
    from simplan.scenario import load_scenario, scenario_problems

    s = load_scenario(scenario, check=False)
    found = scenario_problems(s)
    if not found:
        mem = scenario_memory(s)
        if not mem.fits:
            gib = 2**30
            found.append(f"memory: stage {mem.peak_stage} needs {mem.peak_bytes_per_gpu / gib:.2f} GiB per GPU, "
                         f"{mem.shortfall_bytes / gib:.2f} GiB more than the {mem.capacity_bytes / gib:.2f} GiB "
                         f"of {s.hardware.name}")
    if found:
        for problem in found:
            typer.echo(f"{scenario}: {problem}")
        raise typer.Exit(EXIT_USER_ERROR)
    typer.echo("ok")


# --- plan, export (logic in simplan.search and simplan.report) ---------------------------------

# help panels of ``simplan plan --help``
_WHAT = "Model and cluster"
_FIX = "Fix the plan (one value, or a comma-separated list to search, e.g. --tp 4,8)"
_SPACE = "Limits of the search"
_OUTPUT = "Search and output"


@app.command()
def plan(
    model: str = typer.Option(..., "--model", metavar="PRESET|FILE", rich_help_panel=_WHAT,
                              help="Model preset (simplan models), or a YAML/JSON file with a model section."),
    hardware: str = typer.Option(..., "--hardware", metavar="PROFILE|FILE", rich_help_panel=_WHAT,
                                 help="Hardware profile (simplan hardware) or profile file."),
    gpus: int = typer.Option(..., "--gpus", metavar="N", rich_help_panel=_WHAT, help="GPUs in the cluster."),
    global_batch: int = typer.Option(..., "--global-batch", metavar="N", rich_help_panel=_WHAT,
                                     help="Sequences (images for a CNN) per optimizer step."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", metavar="N", rich_help_panel=_WHAT,
                                          help="Override the model's sequence length."),
    tp: Optional[str] = typer.Option(None, "--tp", metavar="N[,N]", rich_help_panel=_FIX,
                                     help="Tensor parallel degree."),
    pp: Optional[str] = typer.Option(None, "--pp", metavar="N[,N]", rich_help_panel=_FIX, help="Pipeline stages."),
    dp: Optional[str] = typer.Option(None, "--dp", metavar="N[,N]", rich_help_panel=_FIX,
                                     help="Data parallel degree."),
    cp: Optional[str] = typer.Option(None, "--cp", metavar="N[,N]", rich_help_panel=_FIX,
                                     help="Context parallel degree."),
    ep: Optional[str] = typer.Option(None, "--ep", metavar="N[,N]", rich_help_panel=_FIX,
                                     help="Expert parallel degree (MoE models)."),
    micro_batch: Optional[str] = typer.Option(None, "--micro-batch", metavar="N[,N]", rich_help_panel=_FIX,
                                              help="Sequences per micro-batch."),
    virtual_stages: Optional[str] = typer.Option(None, "--virtual-stages", metavar="N[,N]", rich_help_panel=_FIX,
                                                 help="Virtual stages per pipeline rank (interleaved schedules)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", metavar="NAME[,NAME]", rich_help_panel=_FIX,
                                           help="gpipe, 1f1b, interleaved-1f1b, zero-bubble."),
    recompute: Optional[str] = typer.Option(None, "--recompute", metavar="NAME[,NAME]", rich_help_panel=_FIX,
                                            help="none, selective, full."),
    sequence_parallel: Optional[str] = typer.Option(None, "--sequence-parallel", metavar="true|false",
                                                    rich_help_panel=_FIX, help="Megatron sequence parallelism."),
    zero_stage: Optional[str] = typer.Option(None, "--zero-stage", metavar="N[,N]", rich_help_panel=_FIX,
                                             help="ZeRO stage 0..3 (3 = fully sharded, FSDP)."),
    dp_sync: Optional[str] = typer.Option(None, "--dp-sync", metavar="NAME[,NAME]", rich_help_panel=_FIX,
                                          help="allreduce or parameter-server."),
    tp_inside_node: Optional[str] = typer.Option(None, "--tp-inside-node", metavar="true|false",
                                                 rich_help_panel=_FIX, help="Tensor parallel groups within a node."),
    precision: Optional[str] = typer.Option(None, "--precision", metavar="NAME", rich_help_panel=_FIX,
                                            help="fp32, tf32, fp16, bf16, fp8."),
    no_dp_overlap: bool = typer.Option(False, "--no-dp-overlap", rich_help_panel=_FIX,
                                       help="Reduce gradients after the backward, not during it."),
    max_tp: Optional[int] = typer.Option(None, "--max-tp", metavar="N", rich_help_panel=_SPACE,
                                         help="Largest tp (default: GPUs per node)."),
    max_pp: Optional[int] = typer.Option(None, "--max-pp", metavar="N", rich_help_panel=_SPACE, help="Largest pp."),
    max_cp: Optional[int] = typer.Option(None, "--max-cp", metavar="N", rich_help_panel=_SPACE,
                                         help="Largest cp (default 1 below 8192 tokens)."),
    max_micro_batch: Optional[int] = typer.Option(None, "--max-micro-batch", metavar="N", rich_help_panel=_SPACE,
                                                  help="Largest micro-batch."),
    top_k: int = typer.Option(32, "--top-k", metavar="N", rich_help_panel=_OUTPUT,
                              help="Plans to simulate with the SimPy engine."),
    workers: Optional[int] = typer.Option(None, "--workers", metavar="N", rich_help_panel=_OUTPUT,
                                          help="Processes (default: every core)."),
    sim_budget: Optional[int] = typer.Option(None, "--sim-budget", metavar="EVENTS", rich_help_panel=_OUTPUT,
                                             help="SimPy events the top plans may take together, best first "
                                                  "(default 4,500,000; a frontier-scale plan takes millions)."),
    price_per_gpu_hour: Optional[float] = typer.Option(None, "--price-per-gpu-hour", metavar="USD",
                                                       rich_help_panel=_OUTPUT, help="Adds cost per step."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=_OUTPUT,
                                 help="One JSON object: plans, considered, simulated, ..."),
    wide: bool = typer.Option(False, "--wide", rich_help_panel=_OUTPUT,
                              help="Every column of the table, however wide (default: fit the terminal)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", rich_help_panel=_OUTPUT,
                                       help="Write the best plan as a scenario file."),
) -> None:
    """Search the plans of a model on a cluster; print the fastest that fit."""
    from simplan.report.table import print_plan_result, progress_bar
    from simplan.search.inputs import cluster_from_flags, constraints_from_flags, model_from_flag, write_scenario
    from simplan.search.search import search

    spec = model_from_flag(model, seq_len)
    cluster = cluster_from_flags(hardware, gpus)
    constraints = constraints_from_flags(
        tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=micro_batch, virtual_stages=virtual_stages, schedule=schedule,
        recompute=recompute, sequence_parallel=sequence_parallel, zero_stage=zero_stage, dp_sync=dp_sync,
        tp_inside_node=tp_inside_node, max_tp=max_tp, max_pp=max_pp, max_cp=max_cp, max_micro_batch=max_micro_batch,
        precision=precision, dp_overlap=not no_dp_overlap)
    if out is not None:
        _check_writable("--out", out)
    with progress_bar(sys.stderr.isatty()) as progress:
        result = search(spec, cluster, global_batch, constraints=constraints, top_k=top_k, workers=workers,
                        progress=progress, price_per_gpu_hour=price_per_gpu_hour, hardware_ref=hardware,
                        sim_budget_events=sim_budget)
    if out is not None:
        note = None if result.uniform[0] else (
            f"the search balanced layers as {list(result.partitions[0])} units per chunk (plan.partition)")
        write_scenario(result.best[0], out, note)
    if as_json:
        _echo_json(result.to_json())
    else:
        title = f"{spec.name} on {gpus} x {cluster.profile.name}, global batch {global_batch}"
        print_plan_result(result, title, _console(), wide=wide)


@app.command()
def export(
    scenario: Path = typer.Argument(..., help="Scenario file (YAML or JSON), e.g. from simplan plan --out."),
    fmt: str = typer.Option(..., "--format", help="megatron, torchtitan or deepspeed."),
) -> None:
    """Print the launch arguments / config file of a framework for the scenario's plan."""
    from simplan.report.export import export as make
    from simplan.scenario import load_scenario

    result = make(load_scenario(scenario), fmt)
    typer.echo(result.text, nl=False)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)


# --- executor: run, verify, calibrate (logic in simplan.execute.commands) --------------------

@app.command()
def run(
    scenario: Path = typer.Argument(..., help="Scenario file (YAML or JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the measurement (JSON) to this file."),
    steps: int = typer.Option(5, "--steps", help="Measured optimizer steps."),
    warmup: int = typer.Option(2, "--warmup", help="Warm-up steps before measuring."),
    device: str = typer.Option("cpu", "--device", help="cpu (gloo) or cuda (NCCL)."),
    timeout_s: float = typer.Option(600.0, "--timeout", help="Seconds before every rank is stopped."),
    max_ranks: Optional[int] = typer.Option(None, "--max-ranks", help="Ranks this host may run."),
    nnodes: int = typer.Option(1, "--nnodes", help="Nodes (torchrun rendezvous)."),
    node_rank: int = typer.Option(0, "--node-rank", help="This node's rank."),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="host:port of node 0."),
    as_json: bool = typer.Option(False, "--json", help="The whole measurement as one JSON object."),
) -> None:
    """Run a scenario's plan for real with torch.distributed (torchrun)."""
    from simplan.execute.commands import run_command

    if out is not None:
        _check_writable("--out", out)
    result = run_command(scenario, out, steps, warmup, device, timeout_s, max_ranks, 1, nnodes, node_rank,
                         rdzv_endpoint)
    if as_json:
        _echo_json(result)
        return
    from rich.table import Table

    table = Table(title=f"{scenario}  (measured)", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for row in _run_rows(result, out):
        table.add_row(*row)
    _console().print(table)


def _run_rows(result: dict, out: Path | None) -> list[tuple[str, str]]:
    """``simplan run``'s summary of a measurement: (quantity, value) rows."""
    from simplan.model.load import load_model
    from simplan.report.table import per_second

    model = load_model(result["model"])
    t = result["step_time_s"]
    samples_per_s = result["plan"]["global_batch"] / t
    if model.is_transformer:
        throughput = f"{samples_per_s * model.seq_len:,.0f} tokens/s, {samples_per_s:,.4g} samples/s"
    else:  # a CNN has no tokens
        throughput = f"{per_second(samples_per_s)} samples/s (images/s)"
    rows = [("step time", f"{t:.4g} s (min {result['step_time_min_s']:.4g}, max {result['step_time_max_s']:.4g}; "
                          f"{len(result['step_times_s'])} steps after {result['warmup']} warm-up)"),
            ("throughput", throughput),
            ("activations per rank", f"{_bytes(result['activation_bytes'])} (largest rank)"),
            ("peak RSS per rank", f"{_bytes(max(result['peak_rss_bytes_per_rank']))} (largest rank)")]
    if result.get("peak_allocated_bytes_per_rank"):
        rows.append(("peak GPU memory per rank", f"{_bytes(max(result['peak_allocated_bytes_per_rank']))}"))
    return rows + [("ranks", f"{result['nproc']} x {result['device']} ({result['backend']}), "
                             f"{result['threads_per_rank']} thread(s) each"),
                   ("loss", f"{result['loss_per_step'][0]:.4g} -> {result['loss_per_step'][-1]:.4g}"),
                   ("JSON", str(out) if out is not None else "not written (--out FILE keeps it; --json prints it)")]


@app.command()
def verify(
    scenarios: list[Path] = typer.Argument(..., help="Scenario files (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: rows, mape, kendall_tau."),
    hardware_profile: Optional[str] = typer.Option(None, "--hardware", help="Profile replacing the scenarios'."),
    steps: int = typer.Option(10, "--steps", help="Measured optimizer steps per scenario."),
    warmup: int = typer.Option(3, "--warmup", help="Warm-up steps per scenario."),
    device: str = typer.Option("cpu", "--device", help="cpu (gloo) or cuda (NCCL)."),
    timeout_s: float = typer.Option(600.0, "--timeout", help="Seconds per scenario run."),
    max_ranks: Optional[int] = typer.Option(None, "--max-ranks", help="Ranks this host may run."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON object to this file."),
    rounds: int = typer.Option(1, "--rounds", help="Launches per scenario, one round through the set at a time "
                                                   "(median; evens out a host whose speed drifts)."),
) -> None:
    """Run scenarios on the executor and the simulator; print predicted vs measured."""
    from simplan.execute.commands import verify_command
    from simplan.execute.verify import format_table

    summary = verify_command(scenarios, hardware_profile, steps, warmup, device, timeout_s, max_ranks, out,
                             rounds)
    typer.echo(json.dumps(summary, allow_nan=False) if as_json else format_table(summary))


@app.command()
def calibrate(
    local: bool = typer.Option(False, "--local", help="Microbenchmark this host (torch, gloo)."),
    from_runs: list[Path] = typer.Option([], "--from-runs", help="Fit a profile to measured runs (vTrain CSV, repeatable: "
                                                                 "half of each file's rows fitted; or one published_runs.yaml)."),
    hardware_profile: Optional[str] = typer.Option(None, "--hardware",
                                                   help="With --from-runs: the profile whose parameters are fitted."),
    param: list[str] = typer.Option([], "--param", help="With --from-runs: a parameter to fit (repeatable; "
                                                        "default: the compute and collective set)."),
    out: Path = typer.Option(..., "--out", help="Profile file to write (YAML)."),
    device: str = typer.Option("cpu", "--device", help="With --local: cpu (gloo, fp32) or cuda (GPU 0, bf16)."),
    base: Optional[str] = typer.Option(None, "--base", help="With --local: the profile supplying what is not "
                                                            "measured (default: cpu-host; on cuda the GPU's own)."),
    allow_noisy: bool = typer.Option(False, "--allow-noisy", help="With --local: write the profile even when repeated "
                                                                  "measurements scatter (a busy host)."),
) -> None:
    """Write a calibrated hardware profile."""
    require(local != bool(from_runs), "calibrate: give exactly one of --local or --from-runs")
    require(local or not allow_noisy, "calibrate: --allow-noisy goes with --local")
    require(not local or (hardware_profile is None and not param),
            "calibrate --local: --hardware and --param go with --from-runs")
    if local:
        from simplan.execute.commands import calibrate_local_command

        calibrate_local_command(out, base=base, device=device, allow_noisy=allow_noisy)
        return
    require(hardware_profile is not None, "calibrate --from-runs: --hardware PROFILE is required")
    from simplan.calibrate.command import calibrate_from_runs

    calibration = calibrate_from_runs(from_runs, hardware_profile, out, parameters=tuple(param) or None)
    _echo_json({"out": str(out), "calibration": calibration})


# --- entry point ---------------------------------------------------------------------------

def _one_line(message: str) -> str:
    return " ".join(message.split())


def _cli_errors() -> tuple[type[Exception], ...]:
    """Usage errors of the option parser: typer >= 0.2x has its own, older typer raises click's."""
    found: list[type[Exception]] = []
    try:
        from typer.exceptions import TyperException

        found.append(TyperException)
    except ImportError:  # pragma: no cover - older typer
        pass
    try:
        import click

        found.append(click.ClickException)
    except ImportError:  # pragma: no cover - typer without click
        pass
    return tuple(found)


def _aborts() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [typer.Abort]
    try:
        import click

        found.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 user error)."""
    try:
        code = app(args=argv, prog_name="simplan", standalone_mode=False)
    except SimplanError as e:
        typer.echo(f"error: {_one_line(str(e))}", err=True)
        return EXIT_USER_ERROR
    except _cli_errors() as e:
        typer.echo(f"error: {_one_line(e.format_message())}", err=True)  # type: ignore[attr-defined]
        return EXIT_USER_ERROR
    except yaml.YAMLError as e:
        typer.echo(f"error: malformed YAML: {_one_line(str(e))}", err=True)
        return EXIT_USER_ERROR
    except FileNotFoundError as e:
        typer.echo(f"error: no such file: {e.filename}", err=True)
        return EXIT_USER_ERROR
    except _aborts():
        typer.echo("error: aborted", err=True)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
