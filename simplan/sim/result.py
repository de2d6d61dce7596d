"""StepResult: what one simulated optimizer step costs. Feeds CLI, dashboard, planner, verify.

``to_json()`` is the contract of ``simplan simulate --json`` (DESIGN.md): keys are
stable; add, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BREAKDOWN_KEYS = ("compute", "recompute", "tp_comm_exposed", "pp_comm_exposed", "dp_comm_exposed", "bubble",
                  "optimizer")


@dataclass(kw_only=True)
class StepResult:
    step_time_s: float
    tokens_per_s: float
    samples_per_s: float
    model_flops_per_step: float
    """Training FLOPs without recomputation (the MFU convention, Chowdhery et al. 2022)."""
    hardware_flops_per_step: float
    """FLOPs actually executed, recomputation included."""
    model_tflops_per_gpu: float
    hardware_tflops_per_gpu: float
    mfu: float
    memory: dict
    """{peak_bytes_per_gpu, capacity_bytes, fits, breakdown{...}, ...}"""
    breakdown_s: dict
    """The BREAKDOWN_KEYS; they add up to ``step_time_s`` (of the critical stage)."""
    engine: str
    """"simpy" or "analytic"."""
    events: int
    sim_wall_s: float
    scenario: dict
    """The normalized scenario (what was simulated, every default filled in)."""
    distribution: dict | None = None
    """With variability: {steps, mean_s, p50_s, p99_s, min_s, max_s, samples_s}."""
    trace: list | None = field(default=None, repr=False)
    """Chrome trace events when asked for (not part of the JSON object)."""

    def to_json(self) -> dict:
        out = {
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "samples_per_s": self.samples_per_s,
            "model_flops_per_step": self.model_flops_per_step,
            "hardware_flops_per_step": self.hardware_flops_per_step,
            "model_tflops_per_gpu": self.model_tflops_per_gpu,
            "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu,
            "mfu": self.mfu,
            "memory": self.memory,
            "breakdown_s": self.breakdown_s,
            "engine": self.engine,
            "events": self.events,
            "sim_wall_s": self.sim_wall_s,
            "scenario": self.scenario,
        }
        if self.distribution is not None:
            out["distribution"] = self.distribution
        return out
