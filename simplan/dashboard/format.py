"""How the dashboard prints numbers (tests compare the page with these on the library's values)."""

from __future__ import annotations

from simplan.units import GIB


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.4g} ms" if x < 1 else f"{x:.4g} s"


def fmt_tokens(x: float) -> str:
    return f"{x:,.0f}"


def fmt_pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def fmt_gib(x: float) -> str:
    return f"{x / GIB:.2f} GiB"


def fmt_delta(rel: float) -> str:
    return f"{100 * rel:+.2f} %"

