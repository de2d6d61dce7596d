"""Fast estimate of a plan's step time and memory per GPU: the search's ranking step.

The SimPy engine takes a few tenths of a second per plan; the search ranks tens of
thousands. This module evaluates the same per-layer costs the lowering hands the engine
(``simplan.cost.compute.layer_time`` / ``op_time_s``, the alpha-beta collectives of
``simplan.cost.collectives`` over the plan's group spans, ``simplan.cost.memory``'s
per-layer activation and model-state bytes), summed per pipeline stage with prefix sums,
and replaces the event simulation by closed forms:

* pipeline (per micro-batch a stage takes t_s = forward + backward + recomputation + its
  blocking tensor/expert-parallel collectives): 1F1B and GPipe take
  (m - 1) max_s t_s + sum_s t_s (the slowest stage sets the steady state, the others the
  fill and drain; with equal stages this is Narayanan et al. 2021's (m + p - 1) t);
  interleaved 1F1B with v chunks per stage m max_s t_s + (sum_s t_s - max_s t_s) / v
  (the bubble shrinks v-fold, Narayanan et al. 2021, Section 2.2.2); ZB-H1 fills the
  drain with weight-gradient passes, leaving (p - 1)(F + B - W) (Qi et al. 2024, Section 3.1);
* pipeline sends: one exposed send per micro-batch and chunk in the steady state, plus
  the fill and drain, (m v + 2 (p - 1)) t_send;
* data parallelism: gradient buckets reduced during the last backward (exposed: what
  the last micro-batch's backward cannot hide, at least the last bucket), or all after
  the backward when ``dp_overlap`` is off; ZeRO-1/2 all-gather after the optimizer;
  ZeRO-3 gathers each layer while the previous one computes (on a host fabric every
  gather is exposed), with FSDP2's host work and copies around each gather and its copy
  of the gradients into the reduce-scatter inputs (``simplan.cost.compute``); the
  parameter server moves every gradient byte through the servers' NICs;
* the optimizer step of each stage, and the first stage finishing last (its last backward
  follows every other stage's).

Network sharing between concurrent collectives is not modelled here (the engine models
it); ``tests/test_search_estimate.py`` checks that the estimate orders plans as the
simulator does (Kendall tau over a sample of plans).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from simplan.cost import collectives as coll
from simplan.cost.compute import (dtensor_update_s, fsdp_gather_copy_s, fsdp_reduce_copy_s, layer_time, op_time_s,
                                  optimizer_time_s, shard_factor)
from simplan.cost.memory import (ACTIVATION_SCALE, DDP_BUCKET_BYTES, grad_element_bytes, layer_activation_bytes,
                                 model_state_bytes, param_element_bytes, params_per_gpu, schedule_order)
from simplan.hardware.cluster import Cluster
from simplan.model.graph import RECOMPUTED_KINDS, LayerGraph
from simplan.plan.partition import units as graph_units
from simplan.plan.placement import GroupSpan, group_span
from simplan.plan.plan import Plan
from simplan.sim.lower import (collective_phases, link_rates, norm_grad_bytes, sequence_parallel_on, sp_regather_bytes,
                               tp_overlapped,
                               tp_collectives)
from simplan.units import BYTES_PER_ELEMENT

# Columns of the per-unit cost table (sums over the unit's layers, one micro-batch, one rank)
COLUMNS = ("fwd", "bwd", "wgt", "rec_full", "rec_sel", "tpf_bytes", "tpf_n", "tpb_bytes", "tpb_n", "rtp_bytes",
           "rtp_n", "tpf_sp_bytes", "tpf_sp_n", "tpb_sp_bytes", "tpb_sp_n", "rtp_sp_bytes", "rtp_sp_n", "a2a_bytes",
           "a2a_n", "params_dense", "params_expert", "params_local", "act_none", "act_selective", "act_full",
           "dtensor_update", "units", "regather_bytes", "regather_n", "norm_bytes")
_C = {name: i for i, name in enumerate(COLUMNS)}


@dataclass(frozen=True, slots=True)
class Estimate:
    step_time_s: float
    peak_bytes: float
    """The largest stage's memory per GPU."""
    capacity_bytes: float
    mean_bytes: float
    """Memory averaged over stages: below capacity, a rebalanced partition may fit."""
    bottleneck_s: float
    """The slowest stage's time per micro-batch (what a balanced partition minimizes)."""

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.capacity_bytes

    @property
    def shortfall_bytes(self) -> float:
        return max(self.peak_bytes - self.capacity_bytes, 0.0)


TABLE_FIELDS = ("tp", "cp", "ep", "micro_batch", "sequence_parallel", "precision", "attention_kernel",
                "main_grads_fp32")
"""The plan fields a unit's per-layer costs depend on (compute, collective bytes, gradient
bytes): one table per distinct combination."""


def _table_key(plan: Plan) -> tuple:
    return tuple(getattr(plan, f) for f in TABLE_FIELDS)


class Estimator:
    """Estimates for plans of one model on one cluster (caches shared across plans)."""

    def __init__(self, graph: LayerGraph, cluster: Cluster):
        self.graph, self.cluster, self.hw = graph, cluster, cluster.profile
        self.units = graph_units(graph)
        self.n = len(self.units)
        # transformer layers repeat: each unit's layers as indices into the distinct ones,
        # costed once per table
        index: dict = {}
        self.distinct = []
        self.unit_layers = []
        for layers in self.units:
            ids = []
            for layer in layers:
                key = _layer_key(layer)
                if key not in index:
                    index[key] = len(self.distinct)
                    self.distinct.append(layer)
                ids.append(index[key])
            self.unit_layers.append(ids)
        kinds = [[layer.kind for layer in u] for u in self.units]
        self.head_unit = next((i for i, k in enumerate(kinds) if "head" in k), None)
        self.embedding_unit = next((i for i, k in enumerate(kinds) if "embedding" in k), None)
        self.intra_bps, self.inter_bps = link_rates(self.hw)
        self.unit_out_bytes = np.array([u[-1].output_bytes for u in self.units])
        self.out_bytes = float(self.unit_out_bytes.max())
        self._tables: dict = {}
        self._stage: dict = {}
        self._spans: dict = {}
        self._held: dict = {}
        self._comms: dict = {}
        self._memory: dict = {}
        self._cp: dict = {}

    # ------------------------------------------------------------------ per-unit tables
    def table(self, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
        """(prefix sums of COLUMNS over units, per-unit extras) for the plan's per-layer
        cost key (``TABLE_FIELDS``)."""
        key = _table_key(plan)
        if key not in self._tables:
            self._tables[key] = self._build_table(Plan(**dict(zip(TABLE_FIELDS, key))))
        return self._tables[key]

    def _build_table(self, p: Plan) -> tuple[np.ndarray, np.ndarray]:
        hw = self.hw
        act = max(BYTES_PER_ELEMENT[p.precision], 2) / 2
        rows = np.zeros((len(COLUMNS), self.n))
        # per-unit extras: recompute working bytes, largest layer's parameters, cp key/value bytes
        # and the attention layer's forward/backward compute (what cp exchanges hide behind)
        extras = np.zeros((5, self.n))
        variants = {rc: replace(p, recompute=rc) for rc in ("none", "selective", "full")}
        costed = [self._layer_columns(layer, p, variants, act) for layer in self.distinct]
        for u, ids in enumerate(self.unit_layers):
            for i in ids:
                col, ex = costed[i]
                rows[:, u] += col
                extras[1, u] = max(extras[1, u], ex[1])
                extras[2:, u] += ex[2:]
                extras[0, u] += ex[0]
            rows[_C["units"], u] = 1.0
        prefix = np.concatenate((np.zeros((len(COLUMNS), 1)), np.cumsum(rows, axis=1)), axis=1)
        return prefix, extras

    def _layer_columns(self, layer, p: Plan, variants: dict, act: float) -> tuple[np.ndarray, np.ndarray]:
        hw = self.hw
        col = np.zeros(len(COLUMNS))
        ex = np.zeros(5)
        t = layer_time(layer, p, hw)
        col[_C["fwd"]] = t.fwd_s
        col[_C["bwd"]] = t.bwd_s
        col[_C["wgt"]] = sum(op_time_s(op, p, hw) for op in layer.ops if op.weight_bytes > 0)
        # tensor-parallel all-reduces, and sequence parallelism's reduce-scatter + all-gather
        # pairs counted by their reduce-scatter (the same bytes: sim.lower.tp_collectives)
        tp = {}
        for name, backward in (("tpf", False), ("tpb", True)):
            colls = tp_collectives(layer, p, backward)
            for suffix, kind in (("", "allreduce"), ("_sp", "reducescatter")):
                sizes = [nbytes for k, nbytes in colls if k == kind]
                tp[f"{name}{suffix}"] = (sum(sizes), len(sizes))
                col[_C[f"{name}{suffix}_bytes"]], col[_C[f"{name}{suffix}_n"]] = tp[f"{name}{suffix}"]
        if layer.a2a_bytes and p.ep > 1:
            a2a = layer.a2a_bytes * p.micro_batch / p.cp / shard_factor("sp", p) * act
            col[_C["a2a_bytes"]], col[_C["a2a_n"]] = 2 * a2a, 2  # dispatch and combine
        if layer.kind in RECOMPUTED_KINDS:
            col[_C["rec_full"]] = t.fwd_s
            col[_C["rec_sel"]] = sum(op_time_s(op, p, hw) for op in layer.ops if op.kind == "attention")
            col[_C["rtp_bytes"]], col[_C["rtp_n"]] = tp["tpf"]
            col[_C["rtp_sp_bytes"]], col[_C["rtp_sp_n"]] = tp["tpf_sp"]
            # full recomputation holds one checkpointed unit's full activations (memory.recompute_working_bytes)
            ex[0] = layer_activation_bytes(layer, variants["none"])
        dense, expert = params_per_gpu(layer, p)
        col[_C["params_dense"]], col[_C["params_expert"]] = dense, expert
        col[_C["params_local"]] = dense + expert
        col[_C["dtensor_update"]] = dtensor_update_s((layer,), p, hw)
        regather = sp_regather_bytes(layer, p)
        col[_C["regather_bytes"]], col[_C["regather_n"]] = regather, float(regather > 0)
        col[_C["norm_bytes"]] = norm_grad_bytes((layer,), p)
        for rc, plan_rc in variants.items():
            col[_C[f"act_{rc}"]] = layer_activation_bytes(layer, plan_rc)
        ex[1] = dense + expert  # the largest layer gathered by ZeRO-3 (memory._comm_buffer_bytes)
        if layer.cp_kv_bytes and p.cp > 1:
            ex[2] = layer.cp_kv_bytes * p.micro_batch / p.cp / p.tp * act * p.cp
            ex[3], ex[4] = t.fwd_s, t.bwd_s
        return col, ex

    # ------------------------------------------------------------------ partitions
    def uniform_bounds(self, chunks: int) -> tuple[int, ...]:
        return _uniform_bounds(self.n, chunks, self.embedding_unit == 0, self.head_unit == self.n - 1)

    def stage_sums(self, plan: Plan, bounds: tuple[int, ...]) -> np.ndarray:
        """COLUMNS summed per pipeline stage: shape (len(COLUMNS), pp)."""
        key = (*_table_key(plan), plan.pp, bounds)
        out = self._stage.get(key)
        if out is None:
            prefix, _ = self.table(plan)
            b = np.asarray(bounds)
            chunk = prefix[:, b[1:]] - prefix[:, b[:-1]]
            out = chunk.reshape(len(COLUMNS), plan.virtual_stages, plan.pp).sum(axis=1)
            self._stage[key] = out
        return out

    # ------------------------------------------------------------------ communication
    def span(self, plan: Plan, axis: str) -> GroupSpan:
        key = (axis, plan.tp, plan.cp, plan.dp, plan.ep, plan.tp_inside_node)
        out = self._spans.get(key)
        if out is None:
            shape = Plan(tp=plan.tp, cp=plan.cp, dp=plan.dp, ep=plan.ep, tp_inside_node=plan.tp_inside_node)
            if axis == "dpcp" and plan.cp > 1:
                dp, cp = group_span(shape, self.cluster, "dp"), group_span(shape, self.cluster, "cp")
                out = GroupSpan(size=dp.size * cp.size, nodes=dp.nodes * cp.nodes,
                                ranks_per_node=dp.ranks_per_node * cp.ranks_per_node)
            else:
                out = group_span(shape, self.cluster, "dp" if axis == "dpcp" else axis)
            self._spans[key] = out
        return out

    def ring(self, kind: str, span: GroupSpan, algorithm: str | None = "ring") -> tuple[float, float]:
        """(latency s, seconds per byte) of one ``kind`` collective over ``span``: the
        alpha-beta time of simplan.cost.collectives is affine in the size for a fixed algorithm."""
        key = (kind, span, algorithm)
        out = self._comms.get(key)
        if out is None:
            if span.size <= 1:
                out = (0.0, 0.0)
            else:
                hw = self.hw

                def idle(size: float) -> float:
                    ph = collective_phases(kind, size, span, hw, algorithm)
                    return coll.idle_time_s(ph, self.intra_bps, self.inter_bps)

                base = idle(0.0)
                out = (base, (idle(DDP_BUCKET_BYTES) - base) / DDP_BUCKET_BYTES)
            self._comms[key] = out
        return out

    def bucket_time(self, plan: Plan) -> tuple[float, float]:
        """(latency, full-bucket time) of the data-parallel gradient collective."""
        hw = self.hw
        if plan.dp_sync == "parameter-server":
            ps_bw = hw.nic_bytes_per_s * hw.inter_efficiency / hw.gpus_per_node
            return 2 * hw.inter_latency_s, 2.0 * DDP_BUCKET_BYTES / ps_bw + 2 * hw.inter_latency_s
        span = self.span(plan, "dpcp")
        if plan.zero_stage == 0:
            key = ("dp-best", span)
            if key not in self._comms:
                alg = coll.best_algorithm("allreduce", DDP_BUCKET_BYTES, span.ranks_per_node, span.nodes,
                                          hw.intra_latency_s, hw.inter_latency_s, self.intra_bps, self.inter_bps)
                ph = coll.phases("allreduce", alg, DDP_BUCKET_BYTES, span.ranks_per_node, span.nodes,
                                 hw.intra_latency_s, hw.inter_latency_s)
                self._comms[key] = (sum(x.latency_s for x in ph), coll.idle_time_s(ph, self.intra_bps, self.inter_bps))
            return self._comms[key]
        lat, per_byte = self.ring("reducescatter", span)
        return lat, lat + per_byte * DDP_BUCKET_BYTES

    # ------------------------------------------------------------------ memory
    def held(self, plan: Plan) -> np.ndarray:
        """Micro-batches of each local chunk a stage holds after each forward of the
        schedule's steady period (``simplan.cost.memory.schedule_order``), shape
        (pp, rows, v): a stage's peak is its largest row times its chunks' bytes."""
        m = plan.micro_batches
        key = (plan.schedule, plan.pp, plan.virtual_stages, m)
        out = self._held.get(key)
        if out is None:
            per_stage = [self._held_rows(plan, stage, m) for stage in range(plan.pp)]
            rows = max(len(r) for r in per_stage)
            out = np.stack([np.concatenate((r, np.repeat(r[-1:], rows - len(r), axis=0))) for r in per_stage])
            self._held[key] = out
        return out

    @staticmethod
    def _held_rows(plan: Plan, stage: int, m: int) -> np.ndarray:
        total, warmup, fwd, bwd = schedule_order(plan, stage, m)
        if plan.virtual_stages == 1:
            return np.array([[min(warmup + 1, total)]], dtype=float)
        v, period = plan.virtual_stages, len(fwd)
        held = np.zeros(v)
        full, rest = divmod(warmup, period)
        for c in fwd:
            held[c] += full
        for c in fwd[:rest]:
            held[c] += 1
        rows = [held.copy()]
        for i in range(min(total - warmup, period)):
            held[fwd[(warmup + i) % period]] += 1
            rows.append(held.copy())
            held[bwd[i % period]] -= 1
        return np.array(rows)

    def memory(self, plan: Plan, bounds: tuple[int, ...]) -> tuple[float, float]:
        """(peak, mean over stages) bytes per GPU, as simplan.cost.memory.memory_report counts them."""
        key = (plan.tp, plan.cp, plan.ep, plan.dp, plan.micro_batch, plan.sequence_parallel, plan.precision,
               plan.pp, plan.virtual_stages, plan.schedule, plan.recompute, plan.zero_stage, plan.main_grads_fp32,
               bounds)
        out = self._memory.get(key)
        if out is None:
            out = self._memory[key] = self._memory_uncached(plan, bounds)
        return out

    def _memory_uncached(self, plan: Plan, bounds: tuple[int, ...]) -> tuple[float, float]:
        pp, v = plan.pp, plan.virtual_stages
        prefix, extras = self.table(plan)
        s = self.stage_sums(plan, bounds)
        dense = s[_C["params_dense"]].copy()
        expert = s[_C["params_expert"]]
        b = np.asarray(bounds)
        stage_of_unit = lambda u: int(np.searchsorted(b, u, side="right") - 1) % pp  # noqa: E731
        spec = self.graph.spec
        if spec.tied_embeddings and self.head_unit is not None and self.embedding_unit is not None:
            head_stage, emb_stage = stage_of_unit(self.head_unit), stage_of_unit(self.embedding_unit)
            if head_stage != emb_stage:
                dense[head_stage] += spec.vocab * spec.hidden / plan.tp
        shard = plan.dp * plan.cp
        per = model_state_bytes(1.0, plan.precision, plan.zero_stage, shard, plan.main_grads_fp32)
        per_expert = model_state_bytes(1.0, plan.precision, plan.zero_stage, max(shard // plan.ep, 1),
                                       plan.main_grads_fp32)
        states = dense * sum(per.values()) + expert * sum(per_expert.values())
        act_col = _C[f"act_{plan.recompute}"]
        chunk_act = (prefix[act_col, b[1:]] - prefix[act_col, b[:-1]]).reshape(v, pp)
        act = (self.held(plan) * chunk_act.T[:, None, :]).sum(axis=2).max(axis=1)
        if plan.recompute == "full":
            working = np.maximum.reduceat(extras[0], b[:-1]).reshape(v, pp).max(axis=0)
            act = act + working
        buffers = np.zeros(pp)
        grad_b = model_state_bytes(1.0, plan.precision, 0, 1, plan.main_grads_fp32)["gradients"]
        weight_b = model_state_bytes(1.0, plan.precision, 0, 1)["weights"]
        if shard > 1:
            if plan.zero_stage >= 3:
                buffers += 2 * extras[1].max() * weight_b
            else:
                buffers += np.minimum(DDP_BUCKET_BYTES, (dense + expert) * grad_b)
        if pp > 1:
            sp_div = plan.tp if plan.sequence_parallel else 1
            # one activation and one gradient in transit at each chunk's end (memory._comm_buffer_bytes)
            boundary = self.unit_out_bytes[b[1:] - 1].reshape(v, pp).max(axis=0)
            buffers += 2 * boundary * plan.micro_batch * ACTIVATION_SCALE[plan.precision] / (plan.cp * sp_div)
        total = states + act + buffers + self.hw.memory_reserve_bytes  # the "other" of memory_report
        return float(total.max()), float(total.mean())

    # ------------------------------------------------------------------ time
    def step_time(self, plan: Plan, bounds: tuple[int, ...]) -> tuple[float, float]:
        """(step time, slowest stage's time per micro-batch) in seconds."""
        pp, v, m = plan.pp, plan.virtual_stages, plan.micro_batches
        s = self.stage_sums(plan, bounds)
        grads = s[_C["params_local"]] * grad_element_bytes(plan)
        params = s[_C["params_local"]] * param_element_bytes(plan.precision)  # the unsharded parameter bytes
        if tp_overlapped(plan, self.hw):
            # under the compute: only what outlasts it is exposed (per stage here, per layer in sim.lower)
            fwd = np.maximum(s[_C["fwd"]], self._tp_s(plan, s, "tpf"))
            bwd = np.maximum(s[_C["bwd"]], self._tp_s(plan, s, "tpb"))
        else:
            fwd = s[_C["fwd"]] + self._tp_s(plan, s, "tpf")
            bwd = s[_C["bwd"]] + self._tp_s(plan, s, "tpb")
        if plan.recompute == "full":
            rtp = self._tp_s(plan, s, "rtp")
            bwd = bwd + (np.maximum(s[_C["rec_full"]], rtp) if tp_overlapped(plan, self.hw)
                         else s[_C["rec_full"]] + rtp)
        elif plan.recompute == "selective":
            bwd = bwd + s[_C["rec_sel"]]
        if sequence_parallel_on(plan):
            # the saved sequence shards all-gathered again in backward (sim.lower): blocking on
            # a host fabric, behind the backward's compute elsewhere
            ag_lat, ag_b = self.ring("allgather", self.span(plan, "tp"))
            regather = ag_lat * s[_C["regather_n"]] + ag_b * s[_C["regather_bytes"]]
            bwd = bwd + (regather if self.hw.fabric == "host" else np.maximum(regather - s[_C["bwd"]], 0.0))
        zero3 = plan.zero_stage == 3 and plan.dp * plan.cp > 1
        if zero3:
            # FSDP2's host work and copies around each unit's gather, before its forward and
            # before its backward (sim.lower)
            gather = (s[_C["units"]] * self.hw.fsdp_gather_overhead_s
                      + fsdp_gather_copy_s(params, plan.dp * plan.cp, self.hw))
            fwd, bwd = fwd + gather, bwd + gather
        if plan.ep > 1:
            ep_lat, ep_b = self.ring("alltoall", self.span(plan, "ep"))
            a2a = ep_lat * s[_C["a2a_n"]] + ep_b * s[_C["a2a_bytes"]]
            fwd = fwd + a2a
            bwd = bwd + a2a * (2 if plan.recompute == "full" else 1)
        if plan.cp > 1:
            f_exp, b_exp = self._cp_exposed(plan, bounds)
            fwd, bwd = fwd + f_exp, bwd + b_exp
        wgt = s[_C["wgt"]] if plan.schedule == "zero-bubble" else np.zeros(pp)
        bwd = bwd - wgt
        per_mb = fwd + bwd + wgt
        t_max = float(per_mb.max())
        total = float(per_mb.sum())
        if plan.schedule == "interleaved-1f1b":
            pipe = m * t_max + (total - t_max) / v
        elif plan.schedule == "zero-bubble" and pp > 1:
            pipe = m * t_max + (pp - 1) * float(np.maximum(fwd + bwd - wgt, 0.0).mean())
        else:
            pipe = (m - 1) * t_max + total
        if zero3:
            pipe += m * self._zero3_exposed(plan)
        if pp > 1:
            pipe += (m * v + 2 * (pp - 1)) * self._send_s(plan)
        # the last backward reaches stage s after every later stage's: stage 0 ends last
        last_bwd = bwd + wgt
        ends = pipe - np.concatenate(([0.0], np.cumsum(last_bwd[:-1]) / v))
        shard = plan.dp * plan.cp
        exposed = np.zeros(pp)
        after = 0.0
        if shard > 1:
            lat, full = self.bucket_time(plan)
            n_buckets = np.ceil(grads / DDP_BUCKET_BYTES)
            dp_total = n_buckets * lat + grads / DDP_BUCKET_BYTES * (full - lat)
            if plan.dp_overlap and self.hw.fabric != "host":  # host: gloo reduces on the compute core (sim.lower)
                exposed = np.maximum(dp_total - last_bwd / v, dp_total / np.maximum(n_buckets, 1))
            else:
                exposed = dp_total
            if plan.zero_stage in (1, 2):
                ag_lat, ag_b = self.ring("allgather", self.span(plan, "dpcp"))
                after = ag_lat + ag_b * float(params.max())
                if plan.param_gather_overlap:
                    # hidden behind the next step's first forward (one chunk: 1/v of the stage's; sim.engine)
                    after = max(0.0, after - float((fwd / v).min()))
        zero_shard = shard if plan.zero_stage >= 1 else 1
        opt = optimizer_time_s(s[_C["params_local"]] / zero_shard, plan, self.hw) + s[_C["dtensor_update"]]
        if sequence_parallel_on(plan):  # the norms' gradients all-reduced over tp (sim.lower)
            ar_lat, ar_b = self.ring("allreduce", self.span(plan, "tp"))
            opt = opt + np.where(s[_C["norm_bytes"]] > 0, ar_lat + ar_b * s[_C["norm_bytes"]], 0.0)
        if zero3:  # FSDP2 copies the gradients into the reduce-scatter inputs (sim.lower)
            opt = opt + fsdp_reduce_copy_s(grads, self.hw)
        step = float((ends + exposed + opt).max()) + after + self.hw.step_overhead_s
        return step, t_max

    def _tp_s(self, plan: Plan, cols: np.ndarray, name: str) -> np.ndarray:
        """Time of the tensor-parallel collectives of columns ``name`` ("tpf", "tpb", "rtp")
        of ``cols``: the all-reduces, and each reduce-scatter + all-gather pair of sequence
        parallelism at those collectives' own rates (measured apart on a host profile)."""
        span = self.span(plan, "tp")
        lat, per_byte = self.ring("allreduce", span)
        out = lat * cols[_C[f"{name}_n"]] + per_byte * cols[_C[f"{name}_bytes"]]
        if sequence_parallel_on(plan):
            rs_lat, rs_b = self.ring("reducescatter", span)
            ag_lat, ag_b = self.ring("allgather", span)
            out = out + (rs_lat + ag_lat) * cols[_C[f"{name}_sp_n"]] + (rs_b + ag_b) * cols[_C[f"{name}_sp_bytes"]]
        return out

    def _send_s(self, plan: Plan) -> float:
        """One pipeline send (Megatron-LM's scatter/gather: 1/t of the activation per rank)."""
        act = max(BYTES_PER_ELEMENT[plan.precision], 2) / 2
        nbytes = self.out_bytes * plan.micro_batch / plan.cp / plan.tp * act
        stride = plan.tp * plan.cp * plan.dp  # ranks between consecutive stages (pp is outermost)
        if plan.pp * stride > self.cluster.gpus_per_node:  # some stage boundary crosses nodes
            return self.hw.inter_latency_s + nbytes / self.inter_bps
        return self.hw.intra_latency_s + nbytes / self.intra_bps

    def _cp_exposed(self, plan: Plan, bounds) -> tuple[np.ndarray, np.ndarray]:
        key = (*_table_key(plan), plan.dp, plan.tp_inside_node, plan.recompute, plan.pp, plan.virtual_stages, bounds)
        out = self._cp.get(key)
        if out is None:
            out = self._cp[key] = self._cp_exposed_uncached(plan, bounds)
        return out

    def _cp_exposed_uncached(self, plan: Plan, bounds) -> tuple[np.ndarray, np.ndarray]:
        _, extras = self.table(plan)
        lat, per_byte = self.ring("allgather", self.span(plan, "cp"))
        has = extras[2] > 0
        f = np.where(has, np.maximum(lat + per_byte * extras[2] - extras[3], 0.0), 0.0)
        b = np.where(has, np.maximum(lat + per_byte * 2 * extras[2] - extras[4], 0.0), 0.0)
        if plan.recompute == "full":
            b = b + f
        return self._per_stage(plan, bounds, f), self._per_stage(plan, bounds, b)

    def _per_stage(self, plan: Plan, bounds, per_unit: np.ndarray) -> np.ndarray:
        prefix = np.concatenate(([0.0], np.cumsum(per_unit)))
        b = np.asarray(bounds)
        return (prefix[b[1:]] - prefix[b[:-1]]).reshape(plan.virtual_stages, plan.pp).sum(axis=0)

    def _zero3_exposed(self, plan: Plan) -> float:
        """Per micro-batch, gather time not hidden behind the previous unit's compute (FSDP
        prefetches one layer ahead; a host fabric gathers on the compute core, every gather
        exposed), forward and backward (a recomputed forward gathers nothing: sim.lower)."""
        prefix, extras = self.table(plan)
        lat, per_byte = self.ring("allgather", self.span(plan, "dpcp"))
        params = np.diff(prefix[_C["params_local"]])
        gather = lat + per_byte * params * param_element_bytes(plan.precision)
        fwd = np.diff(prefix[_C["fwd"]])
        bwd = np.diff(prefix[_C["bwd"]])
        if self.hw.fabric == "host":
            return float(2.0 * gather.sum())
        exposed_f = gather[0] + np.maximum(gather[1:] - fwd[:-1], 0.0).sum()
        exposed_b = gather[-1] + np.maximum(gather[:-1] - bwd[1:], 0.0).sum()
        return float(exposed_f + exposed_b)

    # ------------------------------------------------------------------ both
    def estimate(self, plan: Plan, bounds: tuple[int, ...] | None = None, *, time_hopeless: bool = True) -> Estimate:
        """``time_hopeless=False``: no step time (infinite) for a plan whose memory averaged
        over stages exceeds the GPU's, which no partition can make fit (the search's case:
        most candidates at frontier scale)."""
        if bounds is None:
            bounds = self.uniform_bounds(plan.pp * plan.virtual_stages)
        peak, mean = self.memory(plan, bounds)
        if not time_hopeless and mean > self.hw.hbm_bytes:
            return Estimate(step_time_s=math.inf, peak_bytes=peak, capacity_bytes=self.hw.hbm_bytes, mean_bytes=mean,
                            bottleneck_s=math.inf)
        step, bottleneck = self.step_time(plan, bounds)
        return Estimate(step_time_s=step, peak_bytes=peak, capacity_bytes=self.hw.hbm_bytes, mean_bytes=mean,
                        bottleneck_s=bottleneck)

    def unit_cost(self, plan: Plan) -> np.ndarray:
        """Per-unit time per micro-batch (compute, recomputation, tensor-parallel collectives):
        what the balanced partition evens out."""
        prefix, _ = self.table(plan)
        d = np.diff(prefix, axis=1)
        cost = d[_C["fwd"]] + d[_C["bwd"]] + self._tp_s(plan, d, "tpf") + self._tp_s(plan, d, "tpb")
        if plan.recompute == "full":
            cost = cost + d[_C["rec_full"]] + self._tp_s(plan, d, "rtp")
        elif plan.recompute == "selective":
            cost = cost + d[_C["rec_sel"]]
        return cost


@lru_cache(maxsize=4096)
def _uniform_bounds(n: int, chunks: int, has_embedding: bool, has_head: bool) -> tuple[int, ...]:
    """Unit boundaries of simplan.plan.partition.uniform (embedding with the first chunk, head
    with the last, the remainder of the body on the last chunks)."""
    first = 1 if has_embedding else 0
    last = 1 if has_head else 0
    body = n - first - last
    if chunks > body:
        first = last = 0
        body = n
    base, extra = divmod(body, chunks)
    sizes = [base + (1 if i >= chunks - extra else 0) for i in range(chunks)]
    sizes[0] += first
    sizes[-1] += last
    return tuple(int(x) for x in np.concatenate(([0], np.cumsum(sizes))))


def bounds_of(sizes) -> tuple[int, ...]:
    return tuple(int(x) for x in np.concatenate(([0], np.cumsum(sizes))))


def sizes_from_bounds(bounds) -> tuple[int, ...]:
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


def _layer_key(layer) -> tuple:
    """Everything of a layer its costs depend on (its name aside)."""
    return (layer.kind, layer.ops, layer.params, layer.params_sharding, tuple(sorted(layer.act_saved_bytes.items())),
            layer.act_core_bytes, layer.act_fp32_bytes, layer.input_bytes, layer.output_bytes,
            layer.tp_fwd_allreduce_bytes, layer.tp_bwd_allreduce_bytes, layer.tp_fwd_fp32_allreduces, layer.cp_kv_bytes,
            layer.a2a_bytes, layer.experts, layer.expert_params, layer.norm_params)
