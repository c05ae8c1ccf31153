"""Does a replica busy for a while keep the driver's core awake? (a diagnosis, not a validation)

    python -m validate.wake_probe [--work-ms 20] [--requests 50] [--rounds 4]

On real Ray: one ``async`` replica (``max_ongoing_requests`` 5) on a cluster of 2 logical
CPUs, requests one at a time through a ``DeploymentHandle``, in rounds of three phases: a
no-op, a sleep of ``work-ms`` (``asyncio.sleep``: the node idles), and a pure-Python spin of
``work-ms`` (the replica's core busy, the driver's idle). The handler returns how long its own
work took; each request's overhead is its round trip less that. Then the same in simserve
with the committed calibration (``io`` and ``gil`` work of ``work-ms``). It prints each
phase's median overhead and its excess over the no-op's.

On these virtual machines a message to a core that has slept pays a wake-up
(``Overheads.idle_wake_s``). After a sleep both cores slept and the response pays it. After
a spin only the driver's core slept: if the response pays it there too, the replica's busy
spell did not keep the driver's core awake (validate/README.md, item 45).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

from validate.scenario import load_calibration, scenario, with_overheads

PHASES = ("noop", "sleep", "spin")


class Work:
    """The deployment: ``kind`` is a phase; returns its own work's seconds."""

    async def __call__(self, kind: str, work_s: float) -> float:
        import asyncio

        t0 = time.perf_counter()
        if kind == "sleep":
            await asyncio.sleep(work_s)
        elif kind == "spin":
            while time.perf_counter() - t0 < work_s:
                pass
        return time.perf_counter() - t0


def real_overheads(work_s: float, requests: int, rounds: int) -> dict[str, list[float]]:
    """Each phase's per-request overhead (round trip less the handler's own time), seconds."""
    import ray

    from validate import wake_probe
    from validate.calibrate import _deploy_one
    from validate.harness import RealCluster

    out: dict[str, list[float]] = {p: [] for p in PHASES}
    with RealCluster(2) as cl:
        ray.cloudpickle.register_pickle_by_value(wake_probe)  # replicas cannot import validate
        handle = _deploy_one(cl, Work, "wake", 5)
        try:
            for _ in range(20):  # warm-up
                handle.remote("noop", 0.0).result()
            for _ in range(rounds):
                for phase in PHASES:
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        own = handle.remote(phase, work_s).result()
                        out[phase].append(time.perf_counter() - t0 - own)
        finally:
            cl.delete("wake")
    return out


def sim_overheads(work_s: float, cal: dict | None = None) -> dict[str, float]:
    """simserve's median overhead per phase (latency less the work), seconds."""
    from simserve import simulate

    cal = cal if cal is not None else load_calibration()
    out = {}
    for phase, work in (("noop", [("io", 1e-9)]), ("sleep", [("io", work_s)]), ("spin", [("gil", work_s)])):
        cfg = scenario(name="wake", work=work, num_replicas=1, concurrent=1, duration_s=60.0)
        cfg = with_overheads(cfg, cal, cal["host_ns_per_loop"])
        cfg = replace(cfg, keep_requests=True)
        lat = simulate(cfg).requests["latency_s"]
        out[phase] = float(lat.median()) - (work_s if phase != "noop" else 0.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.wake_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-ms", type=float, default=20.0, help="the sleep's and the spin's length (default 20)")
    ap.add_argument("--requests", type=int, default=50, help="requests per phase and round (default 50)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the three phases (default 4)")
    args = ap.parse_args(argv)
    for name, value, low in (("work-ms", args.work_ms, 1.0), ("requests", args.requests, 1), ("rounds", args.rounds, 1)):
        if value < low:
            print(f"{name}: {value:g} is below {low:g}", file=sys.stderr)
            return 2
    work_s = args.work_ms / 1e3
    real = {p: statistics.median(v) for p, v in real_overheads(work_s, args.requests, args.rounds).items()}
    sim = sim_overheads(work_s)
    print(f"overhead per request at c=1 (round trip less the handler's own {args.work_ms:g} ms), median, ms")
    print(f"{'phase':>6s} {'Ray':>7s} {'excess':>7s} {'simserve':>9s} {'excess':>7s}")
    for p in PHASES:
        print(f"{p:>6s} {1e3 * real[p]:7.2f} {1e3 * (real[p] - real['noop']):+7.2f} "
              f"{1e3 * sim[p]:9.2f} {1e3 * (sim[p] - sim['noop']):+7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
