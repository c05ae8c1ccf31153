"""Who sends requests: closed-loop clients, Poisson arrivals, or a replayed trace.

A closed loop is what load testers do (``--concurrent N``): each client sends, waits
for the answer, optionally thinks, and sends again, so the offered load adapts to the
system. Open-loop arrivals (Poisson, trace) do not wait, which is how production
traffic behaves and how queues grow without bound past capacity.

Each source calls ``sim.issue(client)`` to create a request; the simulation calls
``on_answer(req)`` back when the answer (or a 503) reaches the client. Sources stop
issuing at ``duration_s`` or once ``requests`` have been issued.
"""

from __future__ import annotations

import numpy as np

from simserve.distributions import Distribution


def read_trace(path: str) -> tuple[float, ...]:
    """Arrival times (seconds) from a CSV: a header naming ``arrival_s`` (or ``time_s``),
    or a single column of numbers. Raises ValueError with the line that is wrong."""
    import csv

    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: no arrivals")
    col = 0
    start = 0
    header = [c.strip() for c in rows[0]]
    if not _is_number(header[0]):
        names = [h for h in ("arrival_s", "time_s") if h in header]
        if not names:
            raise ValueError(f"{path}: header {header} has no arrival_s or time_s column")
        col = header.index(names[0])
        start = 1
    out = []
    for lineno, row in enumerate(rows[start:], start=start + 1):
        cell = row[col].strip() if col < len(row) else ""
        if not _is_number(cell):
            raise ValueError(f"{path}: line {lineno}: {cell!r} is not a number")
        out.append(float(cell))
    return tuple(out)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class Source:
    def __init__(self, sim, workload, rng: np.random.Generator):
        self.sim = sim
        self.env = sim.env
        self.w = workload
        self.rng = rng
        self.issued = 0

    def _may_issue(self) -> bool:
        w = self.w
        if w.requests is not None and self.issued >= w.requests:
            return False
        if w.duration_s is not None and w.requests is None and self.env.now >= w.duration_s:
            return False
        return True

    def _issue(self, client: int) -> None:
        self.issued += 1
        self.sim.issue(client)

    def on_answer(self, req) -> None:
        """Open loops do not wait for answers."""


class ClosedLoop(Source):
    """``concurrent`` clients, each with at most one request outstanding."""

    def start(self) -> None:
        w = self.w
        self._think = Distribution("exponential", w.think_time_s).sampler(self.rng) if w.think_time_s > 0 else None
        for c in range(w.concurrent):
            if self._may_issue():
                self._issue(c)

    def on_answer(self, req) -> None:
        if self._think is None:
            if self._may_issue():
                self._issue(req.client)
            return
        ev = self.env.timeout(self._think(), req.client)
        ev.callbacks.append(self._after_think)

    def _after_think(self, ev) -> None:
        if self._may_issue():
            self._issue(ev._value)


class PoissonArrivals(Source):
    """Exponential gaps at ``rps`` per second."""

    def start(self) -> None:
        self._gap = Distribution("exponential", 1.0 / self.w.rps).sampler(self.rng)
        self._schedule()

    def _schedule(self) -> None:
        ev = self.env.timeout(self._gap())
        ev.callbacks.append(self._arrive)

    def _arrive(self, ev) -> None:
        if self._may_issue():
            self._issue(-1)
            self._schedule()


class TraceArrivals(Source):
    """Arrivals at the trace's times; ``requests`` or ``duration_s`` may cut it short."""

    def start(self) -> None:
        self._times = self.w.trace_arrivals_s
        self._i = 0
        self._schedule()

    def _schedule(self) -> None:
        if self._i < len(self._times):
            ev = self.env.timeout(max(self._times[self._i] - self.env.now, 0.0))
            ev.callbacks.append(self._arrive)

    def _arrive(self, ev) -> None:
        if self._may_issue():
            self._i += 1
            self._issue(-1)
            self._schedule()

    @property
    def total(self) -> int:
        n = len(self._times)
        return n if self.w.requests is None else min(n, self.w.requests)


def make_source(sim, workload, rng) -> Source:
    kind = workload.kind
    if kind == "closed":
        return ClosedLoop(sim, workload, rng)
    if kind == "poisson":
        return PoissonArrivals(sim, workload, rng)
    return TraceArrivals(sim, workload, rng)
