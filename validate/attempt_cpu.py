"""What a routing attempt that finds no replica costs Ray's router, beside its probes:
``Overheads.router_attempt_cpu_s``.

    python -m validate.attempt_cpu [--windows 4] [--from RAW...] [--add-to CALIBRATION]

``router_cpu_s`` is measured one request at a time, where each request is one candidate
set that finds its replica, one send and one done callback. Where replicas are full the
router goes round its loop (``_choose_replicas_with_backoff``): a candidate set, the
queue-length probes the cache cannot answer for, a back-off sleep, and again; none of it
sends. This phase times that loop alone, on a cluster of its own: a ``Holder`` replica
with ``max_ongoing_requests=1`` (``calibrate._deploy_one``) whose slot one long request
holds, and a second request whose routing task polls it, the back-off sleeps made zero
in the driver (``RequestRouter._compute_backoff_s``) so that it polls as fast as its
probes come back. Per window of ``LOAD_S``: the router thread's CPU (its own clock, its
rate over an idle window with the slot held subtracted) per attempt, and the probes per
attempt (``RouterCounters``); less the probes at the calibration's ``probe_cpu_s``, it
is what an attempt costs. The host's speed is probed before and after, and the cost is
given at the calibration's speed (``host_ns_per_loop``). The field is the median over
the windows. Its rows go to ``validate/out/attempt-<stamp>.json``; ``--from`` derives the
field from saved runs instead, pooling their windows; ``--add-to`` writes the runs and the
field into a calibration file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from validate.scenario import add_to_calibration, load_calibration, save_raw

LOAD_S = 5.0
WINDOWS = 4


def attempt_phase(cl, windows: int = WINDOWS) -> dict:
    """The rows: per window the router thread's CPU (idle rate subtracted), attempts and
    probes; and the host's ns per spin iteration before and after."""
    from ray.serve._private.request_router.request_router import RequestRouter

    from validate.calibrate import Holder, ProcessCPU, _deploy_one, held_slot
    from validate.host_speed import probe_ns_per_loop
    from validate.router_counters import RouterCounters

    handle = _deploy_one(cl, Holder, "attempt", max_ongoing_requests=1)
    backoff = RequestRouter._compute_backoff_s

    async def run():
        held, clock, (_, idle_wall, router_idle) = await held_slot(handle, ProcessCPU())
        rows = []
        RequestRouter._compute_backoff_s = lambda self, attempt: 0.0
        try:
            polling = handle.remote(0.0)
            await asyncio.sleep(0.5)  # into the loop
            for _ in range(windows):
                a0, p0, r0, w0 = RouterCounters.attempts, RouterCounters.probes, clock(), time.perf_counter()
                await asyncio.sleep(LOAD_S)
                wall = time.perf_counter() - w0
                cpu = clock() - r0 - router_idle / idle_wall * wall
                rows.append({"wall_s": wall, "router_cpu_s": cpu, "attempts": RouterCounters.attempts - a0,
                             "probes": RouterCounters.probes - p0})
        finally:
            RequestRouter._compute_backoff_s = backoff
        held.cancel()
        await asyncio.wait_for(polling, 30.0)
        return rows

    before = probe_ns_per_loop()
    try:
        rows = asyncio.run(run())
    finally:
        cl.delete("attempt")
    return {"rows": rows, "ns_per_loop": [before, probe_ns_per_loop()]}


def derive(raws: list[dict], cal: dict) -> dict:
    """``router_attempt_cpu_s`` at the calibration's speed: per window the router's CPU per
    attempt less its probes at ``probe_cpu_s`` (both at its run's speed), the median over
    the windows of every run in ``raws``."""
    per_window, probes, rates = [], [], []
    for raw in raws:
        speed = cal["host_ns_per_loop"] / statistics.mean(raw["ns_per_loop"])  # < 1: this host ran slower
        for r in raw["rows"]:
            per_attempt = r["router_cpu_s"] / r["attempts"]
            probes.append(r["probes"] / r["attempts"])
            rates.append(r["attempts"] / r["wall_s"])
            per_window.append((per_attempt - probes[-1] * cal["probe_cpu_s"] / speed) * speed)
    return {"router_attempt_cpu_s": max(0.0, statistics.median(per_window)),
            "per_window_ms": [round(1e3 * x, 4) for x in per_window],
            "probes_per_attempt": [round(x, 3) for x in probes], "attempts_per_s": [round(x, 1) for x in rates]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.attempt_cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=WINDOWS)
    ap.add_argument("--from", dest="sources", metavar="RAW", nargs="+",
                    help="derive from saved runs (out/attempt-*.json), pooled, instead of measuring")
    ap.add_argument("--add-to", metavar="CALIBRATION",
                    help="write the rows and the field into this calibration file")
    args = ap.parse_args(argv)
    if args.windows < 1:
        print(f"--windows: {args.windows} is below 1", file=sys.stderr)
        return 2
    cal = load_calibration(args.add_to)
    if args.sources:
        raws = []
        for path in args.sources:
            with open(path) as f:
                raws.append(json.load(f))
    else:
        from validate.calibrate import calibrated_cluster

        with calibrated_cluster(cal) as cl:
            raw = attempt_phase(cl, args.windows)
        save_raw(raw, "attempt")
        raws = [raw]
    result = derive(raws, cal)
    print(json.dumps(result))
    if args.add_to:
        add_to_calibration(cal, args.add_to, "router_attempt_cpu_s", result["router_attempt_cpu_s"], "attempt",
                           {"runs": raws, "derived": result}, "attempt_cpu", argv or sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
