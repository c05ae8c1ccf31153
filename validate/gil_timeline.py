"""Where in a request's way a replica's Ray machinery waits for a GIL its handler's thread
holds, and when the router learns of the acceptance and of the end (a diagnosis, not a
validation).

    python -m validate.gil_timeline [-n 300]

No-op requests at c=1 through a handle to one ``async def`` replica that answers with the
time its handler ran (``time.perf_counter``, the host's monotonic clock, which every
process shares), first a plain one, then one in which another thread spins pure Python
without pause (``calibrate.GilHog``'s thread: what a CPU-bound handler's thread does to
Ray's own threads). Per request the driver keeps: the send, the handler's time, the
response's arrival, and, by wrapping the driver's ``RequestRouter``, when the acceptance's
queue length reaches the cache (``on_new_queue_len_info``) and when the done callback
decrements it (``decrement_queue_len_cache``; both timed by ``RouterCounters``). One
request at a time and no probes, so the k-th of each is the k-th request's.

It prints the medians of each leg (send to handler, handler to response, response to done
callback, send to acceptance, handler to acceptance) plain and with the GIL held, and
their differences in switch intervals (``sys.getswitchinterval()``, 5 ms): how many of the
GIL takes behind a busy handler fall before the handler, between it and the response, and
between the response and the end the router is told of (``takes``). The calibration runs
the same phase (``timeline_phase``) for ``replica_gil_acquisitions`` and its two siblings.
validate/README.md item 35 is what it found.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time

from validate.harness import RealCluster
from validate.router_counters import RouterCounters

LEGS = (("send -> handler", "send", "handler"), ("handler -> response", "handler", "response"),
        ("response -> done callback", "response", "done"), ("send -> acceptance", "send", "accepted"),
        ("handler -> acceptance", "handler", "accepted"))
WARMUP = 50


class TimedNoop:
    """A no-op ``async`` handler answering with the ``perf_counter`` it ran at; with
    ``hog`` another thread spins pure Python without pause."""

    def __init__(self, hog: bool):
        if hog:
            threading.Thread(target=self._spin, daemon=True).start()

    @staticmethod
    def _spin():
        while True:
            x = 0
            for i in range(10_000):
                x += i

    async def __call__(self):
        return time.perf_counter()


async def _timeline(handle, n: int) -> list[dict]:
    for _ in range(WARMUP):
        await handle.remote()
    await asyncio.sleep(0.5)  # the warm-up's done callbacks in
    accepted0, done0 = len(RouterCounters.answer_times), len(RouterCounters.done_times)
    rows = []
    for _ in range(n):
        s = time.perf_counter()
        handler = await handle.remote()
        rows.append({"send": s, "handler": handler, "response": time.perf_counter()})
    await asyncio.sleep(0.5)
    accepted, done = list(RouterCounters.answer_times)[accepted0:], list(RouterCounters.done_times)[done0:]
    if len(accepted) != n or len(done) != n:
        raise RuntimeError(f"{n} requests, {len(accepted)} acceptances and {len(done)} done callbacks")
    for row, a, d in zip(rows, accepted, done):
        row["accepted"], row["done"] = a, d
    return rows


def legs_ms(rows: list[dict]) -> dict:
    """Each leg's median, ms."""
    return {name: 1e3 * statistics.median(r[b] - r[a] for r in rows) for name, a, b in LEGS}


def timeline_phase(cl: RealCluster, n: int) -> dict:
    """Both cases, each on a replica of its own (``TimedNoop``): {"n", "plain", "held"},
    each leg's median in ms. The caller registers this module to be pickled by value."""
    from validate.calibrate import _deploy_one  # it imports this module

    out: dict = {"n": n}
    for name, hog in (("plain", False), ("held", True)):
        app_name = f"timeline-{name}"
        handle = _deploy_one(cl, TimedNoop, app_name, 5, hog)
        try:
            out[name] = legs_ms(asyncio.run(_timeline(handle, n)))
        finally:
            cl.delete(app_name)
    return out


def takes(t: dict, switch_interval_s: float) -> dict:
    """The replica's GIL takes per request behind a busy handler, by where they fall:
    each leg's extra with the GIL held, in switch intervals, rounded (before the handler
    at least 1; of those, the ones before the acceptance reaches the router)."""
    def count(leg: str) -> int:
        return max(0, round((t["held"][leg] - t["plain"][leg]) / (switch_interval_s * 1e3)))

    before = max(1, count("send -> handler"))
    return {"replica_gil_acquisitions": before,
            "replica_accept_gil_acquisitions": min(before, count("send -> acceptance")),
            "replica_response_gil_acquisitions": count("handler -> response"),
            "replica_release_gil_acquisitions": count("response -> done callback")}


def report(t: dict, switch_interval_s: float) -> list[str]:
    lines = [f"{'leg (median ms)':28s} {'plain':>8s} {'GIL held':>9s} {'extra':>8s} {'switch intervals':>17s}"]
    for name, *_ in LEGS:
        extra = t["held"][name] - t["plain"][name]
        lines.append(f"{name:28s} {t['plain'][name]:8.2f} {t['held'][name]:9.2f} {extra:8.2f} "
                     f"{extra / (switch_interval_s * 1e3):17.1f}")
    lines.append("takes: " + ", ".join(f"{k} {v}" for k, v in takes(t, switch_interval_s).items()))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.gil_timeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=300, help="timed requests per case (default 300)")
    args = ap.parse_args(argv)
    if args.n < 10:
        print(f"n: {args.n} is below 10", file=sys.stderr)
        return 2
    with RealCluster(num_cpus=2) as cl:
        import ray

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # replicas cannot import validate
        t = timeline_phase(cl, args.n)
    print("\n".join(report(t, sys.getswitchinterval())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
