"""How the dashboard prints numbers (tests compare the page with these on the library's values)."""

from __future__ import annotations

import re

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



_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|~$])")


def md_escape(text: str) -> str:
    """``text`` for an element that renders Markdown (st.error, st.info, st.caption, st.title):
    every character Markdown (with Streamlit's math and directives) would interpret is
    backslash-escaped, so "tp*pp*cp" shows as typed, not with "pp" in italics."""
    return _MARKDOWN.sub(r"\\\1", text)


def fmt_band(band: list[float] | tuple[float, float] | None) -> str | None:
    """A step-time band [lo, hi] as "lo – hi" (None without one)."""
    if not band:
        return None
    lo, hi = band
    return f"{fmt_s(lo)} – {fmt_s(hi)}"
