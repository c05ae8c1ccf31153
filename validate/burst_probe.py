"""How a replica answers a burst of calls: one after another, or all at the end of the burst
(a diagnosis, not a validation).

    python -m validate.burst_probe [-k 50] [--rounds 20] [--hog]

On real Ray: the grid's one-replica ``io`` deployment (``io50-1rep-m1-c1``), idle; on the
driver router's loop, ``k`` queue-length probes (``RunningReplica.get_queue_len``, Ray's own
probe call) are started at once, ``rounds`` times; each answer's time after the burst began
is kept. Then the same bursts in simserve, with the committed calibration. It prints, for the
1st, the 10%, 25%, 50%, 75% and 90% ranks and the last answer, the median over the rounds.
With ``--hog`` the replica is the timeline phase's (``gil_timeline.TimedNoop``), in which
another thread spins pure Python without pause (what a CPU-bound handler does to Ray's
threads); in simserve a GIL job that never ends runs in the replica's process.

Ray's replica runs each call up to its answer in one go on its main loop, so answers leave one
after another through the burst; a model in which every call's takes share the GIL until all
are done answers them all near the end. The driver's own loop sends all ``k`` before it
handles the first answer, so Ray's first answers are the driver's time, not the replica's
(validate/README.md, item 42, is what it found).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import replace

from validate.harness import RealCluster
from validate.scenario import grid_scenarios, load_calibration, with_overheads

SCENARIO = "io50-1rep-m1-c1"
RANKS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
FIRST_BURST_S = 5.0  # simserve: after the replica is up and the run has settled
BURST_GAP_S = 1.0  # between bursts, so that each starts on an idle replica
HOG_BURST_GAP_S = 3.0  # the same beside a spinning thread, where a burst may take a second


def rank_medians(rounds: list[list[float]], k: int) -> list[tuple[int, float]]:
    """(answer number, median over ``rounds`` of its time) at each of ``RANKS``; each round is
    the answers' times in any order."""
    ordered = [sorted(r) for r in rounds]
    out = []
    for q in RANKS:
        i = min(k - 1, int(q * k))
        out.append((i + 1, statistics.median(r[i] for r in ordered)))
    return out


async def _burst(replica, k: int) -> list[float]:
    t0 = time.perf_counter()
    times: list[float] = []

    async def one():
        if await replica.get_queue_len(deadline_s=5.0) is None:
            raise RuntimeError("a probe got no answer within 5 s")
        times.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(k)))
    return times


def real_bursts(k: int, rounds: int, hog: bool = False) -> list[list[float]]:
    from ray.serve._private.router import SingletonThreadRouter

    cfg = next(s for s in grid_scenarios() if s.deployment.name == SCENARIO)
    with RealCluster(cfg.cluster.num_cpus) as cl:
        if hog:
            import ray

            from validate import gil_timeline
            from validate.calibrate import _deploy_one

            ray.cloudpickle.register_pickle_by_value(gil_timeline)  # replicas cannot import validate
            handle = _deploy_one(cl, gil_timeline.TimedNoop, "burst", 5, True)
        else:
            handle, _ = cl.deploy(cfg, "burst")
        try:
            handle.remote().result()  # the router now knows the replica
            router = handle._router._asyncio_router.request_router
            loop = SingletonThreadRouter._asyncio_loop
            replica = next(iter(router._replicas.values()))
            out = []
            for _ in range(rounds):
                out.append(asyncio.run_coroutine_threadsafe(_burst(replica, k), loop).result())
                time.sleep(HOG_BURST_GAP_S if hog else BURST_GAP_S)
            return out
        finally:
            cl.delete("burst")


def sim_bursts(k: int, rounds: int, cal: dict | None = None, hog: bool = False) -> list[list[float]]:
    """The same bursts in simserve: ``k`` background probes queued on the driver router's loop
    at once, every ``BURST_GAP_S``, each answer timed as it reaches the router; with ``hog``
    the replica's process runs a pure-Python job that outlasts the run."""
    from simserve.simulation import Simulation

    cfg = next(s for s in grid_scenarios() if s.deployment.name == SCENARIO)
    cfg = with_overheads(cfg, cal if cal is not None else load_calibration(), 50.0)
    gap_s = HOG_BURST_GAP_S if hog else BURST_GAP_S
    horizon_s = FIRST_BURST_S + (rounds + 1) * gap_s
    cfg = replace(cfg, workload=replace(cfg.workload, concurrent=None, rps=1e-6, duration_s=horizon_s,
                                        warmup_s=0.0))
    sim = Simulation(cfg)
    router = sim.router
    bursts: list[list[float]] = []
    start = [0.0]
    probe_back = router._probe_back

    def timed(answer):
        bursts[-1].append(sim.env.now - start[0])
        probe_back(answer)

    router._probe_back = timed

    def fire(_):
        start[0] = sim.env.now
        bursts.append([])
        for _ in range(k):
            router._call_soon(router._background_probe, (list(router.replicas), 0))

    if hog:
        def spin(_):
            replica = router.replicas[0]
            replica.process.run_handler_gil(10 * horizon_s, lambda _: None, None, replica.gil_handoff_cpu_s)

        sim.later(FIRST_BURST_S / 2, spin, None)
    for i in range(rounds):
        sim.later(FIRST_BURST_S + i * gap_s, fire, None)
    sim.run()
    return [b for b in bursts if len(b) == k]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.burst_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", type=int, default=50, help="probes per burst (default 50)")
    ap.add_argument("--rounds", type=int, default=20, help="bursts (default 20)")
    ap.add_argument("--hog", action="store_true", help="a thread spinning pure Python in the replica")
    args = ap.parse_args(argv)
    for name, value, low in (("k", args.k, 2), ("rounds", args.rounds, 1)):
        if value < low:
            print(f"{name}: {value} is below {low}", file=sys.stderr)
            return 2
    real = rank_medians(real_bursts(args.k, args.rounds, args.hog), args.k)
    sim = rank_medians(sim_bursts(args.k, args.rounds, hog=args.hog), args.k)
    print(f"{args.k} probes at once{' beside a spinning thread' if args.hog else ''}, median over "
          f"{args.rounds} bursts, ms after the burst began")
    print(f"{'answer':>8s} {'Ray':>8s} {'simserve':>9s}")
    for (n, r), (_, s) in zip(real, sim):
        print(f"{n:8d} {r * 1e3:8.2f} {s * 1e3:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
