"""HardwareProfile: one GPU system, in SI units (converted once, at load).

The YAML files in ``hardware_profiles/`` use vendor units with the unit in the name
(``hbm_gbyte_per_s``, ``nic_gbit_per_s``, ``peak_tflops``); ``simplan.hardware.load``
checks and converts them into this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

FABRICS = ("nvswitch", "nvlink", "pcie", "xgmi", "host")
TOPOLOGIES = ("rail-optimized-fat-tree", "fat-tree", "single-switch")


@dataclass(frozen=True, kw_only=True, slots=True)
class HardwareProfile:
    name: str
    description: str = ""
    # --- one accelerator ---
    peak_flops_per_s: dict[str, float]
    """Dense peak FLOP/s per dtype (fp32, tf32, fp16, bf16, fp8); a dtype left out is unsupported."""
    hbm_bytes: float
    hbm_bytes_per_s: float
    matmul_efficiency: float
    """Fraction of peak that large matmuls reach, in (0, 1]."""
    matmul_half_flops: float
    """Matmul size (FLOPs) at which the achieved rate is half of ``matmul_efficiency``
    times peak: time = (F + F_half) / (peak * efficiency), a per-kernel fixed cost that
    small operations cannot hide (wave quantization, launch and tail effects)."""
    memory_efficiency: float
    """Fraction of HBM bandwidth that memory-bound kernels reach, in (0, 1]."""
    kernel_overhead_s: float
    """Launch-to-launch gap per kernel on the compute stream."""
    attention_efficiency: float = 0.0
    """Fraction of the 16-bit peak a fused attention kernel (FlashAttention-2/3, cuDNN)
    reaches on long sequences, forward and backward together, counting the FLOPs it
    executes (half the non-causal count under a causal mask). 0: not given, the fused
    kernel runs at ``matmul_efficiency``."""
    attention_half_seq: float = 0.0
    """Tokens per sequence at which the fused attention kernel reaches half of
    ``attention_efficiency`` (short sequences leave tiles idle and the causal diagonal
    dominates): rate = efficiency x s / (s + attention_half_seq)."""
    attention_fa2_efficiency: float = 0.0
    """As ``attention_efficiency`` for FlashAttention-2 (``Plan.attention_kernel: fa2``) on a
    GPU whose best kernel is faster (Hopper). 0: not given, ``attention_efficiency``."""
    fp8_matmul_efficiency: float = 0.0
    """Fraction of the fp8 peak large fp8 matmuls reach. 0: not given, ``matmul_efficiency``."""
    memory_reserve_bytes: float = 0.0
    """Device memory a training process holds beyond its tensors: the CUDA context and
    libraries' workspaces (cuBLAS, cuDNN), NCCL's buffers, and the caching allocator's
    reserved-but-unallocated blocks. A plan fits only if its tensors plus this fit."""
    # --- one node ---
    gpus_per_node: int
    fabric: str
    """nvswitch | nvlink | pcie | xgmi | host."""
    intra_bytes_per_s: float
    """Bandwidth per GPU per direction inside a node."""
    intra_latency_s: float
    intra_efficiency: float
    """Fraction of ``intra_bytes_per_s`` collectives reach (NCCL bus bandwidth / link)."""
    busy_slowdown: float = 1.0
    """Compute time of a device while all ``gpus_per_node`` devices of its node compute,
    over its time alone on the node. The cores of a CPU host share caches, memory bandwidth
    and clock (``calibrate --local`` measures it); a GPU's kernels do not slow down with its
    neighbours' (1). The compute figures of a profile are the busy ones; a cluster with
    fewer devices per node rescales them (``simplan.hardware.load.apply_cluster_overrides``)."""
    allgather_latency_s: float = 0.0
    allgather_bytes_per_s: float = 0.0
    reducescatter_latency_s: float = 0.0
    reducescatter_bytes_per_s: float = 0.0
    """In-node all-gather and reduce-scatter measured on their own (``calibrate --local``: gloo
    does not follow the ring model that derives them from the all-reduce's alpha and
    bandwidth); 0 (the default): derived from ``intra_latency_s`` / ``intra_bytes_per_s``."""
    # --- across nodes ---
    nics_per_node: int
    nic_bytes_per_s: float
    """Per NIC, per direction."""
    inter_latency_s: float
    inter_efficiency: float
    """Fraction of NIC bandwidth collectives reach."""
    topology: str
    oversubscription: float
    """Leaf-to-spine oversubscription (1.0: non-blocking)."""
    switch_ports: int = 64
    """Ports per leaf switch. With ``oversubscription`` o it fixes how many NIC ports one
    leaf serves, floor(ports * o / (1 + o)): a 40-port HDR switch at o = 1 serves 20 nodes
    per rail, the DGX A100 SuperPOD scalable unit (used by ``simplan.hardware.cluster``)."""
    # --- software ---
    step_overhead_s: float = 0.0
    """Fixed cost per optimizer step outside the modelled kernels (framework, data loader)."""
    dtensor_op_overhead_s: float = 0.0
    """Host time DTensor dispatch adds to each kernel of an op that tensor parallelism
    shards (sharding propagation, wrap and unwrap), on top of ``kernel_overhead_s``."""
    dtensor_update_overhead_s: float = 0.0
    """Host time DTensor adds to the optimizer step (gradient finalization, AdamW and
    ``zero_grad`` over DTensor parameters), once per step, per kernel of the rank's
    tensor-parallel-sharded ops (they and the DTensor parameters grow together)."""
    fsdp_gather_overhead_s: float = 0.0
    """Host time FSDP2 adds each time it gathers a unit's parameters (hooks, copy in and out),
    on the rank's compute core; measured by ``calibrate --local`` on a CPU host."""
    sources: dict[str, str] = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    """What a calibrated profile was fitted on (file, rows, held-out error)."""

    def measured_collective(self, kind: str) -> tuple[float, float] | None:
        """(latency per ring step, bytes/s) of an in-node ``kind`` measured on its own, or None."""
        bandwidth = getattr(self, f"{kind}_bytes_per_s", 0.0)
        if kind not in ("allgather", "reducescatter") or bandwidth <= 0:
            return None
        return getattr(self, f"{kind}_latency_s"), bandwidth

    @property
    def nic_bytes_per_s_per_gpu(self) -> float:
        """NIC bandwidth one GPU can use when all GPUs of a node send at once."""
        return self.nics_per_node * self.nic_bytes_per_s / self.gpus_per_node

    def peak(self, precision: str) -> float:
        """Dense matmul peak for a plan's precision (a missing dtype is checked by validation)."""
        return self.peak_flops_per_s[precision]

    def peak_16bit(self, precision: str) -> float:
        """The peak of the 16-bit (or wider) math that an fp8 plan keeps outside its fp8
        matmuls (attention, the output layer): bf16 for fp8, else the plan's own."""
        if precision == "fp8":
            return self.peak_flops_per_s.get("bf16", self.peak_flops_per_s.get("fp16", self.peak_flops_per_s["fp8"] / 2))
        return self.peak_flops_per_s[precision]

    def scaled(self, **factors: float) -> "HardwareProfile":
        """What-if copy: ``scaled(flops=2, hbm_bw=1.5, intra_bw=1, nic_bw=1, hbm=1)``."""
        p = self
        if "flops" in factors:
            p = replace(p, peak_flops_per_s={k: v * factors["flops"] for k, v in p.peak_flops_per_s.items()})
        mapping = {"hbm_bw": "hbm_bytes_per_s", "intra_bw": "intra_bytes_per_s", "nic_bw": "nic_bytes_per_s",
                   "hbm": "hbm_bytes"}
        for key, attr in mapping.items():
            if key in factors:
                p = replace(p, **{attr: getattr(p, attr) * factors[key]})
        return p
