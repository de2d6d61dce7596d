"""Scenario: one model, one cluster, one plan (the "Scenario file" of DESIGN.md).

``load_scenario`` reads YAML or JSON, checks every section and the plan against the
model and the cluster; ``scenario_to_dict`` gives back the normalized scenario (every
default filled in), which loads again into an equal ``Scenario``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from simplan.errors import SimplanError, load_json, read_text, require
from simplan.hardware.cluster import Cluster, load_cluster
from simplan.hardware.load import _StrictLoader, load_hardware
from simplan.hardware.profile import HardwareProfile
from simplan.model import LayerGraph, ModelSpec, build_graph, load_model
from simplan.plan.framework import framework_defaults
from simplan.plan.plan import Plan, load_plan
from simplan.plan.validate import problems as plan_problems
from simplan.units import GIGA, gbit_per_s_to_bytes_per_s

SECTIONS = ("model", "hardware", "cluster", "plan")
OPTIONAL_SECTIONS = ("framework",)


@dataclass(frozen=True)
class Scenario:
    model: ModelSpec
    cluster: Cluster
    plan: Plan
    hardware_ref: str
    """The profile as the scenario names it: a name in hardware_profiles/, or a resolved path."""
    framework: str = "generic"
    """The framework whose defaults filled the plan's unset fields (simplan.plan.framework)."""

    @property
    def hardware(self) -> HardwareProfile:
        return self.cluster.profile

    @property
    def graph(self) -> LayerGraph:
        return build_graph(self.model)

    @property
    def gpus(self) -> int:
        return self.cluster.gpus


class _ScenarioLoader(_StrictLoader):
    """The hardware profiles' loader (a key given twice in one mapping is an error; ``1e9``
    is a float) with YAML 1.2 booleans: only true and false, so ``yes``, ``on`` and ``no``
    stay strings that the checks refuse instead of silently becoming booleans."""


_BOOL = "tag:yaml.org,2002:bool"
_ScenarioLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in _StrictLoader.yaml_implicit_resolvers.items()}
_ScenarioLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_document(text: str, label: str, is_json: bool) -> object:
    """A YAML or JSON document the user wrote. A key given twice in one mapping, at any
    depth, is a SimplanError (PyYAML and json would keep the last one silently)."""
    if is_json:
        return load_json(text, label)
    try:
        return yaml.load(text, Loader=_ScenarioLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        problem = str(getattr(e, "problem", ""))
        if problem.startswith("duplicate key"):  # well-formed, and the message names the line
            raise SimplanError(f"{label}: {problem}") from None
        raise SimplanError(f"{label}: malformed YAML{_yaml_where(e)}") from None


def _read(source: str | Path | dict, where: str | None) -> tuple[dict, str, Path | None]:
    """The raw mapping, a label for messages, and the directory relative paths start from."""
    if isinstance(source, dict):
        return source, where or "scenario", None
    path = Path(source)
    label = where or str(source)
    text = read_text(path, label, "scenario file")
    return parse_document(text, label, path.suffix.lower() == ".json"), label, path.parent


def _yaml_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{at}: {' '.join(str(problem).split())}"


def _hardware_ref(value: object, base: Path | None, label: str) -> str:
    require(isinstance(value, str) and value != "",
            f"{label}: hardware: expected a profile name or a path to a profile file, got {value!r}")
    looks_like_path = "/" in str(value) or str(value).endswith((".yaml", ".yml", ".json"))
    if looks_like_path:
        path = Path(str(value))
        if not path.is_absolute() and base is not None and (base / path).exists():
            path = base / path
        return str(path.resolve()) if path.exists() else value
    return str(value)


def load_scenario(source: str | Path | dict, where: str | None = None, *, check: bool = True) -> Scenario:
    """Read a scenario from a YAML/JSON file path or a mapping. ``where`` labels error
    messages (default: the path, or "scenario"). With ``check`` (the default) every
    plan problem is raised as one SimplanError; ``check=False`` leaves them to
    ``scenario_problems`` (what ``simplan validate`` lists). Memory that does not fit
    is never an error here."""
    try:
        return _load(source, where, check)
    except SimplanError as e:
        # messages quote what the user typed: escape line breaks and control characters
        # so that the message stays one line
        raise SimplanError(_printable(str(e))) from None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _load(source: str | Path | dict, where: str | None, check: bool) -> Scenario:
    data, label, base = _read(source, where)
    if not isinstance(data, dict):
        raise SimplanError(f"{label}: expected a mapping with sections {', '.join(SECTIONS)}, "
                           f"got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in SECTIONS + OPTIONAL_SECTIONS)
    require(not unknown, f"{label}: unknown section(s) {', '.join(unknown)}; known: "
                         f"{', '.join(SECTIONS + OPTIONAL_SECTIONS)}")
    missing = [k for k in SECTIONS if k not in data]
    require(not missing, f"{label}: missing section(s) {', '.join(missing)}")
    for key in ("model", "cluster", "plan"):
        if isinstance(data[key], dict):
            bad = sorted(repr(k) for k in data[key] if not isinstance(k, str))
            require(not bad, f"{label}: {key}: field names must be strings, got {', '.join(bad)}")

    precision = data["plan"].get("precision") if isinstance(data["plan"], dict) else None
    model = load_model(data["model"], where=f"{label}: model",
                       precision=precision if isinstance(precision, str) else None, base_dir=base)
    ref = _hardware_ref(data["hardware"], base, label)
    try:
        profile = load_hardware(ref)
    except SimplanError as e:
        raise SimplanError(f"{label}: {e}") from None

    try:
        # where="cluster", not the file label: an override's recorded source must not depend
        # on where the scenario was read from (the normalized scenario reloads equal)
        cluster = load_cluster(_changed_overrides(data["cluster"], profile), profile, "cluster")
    except SimplanError as e:
        raise SimplanError(f"{label}: {e}") from None
    plan = load_plan(data["plan"], gpus=cluster.gpus, where=f"{label}: plan")
    framework = data.get("framework", "generic")
    require(isinstance(framework, str), f"{label}: framework: expected a name, got {framework!r}")
    preset = framework_defaults(framework, data["plan"], plan.tp, plan.dp, plan.cp, plan.precision,
                                where=f"{label}: framework")
    if preset:
        plan = replace(plan, **preset)
    scenario = Scenario(model=model, cluster=cluster, plan=plan, hardware_ref=ref, framework=framework)
    if check:
        found = scenario_problems(scenario)
        if found:
            raise SimplanError(f"{label}: " + "; ".join(found))
    return scenario


def _changed_overrides(section: object, profile: HardwareProfile) -> object:
    """The cluster section without overrides equal to the profile's own values (so the
    profile's sources keep saying where those numbers came from, and the normalized
    scenario, which writes every value, reloads into an equal profile)."""
    if not isinstance(section, dict):
        return section  # load_cluster reports it
    out = dict(section)
    for key, current in (("gpus_per_node", profile.gpus_per_node), ("nics_per_node", profile.nics_per_node)):
        if type(out.get(key)) is int and out[key] == current:
            del out[key]
    gbit = out.get("nic_gbit_per_s")
    if type(gbit) in (int, float) and gbit_per_s_to_bytes_per_s(gbit) == profile.nic_bytes_per_s:
        del out["nic_gbit_per_s"]
    return out


def _nic_gbit_per_s(profile: HardwareProfile) -> float | int:
    # inverse of gbit_per_s_to_bytes_per_s, rounded to 12 digits so 25e9 B/s prints as 200
    gbit = float(f"{profile.nic_bytes_per_s * 8 / GIGA:.12g}")
    return int(gbit) if gbit.is_integer() else gbit


def scenario_problems(s: Scenario) -> list[str]:
    """Every reason the plan cannot run the model on this cluster (empty if none)."""
    found = plan_problems(s.plan, s.model, s.cluster.gpus)
    peaks = s.hardware.peak_flops_per_s
    if s.plan.precision not in peaks:
        found.append(f"plan.precision: {s.plan.precision} is not supported by {s.hardware.name} "
                     f"(it has {', '.join(sorted(peaks))})")
    return found


def scenario_to_dict(s: Scenario) -> dict:
    """The normalized scenario: every model, cluster and plan field explicit, the hardware
    by name (or resolved path); the cluster's fabric numbers are the profile's unless the
    scenario overrode them."""
    return {
        "model": s.model.to_dict(),
        "hardware": s.hardware_ref,
        "cluster": {"nodes": s.cluster.nodes, "gpus_per_node": s.cluster.gpus_per_node,
                    "nics_per_node": s.hardware.nics_per_node, "nic_gbit_per_s": _nic_gbit_per_s(s.hardware)},
        "plan": s.plan.to_dict(),
        "framework": s.framework,
    }
