"""A fast path for the one case that is a plain FCFS multi-server queue.

With the ideal router, ``io``-only work and no platform costs, requests never contend
for CPU and the router is an exact first-come first-served hand-off to the first free
slot: the whole deployment is a c-server FCFS queue with c = running replicas x
``max_ongoing_requests``. Then each request's start is ``max(arrival, earliest free
slot)`` (the Kiefer-Wolfowitz recursion over a heap of slot free times), with no event
calendar at all. The draws are the event-driven model's (the same streams, in the same
order), so the times agree to the last bit; ``tests/test_fcfs.py`` checks it.

The one difference: which slot a request takes. This path takes the slot free
longest; the event-driven ideal router takes the least-loaded replica. With ``io``
work that choice changes no time, only the ``replica`` column and how the per-replica
figures split a total that is the same.

Open loops only (Poisson without a shape, or a trace), no ``max_queued_requests``, no
autoscaling, and, without a request table, at most ``MAX_REQUESTS_WITHOUT_TABLE``
requests (it holds every request's times); ``eligible`` says when.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from simserve.distributions import BLOCK, draw_in_blocks
from simserve.metrics import p50_p99_ms
from simserve.replica import PENDING, RUNNING
from simserve.request import Request


# The recursion keeps every request's times (about 250 bytes each). Without a request
# table, longer runs take the event engine, whose memory stays flat.
MAX_REQUESTS_WITHOUT_TABLE = 1_000_000


def _expected_requests(w) -> float:
    if w.kind == "trace":
        return len(w.trace_arrivals_s) if w.requests is None else min(w.requests, len(w.trace_arrivals_s))
    by_time = w.rps * w.duration_s if w.duration_s is not None else float("inf")
    return min(by_time, w.requests if w.requests is not None else float("inf"))


def eligible(sim) -> bool:
    cfg = sim.cfg
    d, w = cfg.deployment, cfg.workload
    return (
        cfg.router.policy == "ideal"
        and all(s.kind == "io" for s in d.work.segments)
        and cfg.overheads.is_zero
        and not cfg.overheads.idle_load
        and d.autoscaling_config is None
        and d.max_queued_requests == -1
        and w.kind in ("poisson", "trace")
        and w.shape is None
        and sim.controller.count(RUNNING) > 0
        and (cfg.keep_requests or _expected_requests(w) <= MAX_REQUESTS_WITHOUT_TABLE)
    )


def _arrivals(sim) -> np.ndarray:
    """The source's arrival times, drawn exactly as the event-driven source draws them."""
    w = sim.cfg.workload
    limit = w.requests if w.requests is not None else None
    horizon = w.duration_s if w.duration_s is not None else float("inf")
    if w.kind == "trace":
        times = np.asarray(w.trace_arrivals_s[:limit])
        return times[times < horizon]
    src = sim.source
    src.start_draws()
    gaps = []
    total = 0
    last = 0.0
    while (limit is None or total < limit) and last < horizon:
        (block,) = draw_in_blocks([src.gap_distribution], src.rng, 1)
        gaps.append(block)
        total += len(block)
        last = last + float(block.sum())  # a bound only: the exact times come below
    # cumsum adds one gap after another, as the source's timeouts do.
    times = np.cumsum(np.concatenate(gaps)) if gaps else np.empty(0)
    times = times[times < horizon]
    return times[:limit] if limit is not None else times


def run(sim):
    """Simulate ``sim`` (already built, not yet run) without events; return its SimResult."""
    wall0 = time.perf_counter()
    cfg = sim.cfg
    w = cfg.workload
    replicas = sim.controller.running()
    m = cfg.deployment.max_ongoing_requests
    a = _arrivals(sim)
    n = len(a)
    dists = [seg.duration for seg in cfg.deployment.work.segments]
    demand = [col[:n].tolist() for col in draw_in_blocks(dists, sim.streams["service"], -(-n // BLOCK))]
    arrivals = a.tolist()
    free = [(0.0, k) for k in range(len(replicas) * m)]  # (free at, slot)
    start = [0.0] * n
    done = [0.0] * n
    slot = [0] * n
    pop, push = heapq.heappop, heapq.heappush
    one = demand[0] if len(demand) == 1 else None
    for i in range(n):
        at, k = pop(free)
        s = arrivals[i] if arrivals[i] > at else at
        start[i] = s
        if one is not None:
            s = s + one[i]
        else:
            for col in demand:  # segment after segment, as the event loop adds them
                s = s + col[i]
        done[i] = s
        slot[i] = k
        push(free, (s, k))
    if w.requests is not None:
        end_t = max(done, default=0.0)
        if w.duration_s is not None:
            end_t = min(end_t, w.duration_s)
    else:
        end_t = w.duration_s
    t0 = min(w.warmup_s, end_t)
    st, dn = np.asarray(start), np.asarray(done)
    rep_of = np.asarray(slot, dtype=np.int64) // m
    index_of = np.asarray([r.index for r in replicas])
    finished = dn < end_t if w.requests is None else dn <= end_t

    # Answered requests, in completion order as the event loop records them.
    ids = np.flatnonzero(finished)
    ids = ids[np.lexsort((ids, dn[ids]))]
    sim.recorder.record_answered(ids, index_of[rep_of[ids]], a[ids], st[ids], dn[ids])
    sim.in_flight = {}
    for i in np.flatnonzero(~finished).tolist():
        r = Request(i, -1, arrivals[i], [])
        if start[i] < end_t:
            r.replica = int(index_of[rep_of[i]])
            r.dispatch_s = r.start_s = start[i]
        sim.in_flight[i] = r

    # Per-replica window figures, from the slot intervals clipped to [t0, end_t].
    lo, hi = np.clip(st, t0, end_t), np.clip(dn, t0, end_t)
    stats = []
    for j in range(len(replicas)):
        sel = rep_of == j
        s_j, e_j = lo[sel], hi[sel]
        order = np.argsort(s_j, kind="stable")
        s_j, e_j = s_j[order], e_j[order]
        reach = np.maximum.accumulate(e_j) if len(e_j) else e_j
        before = np.concatenate(([-np.inf], reach[:-1])) if len(e_j) else e_j
        union = float(np.clip(e_j - np.maximum(s_j, before), 0, None).sum())
        stats.append(
            {
                "completed": int((sel & finished & (dn >= t0)).sum()),
                "rejected": 0,
                "busy_s": union,
                "ongoing_area": float((e_j - s_j).sum()),
                "loop_busy_s": 0.0,
                "gil_busy_s": 0.0,
            }
        )
    zero = dict.fromkeys(stats[0], 0)
    by_index = {r.index: s for r, s in zip(replicas, stats)}
    waiting = float((np.clip(st, t0, end_t) - np.clip(a, t0, end_t)).sum())
    # No router, and no platform costs (eligible() requires none), so no wake-ups or batching either.
    no_routing = {"probes": 0, "probe_timeouts": 0, "attempts": 0, "wake_cpu": (0.0, 0.0), "handoff_cpu": 0.0,
                  "oversubscribed_cpu": sim.oversubscribed_cpu_by_role(), "batched_cpu": (0.0, 0.0)}
    start_snap = {"t": t0, "replicas": [zero] * len(sim.controller.replicas), "cores": [0.0] * len(sim.nodes),
                  "queued": 0.0, **no_routing}
    end_snap = {
        "t": end_t,
        "replicas": [by_index.get(r.index, zero) for r in sim.controller.replicas],
        "cores": [0.0] * len(sim.nodes),
        "queued": waiting,
        **no_routing,
    }
    for row, answers in _timeline(sim, a, st, dn, end_t, len(replicas)):
        sim.add_timeline_row(row, answers)
    return sim._result(start_snap, end_snap, time.perf_counter() - wall0)


def _timeline(sim, a, st, dn, end_t: float, running: int) -> list[tuple]:
    """The rows the event loop's sampler would write, at the times it would write them,
    each with its number of answers."""
    dt = sim.cfg.timeline_interval_s
    pending = sim.controller.count(PENDING)
    times = []
    t = dt
    while t < end_t:  # by repeated addition, as the sampler's timeouts add up
        times.append(t)
        t = t + dt
    ts = np.asarray(times)
    order = np.argsort(dn, kind="stable")
    lat = (dn - a)[order].tolist()
    done_by = np.searchsorted(dn[order], ts, side="right")
    started_by = np.searchsorted(np.sort(st), ts, side="right")
    arrived_by = np.searchsorted(a, ts, side="right")  # arrivals are in order
    rows = []
    prev = 0
    for t, k, started, arrived in zip(times, done_by.tolist(), started_by.tolist(), arrived_by.tolist()):
        p50, p99 = p50_p99_ms(lat[prev:k])  # np.percentile(lat[prev:k], (50, 99)) * 1e3, exactly
        rows.append(((t, running + pending, running, 0, 0, pending, started - k, arrived - started, (k - prev) / dt, p50, p99,
                      0.0),  # io only, no platform costs: no CPU
                     k - prev))
        prev = k
    return rows
