"""Does a replica busy for a while keep the driver's core awake? (a diagnosis, not a validation)

    python -m validate.wake_probe [--work-ms 20] [--requests 50] [--rounds 4] [--replicas 1]

On real Ray: ``replicas`` ``async`` replicas (``max_ongoing_requests`` 5, ``num_cpus`` 0.5)
on a cluster of 2 logical CPUs, requests one at a time through a ``DeploymentHandle``, in
rounds of four phases: a no-op; a no-op sent after the client has slept ``work-ms`` (the
calibration's wake phase); a sleep of ``work-ms`` in the handler (``asyncio.sleep``: the
node idles); a pure-Python spin of ``work-ms`` in the handler (the replica's core busy, the
driver's idle). The handler returns how long its own work took; each request's overhead is
its round trip less that. Then the same in simserve with the committed calibration (``io``
and ``gil`` work of ``work-ms``; the gap phase as requests that arrive ``work-ms`` after the
no-op's median answer). It prints each phase's median overhead and its excess over the
no-op's.

On these virtual machines a message to a core that has slept pays a wake-up
(``Overheads.idle_wake_s``). After the client's gap or a handler's sleep both cores slept;
after a spin only the driver's did. If the response pays it there too, the replica's busy
spell did not keep the driver's core awake; with three replicas, each has idled for a few
requests when its turn comes (validate/README.md, items 45 and 46).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace

from validate.scenario import load_calibration, scenario, with_overheads

PHASES = ("noop", "gap", "sleep", "spin")


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


def real_overheads(work_s: float, requests: int, rounds: int, replicas: int = 1) -> dict[str, list[float]]:
    """Each phase's per-request overhead (round trip less the handler's own time), seconds."""
    import ray

    from validate import wake_probe
    from validate.calibrate import _deploy_one
    from validate.harness import RealCluster

    out: dict[str, list[float]] = {p: [] for p in PHASES}
    with RealCluster(2) as cl:
        ray.cloudpickle.register_pickle_by_value(wake_probe)  # replicas cannot import validate
        handle = _deploy_one(cl, Work, "wake", 5, num_replicas=replicas, num_cpus=0.5)
        try:
            for _ in range(20 * replicas):  # warm-up: the router learns every replica
                handle.remote("noop", 0.0).result()
            for _ in range(rounds):
                for phase in PHASES:
                    for _ in range(requests):
                        if phase == "gap":
                            time.sleep(work_s)
                        t0 = time.perf_counter()
                        own = handle.remote("noop" if phase == "gap" else phase, work_s).result()
                        out[phase].append(time.perf_counter() - t0 - own)
        finally:
            cl.delete("wake")
    return out


def sim_overheads(work_s: float, cal: dict | None = None, replicas: int = 1) -> dict[str, float]:
    """simserve's median overhead per phase (latency less the work), seconds."""
    from simserve import WorkloadConfig, simulate

    cal = cal if cal is not None else load_calibration()

    def median_latency(work, arrivals: tuple = ()) -> float:
        cfg = scenario(name="wake", work=work, num_replicas=replicas, num_cpus=0.5, concurrent=1, duration_s=60.0)
        if arrivals:
            cfg = replace(cfg, workload=WorkloadConfig(trace_arrivals_s=arrivals, requests=len(arrivals),
                                                       duration_s=None))
        cfg = replace(with_overheads(cfg, cal, cal["host_ns_per_loop"]), keep_requests=True)
        return float(simulate(cfg).requests["latency_s"].median())

    out = {"noop": median_latency([("io", 1e-9)])}
    # The client's gap: requests that arrive work_s after the no-op's median answer, one at a time.
    period_s = work_s + out["noop"]
    out["gap"] = median_latency([("io", 1e-9)], tuple(i * period_s for i in range(int(60.0 / period_s))))
    out["sleep"] = median_latency([("io", work_s)]) - work_s
    out["spin"] = median_latency([("gil", work_s)]) - work_s
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.wake_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-ms", type=float, default=20.0, help="the sleep's and the spin's length (default 20)")
    ap.add_argument("--requests", type=int, default=50, help="requests per phase and round (default 50)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the four phases (default 4)")
    ap.add_argument("--replicas", type=int, default=1, help="replicas, num_cpus 0.5 each (default 1)")
    args = ap.parse_args(argv)
    for name, value, low in (("work-ms", args.work_ms, 1.0), ("requests", args.requests, 1), ("rounds", args.rounds, 1),
                             ("replicas", args.replicas, 1)):
        if value < low:
            print(f"{name}: {value:g} is below {low:g}", file=sys.stderr)
            return 2
    work_s = args.work_ms / 1e3
    real = {p: statistics.median(v) for p, v in real_overheads(work_s, args.requests, args.rounds,
                                                               args.replicas).items()}
    sim = sim_overheads(work_s, replicas=args.replicas)
    print(f"overhead per request at c=1 on {args.replicas} replica(s) (round trip less the handler's own time; "
          f"work and gap {args.work_ms:g} ms), median, ms")
    print(f"{'phase':>6s} {'Ray':>7s} {'excess':>7s} {'simserve':>9s} {'excess':>7s}")
    for p in PHASES:
        print(f"{p:>6s} {1e3 * real[p]:7.2f} {1e3 * (real[p] - real['noop']):+7.2f} "
              f"{1e3 * sim[p]:9.2f} {1e3 * (sim[p] - sim['noop']):+7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
