"""CPU per no-op request, by process role, against the client's pause between requests.

``python -m validate.pause_cpu [GAPS]`` (GAPS: comma-separated seconds, default
0,0.0005,0.001,0.003,0.01,0.03,0): one no-op replica, requests one at a time through a
``DeploymentHandle``, ``N`` per gap, the client sleeping the gap before each. Printed per
gap, one JSON line: the median latency, other users' cores, and the driver's, replica's
and background processes' CPU per request (ms; ``py`` Python/GIL threads, ``na`` C++
threads), each minus its idle rate (measured over ``IDLE_S`` before the first gap).

A diagnosis, not a calibration phase: the calibration times requests back to back, and
this shows what a pause between them adds (``validate/README.md``, item 13). What simserve
models is the calibration's wake-CPU phase (``calibrate._wake_cpu_phase``), where the
pause is the replica's handler sleeping, as in the ``io`` rows.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from validate.calibrate import ProcessCPU, _by_role, _window, noop_deployment, per_request_by_role

N = 300
IDLE_S = 4.0
WARMUP = 30
GAPS_S = (0.0, 0.0005, 0.001, 0.003, 0.01, 0.03, 0.0)
ROLES = ("driver", "replica", "background")


async def _idle(pc: ProcessCPU) -> tuple[dict, float]:
    d, wall, _ = await _window(pc, IDLE_S)
    return _by_role(d), wall


async def _gap(handle, pc: ProcessCPU, gap_s: float, idle: tuple[dict, float]) -> dict:
    for _ in range(WARMUP):
        await handle.remote()
    s0, w0, lat = pc.snapshot(), time.perf_counter(), []
    for _ in range(N):
        if gap_s:
            await asyncio.sleep(gap_s)
        t = time.perf_counter()
        await handle.remote()
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - w0
    load = _by_role(ProcessCPU.diff(s0, pc.snapshot()))
    out = {"gap_ms": gap_s * 1e3, "lat_ms": round(1e3 * statistics.median(lat), 3),
           "foreign": round(load["_foreign_cores"], 3)}
    out.update(per_request_by_role(load, wall, idle, N, ROLES))
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    gaps = [float(g) for g in argv[0].split(",")] if argv else list(GAPS_S)
    with noop_deployment() as (handle, pc):
        idle = asyncio.run(_idle(pc))
        for g in gaps:
            print(json.dumps(asyncio.run(_gap(handle, pc, g, idle))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
