"""Physical cores shared by processor sharing, and the GIL of each process.

Ray reserves logical CPUs but pins nothing: every runnable thread on a node competes
for its physical cores, and the OS time-slices them. We model that as capacitated
processor sharing: with K runnable threads on C cores each thread runs at
``min(1, C/K)``. Inside one process, pure-Python (``gil``) work runs on at most one
thread at a time; CPython hands the GIL over every 5 ms, so the process's GIL-holding
jobs share that one thread equally (processor sharing again, at a coarser grain).
GIL-releasing (``native``) work runs on its own threads.

Both cases are one shape, a ``Runner``: ``threads`` runnable threads shared equally
by its ``jobs``. A process's GIL is a runner of one thread; each native job is a runner
of ``OMP_NUM_THREADS`` threads. Each runner keeps a virtual clock (work received per
job), so a change of occupancy costs O(runners on the node), never O(jobs).

Left out: the 5 ms switch interval's granularity and convoy effects, hyper-threads,
NUMA, cache effects, and CPU used by Ray processes we do not model (GCS, raylet).
"""

from __future__ import annotations

import heapq

import simpy

# Work (in seconds of one idle core) below which a job counts as finished; absorbs the
# rounding of virtual clocks.
_EPS = 1e-12


class Runner:
    """``threads`` runnable threads shared equally by ``jobs`` (a heap of finish tags)."""

    __slots__ = ("threads", "vclock", "jobs", "busy_s", "busy_since", "name")

    def __init__(self, threads: float, name: str = ""):
        self.threads = threads
        self.vclock = 0.0
        self.jobs: list = []  # heap of (finish tag, seq, callback, arg)
        self.busy_s = 0.0
        self.busy_since = 0.0
        self.name = name


class Process:
    """An OS process on a node: a GIL plus any native thread pools it spawns."""

    __slots__ = ("node", "gil", "name")

    def __init__(self, node: "Node", name: str):
        self.node = node
        self.name = name
        self.gil = Runner(1, name)

    def run_gil(self, work_s: float, callback, arg) -> None:
        """Run pure-Python work on this process's GIL; ``callback(arg)`` when done."""
        self.node.add(self.gil, work_s, callback, arg)

    def run_native(self, threads: int, work_s: float, callback, arg) -> None:
        """Run GIL-releasing work of ``work_s`` single-thread seconds on ``threads`` threads."""
        self.node.add(Runner(threads, self.name), work_s, callback, arg)

    def burn(self, work_s: float) -> None:
        """GIL-free work on a thread of its own that nothing waits for (C++ threads)."""
        if work_s > 0.0:
            self.node.add(Runner(1, self.name), work_s, _nothing, None)


def _nothing(_) -> None:
    pass


class Node:
    """One machine: ``physical_cores`` cores, time-shared among its runnable threads."""

    def __init__(self, env: simpy.Environment, index: int, num_cpus: float, physical_cores: float):
        self.env = env
        self.index = index
        self.num_cpus = num_cpus  # logical CPUs Ray may reserve
        self.physical_cores = physical_cores
        self.reserved_cpus = 0.0
        self.active: list[Runner] = []
        self.threads = 0.0  # runnable threads now
        self.core_busy_s = 0.0  # integral of min(threads, cores) dt
        self.max_core_share = 0.0  # largest fraction of the cores ever in use (<= 1)
        self._last = 0.0
        self._seq = 0
        self._generation = 0

    def process(self, name: str) -> Process:
        return Process(self, name)

    def occupy(self, cores: float) -> None:
        """A constant load of ``cores`` runnable threads for ever (Ray's own daemons)."""
        if cores <= 0.0:
            return
        self._advance()
        runner = Runner(cores, "background")
        self._seq += 1
        runner.jobs.append((float("inf"), self._seq, _nothing, None))
        runner.busy_since = self.env.now
        self.active.append(runner)
        self.threads += cores
        self._reschedule()

    # -- processor sharing ------------------------------------------------------
    def _speed(self) -> float:
        """Per-thread speed: each runnable thread gets min(1, cores/threads)."""
        k = self.threads
        return 1.0 if k <= self.physical_cores else self.physical_cores / k

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0.0 and self.active:
            s = self._speed()
            for r in self.active:
                r.vclock += dt * r.threads * s / len(r.jobs)
            self.core_busy_s += dt * min(self.threads, self.physical_cores)
        self._last = now

    def add(self, runner: Runner, work_s: float, callback, arg) -> None:
        if work_s <= 0.0:
            callback(arg)
            return
        self._advance()
        if not runner.jobs:
            self.active.append(runner)
            self.threads += runner.threads
            runner.busy_since = self.env.now
        self._seq += 1
        heapq.heappush(runner.jobs, (runner.vclock + work_s, self._seq, callback, arg))
        self._reschedule()

    def _reschedule(self) -> None:
        self._generation += 1
        if not self.active:
            return
        share = min(self.threads, self.physical_cores) / self.physical_cores
        if share > self.max_core_share:
            self.max_core_share = share
        s = self._speed()
        soonest = min(
            (r.jobs[0][0] - r.vclock) * len(r.jobs) / (r.threads * s) for r in self.active
        )
        if soonest == float("inf"):
            return  # only never-ending background load
        ev = self.env.timeout(max(soonest, 0.0), self._generation)
        ev.callbacks.append(self._on_timer)

    def _on_timer(self, ev) -> None:
        if ev._value != self._generation:
            return  # superseded by a later change of occupancy
        self._advance()
        finished = []
        still_active = []
        for r in self.active:
            jobs = r.jobs
            limit = r.vclock + _EPS * (1.0 + abs(r.vclock))
            while jobs and jobs[0][0] <= limit:
                _, _, cb, arg = heapq.heappop(jobs)
                finished.append((cb, arg))
            if jobs:
                still_active.append(r)
            else:
                self.threads -= r.threads
                r.busy_s += self.env.now - r.busy_since
        self.active = still_active
        if not still_active:
            self.threads = 0.0  # absorb float drift
        self._reschedule()
        for cb, arg in finished:
            cb(arg)

    def busy_s(self, runner: Runner) -> float:
        """Time ``runner`` has had work, up to now."""
        return runner.busy_s + (self.env.now - runner.busy_since if runner.jobs else 0.0)

    def core_busy_until_now(self) -> float:
        self._advance()
        return self.core_busy_s
