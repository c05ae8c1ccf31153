"""Ray's CPU per no-op request, by process role, with 0 to 2 other processes keeping the
cores busy.

``python -m validate.loaded_cpu [SPINNERS] [--nice N] [--concurrency C]`` (SPINNERS:
comma-separated counts, default 0,1,2,0): one no-op replica, requests one at a time (C in
flight) through a ``DeploymentHandle`` for ``LOAD_S`` seconds while ``k`` processes at nice
``N`` (19: they take only the cores Ray leaves; 0: they compete with Ray as a CPU-bound
handler does) spin pure Python beside them (``python -m validate.host_speed spin``) and the
host-speed sampler runs. Printed per count, one JSON line: requests, median latency, the
router's attempts and probes per request, other users' cores, the spinners' own ns per
iteration and the sampler's time average, and the driver's, proxy's, replica's and background processes' CPU per request (ms; ``py`` Python/GIL
threads, ``na`` C++ threads), each minus its idle rate (measured over ``IDLE_S`` before the
first count, no spinners), their sum and the same in spin iterations (ms / the sampler's ns
per iteration: the host's speed taken out), and the driver's and replica's CPU per request
with no idle rate subtracted.

With ``--nice 0`` and as many spinners as cores (Ray's processes then compete for
oversubscribed cores, as beside a CPU-bound handler) the driver's and the replica's CPU per
request grew by about 40% (2026-11-26 20:44-20:47; part of it is waking up after the longer
waits, which simserve charges apart), with ``--nice 19`` (cores busy, none taken from Ray)
not beyond the noise: the calibration's phase ``oversubscribed_phase`` measures the former
as ``Overheads.oversubscribed_cpu_factor`` (``validate/README.md``, item 28).
The spinners are the run's own processes (``process_role`` "probe"), counted neither as
Ray's nor as other users'.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from validate.calibrate import ProcessCPU, _by_role, _window, noop_deployment, per_request_by_role
from validate.host_speed import HostSpeedSampler, run_ns_per_loop
from validate.router_counters import RouterCounters

LOAD_S = 10.0
IDLE_S = 4.0
SETTLE_S = 1.0  # the spinners start before the requests, and end after them
WARMUP = 30
SPINNERS = (0, 1, 2, 0)
OVERSUBSCRIBED = (0, 1, 0, 1, 0, 1, 0)  # the calibration's phase: 0 or one spinner per core, in turn
ROLES = ("driver", "proxy", "replica", "background")


async def _load(target, pc: ProcessCPU, k: int, idle: tuple[dict, float], nice: int, concurrency: int = 1) -> dict:
    """One row; ``target`` is the deployment's handle, or its URL (a string: aiohttp clients
    through Serve's proxy, as the harness's HTTP load generator)."""
    session = None
    if isinstance(target, str):
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def call():
            async with session.get(target) as r:
                await r.read()
    else:
        call = target.remote
    try:
        row = await _rows(call, pc, k, idle, nice, concurrency)
        if session is not None:  # the proxy's router, which routed them, is not instrumented
            row["attempts"] = row["probes"] = None
        return row
    finally:
        if session is not None:
            await session.close()


async def _rows(call, pc: ProcessCPU, k: int, idle: tuple[dict, float], nice: int, concurrency: int) -> dict:
    for _ in range(WARMUP):
        await call()
    spin_s = LOAD_S + 2 * SETTLE_S
    # Through nice(1), not a preexec_fn: that forces a fork of this process, whose gRPC threads
    # then abort the child now and then (seen 2026-11-27 14:51); without one it is spawned.
    spinners = [subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-m", "validate.host_speed", "spin",
                                  str(spin_s)], stdout=subprocess.PIPE, text=True)
                for _ in range(k)]
    sampler = HostSpeedSampler()
    sampler.start()
    await asyncio.sleep(SETTLE_S)
    s0, w0, lat = pc.snapshot(), time.perf_counter(), []
    a0, p0 = RouterCounters.attempts, RouterCounters.probes

    async def client():
        while time.perf_counter() - w0 < LOAD_S:
            t = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t)
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - w0
    load = _by_role(ProcessCPU.diff(s0, pc.snapshot()))
    attempts, probes = RouterCounters.attempts - a0, RouterCounters.probes - p0
    samples = sampler.stop()
    spun = [json.loads(p.communicate(timeout=spin_s + 30)[0]) for p in spinners]
    ns = run_ns_per_loop({"sampler_ns": samples})
    n = len(lat)
    out = {"spinners": k, "nice": nice, "concurrency": concurrency, "requests": n,
           "lat_ms": round(1e3 * statistics.median(lat), 3),
           "foreign": round(load["_foreign_cores"], 3), "sampler_ns": round(ns, 2),
           "spinners_ns": round(sum(c for _, c in spun) / sum(i for i, _ in spun), 2) if spun else None,
           # The driver's router (RouterCounters, installed by RealCluster), per request.
           "attempts": round(attempts / n, 4), "probes": round(probes / n, 4)}
    out.update(per_request_by_role(load, wall, idle, n, ROLES))
    total_ms = sum(out[f"{r[:3]}.{kind[:2]}"] for r in ROLES for kind in ("python_s", "native_s"))
    out["total_ms"] = round(total_ms, 3)
    out["total_kiloloops"] = round(1e3 * total_ms / ns, 2)  # ms / (ns per loop) = thousands of loops
    # The driver's and the replica's CPU per request with nothing subtracted: with the cores
    # oversubscribed, processes starved of a core also spend less of their idle rate, so the
    # subtraction can over-correct (background processes come out negative then).
    out["dri_rep_raw_ms"] = round(1e3 * sum(load.get(r, {}).get(kind, 0.0) for r in ("driver", "replica")
                                            for kind in ("python_s", "native_s")) / n, 3)
    return out


def oversubscribed_phase(handle, pc: ProcessCPU) -> dict:
    """The calibration's phase: no-op requests alone and with as many spinners at nice 0 as
    cores, in turn (``OVERSUBSCRIBED``), after an idle window that gives the idle rates."""
    d, wall, _ = asyncio.run(_window(pc, IDLE_S))
    idle = (_by_role(d), wall)
    n = os.cpu_count() or 1
    return {"rows": [asyncio.run(_load(handle, pc, n * k, idle, nice=0)) for k in OVERSUBSCRIBED]}


def oversubscribed_cpu_factor(raw: dict, overheads=None) -> float:
    """``Overheads.oversubscribed_cpu_factor``: the driver's and replica's CPU per request
    (Python and C++, idle rates subtracted) with the cores oversubscribed over the same
    alone, medians of the phase's rows. From each row the CPU that waking the driver and
    the replica costs after an idle gap as long as the row's median latency is taken out
    (``overheads.wake_cpu``, the calibration's own wake-up table): simserve charges that
    apart, and a request beside the spinners waits 70-90 ms where one alone waits 5-7, so
    leaving it in would count it twice. The gap is taken long (a starved process also
    waits for a core, not only idles), so this errs on the small side. Background
    processes are left out of the ratio: starved of a core, they spend less than their
    idle rate, and the subtraction makes them negative."""
    wakes = [overheads.wake_cpu(role) for role in ("client", "replica")] if overheads is not None else []

    def per_request(row):
        wake_ms = sum(1e3 * w(row["lat_ms"] / 1e3) for w in wakes if w is not None)
        return sum(row[f"{r}.{k}"] for r in ("dri", "rep") for k in ("py", "na")) - wake_ms
    alone = [per_request(r) for r in raw["rows"] if r["spinners"] == 0]
    loaded = [per_request(r) for r in raw["rows"] if r["spinners"] > 0]
    return statistics.median(loaded) / statistics.median(alone)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m validate.loaded_cpu")
    ap.add_argument("spinners", nargs="?", default=",".join(map(str, SPINNERS)))
    ap.add_argument("--nice", type=int, default=19,
                    help="the spinners' nice: 19 takes only the cores Ray leaves (busy cores alone), "
                         "0 competes with Ray's processes as a CPU-bound handler does")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="requests kept in flight (closed-loop clients on the one handle; the replica "
                         "takes 5, so up to 5 need no probe and meet no rejection)")
    args = ap.parse_args(argv)
    if args.concurrency < 1:
        print(f"concurrency: {args.concurrency} is below 1", file=sys.stderr)
        return 2
    counts = [int(k) for k in args.spinners.split(",")]
    with noop_deployment() as (handle, pc):
        d, wall, _ = asyncio.run(_window(pc, IDLE_S))
        idle = (_by_role(d), wall)
        for k in counts:
            print(json.dumps(asyncio.run(_load(handle, pc, k, idle, args.nice, args.concurrency))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
