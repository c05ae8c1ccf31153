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

# How often a closed loop re-reads a ramp or sine level (clients are whole numbers).
SHAPE_TICK_S = 0.1
_INF = float("inf")


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
        # Issuing stops after ``requests`` requests, or else at ``duration_s``: kept as two
        # bounds (infinite when not given), so that the test is two comparisons.
        self._max_issued = workload.requests if workload.requests is not None else _INF
        self._until_s = workload.duration_s if workload.duration_s is not None and workload.requests is None else _INF

    def _may_issue(self) -> bool:
        return self.issued < self._max_issued and self.env._now < self._until_s

    def _issue(self, client: int) -> None:
        self.issued += 1
        self.sim.issue(client)

    def on_answer(self, req) -> None:
        """Open loops do not wait for answers."""


class ClosedLoop(Source):
    """Closed-loop clients, each with at most one request outstanding.

    With a shape, clients 0..n(t)-1 are active: new ones start at once, and a client
    above n(t) finishes its outstanding request and then stops. Ramp and sine levels
    are re-read every ``SHAPE_TICK_S``; steps change exactly at their boundaries.
    """

    def start(self) -> None:
        w = self.w
        self._think = Distribution("exponential", w.think_time_s).sampler(self.rng) if w.think_time_s > 0 else None
        self._busy: set[int] = set()
        self.active = w.concurrent if w.shape is None else round(w.shape.level(0.0))
        self._grow(self.active)
        if w.shape is not None:
            horizon = w.duration_s if w.duration_s is not None else float("inf")
            if w.shape.kind == "steps":
                for t in w.shape.change_times(horizon):
                    self.sim.at(t, self._relevel, None)
            else:
                self.sim.at(SHAPE_TICK_S, self._tick, None)

    def _grow(self, n: int) -> None:
        for c in range(n):
            if c not in self._busy and self._may_issue():
                self._send(c)

    def _send(self, client: int) -> None:
        self._busy.add(client)
        self._issue(client)

    def _relevel(self, _=None) -> None:
        self.active = round(self.w.shape.level(self.env.now))
        self._grow(self.active)

    def _tick(self, _=None) -> None:
        self._relevel()
        self.sim.at(self.env.now + SHAPE_TICK_S, self._tick, None)

    def on_answer(self, req) -> None:
        c = req.client
        self._busy.discard(c)
        if c >= self.active:
            return  # the shape has retired this client
        if self._think is None:
            if self._may_issue():
                self._send(c)
            return
        self._busy.add(c)  # thinking counts as busy: it will send when done
        self.sim.later(self._think(), self._after_think, c)

    def _after_think(self, c: int) -> None:
        self._busy.discard(c)
        if c < self.active and self._may_issue():
            self._send(c)


class PoissonArrivals(Source):
    """Poisson arrivals at ``rps``, or at a shape's rate by thinning.

    With a shape, candidates arrive at the peak rate and each is kept with probability
    rate(t) / peak, which gives exactly a Poisson process of rate rate(t). Bursts keep
    their two-state Markov chain here, switching at exponential times.
    """

    def start_draws(self) -> None:
        """Set up the gaps between candidate arrivals (``gap()``), at the peak rate."""
        shape = self.w.shape
        self._peak = self.w.rps if shape is None else shape.peak
        self.gap_distribution = Distribution("exponential", 1.0 / self._peak)
        self.gap = self.gap_distribution.sampler(self.rng) if self._peak > 0 else None

    def start(self) -> None:
        self.start_draws()
        self._burst_high = False
        if self.w.shape is not None and self.w.shape.kind == "bursts":
            self._switch()
        if self.gap is not None:
            self._schedule()

    def _rate(self) -> float:
        shape = self.w.shape
        if shape is None:
            return self._peak
        if shape.kind == "bursts":
            return shape.high if self._burst_high else shape.low
        return shape.level(self.env.now)

    def _switch(self, _=None) -> None:
        shape = self.w.shape
        if _ is not None:
            self._burst_high = not self._burst_high
        mean = shape.mean_high_s if self._burst_high else shape.mean_low_s
        self.sim.at(self.env.now + float(self.rng.exponential(mean)), self._switch, True)

    def _schedule(self) -> None:
        self.sim.later(self.gap(), self._arrive, None)

    def _arrive(self, _) -> None:
        # _may_issue(), _issue(-1) and _schedule(), written out: once per arrival.
        if self.issued >= self._max_issued or self.env._now >= self._until_s:
            return
        if self.w.shape is None or self.rng.random() * self._peak < self._rate():
            self.issued += 1
            self.sim.issue(-1)
        self.sim.later(self.gap(), self._arrive, None)


class TraceArrivals(Source):
    """Arrivals at the trace's times; ``requests`` or ``duration_s`` may cut it short."""

    def start(self) -> None:
        self._times = self.w.trace_arrivals_s
        self._i = 0
        self._schedule()

    def _schedule(self) -> None:
        if self._i < len(self._times):
            self.sim.later(max(self._times[self._i] - self.env.now, 0.0), self._arrive, None)

    def _arrive(self, _) -> None:
        if self._may_issue():
            self._i += 1
            self._issue(-1)
            self._schedule()

    @property
    def total(self) -> int:
        n = len(self.w.trace_arrivals_s)
        return n if self.w.requests is None else min(n, self.w.requests)


def make_source(sim, workload, rng) -> Source:
    kind = workload.kind
    if kind == "closed":
        return ClosedLoop(sim, workload, rng)
    if kind == "poisson":
        return PoissonArrivals(sim, workload, rng)
    return TraceArrivals(sim, workload, rng)
