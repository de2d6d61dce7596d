"""What-if variants of a scenario: scaled hardware, another GPU count or global batch,
one plan degree changed by hand. Every variant goes back through ``load_scenario`` (so
an invalid combination is the library's SimplanError) and the hardware through
``HardwareProfile.scaled``; nothing here computes a cost."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from simplan.errors import SimplanError, require
from simplan.hardware.cluster import Cluster
from simplan.scenario import Scenario, load_scenario

SCALES = {
    "intra_bw": "NVLink / in-node bandwidth",
    "nic_bw": "Network (NIC) bandwidth",
    "hbm_bw": "HBM bandwidth",
    "flops": "Peak FLOP/s",
    "hbm": "HBM capacity",
}
"""``HardwareProfile.scaled`` factors the dashboard offers, with their labels."""


@dataclass(frozen=True)
class WhatIf:
    """Changes against the baseline scenario; the defaults change nothing."""

    scales: dict[str, float] = field(default_factory=dict)
    """``HardwareProfile.scaled`` factors (keys of SCALES)."""
    nodes: int | None = None
    global_batch: int | None = None
    plan: dict = field(default_factory=dict)
    """Plan fields set by hand (tp, pp, micro_batch, schedule, ...). ``dp`` is derived
    from the GPU count unless given here."""

    @property
    def changes_nothing(self) -> bool:
        return (all(v == 1 for v in self.scales.values()) and self.nodes is None
                and self.global_batch is None and not self.plan)


def variant_dict(base: dict, whatif: WhatIf) -> dict:
    """The normalized scenario ``base`` with the what-if's cluster and plan changes (the
    hardware scaling is applied by :func:`variant` after loading)."""
    d = copy.deepcopy(base)
    if whatif.nodes is not None:
        d["cluster"]["nodes"] = whatif.nodes
    if whatif.global_batch is not None:
        d["plan"]["global_batch"] = whatif.global_batch
    d["plan"].update(whatif.plan)
    if {"pp", "virtual_stages"} & set(whatif.plan):
        d["plan"]["partition"] = []  # a hand-set pipeline shape starts from the uniform split
    if "dp" not in whatif.plan and (whatif.nodes is not None or whatif.plan):
        # keep tp, pp, cp and let dp absorb the GPU count, as the planner's factorization does
        d["plan"].pop("dp", None)
    return d


def variant(base: dict, whatif: WhatIf) -> Scenario:
    """Load the what-if scenario; raises SimplanError for an invalid combination."""
    unknown = sorted(set(whatif.scales) - set(SCALES))
    require(not unknown, f"what-if: unknown scale(s) {', '.join(unknown)}; known: {', '.join(SCALES)}")
    for key, factor in whatif.scales.items():
        require(factor > 0, f"what-if: {SCALES[key]} factor must be > 0, got {factor}")
    scenario = load_scenario(variant_dict(base, whatif), where="what-if")
    factors = {k: v for k, v in whatif.scales.items() if v != 1}
    if not factors:
        return scenario
    profile = scenario.hardware.scaled(**factors)
    cluster = Cluster(profile=profile, nodes=scenario.cluster.nodes, gpus_per_node=scenario.cluster.gpus_per_node)
    return replace(scenario, cluster=cluster)


def resimulate(base: dict, sizes: tuple[int, ...] | None = None, whatif: WhatIf | None = None, *,
               jitter: float = 0.0, slow_ranks: dict[int, float] | None = None, steps: int = 1,
               trace: bool = False):
    """``simulate`` the what-if variant of ``base`` (the baseline itself without ``whatif``);
    the plan carries the planner's layer partition (``sizes`` is kept for callers)."""
    from simplan.sim import simulate

    scenario = variant(base, whatif or WhatIf())
    return simulate(scenario, jitter=jitter, slow_ranks=slow_ranks or None,
                    steps=steps, trace=trace)


def parse_slow_rank(rank: int, factor: float, gpus: int) -> dict[int, float]:
    """``simulate``'s ``slow_ranks`` for one slow GPU (empty when the factor is 1)."""
    if factor == 1:
        return {}
    if not 0 <= rank < gpus:
        raise SimplanError(f"slow rank: {rank} is outside the plan's {gpus} ranks (0..{gpus - 1})")
    return {rank: factor}


def deltas(base: dict, new: dict) -> dict[str, tuple[float, float, float]]:
    """{metric: (baseline, what-if, relative change)} for step time, tokens/s, MFU, and
    peak memory per GPU (``StepResult.to_json()`` objects)."""
    pick = {
        "step_time_s": lambda r: r["step_time_s"],
        "tokens_per_s": lambda r: r["tokens_per_s"],
        "mfu": lambda r: r["mfu"],
        "peak_bytes_per_gpu": lambda r: r["memory"]["peak_bytes_per_gpu"],
    }
    out = {}
    for key, get in pick.items():
        a, b = get(base), get(new)
        out[key] = (a, b, (b - a) / a if a else float("nan"))
    return out
