"""Load, check and write hardware profiles (``hardware_profiles/*.yaml``).

A profile file uses vendor units with the unit in every key (``peak_tflops``, ``hbm_gib``,
``nic_gbit_per_s``, ``latency_us``); :func:`load_hardware` checks every key and converts
once into the SI :class:`HardwareProfile`. The check is strict, as calculon's system files
are: an unknown key, a missing key, a wrong type, a value out of range, or a number without
an entry in ``sources`` is a :class:`SimplanError` naming the file, the field and the value::

    hardware_profiles/x.yaml: network.nic_gbit_per_s: must be > 0, got -200
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from simplan.errors import SimplanError, load_json, read_text, require
from simplan.hardware.profile import FABRICS, TOPOLOGIES, HardwareProfile
from simplan.units import GIB, GIGA, TERA, gbit_per_s_to_bytes_per_s, gbyte_per_s_to_bytes_per_s, us_to_s

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_DIR = REPO_ROOT / "hardware_profiles"
SUFFIXES = (".yaml", ".yml", ".json")
PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8")


@dataclass(frozen=True)
class _Field:
    section: str
    key: str
    check: str
    """number checks: positive | nonnegative | efficiency | count | oversubscription | ports;
    fabric | topology | peaks."""
    attr: str
    to_si: Callable[[float], float] | None = None

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"


def _ms_to_s(ms: float) -> float:
    return ms * 1e-3


def _gib_to_bytes(gib: float) -> float:
    # HBM capacity is binary: nvidia-smi shows 81920 MiB on an "80GB" A100.
    return float(gib) * GIB


def _gflop_to_flops(gflop: float) -> float:
    return gflop * GIGA


def _tflops_to_flops(tflops: float) -> float:
    return tflops * TERA


FIELDS: tuple[_Field, ...] = (
    _Field("gpu", "peak_tflops", "peaks", "peak_flops_per_s", _tflops_to_flops),
    _Field("gpu", "hbm_gib", "positive", "hbm_bytes", _gib_to_bytes),
    _Field("gpu", "hbm_gbyte_per_s", "positive", "hbm_bytes_per_s", gbyte_per_s_to_bytes_per_s),
    _Field("gpu", "matmul_efficiency", "efficiency", "matmul_efficiency"),
    _Field("gpu", "matmul_half_gflop", "nonnegative", "matmul_half_flops", _gflop_to_flops),
    _Field("gpu", "memory_efficiency", "efficiency", "memory_efficiency"),
    _Field("gpu", "kernel_overhead_us", "nonnegative", "kernel_overhead_s", us_to_s),
    _Field("node", "gpus_per_node", "count", "gpus_per_node"),
    _Field("node", "fabric", "fabric", "fabric"),
    _Field("node", "intra_gbyte_per_s", "positive", "intra_bytes_per_s", gbyte_per_s_to_bytes_per_s),
    _Field("node", "intra_latency_us", "nonnegative", "intra_latency_s", us_to_s),
    _Field("node", "intra_efficiency", "efficiency", "intra_efficiency"),
    _Field("network", "nics_per_node", "count", "nics_per_node"),
    _Field("network", "nic_gbit_per_s", "positive", "nic_bytes_per_s", gbit_per_s_to_bytes_per_s),
    _Field("network", "latency_us", "nonnegative", "inter_latency_s", us_to_s),
    _Field("network", "efficiency", "efficiency", "inter_efficiency"),
    _Field("network", "topology", "topology", "topology"),
    _Field("network", "oversubscription", "oversubscription", "oversubscription"),
    _Field("network", "switch_ports", "ports", "switch_ports"),
    _Field("software", "step_overhead_ms", "nonnegative", "step_overhead_s", _ms_to_s),
)
OPTIONAL_FIELDS: tuple[_Field, ...] = (
    _Field("gpu", "attention_efficiency", "efficiency", "attention_efficiency"),
    _Field("gpu", "attention_half_seq", "nonnegative", "attention_half_seq"),
    _Field("gpu", "attention_fa2_efficiency", "efficiency", "attention_fa2_efficiency"),
    _Field("gpu", "fp8_matmul_efficiency", "efficiency", "fp8_matmul_efficiency"),
    _Field("gpu", "memory_reserve_gib", "nonnegative", "memory_reserve_bytes", _gib_to_bytes),
    _Field("node", "busy_slowdown", "positive", "busy_slowdown"),
    _Field("node", "allgather_gbyte_per_s", "nonnegative", "allgather_bytes_per_s", gbyte_per_s_to_bytes_per_s),
    _Field("node", "allgather_latency_us", "nonnegative", "allgather_latency_s", us_to_s),
    _Field("node", "reducescatter_gbyte_per_s", "nonnegative", "reducescatter_bytes_per_s",
           gbyte_per_s_to_bytes_per_s),
    _Field("node", "reducescatter_latency_us", "nonnegative", "reducescatter_latency_s", us_to_s),
    _Field("software", "dtensor_op_overhead_us", "nonnegative", "dtensor_op_overhead_s", us_to_s),
    _Field("software", "dtensor_update_overhead_us", "nonnegative", "dtensor_update_overhead_s", us_to_s),
    _Field("software", "fsdp_gather_overhead_us", "nonnegative", "fsdp_gather_overhead_s", us_to_s),
)
"""Keys a profile may leave out (the dataclass default applies: 0, or 1 for busy_slowdown);
present, they need a source."""
SECTIONS = ("gpu", "node", "network", "software")
TOP_REQUIRED = ("name", *SECTIONS, "sources")
TOP_OPTIONAL = ("description", "calibration")
SOURCE_KEYS = tuple(f.path for f in FIELDS)
OPTIONAL_SOURCE_KEYS = tuple(f.path for f in OPTIONAL_FIELDS)


# --- reading the file -------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML keeps the last one silently) and reads
    ``1e9`` as a float, as YAML 1.2 does (YAML 1.1 makes it a string)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # construct_mapping below reports the unhashable key
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _display(path: Path) -> str:
    """The file as a message names it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _read(path: Path, shown: str) -> Any:
    text = read_text(path, shown, "hardware profile file")
    if path.suffix == ".json":
        return load_json(text, shown)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SimplanError(f"{shown}: malformed YAML{where}: {problem}") from None


# --- checking --------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _check_number(v: Any, check: str, label: str) -> float:
    if check in ("count", "ports"):
        require(isinstance(v, int) and not isinstance(v, bool), f"{label}: expected an integer, got {v!r}")
        low = 2 if check == "ports" else 1
        require(v >= low, f"{label}: must be >= {low}, got {v}")
        return v
    require(_is_number(v), f"{label}: expected a number, got {v!r}")
    require(_finite(v), f"{label}: must be a finite number, got {v!r}")
    if check == "positive":
        require(v > 0, f"{label}: must be > 0, got {v}")
    elif check == "nonnegative":
        require(v >= 0, f"{label}: must be >= 0, got {v}")
    elif check == "efficiency":
        require(0 < v <= 1, f"{label}: must be in (0, 1], got {v}")
    elif check == "oversubscription":
        require(v >= 1, f"{label}: must be >= 1 (1 is non-blocking), got {v}")
    else:  # pragma: no cover - FIELDS only uses the checks above
        raise ValueError(check)
    return v


def _check_field(f: _Field, v: Any, shown: str) -> Any:
    label = f"{shown}: {f.path}"
    if f.check == "fabric" or f.check == "topology":
        choices = FABRICS if f.check == "fabric" else TOPOLOGIES
        require(isinstance(v, str) and v in choices, f"{label}: {v!r} is not one of {', '.join(choices)}")
        return v
    if f.check == "peaks":
        require(isinstance(v, dict) and v, f"{label}: expected a mapping of dtype to dense TFLOP/s "
                                            f"(e.g. {{bf16: 312}}), got {v!r}")
        unknown = sorted(key_name(k) for k in v if k not in PEAK_DTYPES)
        require(not unknown, f"{label}: unknown dtype(s) {', '.join(unknown)}; known: {', '.join(PEAK_DTYPES)}")
        peaks = {}
        for dtype, x in v.items():
            peaks[dtype] = f.to_si(_check_number(x, "positive", f"{label}.{dtype}"))
            require(_finite(peaks[dtype]), f"{label}.{dtype}: too large, got {x!r}")
        return peaks
    value = _check_number(v, f.check, label)
    if f.to_si is None:
        return value
    si = f.to_si(value)
    require(_finite(si), f"{label}: too large, got {v!r}")
    return si


def key_name(key: Any) -> str:
    """A key as a one-line message shows it: bare when it is a plain name, else its repr
    (so a key holding a newline cannot split the message)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w.+-]+", key) else repr(key)


def _check_keys(mapping: dict, known: tuple[str, ...], required: tuple[str, ...], where: str) -> None:
    bad = sorted(repr(k) for k in mapping if not isinstance(k, str))
    require(not bad, f"{where}: keys must be strings, got {', '.join(bad)}")
    unknown = sorted(key_name(k) for k in set(mapping) - set(known))
    require(not unknown, f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    missing = [k for k in required if k not in mapping]
    require(not missing, f"{where}: missing key(s) {', '.join(missing)}")


def profile_from_dict(data: Any, shown: str = "hardware") -> HardwareProfile:
    """Check a parsed profile (the YAML schema above) and convert it to SI units.
    ``shown`` names the file in error messages."""
    require(isinstance(data, dict), f"{shown}: expected a mapping at the top level, got {type(data).__name__}")
    _check_keys(data, TOP_REQUIRED + TOP_OPTIONAL, TOP_REQUIRED, shown)
    name = data["name"]
    require(isinstance(name, str) and name.strip() != "", f"{shown}: name: expected a non-empty string, got {name!r}")
    description = data.get("description", "")
    require(isinstance(description, str), f"{shown}: description: expected a string, got {description!r}")
    values: dict[str, Any] = {}
    for section in SECTIONS:
        body = data[section]
        require(isinstance(body, dict), f"{shown}: {section}: expected a mapping, got {body!r}")
        keys = tuple(f.key for f in FIELDS if f.section == section)
        optional = tuple(f.key for f in OPTIONAL_FIELDS if f.section == section)
        _check_keys(body, keys + optional, keys, f"{shown}: {section}")
        for f in FIELDS + OPTIONAL_FIELDS:
            if f.section == section and f.key in body:
                values[f.attr] = _check_field(f, body[f.key], shown)
    sources = data["sources"]
    require(isinstance(sources, dict), f"{shown}: sources: expected a mapping of field to source, got {sources!r}")
    present = tuple(f.path for f in OPTIONAL_FIELDS if f.key in data[f.section])
    _check_keys(sources, SOURCE_KEYS + OPTIONAL_SOURCE_KEYS, SOURCE_KEYS + present, f"{shown}: sources")
    for key, text in sources.items():
        require(isinstance(text, str) and text.strip() != "",
                f"{shown}: sources.{key}: expected a non-empty string naming where the number comes from, got {text!r}")
    calibration = data.get("calibration", {})
    if calibration is None:
        calibration = {}
    require(isinstance(calibration, dict), f"{shown}: calibration: expected a mapping, got {calibration!r}")
    return HardwareProfile(name=name, description=description, sources=dict(sources),
                           calibration=dict(calibration), **values)


# --- the public entry points -----------------------------------------------------------

def hardware_names() -> list[str]:
    """Profile names shipped in ``hardware_profiles/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_hardware(name_or_path: str) -> HardwareProfile:
    """A profile by name (``a100-sxm-80gb``: ``hardware_profiles/a100-sxm-80gb.yaml``) or by
    path (anything ending in .yaml, .yml or .json)."""
    if isinstance(name_or_path, Path):
        name_or_path = str(name_or_path)
    require(isinstance(name_or_path, str) and name_or_path != "",
            f"hardware: expected a profile name or a path to a profile file, got {name_or_path!r}")
    if name_or_path.endswith(SUFFIXES):
        path = Path(name_or_path)
        shown = _display(path) if path.is_absolute() else name_or_path
    else:
        names = hardware_names()
        require(name_or_path in names,
                f"hardware: unknown profile {name_or_path!r}; known: {', '.join(names)} "
                f"(or give a path ending in {', '.join(SUFFIXES)})")
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        shown = _display(path)
    return profile_from_dict(_read(path, shown), shown)


def _from_si(f: _Field, value: Any) -> Any:
    """Inverse of ``f.to_si`` (all conversions are a scale factor), rounded to 12
    significant digits so that 2039e9 / 1e9 prints as 2039."""
    if f.to_si is None:
        return value
    factor = f.to_si(1.0)

    def back(x: float) -> float | int:
        y = float(f"{x / factor:.12g}")
        return int(y) if y.is_integer() else y

    if isinstance(value, dict):
        return {k: back(v) for k, v in value.items()}
    return back(value)


def _written_optional(profile: HardwareProfile) -> tuple[_Field, ...]:
    """Optional fields a file states: those with a source or a value off the dataclass default."""
    return tuple(f for f in OPTIONAL_FIELDS
                 if profile.sources.get(f.path) or getattr(profile, f.attr) != _DEFAULTS[f.attr])


_DEFAULTS = {fl.name: fl.default for fl in fields(HardwareProfile)}


def profile_to_yaml_dict(profile: HardwareProfile) -> dict:
    """The profile in the file schema (vendor units), ready for ``yaml.safe_dump``."""
    out: dict[str, Any] = {"name": profile.name, "description": profile.description}
    written = FIELDS + _written_optional(profile)
    for section in SECTIONS:
        out[section] = {f.key: _from_si(f, getattr(profile, f.attr)) for f in written if f.section == section}
    out["sources"] = dict(profile.sources)
    out["calibration"] = dict(profile.calibration)
    return out


def dump_hardware(profile: HardwareProfile, path: str | Path) -> None:
    """Write ``profile`` as a profile file (YAML, or JSON for a .json path), then load it
    back so that a file this writes always passes the loader's checks."""
    path = Path(path)
    require(path.suffix in SUFFIXES, f"{path}: a profile file must end in {', '.join(SUFFIXES)}")
    missing = [k for k in SOURCE_KEYS + tuple(f.path for f in _written_optional(profile))
               if not profile.sources.get(k)]
    require(not missing, f"{profile.name}: sources missing for {', '.join(missing)}; every number needs one")
    data = profile_to_yaml_dict(profile)
    if path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(text, encoding="utf-8")
    load_hardware(str(path))


BUSY_RATES = ("matmul_efficiency", "memory_efficiency", "attention_efficiency", "attention_fa2_efficiency",
              "fp8_matmul_efficiency")
BUSY_SCALED = ("kernel_overhead_s", "step_overhead_s", "dtensor_op_overhead_s", "dtensor_update_overhead_s",
               "fsdp_gather_overhead_s")
"""The compute figures ``busy_slowdown`` rescales: rates (divided) and host times (multiplied)."""


def _fewer_busy(profile: HardwareProfile, busy: int, sources: dict, where: str) -> dict[str, Any]:
    """The compute figures of ``profile`` (measured with all its ``gpus_per_node`` devices
    busy) for a node that runs ``busy`` of them: the slowdown against one device alone,
    ``busy_slowdown`` with all n, is taken linear in the number busy (1 alone; exact for a
    2-device host), and every compute time scales by slowdown(busy) / slowdown(n). An
    efficiency that would pass 1 stays at 1."""
    n, full = profile.gpus_per_node, profile.busy_slowdown
    at_busy = 1.0 + (full - 1.0) * (busy - 1) / (n - 1)
    scale = at_busy / full
    note = (f"x{scale:.3f} in time: {busy} of the profile's {n} devices per node busy "
            f"(node.busy_slowdown {full:.3f}; scenario override {where}.gpus_per_node)")
    changes: dict[str, Any] = {"busy_slowdown": at_busy}
    for f in FIELDS + OPTIONAL_FIELDS:
        if f.attr in BUSY_RATES:
            changes[f.attr] = min(1.0, getattr(profile, f.attr) / scale)
        elif f.attr in BUSY_SCALED:
            changes[f.attr] = getattr(profile, f.attr) * scale
        if f.attr in changes and f.path in sources:
            sources[f.path] = f"{sources[f.path]}; {note}"
    return changes


def apply_cluster_overrides(profile: HardwareProfile, *, gpus_per_node: int | None = None,
                            nic_gbit_per_s: float | None = None, nics_per_node: int | None = None,
                            where: str = "cluster") -> HardwareProfile:
    """A copy of ``profile`` with a scenario's ``cluster`` overrides of the node size and
    the NICs; each overridden number's source says it came from the scenario."""
    changes: dict[str, Any] = {}
    sources = dict(profile.sources)
    if gpus_per_node is not None:
        changes["gpus_per_node"] = _check_number(gpus_per_node, "count", f"{where}.gpus_per_node")
        sources["node.gpus_per_node"] = f"scenario override ({where}.gpus_per_node)"
        if changes["gpus_per_node"] < profile.gpus_per_node and profile.busy_slowdown != 1.0:
            changes.update(_fewer_busy(profile, changes["gpus_per_node"], sources, where))
    if nics_per_node is not None:
        changes["nics_per_node"] = _check_number(nics_per_node, "count", f"{where}.nics_per_node")
        sources["network.nics_per_node"] = f"scenario override ({where}.nics_per_node)"
    if nic_gbit_per_s is not None:
        gbit = _check_number(nic_gbit_per_s, "positive", f"{where}.nic_gbit_per_s")
        changes["nic_bytes_per_s"] = gbit_per_s_to_bytes_per_s(gbit)
        sources["network.nic_gbit_per_s"] = f"scenario override ({where}.nic_gbit_per_s)"
    if not changes:
        return profile
    return replace(profile, sources=sources, **changes)
