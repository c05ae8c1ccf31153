"""Trace the driver's Ray router through one grid scenario (a diagnosis, not a validation).

    python -m validate.trace_router NAME [--out FILE]

Runs the grid scenario NAME (``scenario.grid_scenarios``, through a handle) on real Ray and,
every 0.25 s, writes a line with the state of the driver's ``RequestRouter``: its routing
tasks, the lengths of its two pending-request deques, its cached queue length per replica,
and what it did since the last line: requests sent (``on_send_request``), rejected ones
retried (``_choose_replica_for_request(is_retry=True)``), probe rounds, done callbacks
(``decrement_queue_len_cache``), back-off sleeps by their attempt index (6 and up
together: the 0.5 s cap), and replicas given to requests (``fulfil_own``: the routing
task's own request; ``fulfil_cancel``: another task's, which is cancelled; ``fulfil_free``:
one no task holds, such as a rejected request queued again). The totals follow, and the
time from each send (the request's replica chosen) to its answer reaching the router
(``on_new_queue_len_info``), accepted and rejected apart. This is how the router's collapse
under heavy queueing was found (``simserve/router.py``, validate/README.md items 38-42).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import threading
import time
from contextlib import contextmanager

from validate.harness import RealCluster
from validate.scenario import grid_scenarios

INTERVAL_S = 0.25


class Calls:
    """The router's calls since the last line (methods of Ray's ``RequestRouter`` wrapped
    in this process, as ``router_counters.RouterCounters`` does); and per send its request
    id, when its replica was chosen and when ``RunningReplica.try_send_request`` had
    submitted the actor call (``validate.trace_answers`` joins them with the replica's); and
    an event log of the router's steps (``validate.trace_cycle``)."""

    counts: collections.Counter = collections.Counter()
    # [accepted, seconds from the send to the answer, request id, when its replica was chosen]
    answers: list = []
    submitted: list = []  # (request id, when try_send_request had submitted the actor call)
    # (perf_counter, kind, routing task or request id, detail): validate.trace_cycle's event log.
    # Every list here is looked up on the class when appended to, never captured in install:
    # a captured event list (2026-11-27 23:46) got every append while the class's own stayed
    # empty, as if the class's attributes had been set anew during the run (router_counters.py
    # saw Serve's unpickling reset a by-value class's attributes; the cause here is not traced).
    events: list = []
    _sent: dict = {}  # the request's task -> (when its replica was chosen, request id)
    _last: dict = {}  # the request's task -> its last answer's index in answers

    @classmethod
    def install(cls) -> None:
        from ray.serve._private.request_router.replica_wrapper import RunningReplica
        from ray.serve._private.request_router.request_router import RequestRouter

        send, choose = RequestRouter.on_send_request, RequestRouter._choose_replica_for_request
        probe, backoff = RequestRouter._probe_queue_lens, RequestRouter._backoff
        done = RequestRouter.decrement_queue_len_cache
        cancel, answer = RequestRouter._cancel_routing_task_for_pending_request, RequestRouter.on_new_queue_len_info
        try_send = RunningReplica.try_send_request
        select, fulfil = RequestRouter._select_from_candidate_replicas, RequestRouter._fulfill_pending_requests

        def task_id():
            return id(asyncio.current_task())

        def on_send_request(self, replica_id):
            cls.counts["send"] += 1
            cls.events.append((time.perf_counter(), "send", None, None))
            return send(self, replica_id)

        async def choose_replica(self, pending_request, *, is_retry=False):
            # Runs in the request's own task (assign_request), as does its answer's handling:
            # a retry means the answer before was a rejection.
            task = asyncio.current_task()
            cls.counts["retry"] += is_retry
            cls.events.append((time.perf_counter(), "enqueue", pending_request.metadata.request_id, is_retry))
            if is_retry and task in cls._last:
                cls.answers[cls._last.pop(task)][0] = False
            replica = await choose(self, pending_request, is_retry=is_retry)
            cls._sent[task] = (time.perf_counter(), pending_request.metadata.request_id)
            return replica

        def on_new_queue_len_info(self, replica_id, num_ongoing_requests):
            sent = cls._sent.pop(asyncio.current_task(), None)
            if sent is not None:
                cls._last[asyncio.current_task()] = len(cls.answers)
                cls.answers.append([True, time.perf_counter() - sent[0], sent[1], sent[0]])
            return answer(self, replica_id, num_ongoing_requests)

        def try_send_request(self, pr, with_rejection):
            result = try_send(self, pr, with_rejection)
            cls.submitted.append((pr.metadata.request_id, time.perf_counter()))
            return result

        def cancel_routing_task(self, pending_request):
            owner = self._routing_task_by_pending_request_future.get(pending_request.future)
            mine = owner is asyncio.current_task(loop=self._event_loop)
            kind = "fulfil_own" if mine else "fulfil_cancel" if owner is not None else "fulfil_free"
            cls.counts[kind] += 1
            cls.events.append((time.perf_counter(), kind, task_id(), pending_request.metadata.request_id))
            if owner is not None and not mine:
                cls.events.append((time.perf_counter(), "task cancelled", id(owner), None))
            return cancel(self, pending_request)

        async def select_from(self, candidates, backoff_index):
            cls.events.append((time.perf_counter(), "select", task_id(), backoff_index))
            replica = await select(self, candidates, backoff_index)
            cls.events.append((time.perf_counter(), "selected", task_id(), replica is not None))
            return replica

        async def fulfil_pending(self):
            cls.events.append((time.perf_counter(), "task start", task_id(), None))
            try:
                return await fulfil(self)
            finally:
                cls.events.append((time.perf_counter(), "task end", task_id(), None))

        async def probe_queue_lens(self, replicas, backoff_index):
            cls.counts["probe_rounds"] += 1
            return await probe(self, replicas, backoff_index)

        async def sleep_backoff(self, attempt):
            cls.counts[f"backoff{min(attempt, 6)}"] += 1
            cls.events.append((time.perf_counter(), "sleep", task_id(), attempt))
            return await backoff(self, attempt)

        def decrement(self, replica_id):
            cls.counts["done"] += 1
            cls.events.append((time.perf_counter(), "done", None, None))
            return done(self, replica_id)

        RequestRouter.on_send_request = on_send_request
        RequestRouter._choose_replica_for_request = choose_replica
        RequestRouter._probe_queue_lens = probe_queue_lens
        RequestRouter._backoff = sleep_backoff
        RequestRouter.decrement_queue_len_cache = decrement
        RequestRouter.on_new_queue_len_info = on_new_queue_len_info
        RequestRouter._cancel_routing_task_for_pending_request = cancel_routing_task
        RequestRouter._select_from_candidate_replicas = select_from
        RequestRouter._fulfill_pending_requests = fulfil_pending
        RunningReplica.try_send_request = try_send_request


async def _sample(lines: list, total: collections.Counter, t0: list, stop: threading.Event) -> None:
    from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter

    router = None
    while not stop.is_set():
        if router is None:
            router = next((o for o in gc.get_objects() if isinstance(o, PowerOfTwoChoicesRequestRouter)), None)
        if router is not None and t0:
            cache = router._replica_queue_len_cache
            lens = "".join(str(cache.get(r)) for r in sorted(router._replicas, key=str))
            counts, Calls.counts = Calls.counts, collections.Counter()
            total.update(counts)
            lines.append(f"{time.perf_counter() - t0[0]:6.2f} s  tasks {len(router._routing_tasks)}  "
                         f"to_fulfill {len(router._pending_requests_to_fulfill):4d}  "
                         f"to_route {len(router._pending_requests_to_route):4d}  cache {lens}  "
                         + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        await asyncio.sleep(INTERVAL_S)


def answer_lines(answers: list) -> list[str]:
    """The send-to-answer times, accepted and rejected apart: count and p10/p50/p90 in ms."""
    out = []
    for label, accepted in (("accepted", True), ("rejected", False)):
        ms = [a[1] * 1e3 for a in answers if a[0] is accepted]
        if ms:
            out.append(f"send to answer, {label}: {len(ms)}, p10/p50/p90 {quantiles(ms)} ms")
    return out


# -- shared by the tracing tools (trace_answers, trace_cycle) -------------------------------------
def quantiles(xs) -> str:
    """p10/p50/p90 of ``xs`` (each the nearest rank at or above), as ``a/b/c`` to 0.1; "-" if
    there are none."""
    xs = sorted(xs)
    return "/".join(f"{xs[min(len(xs) - 1, int(q * len(xs)))]:.1f}" for q in (0.1, 0.5, 0.9)) if xs else "-"


def rate_and_p50(summary: dict) -> str:
    """A run's throughput and median latency, as every tracing tool prints them."""
    return f"{summary['throughput_rps']:.1f} rps, p50 {summary['latency_ms']['p50']:.1f} ms"


def handle_scenario(name: str):
    """The grid scenario ``name`` if its requests go through a handle (whose router runs in
    this process, where the tools wrap it); else None, after a one-line error."""
    cfg = next((s for s in grid_scenarios() if s.deployment.name == name), None)
    if cfg is None or cfg.overheads.ingress != "handle":
        print(f"name: {name!r} is not a grid scenario through a handle", file=sys.stderr)
        return None
    return cfg


@contextmanager
def patched(methods: dict):
    """Inside the block, each ``(cls, name)`` of ``methods`` is the function given; after
    it, the class's own again."""
    originals = {key: getattr(*key) for key in methods}
    try:
        for (cls, name), fn in methods.items():
            setattr(cls, name, fn)
        yield
    finally:
        for (cls, name), fn in originals.items():
            setattr(cls, name, fn)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.trace_router", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="a grid scenario's name")
    ap.add_argument("--out", default=None, help="write the lines here too")
    args = ap.parse_args(argv)
    cfg = handle_scenario(args.name)
    if cfg is None:
        return 2
    lines: list[str] = []
    total: collections.Counter = collections.Counter()
    stop = threading.Event()
    with RealCluster(cfg.cluster.num_cpus) as cl:
        Calls.install()
        drive, t0 = cl._drive, []

        async def traced_drive(c, handle, app_name, on_start=None):
            from ray.serve._private.router import SingletonThreadRouter

            loop = SingletonThreadRouter._get_singleton_asyncio_loop("trace")
            asyncio.run_coroutine_threadsafe(_sample(lines, total, t0, stop), loop)
            return await drive(c, handle, app_name, on_start=t0.append)

        cl._drive = traced_drive
        summary = cl.run(cfg)
        stop.set()
        time.sleep(2 * INTERVAL_S)
    lines.append(f"totals: {dict(sorted(total.items()))}; completed {summary['completed_total']}, "
                 + rate_and_p50(summary))
    lines.extend(answer_lines(Calls.answers))
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
