"""StepResult: what one simulated optimizer step costs. Feeds CLI, dashboard, planner, verify.

``to_json()`` is the contract of ``simplan simulate --json`` (DESIGN.md): keys are
stable; add, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BREAKDOWN_KEYS = ("compute", "recompute", "tp_comm_exposed", "pp_comm_exposed", "dp_comm_exposed", "bubble",
                  "optimizer")


def step_time_band_s(step_time_s: float, calibration: dict) -> list[float] | None:
    """The band of a predicted step time: with relative errors e = predicted / measured - 1
    of the profile's held-out published runs, measured = predicted / (1 + e), so the 10th
    and 90th percentiles of e give [t / (1 + p90), t / (1 + p10)]."""
    q = calibration.get("step_time_error") if isinstance(calibration, dict) else None
    if not isinstance(q, dict) or "p10" not in q or "p90" not in q:
        return None
    return [step_time_s / (1.0 + float(q["p90"])), step_time_s / (1.0 + float(q["p10"]))]


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
    step_time_band_s: list[float] | None = None
    """[lo, hi]: where the measured step time is expected to fall, from the profile's
    leave-one-source-out errors on published runs (``calibration.step_time_error``, its
    10th and 90th percentiles); None when the profile carries none."""
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
        if self.step_time_band_s is not None:
            out["step_time_band_s"] = list(self.step_time_band_s)
        if self.distribution is not None:
            out["distribution"] = self.distribution
        return out
