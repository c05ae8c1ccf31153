"""How much CPU a periodic task gets beside CPU-bound threads on this host.

    python -m validate.periodic_cpu [--seconds 10]

Ray's daemons and each Serve process's background tasks wake, do a little work and sleep.
simserve charges them as constant loads (``Overheads.ray_background_cores`` and the
``*_idle_cores``), and has to know whether such a load keeps its rate when handler threads
saturate the cores or shrinks to an equal share with them (``simserve.cpu.Node.occupy``).
This measures it without Ray: a process that spins ``work_ms`` of its own CPU every
``period_ms`` and sleeps the rest (or ten such processes), alone and beside 2, 4 or 8
processes spinning pure Python, prints the cores it got, what it asked for, and what an
equal share of the cores with the spinners would have given it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

# (spinners, periodic processes, work_ms, period_ms)
CASES = ((0, 1, 1.0, 10.0), (2, 1, 1.0, 10.0), (4, 1, 1.0, 10.0), (8, 1, 1.0, 10.0),
         (0, 10, 0.1, 10.0), (4, 10, 0.1, 10.0), (8, 10, 0.1, 10.0))


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i


def _periodic(work_ms: float, period_ms: float, seconds: float, out) -> None:
    end = time.monotonic() + seconds
    cpu0 = time.thread_time()
    due = time.monotonic()
    while time.monotonic() < end:
        t = time.thread_time()
        while time.thread_time() - t < work_ms / 1e3:
            pass
        due += period_ms / 1e3
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
    out.put((time.thread_time() - cpu0) / seconds)


def measure(spinners: int, loads: int, work_ms: float, period_ms: float, seconds: float) -> float:
    """Cores the ``loads`` periodic processes got together over ``seconds``."""
    stop = mp.Event()
    spin = [mp.Process(target=_spin, args=(stop,)) for _ in range(spinners)]
    for p in spin:
        p.start()
    time.sleep(0.5)  # the spinners running first
    out = mp.Queue()
    periodic = [mp.Process(target=_periodic, args=(work_ms, period_ms, seconds, out)) for _ in range(loads)]
    for p in periodic:
        p.start()
    got = sum(out.get() for _ in periodic)
    for p in periodic:
        p.join()
    stop.set()
    for p in spin:
        p.join()
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="each case's length (s)")
    args = ap.parse_args(argv)
    cores = mp.cpu_count()
    print(f"{'spinners':>8s} {'tasks':>5s} {'each':>14s} {'asked':>6s} {'got':>6s} {'equal share':>11s}  (cores, {cores} on this host)")
    for spinners, loads, work_ms, period_ms in CASES:
        asked = loads * work_ms / period_ms
        got = measure(spinners, loads, work_ms, period_ms, args.seconds)
        equal = asked * cores / (spinners + asked) if spinners + asked > cores else asked
        print(f"{spinners:8d} {loads:5d} {f'{work_ms:g} ms / {period_ms:g} ms':>14s} {asked:6.3f} {got:6.3f} {equal:11.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
