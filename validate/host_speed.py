"""The host's speed: a fixed pure-Python probe, and how a run's speed is read from it.

The probe is ``for i in range(n): x += i`` (``spin``) with n = ``PROBE_N``, reported as
nanoseconds per iteration. The calibration records the speed it was made at (its
``host_ns_per_loop``, which the harness sizes ``gil`` work with); a run records the speed it
ran at, shown beside the run as its ``probe speed`` (calibration ns / run ns). Up to
2026-11-27 simserve simulated each run at that ``cpu_speed``; Ray's CPU per request turned
out not to follow the probe from one calibration to the next (validate/README item 30), so
runs are now simulated with the costs as calibrated, and ``gil`` work at the speed the
replicas' own thread CPU gave it. On these shared virtual machines the probe's speed is not
a constant: on 2026-11-26 from 15:38 a run's probes read about 30 and about 60 ns in turn.

A run's probes come from ``HostSpeedSampler``: a process of its own (outside the driver,
so that sampling often takes no GIL from the client loop and the handle's router) that
times one probe every ``interval_s`` (0.25 s) on its thread's CPU clock, which leaves
out waiting for a core. One probe costs 3-6 ms, so the sampler keeps about 1-2 % of one
core busy. Its process is one of the run's own (``harness._tree_cpu`` counts it, so it is
never taken for another user's load), and the per-role CPU tables leave it out
(``harness.process_role``).

A run's speed is the time average of its samples (``run_ns_per_loop``): work that runs
through the run gets through ``1 / ns`` iterations per ns of CPU at each moment, so a
CPU-bound run's throughput follows the mean of ``1 / ns``, the harmonic mean of the ns.
That rule was fixed (validate/README item 26) before any run scored with it was measured.
Runs saved before 2026-11-26 20:04 have one probe every 2 s from a thread in the driver
and keep the rule they were scored with: the median of every probe.

Whether the sampler reads the speed that CPU-bound work gets is checked apart from the
validation grid by ``python -m validate.host_speed check`` (``check``): with both cores
spinning, the time average came within 1.4-3.6 ns of the workers' own speed, the median
of the probes within 0.4-5.6 (2026-11-26 20:35, validate/README item 27).

Left out: a probe measures pure-Python speed, and Ray's C++ threads and BLAS drift apart
from it (validate/README items 20 and 26); the calibration's own speed is the median of
its probes between phases, not a time average (``validate/calibrate.py``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

PROBE_N = 100_000  # iterations of one spin probe: every host-speed figure uses this length
SAMPLE_INTERVAL_S = 0.25


def spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i
    return x


def probe_ns_per_loop(n: int = PROBE_N, reps: int = 5, clock=time.perf_counter_ns) -> float:
    """ns per iteration of ``spin``: the median of ``reps`` timings, wall-clock unless
    ``clock`` says otherwise (``time.thread_time_ns``: this thread's CPU time, which leaves
    out waiting for the GIL or a core)."""
    times = []
    for _ in range(reps):
        t0 = clock()
        spin(n)
        times.append(clock() - t0)
    return statistics.median(times) / n


def run_ns_per_loop(host_probe: dict) -> float:
    """A run's host speed, ns per spin iteration. With the sampler's probes
    (``sampler_ns``): their harmonic mean, the run's time-averaged speed. Without (runs
    saved before the sampler): the median of every probe the run took, before, during
    (``during_samples_ns``; for the oldest runs, their median) and after. The median
    served against transients (in the grid of 2026-11-26 08:17, 14 of 70 runs had a probe
    before or after at 42-55 ns while their probes during ran at 33-36 ns and their
    replicas' CPU per request did not move); it cannot follow a host that runs at two
    speeds for long spells within a run, which a time average over probes four times a
    second can."""
    fast = host_probe.get("sampler_ns")
    if fast:
        return len(fast) / sum(1.0 / x for x in fast)
    samples = probe_samples(host_probe)
    return statistics.median(samples) if samples else float("nan")


def speed_trace(host_probe: dict, window_s: tuple[float, float],
                interval_s: float = SAMPLE_INTERVAL_S) -> tuple[tuple[float, float], ...]:
    """The run's host speed over time, for ``ClusterConfig.core_speed_trace``: from the
    sampler's probes (none for runs saved before it: an empty trace), each the speed
    (``1 / ns``) from halfway since the probe before it, relative to the mean speed of the
    probes taken in ``window_s`` (the run's measurement window, seconds from the drive's
    start), so that the trace moves the speed within the run and leaves its mean to what
    sets it already (the replicas' own ``gil`` speed; Ray's costs as calibrated).

    The sampler starts with the drive and takes its first probe ``interval_s`` later; each
    probe then waits ``interval_s`` after the one before has ended, and lasts its own
    ``ns * PROBE_N`` of CPU (its wall time, but for waiting for a core)."""
    samples = host_probe.get("sampler_ns") or []
    if not samples:
        return ()
    at, t = [], 0.0
    for ns in samples:
        t += interval_s
        at.append(t)
        t += ns * PROBE_N * 1e-9
    inside = [1.0 / ns for ns, a in zip(samples, at) if window_s[0] <= a <= window_s[1]] or [1.0 / ns for ns in samples]
    mean = sum(inside) / len(inside)
    starts = [0.0] + [(a + b) / 2.0 for a, b in zip(at, at[1:])]
    return tuple((start, (1.0 / ns) / mean) for start, ns in zip(starts, samples))


def probe_samples(host_probe: dict) -> list[float]:
    """Every probe a run took (ns per loop): before, during (the sampler's, or for runs
    saved before it the driver thread's every 2 s, or for the oldest their median) and
    after."""
    during = (host_probe.get("sampler_ns") or host_probe.get("during_samples_ns")
              or [host_probe.get("during_ns_per_loop")])
    return [x for x in (host_probe.get("before_ns_per_loop"), host_probe.get("after_ns_per_loop"), *during) if x]


class HostSpeedSampler:
    """Probes the host every ``interval_s`` from a process of its own, from ``start()``
    until ``stop()``, which returns the samples in ns per loop."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S):
        self.interval_s = interval_s
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "validate.host_speed", str(self.interval_s)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._proc.stdout.readline().strip() != "ready":  # sampling from here on
            raise RuntimeError("host speed sampler did not start")

    def stop(self) -> list[float]:
        out, _ = self._proc.communicate(timeout=30)  # closing stdin tells it to stop
        return json.loads(out)


def _sample(interval_s: float) -> None:
    """The sampler process: one probe every ``interval_s`` until stdin closes, then the
    samples as one JSON list on stdout."""
    import threading

    samples: list[float] = []
    stop = threading.Event()

    def wait_for_eof():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print("ready", flush=True)
    while not stop.wait(interval_s):
        samples.append(probe_ns_per_loop(reps=1, clock=time.thread_time_ns))
    print(json.dumps(samples), flush=True)


def _spin_worker(duration_s: float) -> tuple[int, int]:
    """Spin probes back to back for ``duration_s`` of wall time: (iterations, thread CPU ns)."""
    end = time.perf_counter() + duration_s
    n, cpu0 = 0, time.thread_time_ns()
    while time.perf_counter() < end:
        spin(PROBE_N)
        n += PROBE_N
    return n, time.thread_time_ns() - cpu0


def check(workers: tuple[int, ...] = (1, 2), duration_s: float = 20.0, repeats: int = 3) -> list[dict]:
    """Does the sampler read the speed that CPU-bound work gets? ``w`` processes spin for
    ``duration_s`` while the sampler runs; each row gives the workers' own ns per loop (their
    thread CPU over their iterations: the time average they got) beside the sampler's
    harmonic mean and median. ``python -m validate.host_speed check``."""
    import multiprocessing

    rows = []
    for rep in range(repeats):
        for w in workers:
            sampler = HostSpeedSampler()
            sampler.start()
            with multiprocessing.get_context("spawn").Pool(w) as pool:
                done = pool.map(_spin_worker, [duration_s] * w)
            samples = sampler.stop()
            rows.append({"repeat": rep, "workers": w,
                         "workers_ns": sum(c for _, c in done) / sum(n for n, _ in done),
                         "sampler_harmonic_ns": run_ns_per_loop({"sampler_ns": samples}),
                         "sampler_median_ns": statistics.median(samples), "samples": len(samples)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check()
    elif sys.argv[1] == "spin":  # a load: spin for SECONDS, then print (iterations, thread CPU ns)
        print(json.dumps(_spin_worker(float(sys.argv[2]))), flush=True)
    else:
        _sample(float(sys.argv[1]))
