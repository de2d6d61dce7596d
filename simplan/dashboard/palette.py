"""One colour per thing the dashboard draws, used by every chart (``simplan.dashboard.charts``):
a step-time component is the same colour in the breakdown, the comparison bars and the
timeline, a memory kind the same in every memory chart.

Step-time components are ``StepResult.breakdown_s`` keys; the timeline's blocks are the
``simplan.dashboard.gantt.KINDS``, coloured like the component they add to (forward and
backward are compute: blues; "pp comm" is pipeline communication: the same strong red as
``pp_comm_exposed``, so that the short sends stand out against the compute blocks)."""

from __future__ import annotations

PALETTE: dict[str, str] = {
    # step-time components (StepResult.breakdown_s)
    "compute": "#4c78a8",
    "recompute": "#54a24b",
    "tp_comm_exposed": "#72b7b2",
    "cp_comm_exposed": "#9d755d",
    "ep_comm_exposed": "#bcbd22",
    "pp_comm_exposed": "#d62728",
    "dp_comm_exposed": "#eeca3b",
    "bubble": "#d8d8d8",
    "optimizer": "#b279a2",
    "overhead": "#7f7f7f",
    # timeline blocks (gantt.KINDS), by the component they belong to
    "forward": "#4c78a8",
    "backward": "#9ecae9",
    "backward (input)": "#6baed6",
    "backward (weights)": "#c6dbef",
    "tp comm": "#72b7b2",
    "cp comm": "#9d755d",
    "ep comm": "#bcbd22",
    "pp comm": "#d62728",
    "dp comm": "#eeca3b",
    # memory per GPU (StepResult.memory["breakdown"]); "optimizer" (its states) as above
    "weights": "#f58518",
    "gradients": "#ffbf79",
    "activations": "#ff9da6",
    "comm_buffers": "#439894",
    "other": "#bab0ac",
    # other marks
    "capacity": "#d62728",
    "stage peak": "#7b8fa6",
    "strong": "#4c78a8",
    "weak": "#f58518",
}
"""Name -> CSS colour."""

_SPARE = ("#8c564b", "#e377c2", "#17becf", "#393b79", "#637939", "#843c39")
"""For a name the palette does not know yet (a new breakdown key), by its sorted position."""


def color(name: str, names: list[str] | tuple[str, ...] = ()) -> str:
    """The colour of ``name`` (an unknown name gets a spare colour by its place among ``names``)."""
    if name in PALETTE:
        return PALETTE[name]
    unknown = sorted(n for n in set(names) | {name} if n not in PALETTE)
    return _SPARE[unknown.index(name) % len(_SPARE)]


def colors(names: list[str] | tuple[str, ...]) -> list[str]:
    """The colours of ``names``, in order (an Altair scale's ``range`` for ``domain=names``)."""
    return [color(n, names) for n in names]
