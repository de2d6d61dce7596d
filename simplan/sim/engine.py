"""The SimPy engine: replays a lowered Program on simulated ranks. Time is in seconds.

Each *unit* is one tensor-parallel group of one pipeline stage of one data-parallel
replica (its ranks work in lockstep). A unit has a compute stream (a process that walks
its schedule's actions), a data-parallel stream (a process that reduces gradient
buckets as backward produces them, overlapping compute) and links (its in-node fabric
port and NIC, shared by every flow that crosses them, see ``network``).

Without variability one replica stands for all (every replica does the same at the same
time, so their collectives see the same links); ``replicas=plan.dp`` simulates all of
them and meets at every data-parallel collective, which gives the same step time when
nothing differs (tests/test_sim_symmetry.py) and a real distribution when something does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import simpy

from simplan.sim.lower import Comm, Program, Step
from simplan.sim.network import Link, Network
from simplan.sim.schedules import stage_actions


GRADIENT_COPY = "gradient copy-in"
"""Trace name of ZeRO-3's per-step copy of the gradients into the reduce-scatter inputs."""


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts scheduled events (the ``events`` of a result)."""

    def __init__(self) -> None:
        super().__init__()
        self.events_scheduled = 0

    def schedule(self, event, priority=1, delay=0):
        self.events_scheduled += 1
        super().schedule(event, priority, delay)


@dataclass
class Unit:
    replica: int
    stage: int
    slow: float
    links: dict[str, tuple[Link, ...]]
    dp_queue: simpy.Store
    acc: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    end_s: float = 0.0
    meets_s: list = field(default_factory=list)
    """When it met the other data-parallel replicas at the end of the step: gradients
    reduced, and (ZeRO-1/2) the parameter all-gather begun; between meetings each replica
    runs alone (simplan.sim.stragglers)."""
    trace: list = field(default_factory=list)
    gathers: dict = field(default_factory=dict)
    """ZeRO-3: parameter all-gathers in flight, by (phase, layer index)."""


class Engine:
    def __init__(self, program: Program, *, replicas: int = 1, jitter: float = 0.0, seed: int = 0,
                 slow_units: dict[tuple[int, int], float] | None = None, trace: bool = False):
        self.p = program
        self.plan = program.plan
        self.env = CountingEnvironment()
        self.net = Network(self.env)
        self.replicas = replicas
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.tracing = trace
        self.m = self.plan.micro_batches
        self.chunks_by_stage = defaultdict(list)
        for c in program.chunks:
            self.chunks_by_stage[c.stage].append(c)
        # folding: a blocking collective alone on its links takes its idle time, so a
        # run of steps collapses into one timeout with exactly the same result
        self.fold = program.exclusive_links and not program.zero3
        # a host fabric reduces on the compute core (Program.comm_uses_compute_core): no overlap
        self.overlap_dp = (program.dp_comm is not None and self.plan.dp_overlap
                           and not program.comm_uses_compute_core)
        self._totals: dict[int, tuple] = {}
        self._p2p: dict[tuple, simpy.Event] = {}
        self._p2p_flight: dict[tuple, tuple[float, float]] = {}
        self._barriers: dict[tuple, list] = {}
        slow_units = slow_units or {}
        self.units: list[Unit] = []
        for r in range(replicas):
            for s in range(self.plan.pp):
                nvl = Link(f"r{r}s{s}.nvl", program.intra_bytes_per_s)
                tx = Link(f"r{r}s{s}.nic_tx", program.inter_bytes_per_s)
                rx = Link(f"r{r}s{s}.nic_rx", program.inter_bytes_per_s)
                ps = Link(f"r{r}s{s}.ps", program.ps_bytes_per_s)
                links = {"intra": (nvl,), "inter": (tx, rx), "ps": (tx, rx, ps), "tx": (tx,), "rx": (rx,),
                         "nvl": (nvl,)}
                self.units.append(Unit(r, s, slow_units.get((r, s), 1.0), links, simpy.Store(self.env)))
        self.unit_at = {(u.replica, u.stage): u for u in self.units}
        self.last_chunk = len(program.chunks) - 1

    # ---------------------------------------------------------------- running
    def run(self) -> None:
        for u in self.units:
            self.env.process(self._compute(u))
            self.env.process(self._dp_stream(u))
        self.env.run()
        # the step ends for all together (the optimizer's global gradient-norm reduction
        # syncs every stage): a stage that finished early idles in the bubble
        end = max(u.end_s for u in self.units)
        for u in self.units:
            u.acc["bubble"] += end - u.end_s

    def _time(self, u: Unit, seconds: float) -> float:
        """A compute duration with the unit's slowdown and, if asked, per-op jitter
        (lognormal with the given coefficient of variation and mean 1)."""
        if self.jitter > 0 and seconds > 0:
            sigma = np.sqrt(np.log1p(self.jitter**2))
            seconds *= float(self.rng.lognormal(-sigma**2 / 2, sigma))
        return seconds * u.slow

    def _record(self, u: Unit, name: str, track: str, start: float, dur: float, args: dict | None = None):
        if self.tracing and dur > 0:
            u.trace.append((name, track, start, dur, args or {}))

    # ---------------------------------------------------------------- compute stream
    def _compute(self, u: Unit):
        env, plan = self.env, self.plan
        chunks = {c.chunk: c for c in self.chunks_by_stage[u.stage]}
        actions = stage_actions(plan.schedule, u.stage, plan.pp, self.m, plan.virtual_stages)
        grad_total = sum(ch.grad_bytes for ch in chunks.values())
        first_forward_s = None
        for a in actions:
            c = chunks[a.chunk]
            if a.type == "F":
                if a.chunk > 0:
                    yield from self._wait_p2p(u, ("F", u.replica, a.chunk, a.microbatch))
                t_fwd = env.now
                yield from self._steps(u, c.fwd, "compute", f"F{a.microbatch}.c{a.chunk}")
                if first_forward_s is None:
                    first_forward_s = env.now - t_fwd
                self._memory(u, c.act_bytes)
                if a.chunk < self.last_chunk:
                    self._send(u, ("F", u.replica, a.chunk + 1, a.microbatch), c.send_bytes, a.chunk + 1)
            elif a.type in ("B", "I"):
                if a.chunk < self.last_chunk:
                    yield from self._wait_p2p(u, ("B", u.replica, a.chunk, a.microbatch))
                if c.recompute:
                    yield from self._steps(u, c.recompute, "recompute", f"R{a.microbatch}.c{a.chunk}")
                last = a.microbatch == self.m - 1 and a.type == "B"
                yield from self._steps(u, c.bwd, "compute", f"{a.type}{a.microbatch}.c{a.chunk}",
                                       buckets=last and self.overlap_dp)
                if a.type == "B":
                    self._memory(u, -c.act_bytes)
                if a.chunk > 0:
                    self._send(u, ("B", u.replica, a.chunk - 1, a.microbatch), c.send_bytes, a.chunk - 1)
            else:  # W: weight gradients of the zero-bubble schedule
                last = a.microbatch == self.m - 1
                yield from self._steps(u, c.wgrad, "compute", f"W{a.microbatch}.c{a.chunk}",
                                       buckets=last and self.overlap_dp)
                self._memory(u, -c.act_bytes)
        if self.p.grad_copy_s and self.p.grad_copy_s[u.stage] > 0:
            t0 = env.now
            copy = self._time(u, self.p.grad_copy_s[u.stage])
            yield env.timeout(copy)
            self._record(u, GRADIENT_COPY, "compute", t0, copy)
            u.acc["compute"] += copy
        # data-parallel synchronization, then the optimizer step
        t0 = env.now
        if not self.overlap_dp and self.p.dp_comm is not None:
            u.dp_queue.put((env.now, grad_total, "grads"))
        done = env.event()
        u.dp_queue.put((env.now, 0.0, done))
        yield done
        u.acc["dp_comm_exposed"] += env.now - t0
        u.meets_s.append(env.now)
        norm_grads = self.p.norm_grad_allreduce[u.stage] if self.p.norm_grad_allreduce else None
        if norm_grads is not None:
            t0 = env.now
            yield from self._collective(u, norm_grads, None)
            u.acc["tp_comm_exposed"] += env.now - t0
            self._record(u, "norm grads", "tp", t0, env.now - t0)
        t0 = env.now
        opt = self._time(u, self.p.optimizer_s[u.stage])
        yield env.timeout(opt)
        self._record(u, "optimizer", "compute", t0, opt)
        u.acc["optimizer"] += opt
        hidden = 0.0
        if self.p.dp_after_optimizer is not None:
            t0 = env.now
            u.meets_s.append(t0)
            yield from self._collective(u, self.p.dp_after_optimizer, ("zero-ag", u.stage))
            took = env.now - t0
            # with Plan.param_gather_overlap the gather runs under the next step's first
            # forward (Megatron-Core --overlap-param-gather): only its excess is exposed
            if plan.param_gather_overlap:
                hidden = min(took, first_forward_s or 0.0)
            u.acc["dp_comm_exposed"] += took - hidden
            self._record(u, "param all-gather", "dp", t0, took)
        u.end_s = env.now - hidden

    def _steps(self, u: Unit, steps: tuple[Step, ...], category: str, label: str, buckets: bool = False):
        env = self.env
        if self.fold:
            start = env.now
            if self.jitter == 0 and u.slow == 1.0 and not self.tracing:
                # the same phase always costs the same: sum it once
                total, compute, tp, grads = self._phase_totals(steps)
            else:
                total = compute = tp = 0.0
                grads = []
                for st in steps:
                    c = self._time(u, st.compute_s)
                    comm = sum(x.idle_s for x in st.comms)
                    if self.tracing:
                        self._record(u, st.layer, "compute", start + total, c, {"step": label})
                        self._record(u, "tp", "tp", start + total + c, comm, {"step": label})
                    total += c + comm
                    compute += c
                    tp += comm
                    if st.grad_bytes:
                        grads.append((total, st.grad_bytes))
            if buckets:
                fill = 0.0
                for offset, grad in grads:
                    fill = self._fill_bucket(u, fill + grad, start + offset)
                if fill > 0:
                    u.dp_queue.put((start + total, fill, "grads"))
            self._record(u, label, "compute", start, total, {"category": category})
            yield env.timeout(total)
            u.acc[category] += compute
            u.acc["tp_comm_exposed"] += tp
            return
        start = env.now
        bucket_fill = 0.0
        for i, st in enumerate(steps):
            if st.gather is not None:
                yield from self._zero3_gather(u, steps, i)
            t0 = env.now
            c = self._time(u, st.compute_s)
            if st.overlapped:
                flows = [env.process(self._collective(u, x, None)) for x in st.overlapped]
                yield env.timeout(c)
                t1 = env.now
                yield simpy.AllOf(env, flows)
                u.acc[f"{st.overlapped[0].name}_comm_exposed"] += env.now - t1
            else:
                yield env.timeout(c)
            u.acc[category] += c
            self._record(u, st.layer, "compute", t0, c, {"step": label})
            for x in st.comms:
                t1 = env.now
                yield from self._collective(u, x, None)
                u.acc[f"{x.name}_comm_exposed"] += env.now - t1
                self._record(u, x.name, x.name, t1, env.now - t1, {"step": label})
            if buckets and st.grad_bytes:
                bucket_fill = self._fill_bucket(u, bucket_fill + st.grad_bytes, env.now)
        if buckets and bucket_fill > 0:
            u.dp_queue.put((env.now, bucket_fill, "grads"))
        self._record(u, label, "compute", start, env.now - start, {"category": category})

    def _phase_totals(self, steps: tuple[Step, ...]) -> tuple[float, float, float, list]:
        key = id(steps)
        if key not in self._totals:
            total = compute = tp = 0.0
            grads = []
            for st in steps:
                comm = sum(x.idle_s for x in st.comms)
                total += st.compute_s + comm
                compute += st.compute_s
                tp += comm
                if st.grad_bytes:
                    grads.append((total, st.grad_bytes))
            self._totals[key] = (total, compute, tp, grads)
        return self._totals[key]

    def _fill_bucket(self, u: Unit, filled: float, ready_s: float) -> float:
        """Hand full buckets to the data-parallel stream; return what is left over."""
        size = self.p.bucket_bytes
        while filled >= size:
            u.dp_queue.put((ready_s, size, "grads"))
            filled -= size
        return filled

    def _zero3_gather(self, u: Unit, steps: tuple[Step, ...], i: int):
        """FSDP: the parameters of the next unit are gathered while this one computes
        (prefetch of one unit, FSDP's default backward/forward prefetch); here they are
        gathered on the data-parallel stream and the compute stream waits for what is not
        hidden."""
        ev = u.gathers
        if (id(steps), i) not in ev:
            ev[(id(steps), i)] = self._start_gather(u, steps[i])
        # a host fabric gathers on the compute core (Program.comm_uses_compute_core): no prefetch
        if not self.p.comm_uses_compute_core:
            following = next((j for j in range(i + 1, len(steps)) if steps[j].gather is not None), None)
            if following is not None:
                ev[(id(steps), following)] = self._start_gather(u, steps[following])
        t0 = self.env.now
        yield ev.pop((id(steps), i))
        u.acc["dp_comm_exposed"] += self.env.now - t0

    def _start_gather(self, u: Unit, step: Step) -> simpy.Event:
        done = self.env.event()
        u.dp_queue.put((self.env.now, step.gather, done))
        return done

    def _memory(self, u: Unit, delta: float) -> None:
        if self.tracing:
            u.acc["_mem"] += delta
            u.trace.append(("activations", "memory", self.env.now, u.acc["_mem"], {}))

    # ---------------------------------------------------------------- pipeline p2p
    def _p2p_event(self, key: tuple) -> simpy.Event:
        if key not in self._p2p:
            self._p2p[key] = self.env.event()
        return self._p2p[key]

    def _send(self, u: Unit, key: tuple, nbytes: float, to_chunk: int) -> None:
        to_stage = to_chunk % self.plan.pp
        dst = self.unit_at[(u.replica, to_stage)]
        same_node = self.p.stage_node[u.stage] == self.p.stage_node[to_stage]
        self.env.process(self._transfer(u, dst, key, nbytes, same_node))

    def _transfer(self, src: Unit, dst: Unit, key: tuple, nbytes: float, same_node: bool):
        env = self.env
        t0 = env.now
        if src is not dst:
            hw_latency = self.p.intra_latency_s if same_node else self.p.inter_latency_s
            yield env.timeout(hw_latency)
            links = (src.links["nvl"] + dst.links["nvl"]) if same_node else (src.links["tx"] + dst.links["rx"])
            yield self.net.transfer(links, nbytes)
            self._record(src, "send", "pp", t0, env.now - t0, {"bytes": nbytes})
        self._p2p_flight[key] = (t0, env.now)
        self._p2p_event(key).succeed()

    def _wait_p2p(self, u: Unit, key: tuple):
        ev = self._p2p_event(key)
        t0 = self.env.now
        if not ev.triggered:
            yield ev
        waited = self.env.now - t0
        if waited > 0:
            s, e = self._p2p_flight[key]
            in_flight = max(0.0, min(e, self.env.now) - max(s, t0))
            u.acc["pp_comm_exposed"] += in_flight
            u.acc["bubble"] += waited - in_flight
            self._record(u, "wait", "compute", t0, waited, {"for": key[0]})

    # ---------------------------------------------------------------- data-parallel stream
    def _dp_stream(self, u: Unit):
        env = self.env
        index = 0
        while True:
            ready_s, payload, what = yield u.dp_queue.get()
            if isinstance(what, simpy.Event) and payload == 0.0:
                what.succeed()  # everything queued before this is done
                return
            if ready_s > env.now:
                yield env.timeout(ready_s - env.now)
            t0 = env.now
            if isinstance(what, simpy.Event):  # a ZeRO-3 gather
                yield from self._collective(u, payload, ("gather", u.stage, index))
                what.succeed()
                self._record(u, "all-gather", "dp", t0, env.now - t0)
            else:
                comm = self.p.dp_comm
                scale = payload / self.p.bucket_bytes
                yield from self._collective(u, comm, ("dp", u.stage, index), scale)
                self._record(u, comm.name, "dp", t0, env.now - t0, {"bytes": payload})
            index += 1

    def _collective(self, u: Unit, comm: Comm, barrier: tuple | None, scale: float = 1.0):
        """Run ``comm`` from unit ``u``. With several replicas, data-parallel collectives
        start when every replica has reached them and end when the slowest flow ends."""
        env = self.env
        if barrier is not None and self.replicas > 1:
            yield self._meet(("start",) + barrier)
        for ph in comm.phases:
            if ph.latency_s:
                yield env.timeout(ph.latency_s)
            if ph.wire_bytes * scale > 0:
                yield self.net.transfer(u.links[ph.link], ph.wire_bytes * scale)
        if barrier is not None and self.replicas > 1:
            yield self._meet(("end",) + barrier)

    def _meet(self, key: tuple) -> simpy.Event:
        entry = self._barriers.setdefault(key, [0, self.env.event()])
        entry[0] += 1
        if entry[0] == self.replicas:
            entry[1].succeed()
        return entry[1]
