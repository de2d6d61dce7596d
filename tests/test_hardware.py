"""Hardware profiles: the shipped files, the published numbers they pin, and the strict loader."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplan.errors import SimplanError
from simplan.hardware.load import (FIELDS, OPTIONAL_SOURCE_KEYS, PROFILE_DIR, SOURCE_KEYS,
                                   apply_cluster_overrides, dump_hardware,
                                   hardware_names, key_name, load_hardware, profile_to_yaml_dict)

EXPECTED = ["a100-sxm-40gb", "a100-sxm-80gb", "a100-sxm-vtrain", "a100-sxm-vtrain-calibrated", "b200", "cpu-host", "h100-sxm-80gb", "h200-sxm-141gb", "mi300x",
            "v100-sxm-32gb"]
EXACT = 1e-12
"""Unit conversions are exact powers of ten or two: pinned to 1e-12 relative."""


def raw(name: str) -> dict:
    return yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())


# --- the shipped profiles -------------------------------------------------------------------

def test_every_shipped_profile_loads_and_is_named_after_its_file():
    assert set(EXPECTED) <= set(hardware_names())
    for name in hardware_names():
        profile = load_hardware(name)
        assert profile.name == name
        assert set(SOURCE_KEYS) <= set(profile.sources) <= set(SOURCE_KEYS + OPTIONAL_SOURCE_KEYS)


@pytest.mark.parametrize("name, dtype, tflops", [
    ("a100-sxm-80gb", "bf16", 312),     # NVIDIA A100 datasheet, dense
    ("a100-sxm-80gb", "tf32", 156),
    ("a100-sxm-40gb", "fp16", 312),
    ("h100-sxm-80gb", "bf16", 989.5),   # NVIDIA H100 SXM datasheet: 1,979 with sparsity
    ("h100-sxm-80gb", "fp8", 1979),
    ("h200-sxm-141gb", "bf16", 989.5),  # same GH100 tensor cores
    ("b200", "bf16", 2250),             # NVIDIA HGX B200 datasheet: 4.5 PFLOPS with sparsity
    ("b200", "fp8", 4500),
    ("v100-sxm-32gb", "fp16", 125),     # NVIDIA V100 SXM2 datasheet
    ("mi300x", "bf16", 1307.4),         # AMD MI300X data sheet, dense
    ("mi300x", "fp8", 2614.9),
])
def test_dense_peaks_match_the_datasheets(name, dtype, tflops):
    assert load_hardware(name).peak(dtype) == pytest.approx(tflops * 1e12, rel=EXACT)


def test_dtypes_a_part_lacks_are_left_out():
    assert "fp8" not in load_hardware("a100-sxm-80gb").peak_flops_per_s       # Ampere has no FP8
    assert set(load_hardware("v100-sxm-32gb").peak_flops_per_s) == {"fp32", "fp16"}  # Volta: no BF16/TF32


@pytest.mark.parametrize("name, hbm_gbyte_per_s, intra_gbyte_per_s, nic_gbyte_per_s_per_gpu", [
    ("a100-sxm-80gb", 2039, 300, 25),    # DGX A100: NVLink3 600 GB/s bidirectional; 8x 200 Gbit/s HDR
    ("a100-sxm-40gb", 1555, 300, 25),
    ("h100-sxm-80gb", 3350, 450, 50),    # DGX H100: NVLink4 900 GB/s bidirectional; 8x 400 Gbit/s NDR
    ("h200-sxm-141gb", 4800, 450, 50),
    ("b200", 7700, 900, 50),             # DGX B200: NVLink5 1.8 TB/s bidirectional; 8x 400 Gbit/s
    ("v100-sxm-32gb", 900, 150, 6.25),   # DGX-2: NVLink2 300 GB/s bidirectional; 8x 100 Gbit/s for 16 GPUs
    ("mi300x", 5300, 448, 50),           # MI300X: 7 x 128 GB/s bidirectional links
])
def test_bandwidths_keep_gbit_and_gbyte_apart(name, hbm_gbyte_per_s, intra_gbyte_per_s, nic_gbyte_per_s_per_gpu):
    p = load_hardware(name)
    assert p.hbm_bytes_per_s == pytest.approx(hbm_gbyte_per_s * 1e9, rel=EXACT)
    assert p.intra_bytes_per_s == pytest.approx(intra_gbyte_per_s * 1e9, rel=EXACT)
    assert p.nic_bytes_per_s_per_gpu == pytest.approx(nic_gbyte_per_s_per_gpu * 1e9, rel=EXACT)


def test_nic_rate_is_bits_divided_by_eight():
    assert load_hardware("a100-sxm-80gb").nic_bytes_per_s == pytest.approx(200e9 / 8, rel=EXACT)


def test_hbm_capacity_is_binary():
    assert load_hardware("a100-sxm-80gb").hbm_bytes == 80 * 2**30      # nvidia-smi: 81920 MiB


def test_latencies_and_overheads_are_in_seconds():
    p = load_hardware("h100-sxm-80gb")
    assert p.intra_latency_s == pytest.approx(1.9e-6, rel=EXACT)
    assert p.inter_latency_s == pytest.approx(4.0e-6, rel=EXACT)
    assert p.kernel_overhead_s == pytest.approx(3e-6, rel=EXACT)
    assert p.matmul_half_flops == pytest.approx(3.7e9, rel=EXACT)


# --- by name, by path, round trip -----------------------------------------------------------

def test_unknown_name_lists_the_known_ones():
    with pytest.raises(SimplanError, match="unknown profile 'a100'.*a100-sxm-80gb"):
        load_hardware("a100")


def test_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(SimplanError, match="no such hardware profile file"):
        load_hardware(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_dump_then_load_gives_the_same_profile(tmp_path, suffix):
    for name in EXPECTED:
        p = load_hardware(name)
        path = tmp_path / f"{name}{suffix}"
        dump_hardware(p, path)
        q = load_hardware(str(path))
        for f in FIELDS:
            a, b = getattr(p, f.attr), getattr(q, f.attr)
            if isinstance(a, dict):
                assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=EXACT) for k in a)
            else:
                assert a == pytest.approx(b, rel=EXACT) if isinstance(a, float) else a == b
        assert q.sources == p.sources and q.name == p.name


def test_yaml_dict_uses_vendor_units():
    d = profile_to_yaml_dict(load_hardware("a100-sxm-80gb-stock"))
    assert d["gpu"]["peak_tflops"]["bf16"] == 312
    assert d["gpu"]["hbm_gib"] == 80
    assert d["network"]["nic_gbit_per_s"] == 200
    assert d["node"]["intra_latency_us"] == 1.9
    assert d == {**raw("a100-sxm-80gb-stock"), "calibration": {}}


def test_dump_refuses_a_profile_without_sources(tmp_path):
    from dataclasses import replace
    p = replace(load_hardware("b200"), sources={})
    with pytest.raises(SimplanError, match="sources missing"):
        dump_hardware(p, tmp_path / "x.yaml")


def test_cluster_overrides_replace_values_and_sources():
    p = apply_cluster_overrides(load_hardware("a100-sxm-80gb"), nic_gbit_per_s=400, nics_per_node=4, gpus_per_node=4)
    assert p.nic_bytes_per_s == pytest.approx(50e9, rel=EXACT)
    assert (p.nics_per_node, p.gpus_per_node) == (4, 4)
    assert p.nic_bytes_per_s_per_gpu == pytest.approx(50e9, rel=EXACT)
    assert "scenario override" in p.sources["network.nic_gbit_per_s"]


@pytest.mark.parametrize("kwargs, message", [
    ({"nic_gbit_per_s": -200}, "cluster.nic_gbit_per_s: must be > 0, got -200"),
    ({"nic_gbit_per_s": "200"}, "cluster.nic_gbit_per_s: expected a number, got '200'"),
    ({"gpus_per_node": 0}, "cluster.gpus_per_node: must be >= 1, got 0"),
    ({"nics_per_node": 2.5}, "cluster.nics_per_node: expected an integer, got 2.5"),
    ({"gpus_per_node": True}, "cluster.gpus_per_node: expected an integer, got True"),
])
def test_bad_cluster_overrides(kwargs, message):
    with pytest.raises(SimplanError) as err:
        apply_cluster_overrides(load_hardware("a100-sxm-80gb"), **kwargs)
    assert str(err.value) == message


# --- strict validation: named cases ---------------------------------------------------------

def write(tmp_path: Path, data, name: str = "x.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return str(path)


def error_of(path: str) -> str:
    with pytest.raises(SimplanError) as err:
        load_hardware(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(path + ": ") or message.startswith(Path(path).name)
    return message


def test_negative_bandwidth_names_file_field_and_value(tmp_path):
    d = raw("a100-sxm-80gb")
    d["network"]["nic_gbit_per_s"] = -200
    path = write(tmp_path, d)
    assert error_of(path) == f"{path}: network.nic_gbit_per_s: must be > 0, got -200"


def test_a_shipped_file_is_named_relative_to_the_repository(monkeypatch):
    from simplan.hardware import load as load_module
    original = load_module._read

    def broken(path, shown):
        d = original(path, shown)
        d["network"]["oversubscription"] = 0.5
        return d

    monkeypatch.setattr(load_module, "_read", broken)
    with pytest.raises(SimplanError) as err:
        load_hardware("a100-sxm-80gb")
    assert str(err.value) == ("hardware_profiles/a100-sxm-80gb.yaml: network.oversubscription: "
                              "must be >= 1 (1 is non-blocking), got 0.5")


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["gpu"].pop("hbm_gib"), "gpu: missing key(s) hbm_gib"),
    (lambda d: d["gpu"].update(hbm_gbyte=80), "gpu: unknown key(s) hbm_gbyte"),
    (lambda d: d.update(extra=1), "unknown key(s) extra"),
    (lambda d: d.pop("sources"), "missing key(s) sources"),
    (lambda d: d["sources"].pop("gpu.hbm_gib"), "sources: missing key(s) gpu.hbm_gib"),
    (lambda d: d["sources"].update({"gpu.hbm_gb": "x"}), "sources: unknown key(s) gpu.hbm_gb"),
    (lambda d: d["sources"].update({"gpu.hbm_gib": ""}), "sources.gpu.hbm_gib: expected a non-empty string"),
    (lambda d: d["gpu"].update(matmul_efficiency=1.2), "gpu.matmul_efficiency: must be in (0, 1], got 1.2"),
    (lambda d: d["gpu"].update(memory_efficiency=0), "gpu.memory_efficiency: must be in (0, 1], got 0"),
    (lambda d: d["gpu"].update(hbm_gib="80 GB"), "gpu.hbm_gib: expected a number, got '80 GB'"),
    (lambda d: d["gpu"].update(hbm_gib=float("nan")), "gpu.hbm_gib: must be a finite number, got nan"),
    (lambda d: d["gpu"]["peak_tflops"].update(int4=1), "gpu.peak_tflops: unknown dtype(s) int4"),
    (lambda d: d["gpu"]["peak_tflops"].update(bf16=-1), "gpu.peak_tflops.bf16: must be > 0, got -1"),
    (lambda d: d["gpu"].update(peak_tflops=312), "gpu.peak_tflops: expected a mapping"),
    (lambda d: d["node"].update(gpus_per_node=8.0), "node.gpus_per_node: expected an integer, got 8.0"),
    (lambda d: d["node"].update(fabric="infiniband"), "node.fabric: 'infiniband' is not one of"),
    (lambda d: d["node"].update(intra_latency_us=-1), "node.intra_latency_us: must be >= 0, got -1"),
    (lambda d: d["network"].update(topology="torus"), "network.topology: 'torus' is not one of"),
    (lambda d: d["network"].update(switch_ports=1), "network.switch_ports: must be >= 2, got 1"),
    (lambda d: d["network"].update(efficiency=True), "network.efficiency: expected a number, got True"),
    (lambda d: d.update(network=[1, 2]), "network: expected a mapping, got [1, 2]"),
    (lambda d: d.update(name=""), "name: expected a non-empty string"),
    (lambda d: d.update(calibration=[]), "calibration: expected a mapping"),
])
def test_named_mistakes(tmp_path, edit, expected):
    d = raw("h100-sxm-80gb")
    edit(d)
    path = write(tmp_path, d)
    message = error_of(path)
    assert expected in message


def test_malformed_yaml_is_one_line_with_the_position(tmp_path):
    path = write(tmp_path, "name: x\ngpu: {peak_tflops: [1, 2\n")
    assert "malformed YAML at line" in error_of(path)


def test_duplicate_keys_are_errors(tmp_path):
    text = (PROFILE_DIR / "a100-sxm-80gb.yaml").read_text().replace("  hbm_gib: 80\n", "  hbm_gib: 80\n  hbm_gib: 40\n")
    assert "duplicate key 'hbm_gib'" in error_of(write(tmp_path, text))


def test_exponent_without_a_dot_reads_as_a_number(tmp_path):
    text = (PROFILE_DIR / "a100-sxm-80gb.yaml").read_text().replace("nic_gbit_per_s: 200", "nic_gbit_per_s: 2e2")
    assert load_hardware(write(tmp_path, text)).nic_bytes_per_s == pytest.approx(25e9, rel=EXACT)


def test_malformed_json(tmp_path):
    path = write(tmp_path, '{"name": "x",', name="x.json")
    assert "malformed JSON at line 1" in error_of(path)


def test_top_level_not_a_mapping(tmp_path):
    assert "expected a mapping at the top level, got list" in error_of(write(tmp_path, "- 1\n- 2\n"))


# --- strict validation: property tests ------------------------------------------------------

BASE = raw("a100-sxm-80gb")
NUMERIC = [(f.section, f.key) for f in FIELDS if f.check not in ("fabric", "topology", "peaks")]
ALL_FIELDS = [(f.section, f.key) for f in FIELDS]
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(alphabet="XYZ", max_size=3), st.integers(), max_size=2),
                 st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")))


@st.composite
def broken_profiles(draw):
    """A valid profile with exactly one mistake, and the field the message must name."""
    d = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["drop", "unknown", "bad_number", "junk", "efficiency", "count", "drop_source",
                                 "unknown_source", "peak"]))
    section, key = draw(st.sampled_from(NUMERIC if kind in ("bad_number",) else ALL_FIELDS))
    if kind == "drop":
        del d[section][key]
        return d, key
    if kind == "unknown":
        name = draw(st.one_of(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
                              st.text(min_size=1, max_size=4)))  # any text, newlines included
        if name in d[section]:
            name += "_x"
        d[section][name] = draw(st.integers())
        return d, key_name(name)
    if kind == "bad_number":
        check = next(f.check for f in FIELDS if (f.section, f.key) == (section, key))
        limit = {"positive": 0, "nonnegative": -1e-9, "efficiency": 0, "count": 0, "ports": 1,
                 "oversubscription": 0.999}[check]
        d[section][key] = draw(st.one_of(st.floats(max_value=limit, allow_nan=False, allow_infinity=False),
                                         st.integers(max_value=int(math.floor(limit)))))
        return d, f"{section}.{key}"
    if kind == "junk":
        value = draw(JUNK)
        d[section][key] = value
        return d, f"{section}.{key}"
    if kind == "efficiency":
        eff = draw(st.sampled_from([("gpu", "matmul_efficiency"), ("gpu", "memory_efficiency"),
                                    ("node", "intra_efficiency"), ("network", "efficiency")]))
        d[eff[0]][eff[1]] = draw(st.floats(min_value=1.0000001, max_value=1e6))
        return d, f"{eff[0]}.{eff[1]}"
    if kind == "count":
        c = draw(st.sampled_from([("node", "gpus_per_node"), ("network", "nics_per_node"),
                                  ("network", "switch_ports")]))
        d[c[0]][c[1]] = draw(st.floats(allow_nan=False).filter(lambda x: not float(x).is_integer()))
        return d, f"{c[0]}.{c[1]}"
    if kind == "drop_source":
        del d["sources"][f"{section}.{key}"]
        return d, f"{section}.{key}"
    if kind == "unknown_source":
        d["sources"][f"{section}.{key}_typo"] = "x"
        return d, f"{section}.{key}_typo"
    d["gpu"]["peak_tflops"]["bf16"] = draw(st.one_of(JUNK, st.floats(max_value=0), st.integers(max_value=0)))
    return d, "gpu.peak_tflops.bf16"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=broken_profiles(), as_json=st.booleans())
def test_any_single_mistake_is_a_clean_error_naming_file_and_field(scratch, case, as_json):
    data, field = case
    path = scratch / ("p.json" if as_json else "p.yaml")
    if as_json:
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    with pytest.raises(SimplanError) as err:
        load_hardware(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert field in message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=4000), junk=st.text(max_size=6))
def test_mangled_text_never_raises_anything_but_a_simplan_error(scratch, cut, junk):
    text = (PROFILE_DIR / "h100-sxm-80gb.yaml").read_text()
    cut = min(cut, len(text))
    path = scratch / "mangled.yaml"
    path.write_text(text[:cut] + junk + text[cut + len(junk):], encoding="utf-8")
    try:
        profile = load_hardware(str(path))
    except SimplanError as err:
        assert "\n" not in str(err) and str(err).startswith(f"{path}: ")
    else:
        assert profile.name  # a harmless edit (in a comment or a source string) still loads
