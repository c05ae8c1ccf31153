"""What one hand-over of the GIL between two busy Python threads costs on this host, without
Ray: a cross-check of ``Overheads.replica_gil_handoff_cpu_s`` where simserve charges it to
a ``def`` handler's threads taking turns (validate/README.md, item 48).

    python -m validate.gil_switch [--threads 4] [--rounds 30] [--calibration FILE]

Each round spins ``host_speed.spin`` for ``N`` iterations on one thread, then the same
iterations split over ``--threads`` threads at once, then on one thread again, all in
this process. The threads take turns on the GIL every switch interval
(``sys.getswitchinterval()``; a waiting thread asks the holder to let go when its wait
times out), so the round with threads makes about its wall time over the interval in
hand-overs and spends, in ``time.process_time``, its extra CPU over the mean of the
single-thread runs beside it on them. Per round: that extra per hand-over, in spin
iterations (the single-thread runs' own CPU per iteration, so that the host's speed,
which moves from minute to minute here, cancels); printed as the median and quartiles
over the rounds, and in ms at the calibration's ``host_ns_per_loop`` beside its
``replica_gil_handoff_cpu_s`` (measured in a replica, a loop thread taking the GIL from
a spinning one). The hand-over count is the interval's estimate, not counted: CPython
keeps no tally.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from validate.host_speed import spin
from validate.scenario import load_calibration

N = 2_000_000  # spin iterations per run: about 0.1 s here, 20 switch intervals


def _run(threads: int, n: int) -> tuple[float, float]:
    """(process CPU, wall) seconds to spin ``n`` iterations split over ``threads`` threads."""
    pool = [threading.Thread(target=spin, args=(n // threads,)) for _ in range(threads)]
    c0, w0 = time.process_time(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.process_time() - c0, time.perf_counter() - w0


def measure(threads: int, rounds: int, n: int = N) -> list[float]:
    """Per round, the extra CPU per hand-over in spin iterations."""
    interval = sys.getswitchinterval()
    out = []
    for _ in range(rounds):
        before, (cpu, wall), after = _run(1, n), _run(threads, n), _run(1, n)
        alone = 0.5 * (before[0] + after[0])
        out.append((cpu - alone) / (wall / interval) / (alone / n))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.gil_switch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calibration", help="calibration file (default: the committed one)")
    args = ap.parse_args(argv)
    if args.threads < 2:
        print(f"--threads: {args.threads} is below 2 (one thread hands nothing over)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print(f"--rounds: {args.rounds} is below 1", file=sys.stderr)
        return 2
    cal = load_calibration(args.calibration)
    loops = measure(args.threads, args.rounds)
    q1, med, q3 = statistics.quantiles(loops, n=4) if len(loops) > 1 else (loops[0],) * 3
    ms = 1e-6 * cal["host_ns_per_loop"]
    print(f"{args.threads} threads, {args.rounds} rounds, switch interval {1e3 * sys.getswitchinterval():g} ms: "
          f"{med:.0f} spin iterations per hand-over (quartiles {q1:.0f}, {q3:.0f}); at the calibration's "
          f"{cal['host_ns_per_loop']:.2f} ns per iteration {med * ms:.3f} ms ({q1 * ms:.3f}-{q3 * ms:.3f}), "
          f"against its replica_gil_handoff_cpu_s {1e3 * cal['replica_gil_handoff_cpu_s']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
