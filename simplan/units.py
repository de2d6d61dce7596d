"""Unit conversions, applied once at load. SI inside: s, bytes, FLOPs, bytes/s."""

GIGA = 1e9
TERA = 1e12
GIB = 2**30

BYTES_PER_ELEMENT = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
"""Storage bytes of one element of each dtype (tf32 is stored as fp32)."""


def gbit_per_s_to_bytes_per_s(gbit_per_s: float) -> float:
    """Vendors quote links in Gbit/s (10^9 bits); 8 bits per byte."""
    return gbit_per_s * GIGA / 8


def gbyte_per_s_to_bytes_per_s(gbyte_per_s: float) -> float:
    return gbyte_per_s * GIGA


def us_to_s(us: float) -> float:
    return us * 1e-6
