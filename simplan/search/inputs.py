"""What ``simplan plan`` needs from its flags: a model, a cluster of N GPUs, and the best
plan written back as a scenario file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from simplan.errors import SimplanError, require
from simplan.hardware.cluster import Cluster
from simplan.hardware.load import load_hardware
from simplan.model.hf import is_hf_config
from simplan.model.load import load_model
from simplan.model.spec import ModelSpec
from simplan.scenario import parse_document, scenario_to_dict


def model_from_flag(model: str, seq_len: int | None = None) -> ModelSpec:
    """``--model``: a preset name, a Hugging Face config.json (a JSON object with
    ``model_type`` or ``architectures``), or a YAML/JSON file holding a model mapping (or a
    scenario, whose ``model`` section is used; its ``hf_config`` path is relative to that
    file). ``--seq-len`` overrides the sequence length."""
    section: dict | str = model
    base_dir = None
    if model.endswith((".yaml", ".yml", ".json")):
        path = Path(model)
        try:
            text = path.read_text()
        except OSError as e:
            raise SimplanError(f"--model: cannot read {model} ({e.strerror})") from None
        data = parse_document(text, f"--model: {model}", path.suffix == ".json")
        require(isinstance(data, dict), f"--model: {model} must hold a mapping, got {type(data).__name__}")
        if path.suffix == ".json" and is_hf_config(data):
            section = {"hf_config": model}
        else:
            section = data["model"] if "model" in data else data
            base_dir = path.parent
    if seq_len is not None:
        require(isinstance(seq_len, int) and seq_len >= 1, f"--seq-len: must be an integer >= 1, got {seq_len!r}")
        if isinstance(section, str):
            section = {"preset": section}
        section = {**section, "seq_len": seq_len}
    return load_model(section, where="--model", base_dir=base_dir)


def cluster_from_flags(hardware: str, gpus: int) -> Cluster:
    """``--hardware`` (profile name or file) and ``--gpus``: whole nodes of the profile, or
    one partly used node when fewer GPUs than a node are asked for."""
    require(isinstance(gpus, int) and gpus >= 1, f"--gpus: must be an integer >= 1, got {gpus!r}")
    profile = load_hardware(hardware)
    g = profile.gpus_per_node
    if gpus < g:
        return Cluster(profile=profile, nodes=1, gpus_per_node=gpus)
    require(gpus % g == 0, f"--gpus: {gpus} is not a multiple of the {g} GPUs per node of {profile.name} "
                           f"(use {gpus // g * g} or {(gpus // g + 1) * g})")
    return Cluster(profile=profile, nodes=gpus // g)


def write_scenario(scenario, path: Path, partition_note: str | None = None) -> None:
    """The normalized scenario as YAML (JSON for a .json path): ``simplan simulate`` reads it back."""
    data = scenario_to_dict(scenario)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        header = "# written by simplan plan: the best plan found\n"
        if partition_note:
            header += f"# {partition_note}\n"
        text = header + yaml.safe_dump(data, sort_keys=False)
    try:
        path.write_text(text)
    except OSError as e:
        raise SimplanError(f"--out: cannot write {path} ({e.strerror})") from None


def _ints(flag: str, text: str | None):
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SimplanError(f"{flag}: expected an integer or a comma-separated list (e.g. 4,8), got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _words(text: str | None):
    if text is None:
        return None
    values = tuple(v.strip() for v in text.split(","))
    return values[0] if len(values) == 1 else values


def _bools(flag: str, text: str | None):
    if text is None:
        return None
    table = {"true": True, "false": False}  # strict, as in a scenario file: no yes/no, on/off, 1/0
    out = []
    for v in text.split(","):
        require(v.strip().lower() in table, f"{flag}: expected true or false, got {v!r}")
        out.append(table[v.strip().lower()])
    return out[0] if len(out) == 1 else tuple(out)


def constraints_from_flags(*, tp=None, pp=None, dp=None, cp=None, ep=None, micro_batch=None, virtual_stages=None,
                           schedule=None, recompute=None, sequence_parallel=None, zero_stage=None, dp_sync=None,
                           tp_inside_node=None, max_tp=None, max_pp=None, max_cp=None, max_micro_batch=None,
                           precision=None, dp_overlap=True):
    """``simplan plan``'s constraint flags (strings as typed) -> Constraints."""
    from simplan.search.space import Constraints

    return Constraints(
        tp=_ints("--tp", tp), pp=_ints("--pp", pp), dp=_ints("--dp", dp), cp=_ints("--cp", cp), ep=_ints("--ep", ep),
        micro_batch=_ints("--micro-batch", micro_batch), virtual_stages=_ints("--virtual-stages", virtual_stages),
        schedule=_words(schedule), recompute=_words(recompute),
        sequence_parallel=_bools("--sequence-parallel", sequence_parallel),
        zero_stage=_ints("--zero-stage", zero_stage), dp_sync=_words(dp_sync),
        tp_inside_node=_bools("--tp-inside-node", tp_inside_node), max_tp=max_tp, max_pp=max_pp, max_cp=max_cp,
        max_micro_batch=max_micro_batch, precision=precision, dp_overlap=dp_overlap)
