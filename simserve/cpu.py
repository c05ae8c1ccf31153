"""Physical cores shared by processor sharing, and the GIL of each process.

Ray reserves logical CPUs but pins nothing: every runnable thread on a node competes
for its physical cores, and the OS time-slices them. We model that as capacitated
processor sharing: with K runnable threads on C cores each thread runs at
``min(1, C/K)``. Inside one process, pure-Python (``gil``) work runs on at most one
thread at a time; CPython hands the GIL over every 5 ms, so the process's GIL-holding
jobs share that one thread equally (processor sharing again, at a coarser grain).
GIL-releasing (``native``) work runs on its own threads.

Constant loads (``Node.occupy``: Ray's daemons, each process's periodic tasks) are rates
of work, not runnable threads: they and the threads share the cores max-min fairly, so a
load smaller than a fair share keeps its whole rate however many threads compete.

Both cases are one shape, a ``Runner``: ``threads`` runnable threads shared equally
by its ``jobs``. A process's GIL is a runner of one thread; each native job is a runner
of ``OMP_NUM_THREADS`` threads.

Bookkeeping is O(log runners) per change, never O(jobs) or O(runners): the node keeps
``service``, the work one thread has received since the start (it grows at the
per-thread speed), and every runner's next finish expressed on that scale, in a heap.
A runner's jobs advance at ``threads / len(jobs)`` times the node's service, so its
finish points only move when its own job count changes; a change of the node's speed
changes when they are reached in time, not where they are.

A thread that asks for a GIL another holds waits up to ``gil_switch_interval_s``
(CPython's ``sys.getswitchinterval()``, 5 ms) before it joins the sharing; zero gives
pure processor sharing. Threads that go on wanting it take turns every interval, and a
handler's thread pays for each of its turns (``Process.run_handler_gil``).

An ``Overheads`` cost (``Process.run_overhead``, ``Process.burn``) costs
``oversubscribed_cpu_factor`` times as much when it starts on a node whose cores are all
taken by handler threads (``Process.run_handler_*``, ``Node.overhead_cpu``); the handler's
own work is charged as stated. It costs ``batched_cpu_factor`` times as much when it
starts while threads of its own kind in its process are at work (its Python threads for a
Python cost, its C++ threads for a C++ one) and the process holds another request
(``Process.others``): those threads then take several requests' messages in one wake-up.

The host's speed may change over time (``Node.set_core_speed``, driven by
``ClusterConfig.core_speed_trace``): every thread on the node then does that multiple of
its work per second, the constant loads keep their rates in cores.

For the idle wake-up (``Simulation.message_s``) a node can also keep count of when its
request-path processes were last busy (``tracks_path``, ``Node.quiet_for``): Ray's daemons
and the constant loads do not count.

Left out: the switch interval's slicing beyond that first wait (sharing is smooth, not
5 ms turns: the turns are paid for, not timed), hyper-threads, NUMA, cores of different
speeds at one moment, and cache effects on the user's work.
"""

from __future__ import annotations

import bisect
from heapq import heappop, heappush
from math import ulp

import simpy

from simserve.events import NORMAL, later

_INF = float("inf")
# Relative tolerance when comparing finish points: absorbs rounding of the clocks.
_EPS = 1e-12
# Most thread counts whose speed a node remembers (see Node._retune).
_TUNINGS_MAX = 256


class Runner:
    """``threads`` runnable threads shared equally by ``jobs`` (a heap of finish tags).

    A job's tag is in the runner's own work clock ``v``, which at node service S is
    ``v0 + (S - s0) * threads / len(jobs)``; (v0, s0) are reset whenever the number of
    jobs changes."""

    __slots__ = ("threads", "v0", "s0", "jobs", "version", "busy_s", "busy_since", "idle_since", "path")

    def __init__(self, threads: float, path: "Process | None" = None):
        self.threads = threads
        self.v0 = 0.0
        self.s0 = 0.0
        self.jobs: list = []  # heap of (finish tag, seq, callback, arg)
        self.version = 0  # invalidates this runner's older entries in the node's heap
        self.busy_s = 0.0
        self.busy_since = 0.0
        self.idle_since = 0.0  # when its last job ended (while it has none)
        # The request path's process whose work this is, when its node keeps count of that
        # work for the idle wake-up (Node.quiet_for); else None.
        self.path = path

    def clock(self, service: float) -> float:
        return self.v0 + (service - self.s0) * self.threads / len(self.jobs)

    def next_finish(self) -> float:
        """Node service at which this runner's first job completes."""
        return self.s0 + (self.jobs[0][0] - self.v0) * len(self.jobs) / self.threads


class Process:
    """An OS process on a node: a GIL plus any native thread pools it spawns.

    ``wake``, when set, is the CPU (``g -> seconds``, ``Overheads.wake_cpu``) the process
    burns beside the path when work reaches its Python threads after they have idled
    ``g``: a process woken from sleep spends more than one kept busy."""

    __slots__ = ("node", "gil", "name", "path", "last_end", "spell_quiet", "wake", "wake_cpu_s", "handoff_cpu_s",
                 "oversubscribed_cpu_s", "others", "batched_cpu_s", "burns", "handler_jobs")

    def __init__(self, node: "Node", name: str, on_path: bool = True):
        self.node = node
        self.name = name
        # Whether the node counts this process's work in Node.quiet_for: the request path's
        # processes, not Ray's daemons (on_path False).
        self.path = self if on_path and node.tracks_path else None
        self.last_end = -1.0  # when its work last ran out (Node._path_idle)
        # How long the node's other request-path processes had been quiet when this one's
        # current spell of work began (Node.add): what its messages are judged by.
        self.spell_quiet = 0.0
        self.gil = Runner(1, self.path)
        self.wake = None
        self.wake_cpu_s = 0.0  # burned on wake-ups so far
        self.handoff_cpu_s = 0.0  # spent on taking the GIL from another thread so far
        self.oversubscribed_cpu_s = 0.0  # added to Overheads costs by oversubscribed cores so far
        # Whether it holds more than one request now (() -> bool), set by its owner where the
        # node has a batched_cpu_factor (overhead_cpu); None: its costs are never batched.
        self.others = None
        self.batched_cpu_s = 0.0  # taken off Overheads costs by batching so far
        self.burns = 0  # C++ costs (burn) running now
        # The handler's pure-Python jobs submitted and not done (where the node counts handler threads).
        self.handler_jobs = 0

    def run_gil(self, work_s: float, callback, arg, handoff_s: float = 0.0) -> None:
        """Run pure-Python work on this process's GIL; ``callback(arg)`` when done.

        CPython makes a thread that finds the GIL held wait up to the switch interval
        before it forces a hand-over; if the holder lets go sooner (its work ends), the
        waiter goes in then. So a short job behind a long one waits, where pure
        processor sharing would start it at once. Either way the waiter slept on the GIL,
        and its take costs ``handoff_s`` more when the holder is another thread
        (``Overheads.replica_gil_handoff_cpu_s``; the caller knows which threads)."""
        node = self.node
        if self.wake is not None and not self.gil.jobs:
            cost = self.wake(node.env._now - self.gil.idle_since)
            if cost > 0.0:
                self.wake_cpu_s += cost
                self.burn(cost)
        wait = node.gil_switch_interval_s
        if wait > 0.0 and self.gil.jobs and work_s > 0.0:
            wait = min(wait, node.time_to_next_finish(self.gil))
            self.handoff_cpu_s += handoff_s
            node.later(wait, _join_gil, (self, work_s + handoff_s, callback, arg))
            return
        node.add(self.gil, work_s, callback, arg)

    def run_handler_gil(self, work_s: float, callback, arg, handoff_s: float = 0.0) -> None:
        """The handler's pure-Python work (``run_gil``): while the process has any, its GIL's
        thread counts as one of the node's handler threads (``Node.handler_threads``, where
        ``Node.counts_handler_threads``).

        Handler jobs that overlap are on threads of their own (a ``def`` handler's pool; an
        ``async def`` handler's CPU segments never overlap, ``Replica._next_segment``), and
        CPython hands the GIL from one to the next every switch interval while both want
        it: a job that starts beside another takes it ``work_s / interval`` times, and each
        take after its first (which ``run_gil`` charges) costs ``handoff_s`` too. Judged
        when the job starts, as if the contention lasts its whole length."""
        node = self.node
        interval = node.gil_switch_interval_s
        if not node.counts_handler_threads and not (handoff_s > 0.0 and interval > 0.0):
            if self.wake is None and interval <= 0.0:
                # run_gil with no wake-up to charge and no switch interval to wait, written
                # out: the job joins the GIL's at once (a handler's every job, without costs).
                node.add(self.gil, work_s, callback, arg)
            else:
                self.run_gil(work_s, callback, arg, handoff_s)
            return
        if self.handler_jobs:
            turns = work_s / interval - 1.0 if interval > 0.0 else 0.0
            if turns > 0.0 and handoff_s > 0.0:
                self.handoff_cpu_s += turns * handoff_s
                work_s += turns * handoff_s
        else:
            node.handler_threads += 1
        self.handler_jobs += 1
        self.run_gil(work_s, self._handler_gil_done, (callback, arg), handoff_s)

    def _handler_gil_done(self, pair) -> None:
        self.handler_jobs -= 1
        if not self.handler_jobs:
            self.node.handler_threads -= 1
        pair[0](pair[1])

    def run_handler_native(self, threads: int, work_s: float, callback, arg) -> None:
        """The handler's GIL-releasing work (``run_native``), its ``threads`` counted as
        handler threads until it ends (where ``Node.counts_handler_threads``)."""
        if not self.node.counts_handler_threads:
            self.run_native(threads, work_s, callback, arg)
            return
        self.node.handler_threads += threads
        self.run_native(threads, work_s, self._handler_native_done, (threads, callback, arg))

    def _handler_native_done(self, args) -> None:
        threads, callback, arg = args
        self.node.handler_threads -= threads
        callback(arg)

    def overhead_cpu(self, work_s: float, busy: bool) -> float:
        """What ``work_s`` of an ``Overheads`` cost (measured with cores to spare, one
        request at a time) costs if it starts now (``Node.overhead_cpu``); the excess is
        counted in ``oversubscribed_cpu_s``. While the threads that run it are ``busy``
        already (the GIL's for a Python cost, the C++ threads' for a C++ one) and the
        process holds another request (``others``), it costs ``batched_cpu_factor`` of
        that: one wake-up of those threads serves both, with warm caches (Ray's driver and
        replica spent 13% and 21% less per no-op request with 4 in flight than with 1;
        validate/README.md item 47). Judged when the cost starts, as above."""
        node = self.node
        cost = node.overhead_cpu(work_s)
        self.oversubscribed_cpu_s += cost - work_s
        if busy and self.others is not None and self.others():
            saved = cost * (1.0 - node.batched_cpu_factor)
            self.batched_cpu_s += saved
            cost -= saved
        return cost

    def run_overhead(self, work_s: float, callback, arg, handoff_s: float = 0.0) -> None:
        """Pure-Python work of an ``Overheads`` cost (``run_gil``) at what it costs now
        (``overhead_cpu``); ``handoff_s`` was measured with the GIL contended and is not
        scaled again."""
        self.run_gil(self.overhead_cpu(work_s, bool(self.gil.jobs)), callback, arg, handoff_s)

    def continue_overhead(self, work_s: float, callback, arg) -> None:
        """``run_overhead`` on a thread that holds the GIL already and goes on with more work:
        it joins the GIL's work at once, with no switch interval to wait and nothing to hand
        over (CPython keeps the GIL with a running thread until it blocks or is asked to
        drop it)."""
        self.node.add(self.gil, self.overhead_cpu(work_s, bool(self.gil.jobs)), callback, arg)

    def boot(self, work_s: float, callback, arg) -> None:
        """The process's own start-up: ``work_s`` of one thread's work before it runs
        anything else; ``callback(arg)`` when done. On a runner of its own, so that it
        counts neither as GIL work nor as the end of an idle spell (``wake``)."""
        self.run_native(1, work_s, callback, arg)

    def run_native(self, threads: int, work_s: float, callback, arg) -> None:
        """Run GIL-releasing work of ``work_s`` single-thread seconds on ``threads`` threads."""
        self.node.add(Runner(threads, self.path), work_s, callback, arg)

    def burn(self, work_s: float) -> None:
        """GIL-free work of an ``Overheads`` cost on a thread of its own that nothing waits
        for (C++ threads, wake-ups), at what it costs now (``overhead_cpu``)."""
        if work_s > 0.0:
            cost = self.overhead_cpu(work_s, self.burns > 0)
            self.burns += 1
            self.node.add(Runner(1, self.path), cost, self._burnt, None)

    def _burnt(self, _) -> None:
        self.burns -= 1


def _fill(cores: float, threads: float, loads: list) -> tuple[float, float]:
    """Max-min fair shares of ``cores`` between ``threads`` runnable threads, each able to
    use one core, and constant loads of the rates ``loads`` (ascending): (each thread's
    share, the cores the loads get together). Demands are met smallest first while each
    fits in an equal split of what is left; all the others then get that split."""
    left, i, n = cores, 0, len(loads)
    served = 0.0
    pending = threads  # the threads not yet given their core
    while pending or i < n:
        level = left / (pending + n - i)
        if i < n and (not pending or loads[i] <= 1.0):
            if loads[i] > level:
                return (level if pending else 1.0), served + level * (n - i)
            served += loads[i]
            left -= loads[i]
            i += 1
        elif level < 1.0:
            return level, served + level * (n - i)
        else:
            left -= pending
            pending = 0
    return 1.0, served


def _join_gil(args) -> None:
    process, work_s, callback, arg = args
    process.node.add(process.gil, work_s, callback, arg)


class Node:
    """One machine: ``physical_cores`` cores, time-shared among its runnable threads."""

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        num_cpus: float,
        physical_cores: float,
        contended_core_speed: float = 1.0,
        gil_switch_interval_s: float = 0.0,
        oversubscribed_cpu_factor: float = 1.0,
        tracks_path: bool = False,
        batched_cpu_factor: float = 1.0,
    ):
        self.env = env
        self.index = index
        self.num_cpus = num_cpus  # logical CPUs Ray may reserve
        self.physical_cores = physical_cores
        self.contended_core_speed = contended_core_speed
        self.gil_switch_interval_s = gil_switch_interval_s
        self.oversubscribed_cpu_factor = oversubscribed_cpu_factor
        self.batched_cpu_factor = batched_cpu_factor  # Process.overhead_cpu
        self.core_speed = 1.0  # the host's speed now (ClusterConfig.core_speed_trace)
        # Threads with handler work (Process.run_handler_*) now. Only overhead_cpu reads the
        # count, and only to scale by oversubscribed_cpu_factor: with a factor of 1 (x * 1.0
        # is x) it cannot change a result, and the handlers' jobs skip counting it (but for
        # the GIL's, where their turns are charged: Process.run_handler_gil).
        self.counts_handler_threads = oversubscribed_cpu_factor != 1.0
        self.handler_threads = 0
        self.reserved_cpus = 0.0
        self.threads = 0.0  # runnable threads now
        self.active = 0  # runners with work
        self._loads: list = []  # the constant loads' rates in cores, ascending (occupy)
        # For quiet_for (kept only with tracks_path: the idle wake-up is modelled): per
        # request-path process its runners with work now, and the two distinct processes
        # last seen busy (their work ended, or a message reached them), as (when, process),
        # the latest first.
        self.tracks_path = tracks_path
        self._path_active: dict = {}
        self._path_seen: list = [(0.0, None), (0.0, None)]
        self.service = 0.0  # work one thread has received since the start
        self.core_busy_s = 0.0  # integral of the cores the threads and loads keep busy, dt
        self._last = 0.0
        self._heap: list = []  # (service at next finish, version, seq, runner)
        self._seq = 0
        # later(delay, fn, arg) (none on the nodes of a placement-only cluster, without env).
        self.later = later(env) if env is not None else None
        # The calendar and its entry counter, which _schedule pushes to as later() would.
        self._calendar = env._queue if env is not None else None
        self._eid = env._eid if env is not None else None
        self._timer = 0  # the pending timer's number: an earlier one supersedes it
        self._fire = self._on_timer  # bound once: a timer is set for most jobs
        self._timer_at = _INF  # when the pending timer fires
        # The threads' speed and the busy cores for the current thread count: they change
        # only when a runner starts or stops or a load comes or goes, so _retune() looks
        # them up then.
        self._tunings: dict = {}  # thread count -> _tune()
        self._retune()

    def process(self, name: str, on_path: bool = True) -> Process:
        return Process(self, name, on_path)

    def occupy(self, cores: float) -> float | None:
        """A constant load of ``cores`` (Ray's own daemons, a process's periodic tasks)
        until ``vacate``; None for no load.

        A load is a rate of work, not a runnable thread: its threads wake, do a little and
        sleep, and the OS serves a thread that sleeps ahead of those that never do (CFS
        places a waking thread at the front). So it gets its full rate beside any number of
        CPU-bound threads while that rate is below a fair share of the cores (``_fill``): a
        task taking 1 ms every 10 ms got 0.104-0.106 cores beside 2, 4 or 8 pure-Python
        spinners on this project's 2 cores, where sharing the cores equally with them
        would have left it 0.025-0.095 (``python -m validate.periodic_cpu``;
        validate/README.md, item 31)."""
        if cores <= 0.0:
            return None
        self._advance()
        bisect.insort(self._loads, cores)
        self._tunings.clear()
        # The threads beside it slow down: a pending timer is early, never late (add()).
        self._retune()
        return cores

    def vacate(self, load: float) -> None:
        """End a load that ``occupy`` started (its process exited): the others speed up,
        so the pending timer may now be late and is set again."""
        now = self.env._now
        self._advance()
        self._loads.remove(load)
        self._tunings.clear()
        self._retune()
        self._arm(now)

    def overhead_cpu(self, work_s: float) -> float:
        """What ``work_s`` of an ``Overheads`` cost (Ray's machinery, the load generator;
        measured with cores to spare) costs when it starts now: ``oversubscribed_cpu_factor``
        times as much while the handlers' threads alone take every core. Ray's code then
        competes with CPU-bound threads for its core, and spends more per request
        (``validate.loaded_cpu``: the driver's and replica's CPU per no-op request with one
        spinning process per core beside them, 2026-11-26; why, it does not tell). Ray's
        own work and its daemons do not count: measured with cores to spare, their cost
        already holds their own contention, and counting them would let a cost raise
        itself. The state when the cost starts decides, not how it changes while it runs."""
        return work_s * self.oversubscribed_cpu_factor if self.handler_threads >= self.physical_cores else work_s

    def quiet_for(self, now: float, sender: Process | None = None) -> float:
        """How long no process of the request path but ``sender`` has had work here or been
        reached by a message (``seen``; 0 while one has work): what decides whether a
        message must wait for a core to wake (``quiet_for_message``). Ray's daemons and
        the constant loads do not count: the calibration measured the wake-up with them
        running. Needs ``tracks_path``."""
        active = self._path_active
        if active and (len(active) > 1 or sender not in active):
            return 0.0
        latest, before = self._path_seen
        quiet = now - (latest[0] if latest[1] is not sender else before[0])
        return quiet if quiet > 0.0 else 0.0

    def quiet_for_message(self, now: float, sender: Process) -> float:
        """How long this node's cores had been left to sleep when ``sender`` set off a message
        to a process here: on a node of more than one core, how long the request path's
        other processes had been quiet when the sender's spell of work that sends it began
        (its own work keeps only its own core awake, and the calibration's client measured
        the wake-up against the gap it idled before its spell); on one core, or from
        another node, how long every process here has been quiet now."""
        if sender.node is not self or self.physical_cores <= 1.0:
            return self.quiet_for(now)
        if sender in self._path_active or sender.last_end == now:
            return sender.spell_quiet
        return self.quiet_for(now, sender)

    def seen(self, process: Process, at: float) -> None:
        """``process`` was busy at ``at`` (a message reaches it then: its threads wake to
        take it, however little they do with it). Times may come out of order (a message
        is recorded as it is sent); the two latest distinct processes are kept."""
        path = process.path
        if path is None:
            return
        latest, before = self._path_seen
        if latest[1] is path:
            if at > latest[0]:
                self._path_seen[0] = (at, path)
        elif at >= latest[0]:
            self._path_seen = [(at, path), latest]
        elif at > before[0]:
            self._path_seen[1] = (at, path)

    # -- processor sharing ------------------------------------------------------
    def _tune(self) -> tuple:
        """(per-thread speed, busy cores) for the runnable threads and constant loads now,
        at the host's speed (``core_speed``).

        Each runnable thread can use one core; the threads and the loads share the cores
        max-min fairly (``_fill``; without loads each thread gets min(1, cores/threads)).
        A core runs slower the more of its siblings are busy (shared caches, SMT, a
        virtual machine's host): the threads' speed is scaled by ``contended_core_speed``
        with all cores busy, by 1 with one, linearly between."""
        k = self.threads
        c = self.physical_cores
        if self._loads:
            share, loads = _fill(c, k, self._loads)
            busy = k * share + loads
        else:
            share = 1.0 if k <= c else c / k
            busy = k if k <= c else c  # min(k, c)
        share *= self.core_speed
        if self.contended_core_speed == 1.0 or c <= 1.0 or busy <= 1.0:
            return share, busy
        return share * (1.0 - (1.0 - self.contended_core_speed) * (min(busy, c) - 1.0) / (c - 1.0)), busy

    def set_core_speed(self, speed: float) -> None:
        """The host's cores run at ``speed`` times their normal rate from now on: the work
        done so far is counted at the old speed, and the next finish is timed at the new."""
        self._advance()
        self.core_speed = speed
        self._tunings.clear()
        self._retune()
        self._arm(self.env._now)

    def _retune(self) -> None:
        """The thread count changed: the per-thread speed and the busy cores for it, kept
        per thread count. Fractional counts (float drift) can take many values, so the
        table is emptied when it reaches _TUNINGS_MAX entries."""
        k = self.threads
        tuning = self._tunings.get(k)
        if tuning is None:
            if len(self._tunings) >= _TUNINGS_MAX:
                self._tunings.clear()
            tuning = self._tunings[k] = self._tune()
        self._speed_now, self._busy_cores = tuning

    # The hot paths below read SimPy's clock as ``env._now`` (what ``env.now`` returns,
    # without the property call).
    def _advance(self) -> None:
        now = self.env._now
        dt = now - self._last
        if dt > 0.0:
            if self.active:
                self.service += dt * self._speed_now
            self.core_busy_s += dt * self._busy_cores  # occupied, at whatever speed; loads too
        self._last = now

    def add(self, runner: Runner, work_s: float, callback, arg) -> None:
        if work_s <= 0.0:
            callback(arg)
            return
        # _advance(), runner.clock(), and the runner's next finish put on the heap, written
        # out with the same arithmetic: a job is added for most messages, and the calls
        # cost more than the sums.
        now = self.env._now
        dt = now - self._last
        if dt > 0.0:
            if self.active:
                self.service += dt * self._speed_now
            self.core_busy_s += dt * self._busy_cores
        self._last = now
        s = self.service
        jobs = runner.jobs
        if jobs:
            v0 = runner.v0 = runner.v0 + (s - runner.s0) * runner.threads / len(jobs)
        else:
            v0 = runner.v0 = 0.0
            runner.busy_since = now
            self.threads += runner.threads
            self.active += 1
            # _retune(), written out when the table has the thread count (almost always).
            tuning = self._tunings.get(self.threads)
            if tuning is None:
                self._retune()
            else:
                self._speed_now, self._busy_cores = tuning
            path = runner.path
            if path is not None:
                active = self._path_active
                n = active.get(path, 0)
                if not n and path.last_end < now:  # its work starts after a pause: a new spell
                    path.spell_quiet = self.quiet_for(now, path)
                active[path] = n + 1
        runner.s0 = s
        seq = self._seq + 1
        heappush(jobs, (v0 + work_s, seq, callback, arg))
        version = runner.version = runner.version + 1
        self._seq = seq = seq + 1
        at = s + (jobs[0][0] - v0) * len(jobs) / runner.threads  # runner.next_finish()
        heappush(self._heap, (at, version, seq, runner))
        # Adding work only slows others down, so a pending timer is early, never late:
        # it will find nothing due and look again. Only this runner's own finish can
        # come before it.
        when = now + (at - s) / self._speed_now
        if when < self._timer_at:
            self._schedule(when, now)

    def _schedule(self, when: float, now: float) -> None:
        """A timer at ``when`` (``now`` is the clock): later(max(when - now, 0.0), ...)
        written out, since most jobs set one."""
        self._timer = timer = self._timer + 1  # any pending timer is superseded: it will do nothing
        self._timer_at = when
        delay = when - now
        heappush(self._calendar, (now + (delay if delay > 0.0 else 0.0), NORMAL, next(self._eid), self._fire, timer))

    def _on_timer(self, timer: int) -> None:
        if timer != self._timer:
            return  # superseded by an earlier one
        self._timer_at = _INF
        now = self.env._now  # _advance(), written out as in add()
        dt = now - self._last
        if dt > 0.0:
            if self.active:
                self.service += dt * self._speed_now
            self.core_busy_s += dt * self._busy_cores
        self._last = now
        s = self.service
        # Due: within rounding of the service clock, or closer than the clock of
        # simulated time can resolve (else a residue of 1e-13 s would never be reached).
        limit = s + _EPS * (1.0 + s) + 4.0 * self._speed_now * ulp(now)
        heap = self._heap
        finished = []  # the jobs done, as their (tag, seq, callback, arg)
        idled = False
        while heap and heap[0][0] <= limit:
            _, version, _, runner = heappop(heap)
            if version != runner.version:
                continue  # a stale entry: the runner's job count changed since
            jobs = runner.jobs
            if len(jobs) == 1:
                # Its only job (the common case): no clock to carry over, since the next
                # job to come resets it.
                finished.append(jobs.pop())
            else:
                v = runner.clock(s)
                # The heap said this runner's first job is due; others may finish with it.
                finished.append(heappop(jobs))
                done_by = v + _EPS * (1.0 + abs(v))
                while jobs and jobs[0][0] <= done_by:
                    finished.append(heappop(jobs))
                runner.v0, runner.s0 = v, s
                if jobs:
                    # Its next finish on the heap, the older entries stale (as in add()).
                    version = runner.version = runner.version + 1
                    self._seq = seq = self._seq + 1
                    heappush(heap, (s + (jobs[0][0] - v) * len(jobs) / runner.threads, version, seq, runner))
                    continue
            runner.version += 1
            runner.busy_s += now - runner.busy_since
            runner.idle_since = now
            self.threads -= runner.threads
            self.active -= 1
            idled = True
            path = runner.path
            if path is not None:
                self._path_idle(path, now)
        if idled:
            if not self.active:
                self.threads = 0.0  # absorb float drift
            tuning = self._tunings.get(self.threads)  # _retune(), written out as in add()
            if tuning is None:
                self._retune()
            else:
                self._speed_now, self._busy_cores = tuning
        # _arm(now) and its _schedule, written out: a timer is set for most jobs.
        while heap:
            at, version, _, runner = heap[0]
            if version == runner.version:
                if at < _INF:
                    self._timer = timer = self._timer + 1
                    when = self._timer_at = now + (at - s) / self._speed_now
                    delay = when - now
                    heappush(self._calendar, (now + (delay if delay > 0.0 else 0.0), NORMAL, next(self._eid),
                                              self._fire, timer))
                break
            heappop(heap)
        for _, _, callback, arg in finished:
            callback(arg)

    def _path_idle(self, path: Process, now: float) -> None:
        """One of ``path``'s runners ran out of work (``quiet_for``'s bookkeeping)."""
        active = self._path_active
        left = active[path] - 1
        if left:
            active[path] = left
        else:
            del active[path]
            path.last_end = now
        self.seen(path, now)

    def _arm(self, now: float) -> None:
        """The next timer, at the first live heap entry's finish (the stale entries before
        it dropped); none if only constant loads are left. ``service`` is up to date."""
        heap, s = self._heap, self.service
        while heap:
            at, version, _, runner = heap[0]
            if version == runner.version:
                if at < _INF:
                    self._schedule(now + (at - s) / self._speed_now, now)
                return
            heappop(heap)

    def time_to_next_finish(self, runner: Runner) -> float:
        """Seconds until ``runner``'s first job ends at today's speed (it has jobs)."""
        self._advance()
        left = runner.next_finish() - self.service
        return (left if left > 0.0 else 0.0) / self._speed_now

    def busy_s(self, runner: Runner) -> float:
        """Time ``runner`` has had work, up to now."""
        return runner.busy_s + (self.env.now - runner.busy_since if runner.jobs else 0.0)

    def core_busy_until_now(self) -> float:
        """Core-seconds kept busy up to now. Read without advancing the node's clocks: a
        reading (every timeline row takes one) must not change how the work is summed."""
        dt = self.env._now - self._last
        return self.core_busy_s + (dt * self._busy_cores if dt > 0.0 else 0.0)
