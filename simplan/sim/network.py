"""Links shared by concurrent transfers, in SimPy time (seconds).

A flow crosses one or more links; while ``k`` flows cross a link each gets 1/k of its
bandwidth, and a flow moves at the rate of its most shared link (the bottleneck share
of fluid network models, as ASTRA-sim's analytical backend and SimGrid's LV08 model do
without the TCP corrections). Rates are recomputed whenever a flow starts or ends; a
finish event that a later change has made stale is ignored (versioned).
"""

from __future__ import annotations

import simpy


class Link:
    __slots__ = ("name", "bytes_per_s", "flows")

    def __init__(self, name: str, bytes_per_s: float):
        self.name = name
        self.bytes_per_s = bytes_per_s
        self.flows: set[Flow] = set()


class Flow:
    __slots__ = ("seq", "links", "remaining", "rate", "updated", "version", "done")

    def __init__(self, seq: int, links: tuple[Link, ...], nbytes: float, done: simpy.Event):
        self.seq = seq
        self.links = links
        self.remaining = nbytes
        self.rate = 0.0
        self.updated = 0.0
        self.version = 0
        self.done = done


class Network:
    def __init__(self, env: simpy.Environment):
        self.env = env
        self.flows_started = 0

    def transfer(self, links: tuple[Link, ...], nbytes: float) -> simpy.Event:
        """An event that fires when ``nbytes`` have crossed ``links``."""
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return done
        self.flows_started += 1
        flow = Flow(self.flows_started, links, nbytes, done)
        affected = self._flows_sharing(links)
        self._advance(affected)
        for link in links:
            link.flows.add(flow)
        affected.add(flow)
        flow.updated = self.env.now
        self._reschedule(affected)
        return done

    def _flows_sharing(self, links) -> set[Flow]:
        out: set[Flow] = set()
        for link in links:
            out |= link.flows
        return out

    def _advance(self, flows) -> None:
        now = self.env.now
        for f in flows:
            f.remaining -= f.rate * (now - f.updated)
            f.updated = now

    def _reschedule(self, flows) -> None:
        # in start order, so that same-time events are ordered the same in every run
        for f in sorted(flows, key=lambda f: f.seq):
            f.rate = min(link.bytes_per_s / len(link.flows) for link in f.links)
            f.version += 1
            delay = max(0.0, f.remaining) / f.rate
            timer = self.env.timeout(delay)
            timer.callbacks.append(self._make_finish(f, f.version))

    def _make_finish(self, flow: Flow, version: int):
        def finish(_event) -> None:
            if flow.version != version:
                return  # a later rate change rescheduled this flow
            affected = self._flows_sharing(flow.links)
            self._advance(affected)
            for link in flow.links:
                link.flows.discard(flow)
            affected.discard(flow)
            flow.done.succeed()
            if affected:
                self._reschedule(affected)

        return finish
