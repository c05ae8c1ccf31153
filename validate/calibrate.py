"""Measure simserve's ``Overheads`` on this machine with real Ray Serve 2.60.0.

    python -m validate.calibrate [--requests 2000] [--repeats 3] [--out PATH]

Writes ``validate/calibration/ray-2.60.0-project-machine.json`` (or ``--out``): the
``Overheads`` field names as top-level keys (seconds unless noted), ``host_ns_per_loop``,
``native_unit_s``, ``ray_version``, ``date``, ``command`` and the raw measurements
(``raw``; in a merged file ``raw.runs``, each run's whole document, and ``raw.merge``).
These are microbenchmarks at concurrency 1 or idle, separate from validation; no number
here comes from the validation grid or is ever adjusted to make a validation row match.

The calibration below is made ``--repeats`` times, one after another, each in a process
and Ray cluster of its own (its file kept in ``validate/out/``), and the file written is
their ``merge``: each field's median over the runs (one calibration is a noisy sample
on a shared virtual machine). Files written before ``--repeats`` existed (up to
2026-11-26 16:18) hold one run; in a merged file ``host_ns_per_loop`` and
``native_unit_s`` are the medians over the runs, and each field below is the merge of the
runs' values.

Set-up: ``ray.init(num_cpus=2)`` + Serve (loopback HTTP), one ``async def`` no-op
deployment (1 replica, ``num_cpus=1``, ``max_ongoing_requests=5``); Serve logs at INFO
(access logs off), for the controller's start-up lines. Phases, in order:
idle (Serve deployed, no traffic), handle c=1, HTTP c=1, forced probes, forced
rejections, polling a full replica, GIL held, idle gaps, wake-up CPU, back-off sleeps, autoscaling timers, cores
oversubscribed, requests in flight, replica start-up. Each traffic phase first sends 200 warm-up requests, then measures its own idle
baseline of ``IDLE_S`` and then ``N`` requests one at a time (so every request is exactly one
routing attempt and nothing queues). Every per-request CPU figure below is ``(CPU
during the N requests - idle rate x their duration) / N``.

Two host figures come from outside Ray: ``contended_core_speed``, the spin probe's
speed with every core spinning (one process per core, at once) over its speed alone,
measured before ``ray.init``; and ``gil_switch_interval_s``, CPython's
``sys.getswitchinterval()``. ``oversubscribed_cpu_factor`` is Ray's: the driver's and the
replica's CPU per no-op request with one spinning process per core beside them at equal
priority, over the same alone, in turns of 10 s (``validate.loaded_cpu``), and
``batched_cpu_factor`` what they save per request with 4 in flight against 1, fitted
through simserve (``validate.batched_cpu``, the last phase before the start-ups). The
``http`` section holds what differs for a request that
comes through the proxy: the replica's Python and C++ CPU per request in the HTTP phase.

CPU is read from ``/proc/<pid>/task/<tid>/stat`` (utime+stime, 10 ms ticks) per
thread (``validate.harness.thread_cpu``; CPU of threads that already exited, only in
``/proc/<pid>/stat``, counts as Python -- added after the 2026-11-25 15:37 calibration,
which had no short-lived threads: async no-op handler). Threads whose name (``comm``) is the process title (``python``,
``ray::ProxyActor``, ``ray::ServeRepli``...) are *Python* threads (they hold the GIL
while they run); the rest (``worker.io``, ``client.poll0``, ``event_engine``,
``grpc_global_tim``...) are Ray's C++ core-worker / gRPC threads, which burn cores
without the GIL. simserve charges ``*_cpu_s`` as GIL-holding work in that process and
``*_native_cpu_s`` as GIL-free work in that process (both compete for the cores).

Processes: every descendant of the driver is classified by its command line: the
driver itself, ``ray::ProxyActor`` (proxy), ``ray::ServeReplica*`` (replicas); all
the others (raylet, gcs_server, ``ray::ServeController``, dashboard / runtime-env
agents, log monitor, idle ``ray::IDLE`` workers...) are *background*.

Fields (all derived in ``derive``; the inputs are in ``raw``):

* ``host_ns_per_loop`` -- the fixed pure-Python probe ``for i in range(n): x += i``,
  ns per iteration: the median of the probes taken before Ray starts (7 x ``PROBE_N``,
  100k iterations), between every two phases (5 x 100k, outside the measured windows)
  and after the last (7 x 100k; ``raw.host_ns_per_loop_probes``), as a grid run's speed
  was the median of all its probes until the sampler of 2026-11-26 20:04
  (``host_speed.run_ns_per_loop``); those after ray.init on the thread's CPU clock, as
  the runs' probes during the load are, since a wall-clock probe in the driver would also
  time its waits for the GIL behind Ray's threads. Up to the 2026-11-26 15:30
  calibration (the 13:34 file, committed until 19:05, among them) it was the probe
  before Ray alone: at 15:30 that read 35.1 ns and a wall-clock one after the last phase
  54.4 ns (51.3 at 13:34), the costs between measured at a speed the file did not record (200k iterations up to the 2026-11-26 00:44 file; the fastest of 7 up to
  the 2026-11-25 19:50 file). The harness sizes ``gil`` work from it (``n = seconds /
  host_ns_per_loop``, run in ``PROBE_N`` chunks).
* ``native_unit_s`` (extra key) -- single-thread seconds of one 192x192 matmul
  (subprocess, ``OMP_NUM_THREADS=1``, median of 7); the harness sizes ``native`` work
  from it.
* ``ray_background_cores`` -- background processes' CPU-seconds per second over an
  ``IDLE_BG_S`` window with the no-op app deployed and no traffic (per-process
  breakdown in ``raw.idle``). The request-path processes' own idle rates are not in
  this field but in the next three.
* ``driver_idle_cores``, ``proxy_idle_cores``, ``replica_idle_cores`` -- the same window's
  CPU-seconds per second of the driver, the proxy and (per process) the replicas: their
  periodic tasks (the handle's metrics pushes and long poll, health checks, metrics).
  Added 2026-11-26; the file of 13:34 (committed until 19:05) got them from its own
  ``raw.idle`` with ``idle_cores`` (the same function), not from a new measurement.
* ``ray_background_cpu_per_request_s`` -- background processes' CPU during the handle
  c=1 phase minus their idle rate (the idle phase and that phase's own idle window
  together, 11 s), per request.
* Probes (``raw.probe_c1``): the router's real probe path, forced: on the driver's
  router event loop, ``RequestRouter._probe_queue_lens([replica], 0)`` awaited ``N``
  times in a row (one ``get_num_ongoing_requests`` actor call each, with its
  ``asyncio.wait`` deadline and cache update); the main thread just waits.
  ``probe_cpu_s`` = router-thread CPU (``pthread_getcpuclockid``) per probe;
  ``replica_probe_cpu_s`` = replica Python-thread CPU per probe; ``probe_native_cpu_s``
  and ``replica_probe_native_cpu_s`` = the driver's and the replica's C++-thread CPU
  per probe.
* Probe counts in the request phases: ``RunningReplica.get_queue_len`` is wrapped in
  the driver to count the driver router's probes (``raw.handle_c1.probes``), and that
  count x ``probe_cpu_s`` / ``replica_probe_cpu_s`` is subtracted from the router's and
  the replica's CPU (the proxy's router is assumed to probe as often:
  ``raw.derived.proxy_probes_assumed``). CAVEAT (2026-11-25): the wrapper has counted 0
  in every run, and a class-level wrapper of ``try_send_request`` also counted 0 sends
  in a check with real traffic, so the count is not verified to see the router's calls;
  the subtraction is effectively 0. At c=1 the queue-length cache (10 s staleness)
  should make handle-phase probes rare, so the error is small, but unproven.
* Rejections (``raw.reject``, ``_reject_phase``): a second deployment (``Holder``,
  ``max_ongoing_requests=1``) whose one slot a long request holds, and one more request
  that the driver's router sends again and again for ``REJECT_S``: its queue-length
  cache is made to read 0 for every replica, so each cycle is Ray's whole retry path
  without probe or back-off (routing attempt, actor call, the replica's check and its
  warning log line, the rejection's answer, ``result.cancel()``, the cache update).
  Per rejection, minus an idle window with the slot held: ``reject_cpu_s`` = the
  router thread's CPU minus ``router_cpu_s`` (simserve charges the retry's routing
  attempt as such), ``reject_native_cpu_s`` = the driver's C++ threads,
  ``replica_reject_cpu_s`` / ``replica_reject_native_cpu_s`` = the replica's Python /
  C++ threads, ``ray_background_cpu_per_reject_s`` = the background processes (on
  2026-11-26 the raylet took most of it).
* ``router_cpu_s`` -- router-thread CPU (Serve's ``SingletonThreadRouter`` event-loop
  thread, found by its target ``_run_router_event_loop``) per request in the handle
  phase, minus its probes; at c=1 that is one routing attempt plus the done-callback.
* ``client_cpu_s`` -- the driver's Python-thread CPU per request (main thread: client
  loop, ``DeploymentHandle.remote``, result handling; plus the router thread) minus
  the router thread's total.
* ``client_native_cpu_s`` -- the driver's C++-thread CPU per request (handle phase).
* ``replica_cpu_s`` -- the replica's Python-thread CPU per request (Ray's actor loop,
  the user-code loop; the handler is a no-op) minus its probe answers.
  ``replica_native_cpu_s`` -- its C++-thread CPU per request (handle phase).
* ``replica_sync_cpu_s`` / ``replica_sync_native_cpu_s`` -- what a plain ``def``
  handler's call through the replica's thread pool costs beyond an ``async def`` one:
  the handle phase's c=1 no-op requests to a ``def`` no-op replica and to the ``async
  def`` one, ``SYNC_ROUNDS`` pairs of ``--requests``/2 each; the mean difference of
  the replicas' Python (C++) CPU per request, probe answers subtracted. A one-off
  script on 2026-11-26 (12:43, not kept) found 0.66-0.96 ms of Python and 1.0-1.5 ms of
  median latency more for ``def``.
* ``proxy_cpu_s`` -- ``ray::ProxyActor``'s Python-thread CPU per HTTP request minus
  ``router_cpu_s`` (the proxy's own router; simserve charges it separately) and its
  assumed probes. ``proxy_native_cpu_s`` -- its C++-thread CPU per HTTP request.
* ``http_client_cpu_s`` -- the aiohttp load generator's CPU per request (the driver
  process, all threads, HTTP phase); simserve charges it to the load generator.
* ``hop_s`` -- (median handle latency - client_cpu_s - router_cpu_s - replica_cpu_s) / 2:
  simserve's concurrency-1 path is client CPU, router CPU, one hop, replica CPU, one
  hop back, all serial. (C++ threads partly overlap the critical path, so this split
  is a model decomposition; the mean latency is kept in ``raw``.)
* ``hop_cv`` -- spread of one hop. Per handle request, ``S_i = RTT_i - (client_cpu_s +
  router_cpu_s + replica_cpu_s)`` is the sum of the two hops (the CPU is taken as its
  mean). With two independent, identically distributed hops, ``var(S) = 2 var(hop)``
  and ``mean(S) = 2 mean(hop)``, so ``hop_cv = sqrt(2) * std(S) / mean(S)``. The
  slowest 1 % of requests are dropped first (GC pauses, scheduler preemption by other
  processes: not a hop property); the untrimmed value is ``raw.derived.hop_cv_untrimmed``.
  simserve's CPU costs are deterministic, so this puts all of the c=1 round trip's
  spread on the hops (simserve's c=1 RTT then has the measured spread). Because
  ``hop_s`` is a small difference (median RTT minus ~2.3 ms of serial CPU), hop_cv is
  unstable between runs (0.60 on a loaded host, 2.46 on an idle one on 2026-11-25);
  the absolute spread ``hop_cv * hop_s`` (~0.2-0.4 ms) is the stable quantity.
* ``http_hop_s`` -- (median HTTP latency - http_client_cpu_s - proxy_cpu_s - router_cpu_s
  - 2 hop_s - replica_cpu_s) / 2.
* ``replica_startup_s`` -- a second deployment with an empty ``__init__`` (1 replica,
  ``num_cpus=0.5``); ``STARTUP_REPS`` times: redeploy it with ``num_replicas=2``
  (non-blocking), wait until two are RUNNING, then back to 1 and wait for the stop. A
  redeploy through the API is a new version to Serve, so each one is a rolling update
  that also replaces the running replicas, one start after another (about three starts
  per rep). Every start is timed on its own, between two lines of the controller's log
  (Serve at INFO): ``Adding 1 replica`` (the loop turn that starts the replica) and the
  replica's ``started successfully`` (the loop turn that finds it ready and makes it
  RUNNING), which is what simserve's start-up means (allocated to routable) and what a
  replica the autoscaler adds goes through; the field is the median over the reps'
  starts. Files up to 2026-11-25 18:48 timed the redeploy by polling ``serve.status()``
  from the first new replica's appearance until two were RUNNING, which spans two
  serial starts of the rolling update (2.8 s, where the log gives 1.4-1.7 s a start);
  that figure is still kept as ``raw.derived.replica_startup_polled_s``.
  ``replica_startup_cv`` is the starts' standard deviation over their mean.
* ``backoff_sleep_late_s`` (``raw.backoff_sleep``) -- how late ``asyncio.sleep`` ends on
  the driver's router thread (its own event loop, reached as the router does), Serve
  deployed and no traffic: ``BACKOFF_SLEEP_REPS`` sleeps of each of ``BACKOFF_SLEEPS_S``, the
  median over all. simserve adds it to every back-off sleep of a routing task. (A one-off
  check in a plain event loop on the idle host, 2026-11-26 08:57, gave 0.2 ms after 1-10 ms
  sleeps and 0.3-0.5 ms after 20-100 ms.)
* ``replica_startup_cpu_s`` -- of a start, the CPU of the new replica's own process
  (all its threads, from its fork to the ``started successfully`` line: the interpreter,
  ``import ray``, the worker's connection, the actor's class and Serve's modules), read
  from a trace of every Ray process's CPU sampled every 20 ms, at the last sample before
  that line's time (the process id is on the line), less what it had at the ``Adding``
  line (a worker Ray had started before; every one so far was new); the median over the
  reps' starts.
  On an idle host it is almost all of the start, and nearly all on one thread (a one-off
  trace, 2026-11-26 07:27: about one core from birth to ready), which is why simserve
  runs it as one thread's work on the node, so that a busy or slow host stretches it.
* ``idle_wake_s`` / ``idle_wake_after_s`` (``raw.wake``): no-op requests at c=1 through
  the handle, each sent after the client has idled ``gap`` (every gap of
  ``WAKE_GAPS_S``, ``WAKE_REQUESTS`` each). Back to back the round trip is the handle
  phase's; after longer gaps it grows, and from about 50 ms of idleness on it stops
  growing (a one-off sweep on 2026-11-25, script not kept, was flat from 50 to 400 ms): the replica's
  threads, its core, and the driver's C++ threads had gone idle and must be woken.
  ``idle_wake_s`` is the median excess over back to back of the gaps from
  ``WAKE_FULL_S`` on; ``idle_wake_after_s`` the first gap whose excess reaches half of
  it (the replica has idled about half a round trip longer than the client).
* ``wake_idle_s``, ``client_wake_cpu_s``, ``replica_wake_cpu_s`` (``raw.wake_cpu``): a
  process that has slept spends more CPU when work wakes it than one kept busy (caches,
  its C++ threads and, on a virtual machine, its core must be woken). Requests at c=1 to
  a replica whose handler sleeps ``d`` (every ``d`` of ``WAKE_CPU_SLEEPS_S``,
  ``WAKE_CPU_REQUESTS`` each), so that the driver and the replica each idle about ``d``
  plus a back-to-back round trip per request; each one's CPU per request (Python and
  C++, idle rates subtracted) beyond back to back, at that idle time. simserve burns it
  beside the path (``Process.run_gil``): the round trip's own growth is ``idle_wake_s``.
* Autoscaling timers (``raw.timers``): a deployment with an ``autoscaling_config``
  (min = max = 1, ``look_back_period_s`` 2.5 s so the handle samples every 0.5 s,
  ``metrics_interval_s`` 1 s) driven one request at a time for ``TIMER_S`` through a new
  handle, whose router's ``RouterMetricsManager`` sample and push methods are wrapped to
  log their wall times; Ray's ``MetricsPusher`` runs a task and then sleeps its whole
  interval, so each turn starts late by the task's run time plus the loop's wake-up.
  ``metrics_record_late_s`` / ``metrics_push_late_s`` are the mean of (period - interval)
  over the turns, ``*_late_cv`` their standard deviation over that mean;
  ``control_loop_late_s`` is the controller's loop period over the same span
  (``get_health_metrics``: ``num_control_loops`` and ``timestamp`` before and after)
  minus Ray's 0.1 s sleep.
* ``replica_gil_acquisitions`` -- how many separate times the replica's Ray machinery
  takes the GIL per request: ``GIL_REQUESTS`` no-op requests at c=1 to a replica in
  which another thread spins pure Python without pause (``GilHog``), against the same
  to the no-op replica while a spinning process outside Ray takes the same core; the
  difference of the medians (``replica_gil_wait_s``) over the switch interval, rounded
  (at least 1). Each take waits about one switch interval behind the spinning thread.
  Since 2026-11-27 the takes are counted leg by leg (``python -m validate.gil_timeline``,
  the same phase): ``TIMELINE_REQUESTS`` no-op requests at c=1 to a replica that answers
  with the time its handler ran, plain and with a thread spinning beside the handler,
  the driver's router timing the done callback; each leg's excess in switch intervals:
  ``replica_gil_acquisitions`` from the send to the handler (and, of those,
  ``replica_accept_gil_acquisitions`` from the send to the acceptance's arrival in the
  router's cache: the takes before the replica's answer leaves),
  ``replica_response_gil_acquisitions`` from the handler to the response,
  ``replica_release_gil_acquisitions`` from the response to the done callback (the slot
  is held until then); ``replica_cpu_s`` is spread over all three, and
  ``done_callback_lag_s`` is measured less the share of it the release's takes burn.
  ``replica_probe_gil_acquisitions`` -- the same for a queue-length probe, forced on
  the router's loop (``_probe_queue_lens`` with a 1 s deadline) to the same replicas.
  ``replica_gil_handoff_cpu_s`` -- in the same two runs, each replica's CPU per request
  (its ``process_time`` less GilHog's spinning thread's ``thread_time``, both read in
  the replica; each replica's rate over ``IDLE_BG_S`` of idleness after a 2 s settle subtracted): the GilHog
  replica's excess over the no-op one, per acquisition. A thread that slept on the GIL
  and is woken costs more than one that kept it (two context switches, cold caches;
  a one-off script on 2026-11-26, not kept, found 3-4 ms more per no-op request beside a
  spinning thread, idle rates not subtracted).
* ``done_callback_lag_s`` -- in the handle phase, the median over requests of the time
  from the client's answer to the router's done callback for that request
  (``decrement_queue_len_cache``, timed by ``router_counters.RouterCounters``), less the
  share of ``replica_cpu_s`` the release's takes burn (simserve runs those before the
  task's end leaves; ``done_lag``): Ray runs it when the replica's task ends, which
  reaches the caller after the response; a request routed in between still sees the
  replica's slot as taken.
* ``done_callback_lag_cv`` (added 2026-11-27) -- the same lags' standard deviation over
  their mean (``lag_cv``): simserve draws the lag lognormal with median
  ``done_callback_lag_s`` and this spread. A run made before the field existed gets it
  from its own ``raw.handle_c1.done_callback_lag`` when merged, by the same function.
* ``router_attempt_cpu_s`` (added 2026-11-27, ``raw.attempt``) -- of ``router_cpu_s``,
  what a routing attempt costs whether or not it sends: a ``Holder`` replica with one
  slot held, a second request polling it with the back-off sleeps made zero, the router
  thread's CPU per attempt less its probes at ``probe_cpu_s`` (``validate.attempt_cpu``).
  Runs made before the phase lack it; merged, the file keeps 0 until ``python -m
  validate.attempt_cpu --add-to`` measures it.
* ``batched_cpu_factor`` (added 2026-11-27, ``raw.batched``) -- 10 s rows of no-op
  requests with 1, 4 and 2 clients in turn (``validate.batched_cpu``): what the driver
  and the replica save per request with 4 in flight, fitted through simserve on the same
  scenario (``batched_cpu.fit``). Runs made before the phase lack it; merged, the file
  keeps 1 until ``python -m validate.batched_cpu --add-to`` measures it.

A negative difference is clamped to 0 and flagged in ``raw.warnings``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

from simserve.autoscaling import CONTROL_LOOP_INTERVAL_S
from simserve.calibration import unit
from simserve.config import Overheads
from validate import gil_timeline
from validate.harness import (
    RealCluster,
    _busy_seconds,
    _span_s,
    _tree_cpu,
    controller_log_lines,
    log_time,
    process_label,
    process_role,
    thread_cpu,
)
from validate.host_speed import probe_ns_per_loop
from validate.router_counters import RouterCounters
from validate.scenario import OUT_DIR, OVERHEAD_FIELDS, calibration_path, load_calibration, scenario, utc_stamp

WARMUP = 200
IDLE_S = 3.0
IDLE_BG_S = 8.0
STARTUP_REPS = 5
GIL_REQUESTS = 500
TIMELINE_REQUESTS = 300  # per case of gil_timeline.timeline_phase
SYNC_ROUNDS = 2  # pairs of (async, sync) no-op runs in the sync phase
WAKE_GAPS_S = (0.0, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.2)
WAKE_FULL_S = 0.05  # from here on the excess no longer grows (a one-off sweep, 2026-11-25: flat to 400 ms)
WAKE_REQUESTS = 100
WAKE_CPU_SLEEPS_S = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1)
WAKE_CPU_REQUESTS = 200
BACKOFF_SLEEPS_S = (0.025, 0.05, 0.1)  # the router's first back-off sleeps
BACKOFF_SLEEP_REPS = 40
TIMER_S = 20.0
TIMER_LOOK_BACK_S = 2.5  # the handle samples every 0.5 s
TIMER_PUSH_S = 1.0

FIELDS = OVERHEAD_FIELDS
REJECT_S = 5.0  # how long the rejection phase's loop is measured
# Fewer rejections than this in REJECT_S means the loop did not run (seen once in a full
# calibration, 2026-11-26 02:43: 0.13 s of router CPU and a count of -165, cause not
# found; the phase run alone looped every time): the phase is run again.
REJECT_MIN = 200
REJECT_ATTEMPTS = 3
CONTENTION_S = 3.0  # how long each spinning process runs in the core-contention phase


# -- where the CPU goes ---------------------------------------------------------------------------
def router_thread():
    """The thread running Serve's ``SingletonThreadRouter`` event loop in this process (found
    by its target ``_run_router_event_loop``), or None."""
    for t in threading.enumerate():
        target = getattr(t, "_target", None)
        if target is not None and getattr(target, "__name__", "") == "_run_router_event_loop":
            return t
    return None


def _router_thread_clock():
    t = router_thread()
    if t is None:
        return None
    cid = time.pthread_getcpuclockid(t.ident)
    return lambda: time.clock_gettime(cid)


_role = process_role


def _label(p) -> str:
    """A short name for a background process."""
    return process_label(" ".join(p.info.get("cmdline") or []) or p.info.get("name") or "?")


class ProcessCPU:
    """Per-process CPU of every Ray process (descendants of this driver), by role."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()

    def snapshot(self) -> dict:
        """{pid: (role, label, total_cpu_s, {'python','native'})}."""
        import psutil

        out = {"_sys": psutil.cpu_times(), self.me.pid: ("driver", "driver", *self._cpu(self.me.pid))}
        for p in self.me.children(recursive=True):
            try:
                p.info = p.as_dict(attrs=["cmdline", "name"])
                cmd = " ".join(p.info["cmdline"] or [])
            except psutil.Error:
                continue
            role = _role(cmd)
            out[p.pid] = (role, _label(p) if role == "background" else role, *self._cpu(p.pid))
        return out

    @staticmethod
    def _cpu(pid: int):
        t = thread_cpu(pid)
        return t["python"] + t["native"], t

    @staticmethod
    def diff(a: dict, b: dict) -> dict:
        """CPU between two snapshots, per pid; a process that appeared counts from 0."""
        out = {}
        sa, sb = a["_sys"], b["_sys"]
        out["_busy_s"] = _busy_seconds(sa, sb)  # whole machine, CPU-seconds
        out["_span_s"] = _span_s(sa, sb)  # wall seconds
        for pid, (role, label, tot, th) in ((k, x) for k, x in b.items() if k != "_sys"):
            if pid in a:
                tot0, th0 = a[pid][2], a[pid][3]
            else:
                tot0, th0 = 0.0, {"python": 0.0, "native": 0.0}
            out[pid] = {"role": role, "label": label, "cpu_s": tot - tot0,
                        "python_s": th["python"] - th0["python"], "native_s": th["native"] - th0["native"]}
        return out


def _foreign_cores(d: dict) -> float:
    """Cores other users' processes took in a window: machine busy minus our processes."""
    ours = sum(v["cpu_s"] for k, v in d.items() if not str(k).startswith("_"))
    return max(0.0, d["_busy_s"] - ours) / d["_span_s"] if d["_span_s"] > 0 else float("nan")


def _by_role(d: dict) -> dict:
    out: dict = {"_foreign_cores": _foreign_cores(d)}
    for v in (x for k, x in d.items() if not str(k).startswith("_")):
        r = out.setdefault(v["role"], {"cpu_s": 0.0, "python_s": 0.0, "native_s": 0.0, "processes": 0})
        for k in ("cpu_s", "python_s", "native_s"):
            r[k] += v[k]
        r["processes"] += 1
    return out


def _background_by_label(d: dict) -> dict:
    out: dict = {}
    for v in (x for k, x in d.items() if not str(k).startswith("_")):
        if v["role"] == "background":
            out[v["label"]] = out.get(v["label"], 0.0) + v["cpu_s"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def done_lags(answered: list[float], done, since: float) -> list[float]:
    """Sequential requests, the first sent at ``since`` and answered at ``answered``: how
    much later than its answer each one's done callback ran (negative: before it). Each
    request has one callback, and they run in order: the k-th in ``done`` after ``since``
    is request k's."""
    after = sorted(d for d in done if d > since)
    return [d - a for d, a in zip(after, answered)]


def _stats(lat: list[float]) -> dict:
    a = np.asarray(lat)
    return {"n": int(a.size), "mean_s": float(a.mean()), "median_s": float(np.median(a)),
            "std_s": float(a.std()), "p10_s": float(np.percentile(a, 10)), "p90_s": float(np.percentile(a, 90)),
            "p99_s": float(np.percentile(a, 99)), "min_s": float(a.min())}


# -- probe counting in the driver -------------------------------------------------------------------
class ProbeCounter:
    """Counts the driver router's queue-length probes (``RunningReplica.get_queue_len``)."""

    def __init__(self):
        from ray.serve._private.request_router.replica_wrapper import RunningReplica

        self.n = 0
        self.cls = RunningReplica
        self.orig = RunningReplica.get_queue_len
        counter = self

        async def get_queue_len(self, *, deadline_s: float) -> int:
            counter.n += 1
            return await counter.orig(self, deadline_s=deadline_s)

        RunningReplica.get_queue_len = get_queue_len

    def restore(self):
        self.cls.get_queue_len = self.orig


# -- phases ------------------------------------------------------------------------------------------
async def _window(pc: ProcessCPU, seconds: float, clock=None):
    s0, r0, w0 = pc.snapshot(), clock() if clock else 0.0, time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - w0
    r1, s1 = clock() if clock else 0.0, pc.snapshot()
    return ProcessCPU.diff(s0, s1), wall, r1 - r0


async def _idle_phase(pc: ProcessCPU) -> dict:
    d, wall, _ = await _window(pc, IDLE_BG_S)
    return {"wall_s": wall, "by_role": _by_role(d), "background_by_process": _background_by_label(d)}


async def _handle_phase(handle, n: int, pc: ProcessCPU, counter: ProbeCounter) -> dict:
    for _ in range(WARMUP):
        await handle.remote()
    clock = _router_thread_clock()
    rpid = (await handle.cpu_times.remote())["pid"]
    idle, idle_wall, router_idle = await _window(pc, IDLE_S, clock)
    s0, r0, p0 = pc.snapshot(), clock() if clock else 0.0, counter.n
    lat, answered = [], []
    w0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter()
        await handle.remote()
        answered.append(time.perf_counter())
        lat.append(answered[-1] - s)
    load_wall = time.perf_counter() - w0
    r1, s1, p1 = clock() if clock else 0.0, pc.snapshot(), counter.n
    load = ProcessCPU.diff(s0, s1)
    await asyncio.sleep(0.1)  # the last request's done callback
    done_lag = _stats(done_lags(answered, RouterCounters.done_times, w0))
    return {"n": n, "idle_wall_s": idle_wall, "load_wall_s": load_wall, "latency": _stats(lat),
            "latencies_s": [round(x, 7) for x in lat],
            "router_thread_found": clock is not None, "router_idle_cpu_s": router_idle, "router_load_cpu_s": r1 - r0,
            "probes": p1 - p0, "replica_pid": rpid, "done_callback_lag": done_lag,
            "idle_by_role": _by_role(idle), "load_by_role": _by_role(load),
            "idle_replica": idle.get(rpid), "load_replica": load.get(rpid),
            "idle_background_by_process": _background_by_label(idle),
            "load_background_by_process": _background_by_label(load)}


async def _http_phase(url: str, n: int, pc: ProcessCPU, counter: ProbeCounter) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def get():
            async with s.get(url) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")

        for _ in range(WARMUP):
            await get()
        idle, idle_wall, _ = await _window(pc, IDLE_S)
        s0, p0 = pc.snapshot(), counter.n
        lat = []
        w0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            await get()
            lat.append(time.perf_counter() - t)
        load_wall = time.perf_counter() - w0
        s1, p1 = pc.snapshot(), counter.n
    load = ProcessCPU.diff(s0, s1)
    return {"n": n, "idle_wall_s": idle_wall, "load_wall_s": load_wall, "latency": _stats(lat),
            "driver_router_probes": p1 - p0,
            "idle_by_role": _by_role(idle), "load_by_role": _by_role(load),
            "idle_background_by_process": _background_by_label(idle),
            "load_background_by_process": _background_by_label(load)}


async def _probe_phase(handle, n: int, pc: ProcessCPU) -> dict:
    """The router's own probe path, forced ``n`` times on the router's event loop."""
    from ray.serve._private.router import SingletonThreadRouter

    router = handle._router._asyncio_router.request_router
    loop = SingletonThreadRouter._asyncio_loop
    if router is None or loop is None or not router._replicas:
        return {"found": False}
    replica = next(iter(router._replicas.values()))
    clock = _router_thread_clock()
    lat: list[float] = []

    async def probes(k: int, record: bool):
        for _ in range(k):
            s = time.perf_counter()
            res = await router._probe_queue_lens([replica], 0)
            if record:
                lat.append(time.perf_counter() - s)
            if res[0][1] is None:
                raise RuntimeError("probe got no answer within its deadline")

    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(probes(WARMUP, False), loop))
    idle, idle_wall, router_idle = await _window(pc, IDLE_S, clock)
    s0, r0 = pc.snapshot(), clock()
    w0 = time.perf_counter()
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(probes(n, True), loop))
    load_wall = time.perf_counter() - w0
    r1, s1 = clock(), pc.snapshot()
    load = ProcessCPU.diff(s0, s1)
    rpid = (await handle.cpu_times.remote())["pid"]
    return {"found": True, "n": n, "idle_wall_s": idle_wall, "load_wall_s": load_wall, "latency": _stats(lat),
            "router_idle_cpu_s": router_idle, "router_load_cpu_s": r1 - r0,
            "idle_by_role": _by_role(idle), "load_by_role": _by_role(load),
            "idle_replica": idle.get(rpid), "load_replica": load.get(rpid)}


class Empty:
    """The start-up deployment: nothing in ``__init__``."""

    def __init__(self):
        pass

    async def __call__(self, request=None):
        return "ok"


class GilHog:
    """A no-op ``async`` handler in a replica where another thread runs pure Python
    without pause, as a CPU-bound handler's thread would; ``cpu_times`` reports that
    thread's CPU (``spin_s``) beside the pid."""

    def __init__(self):
        import threading

        self.spin_s = 0.0
        threading.Thread(target=self._spin, daemon=True).start()

    def _spin(self):
        t0 = time.thread_time()
        while True:
            x = 0
            for i in range(10_000):
                x += i
            self.spin_s = time.thread_time() - t0

    async def __call__(self, request=None):
        return "ok"

    async def cpu_times(self):
        return {"pid": os.getpid(), "process_time": time.process_time(), "spin_s": self.spin_s}


class Holder:
    """The rejection phase's deployment: an ``async`` handler that holds its slot for
    ``hold_s``."""

    async def __call__(self, hold_s: float = 0.0):
        await asyncio.sleep(hold_s)
        return "ok"


def _deploy_one(cl: RealCluster, cls, app_name: str, max_ongoing_requests: int, *init_args,
                num_replicas: int = 1, num_cpus: float = 1.0):
    """``cls(*init_args)`` as application ``app_name`` (one replica of ``num_cpus=1`` unless
    told), deployed without blocking; its handle once every replica runs."""
    from ray import serve
    from ray.serve.api import _run

    app = serve.deployment(cls).options(name=cls.__name__, num_replicas=num_replicas,
                                        ray_actor_options={"num_cpus": num_cpus},
                                        max_ongoing_requests=max_ongoing_requests).bind(*init_args)
    handle = _run(app, name=app_name, route_prefix=f"/{app_name}", _blocking=False)
    t0 = time.perf_counter()
    while cl.replica_states(app_name, cls.__name__).get("RUNNING", 0) < num_replicas:
        if time.perf_counter() - t0 > 60:
            raise SystemExit(f"{cls.__name__} replica did not start")
        time.sleep(0.1)
    return handle


async def held_slot(handle, pc: ProcessCPU):
    """A ``Holder`` deployment of one slot warmed up and its slot taken by a request of an
    hour: (that request, the router thread's CPU clock, ``_window`` of an idle spell with
    the slot held). For the phases that drive the router against a full replica."""
    for _ in range(WARMUP):
        await handle.remote(0.0)
    held = handle.remote(3600.0)
    await asyncio.sleep(1.0)  # the long request has its slot
    clock = _router_thread_clock()
    return held, clock, await _window(pc, IDLE_S, clock)


def _reject_phase(cl: RealCluster, pc: ProcessCPU, in_flight: int = 1) -> dict:
    """Rejections, back to back: a ``Holder`` replica with ``max_ongoing_requests=1``
    whose slot one long request holds, and a second request that the driver's router,
    its queue-length cache made to read 0 for every replica, sends again and again (no
    probe, no back-off: Ray retries a rejected request at once). Each cycle is Ray's real
    path: the routing attempt, the actor call, the replica's check and its warning log
    line, the rejection's answer, ``result.cancel()`` and the cache update. CPU over
    REJECT_S of that, minus an idle window with the slot held, per rejection.
    ``in_flight`` such requests at once (``validate.reject_burst``): the router then
    sends them in bursts, as it does to a replica its cache shows room in."""
    from ray.serve._private.request_router.common import ReplicaQueueLengthCache

    handle = _deploy_one(cl, Holder, "reject", max_ongoing_requests=1)
    orig_get = ReplicaQueueLengthCache.get

    async def run():
        held, clock, (idle, idle_wall, router_idle) = await held_slot(handle, pc)
        ReplicaQueueLengthCache.get = lambda self, replica_id: 0
        try:
            looping = [handle.remote(0.0) for _ in range(in_flight)]
            await asyncio.sleep(0.5)  # into the loop
            # Each rejection is retried once: RouterCounters (installed by RealCluster) counts them.
            s0, r0, n0, w0 = pc.snapshot(), clock(), RouterCounters.retries, time.perf_counter()
            await asyncio.sleep(REJECT_S)
            load_wall = time.perf_counter() - w0
            r1, n1, s1 = clock(), RouterCounters.retries, pc.snapshot()
        finally:
            ReplicaQueueLengthCache.get = orig_get
        held.cancel()
        await asyncio.wait_for(asyncio.gather(*looping), 30.0)
        load = ProcessCPU.diff(s0, s1)
        pids = [pid for pid, v in load.items() if not str(pid).startswith("_") and v["role"] == "replica"]
        busiest = max(pids, key=lambda pid: load[pid]["cpu_s"])
        return {"n": n1 - n0, "in_flight": in_flight, "idle_wall_s": idle_wall, "load_wall_s": load_wall,
                "router_idle_cpu_s": router_idle, "router_load_cpu_s": r1 - r0,
                "idle_by_role": _by_role(idle), "load_by_role": _by_role(load),
                "idle_replica": idle.get(busiest), "load_replica": load.get(busiest)}

    try:
        return asyncio.run(run())
    finally:
        cl.delete("reject")


def _looping_reject_phase(cl: RealCluster, pc: ProcessCPU, warnings: list[str]) -> dict:
    """``_reject_phase`` until its loop runs (at least REJECT_MIN rejections), at most
    REJECT_ATTEMPTS times; the failed attempts' counts are kept in the result."""
    failed = []
    for _ in range(REJECT_ATTEMPTS):
        raw = _reject_phase(cl, pc)
        if raw["n"] >= REJECT_MIN:
            raw["failed_attempts_n"] = failed
            if failed:
                warnings.append(f"the rejection loop did not run in {len(failed)} attempt(s) (counts {failed})")
            return raw
        failed.append(raw["n"])
    raise SystemExit(f"the rejection loop did not run in {REJECT_ATTEMPTS} attempts (counts {failed})")


async def _wake_phase(handle, n: int) -> dict:
    """No-op requests at c=1, each sent after the client has idled ``gap`` seconds, for
    every gap in WAKE_GAPS_S (0: back to back): the median round trip per gap."""
    for _ in range(WARMUP):
        await handle.remote()
    medians = [statistics.median(await _sequential(handle, n, gap, warmup=0)) for gap in WAKE_GAPS_S]
    return {"n": n, "gaps_s": list(WAKE_GAPS_S), "median_s": medians}


def _wake_cpu_phase(cl: RealCluster, pc: ProcessCPU) -> dict:
    """Requests at c=1 to a ``Holder`` replica that sleeps ``d`` in its handler, for every
    ``d`` in WAKE_CPU_SLEEPS_S (0: back to back), WAKE_CPU_REQUESTS each: the driver's,
    the replica's and the daemons' CPU per request (Python and C++ threads), each minus
    its rate over an idle window before, and the median round trip."""
    handle = _deploy_one(cl, Holder, "wakecpu", max_ongoing_requests=1)

    async def run():
        for _ in range(WARMUP):
            await handle.remote(0.0)
        idle, idle_wall, _ = await _window(pc, IDLE_BG_S)  # CPU times come in 10 ms ticks
        idle = _by_role(idle)
        points = []
        for d in WAKE_CPU_SLEEPS_S:
            lat = []
            s0, w0 = pc.snapshot(), time.perf_counter()
            for _ in range(WAKE_CPU_REQUESTS):
                t = time.perf_counter()
                await handle.remote(d)
                lat.append(time.perf_counter() - t)
            wall = time.perf_counter() - w0
            load = _by_role(ProcessCPU.diff(s0, pc.snapshot()))
            point = {"sleep_s": d, "wall_s": wall, "median_s": statistics.median(lat),
                     "foreign_cores": load["_foreign_cores"]}
            for role in ("driver", "replica", "background"):
                for k in ("python_s", "native_s"):
                    point[f"{role}_{k}"] = _per_request(load.get(role, {}).get(k, 0.0), wall,
                                                        idle.get(role, {}).get(k, 0.0), idle_wall, WAKE_CPU_REQUESTS)
            points.append(point)
        return {"n": WAKE_CPU_REQUESTS, "idle_wall_s": idle_wall, "idle_by_role": idle, "points": points}

    try:
        return asyncio.run(run())
    finally:
        cl.delete("wakecpu")


def wake_cpu(raw: dict, warnings: list) -> dict:
    """``wake_idle_s`` and ``client_wake_cpu_s`` / ``replica_wake_cpu_s`` from
    ``_wake_cpu_phase``: per handler sleep, each process's CPU per request (Python and C++)
    beyond back to back (clamped at 0), at the idle time it follows, taken as the sleep
    plus the back-to-back round trip (both processes also idle about that long between
    requests back to back, where the calibration's per-request costs were measured)."""
    pts = raw["points"]
    base, rtt0 = pts[0], pts[0]["median_s"]
    out = {"wake_idle_s": [p["sleep_s"] + rtt0 for p in pts]}
    for role, field in (("driver", "client_wake_cpu_s"), ("replica", "replica_wake_cpu_s")):
        excess = []
        for p in pts:
            e = sum(p[f"{role}_{k}"] - base[f"{role}_{k}"] for k in ("python_s", "native_s"))
            if e < 0 and p is not base:
                warnings.append(f"{field}: negative excess {1e3 * e:.3f} ms after {1e3 * p['sleep_s']:g} ms, "
                                "clamped to 0")
            excess.append(max(0.0, e))
        out[field] = excess
    return out


def idle_wake(wake: dict) -> tuple[float, float]:
    """``(idle_wake_s, idle_wake_after_s)`` from ``_wake_phase``'s medians: the round
    trip's excess over back to back, taken as the median excess of the gaps of at least
    WAKE_FULL_S (where it has stopped growing), and the first gap whose excess reaches
    half of that."""
    base = wake["median_s"][0]
    excess = [m - base for m in wake["median_s"]]
    full = [e for g, e in zip(wake["gaps_s"], excess) if g >= WAKE_FULL_S]
    cost = statistics.median(full)
    if cost <= 0:
        return 0.0, 0.0
    after = next(g for g, e in zip(wake["gaps_s"], excess) if e >= cost / 2)
    return cost, after


async def _sequential(handle, n: int, gap_s: float | None = None, warmup: int = WARMUP) -> list[float]:
    """Round trips of ``n`` requests one at a time after ``warmup`` untimed ones, each
    sent after the client has idled ``gap_s`` (``asyncio.sleep``) when given."""
    for _ in range(warmup):
        await handle.remote()
    lat = []
    for _ in range(n):
        if gap_s is not None:
            await asyncio.sleep(gap_s)
        s = time.perf_counter()
        await handle.remote()
        lat.append(time.perf_counter() - s)
    return lat


def _forced_probes(handle, n: int) -> list[float]:
    """Latencies of ``n`` queue-length probes forced on the router's loop to the handle's
    one replica, with a deadline long enough (back-off index 10: 1 s) that none expires."""
    from ray.serve._private.router import SingletonThreadRouter

    router = handle._router._asyncio_router.request_router
    replica = next(iter(router._replicas.values()))
    lat: list[float] = []

    async def probes():
        for _ in range(n):
            s = time.perf_counter()
            res = await router._probe_queue_lens([replica], 10)
            if res[0][1] is None:
                raise RuntimeError("probe got no answer within 1 s")
            lat.append(time.perf_counter() - s)

    loop = SingletonThreadRouter._asyncio_loop
    asyncio.run_coroutine_threadsafe(probes(), loop).result()
    return lat


async def _sequential_cpu(handle, n: int) -> dict:
    """``_sequential`` round trips, and the replica's CPU per request: its process CPU less
    a spinning thread's (``process_time`` and ``spin_s`` of its ``cpu_times``, the kernel's
    exact clocks, as /proc's ticks are not), its rate over IDLE_BG_S of idleness just
    before subtracted (after a settling pause, as in the idle phase: the load window is
    long, so the idle rate must be steady)."""
    for _ in range(WARMUP):
        await handle.remote()
    await asyncio.sleep(2.0)  # let the warm-up's after-effects (metrics pushes) pass

    async def cpu_s() -> tuple[float, float]:
        t = await handle.cpu_times.remote()
        return t["process_time"] - t.get("spin_s", 0.0), time.perf_counter()

    c0, w0 = await cpu_s()
    await asyncio.sleep(IDLE_BG_S)
    c1, w1 = await cpu_s()
    lat = await _sequential(handle, n, warmup=0)
    c2, w2 = await cpu_s()
    return {"latencies": lat, "idle_wall_s": w1 - w0, "idle_cpu_s": c1 - c0, "load_wall_s": w2 - w1,
            "load_cpu_s": c2 - c1, "cpu_s_per_request": _per_request(c2 - c1, w2 - w1, c1 - c0, w1 - w0, n)}


def _sync_phase(cl: RealCluster, noop_handle, n: int, pc: ProcessCPU, counter: ProbeCounter) -> list[dict]:
    """The handle phase's c=1 no-op requests to a plain ``def`` no-op replica, in
    ``SYNC_ROUNDS`` rounds each paired with the same to the ``async def`` no-op one
    (the host's speed drifts: a pair is measured a few seconds apart), the two in turn
    first, so that a drift within the phase does not fall on one side of every pair."""
    sync_cfg = scenario(name="NoopSync", work=[("io", 0.0)], handler="sync", num_replicas=1, num_cpus=1,
                        max_ongoing_requests=5, cluster_cpus=2, rps=1.0)
    sync_handle, states = cl.deploy(sync_cfg, "noopsync")
    try:
        if states.get("RUNNING", 0) < 1:
            raise SystemExit(f"sync no-op replica did not start: {states}")
        order = [("async", noop_handle), ("sync", sync_handle)]
        return [{k: asyncio.run(_handle_phase(h, n, pc, counter)) for k, h in (order if i % 2 == 0 else order[::-1])}
                for i in range(SYNC_ROUNDS)]
    finally:
        cl.delete("noopsync")


def _gil_phase(cl: RealCluster, noop_handle, n: int) -> dict:
    """Requests and forced probes at c=1 with one core taken by a spinning thread: inside
    the replica (its GIL held) against a spinning process outside Ray (the same core
    taken, no GIL). The difference is the time the replica's Ray machinery waits for
    its GIL, and the CPU its hand-overs cost the replica."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        control = asyncio.run(_sequential_cpu(noop_handle, n))
        control_probes = _forced_probes(noop_handle, n)
    finally:
        spinner.kill()
        spinner.wait()
    hog_handle = _deploy_one(cl, GilHog, "gilhog", max_ongoing_requests=5)
    try:
        hog = asyncio.run(_sequential_cpu(hog_handle, n))
        hog_probes = _forced_probes(hog_handle, n)
    finally:
        cl.delete("gilhog")
    return {"n": n, "control_spinning_process": _stats(control.pop("latencies")),
            "gil_held_in_replica": _stats(hog.pop("latencies")),
            "probe_control_spinning_process": _stats(control_probes), "probe_gil_held_in_replica": _stats(hog_probes),
            "control_replica_cpu": control, "gil_held_replica_cpu": hog}


class _TimerLog:
    """Wall times (``time.time()``) of the driver's routers' metric tasks: every sample
    (``_add_autoscaling_metrics_point``) and push (``push_autoscaling_metrics_to_controller``),
    by wrapping ``RouterMetricsManager`` in this process; a router built after ``install``
    registers the wrapped methods with its ``MetricsPusher``."""

    def __init__(self):
        from ray.serve._private.router import RouterMetricsManager

        self.cls = RouterMetricsManager
        self.orig = {m: getattr(RouterMetricsManager, m) for m in TIMER_METHODS.values()}
        self.times: dict[str, list[float]] = {k: [] for k in TIMER_METHODS}

    def install(self):
        for key, m in TIMER_METHODS.items():
            setattr(self.cls, m, self._logged(self.orig[m], self.times[key]))

    @staticmethod
    def _logged(fn, out):
        def logged(mgr):
            out.append(time.time())
            return fn(mgr)

        return logged

    def restore(self):
        for m, fn in self.orig.items():
            setattr(self.cls, m, fn)


TIMER_METHODS = {"record": "_add_autoscaling_metrics_point", "push": "push_autoscaling_metrics_to_controller"}


def _backoff_sleep_phase() -> dict:
    """How late ``asyncio.sleep`` ends on the router's own event loop (the driver's router
    thread) with nothing else on it: ``BACKOFF_SLEEP_REPS`` sleeps of each of the first
    back-off delays, Serve deployed and idle."""
    from ray.serve._private.router import SingletonThreadRouter

    async def sleeps():
        out = {}
        for d in BACKOFF_SLEEPS_S:
            late = []
            for _ in range(BACKOFF_SLEEP_REPS):
                t0 = time.perf_counter()
                await asyncio.sleep(d)
                late.append(time.perf_counter() - t0 - d)
            out[str(d)] = late
        return out

    loop = SingletonThreadRouter._get_singleton_asyncio_loop("calibrate")
    late = asyncio.run_coroutine_threadsafe(sleeps(), loop).result()
    return {"late_s": late, "median_s": statistics.median(x for v in late.values() for x in v)}


def _period_stats(times: list[float], interval_s: float) -> dict:
    """Per-iteration lateness of a periodic task: its periods minus ``interval_s``."""
    late = np.diff(np.asarray(times)) - interval_s
    if late.size == 0:
        return {"n": 0, "mean_s": math.nan, "median_s": math.nan, "std_s": math.nan}
    return {"n": int(late.size), "mean_s": float(late.mean()), "median_s": float(np.median(late)),
            "std_s": float(late.std()), "max_s": float(late.max())}


def _timer_phase(cl: RealCluster) -> dict:
    """The autoscaling timers' lateness at c=1: a deployment with an ``autoscaling_config``
    (min = max = 1, so nothing scales; ``look_back_period_s`` TIMER_LOOK_BACK_S, so the
    handle samples every 0.2 x that, and ``metrics_interval_s`` TIMER_PUSH_S) driven one
    request at a time for TIMER_S through a new handle, whose router's sample and push
    times are logged; and the controller's loop count over the same span
    (``get_health_metrics``: ``num_control_loops``)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    from simserve.autoscaling import AutoscalingConfig

    a = AutoscalingConfig(min_replicas=1, max_replicas=1, look_back_period_s=TIMER_LOOK_BACK_S,
                          metrics_interval_s=TIMER_PUSH_S)
    cfg = scenario(name="Timers", work=[("io", 0.0)], rps=1.0)
    cfg = dataclasses.replace(cfg, deployment=dataclasses.replace(cfg.deployment, num_replicas=None,
                                                                  autoscaling_config=a))
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    log = _TimerLog()
    log.install()
    try:
        handle, states = cl.deploy(cfg, "timers")
        if states.get("RUNNING", 0) < 1:
            raise SystemExit(f"timers replica did not start: {states}")

        async def drive():
            end = time.perf_counter() + TIMER_S
            n = 0
            while time.perf_counter() < end:
                await handle.remote()
                n += 1
            return n

        h0 = ray.get(controller.get_health_metrics.remote())
        n = asyncio.run(drive())
        h1 = ray.get(controller.get_health_metrics.remote())
    finally:
        log.restore()
        cl.delete("timers")
    loops = h1["num_control_loops"] - h0["num_control_loops"]
    span = h1["timestamp"] - h0["timestamp"]
    return {"requests": n, "record_interval_s": a.sample_interval_s, "push_interval_s": a.push_interval_s,
            "record_times": log.times["record"], "push_times": log.times["push"],
            "record": _period_stats(log.times["record"], a.sample_interval_s),
            "push": _period_stats(log.times["push"], a.push_interval_s),
            "control_loops": loops, "control_span_s": span,
            "control_loop_period_s": span / loops if loops else math.nan,
            "control_loop_duration_s": h1.get("loop_duration_s")}


def _startup_phase(cl: RealCluster, reps: int) -> dict:
    from ray import serve
    from ray.serve.api import _run

    name = "Startup"

    def deploy(k: int):
        app = serve.deployment(Empty).options(name=name, num_replicas=k, ray_actor_options={"num_cpus": 0.5},
                                              max_ongoing_requests=5).bind()
        _run(app, name="startup", route_prefix="/startup", _blocking=False)

    def wait(pred, timeout=60.0):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            st = cl.replica_states("startup", name)
            if pred(st):
                return time.perf_counter() - t0, st
            time.sleep(0.02)
        return float("nan"), cl.replica_states("startup", name)

    cpu = _WorkerCPUTrace()
    cpu.start()
    deploy(1)
    first, _ = wait(lambda st: st.get("RUNNING", 0) == 1 and sum(st.values()) == 1)
    samples, starting, down = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        deploy(2)
        t_call = time.perf_counter() - t0
        seen, _ = wait(lambda st: sum(st.values()) >= 2)  # the controller has created the replica
        t, st = wait(lambda st: st.get("RUNNING", 0) >= 2)
        samples.append(t_call + seen + t)
        starting.append(t)
        time.sleep(0.5)
        deploy(1)
        d, _ = wait(lambda st: st.get("RUNNING", 0) == 1 and sum(st.values()) == 1)
        down.append(d)
        time.sleep(1.0)
    cl.delete("startup")
    cpu.stop()
    logged = _logged_startups(controller_log_lines(), "startup", name)
    # Each start's own process: its CPU when the controller logged it started, less any it
    # had when the start began (a worker Ray had started before; none was seen so far).
    ready_cpu = [cpu.at(pid, ready) - _zero_if_nan(cpu.at(pid, ready - seconds))
                 for seconds, ready, pid in logged]
    return {"first_deploy_s": first, "scale_up_to_running_s": samples, "starting_to_running_s": starting,
            "scale_down_s": down, "poll_interval_s": 0.02, "cpu_sample_interval_s": cpu.interval_s,
            # The first is the application's first replica (deploy(1)); the rest are the reps.
            "logged_add_to_running_s": [t for t, _, _ in logged[1:]], "logged_first_s": [t for t, _, _ in logged[:1]],
            "logged_process_cpu_s": ready_cpu[1:], "logged_first_process_cpu_s": ready_cpu[:1]}


def lag_cv(lags: dict) -> float:
    """``done_callback_lag_cv``: the handle phase's done-callback lags' standard deviation
    over their mean (``_stats`` of them)."""
    return lags["std_s"] / lags["mean_s"] if lags["mean_s"] > 0 else 0.0


def _zero_if_nan(x: float) -> float:
    return 0.0 if math.isnan(x) else x


class _WorkerCPUTrace(threading.Thread):
    """Samples every ``interval_s`` the CPU (all threads, /proc) of the driver and each of its
    descendants, by pid, on the ``time.time()`` scale, so that a replica's CPU can be
    read at the moment the controller logged it started."""

    def __init__(self, interval_s: float = 0.02):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self._done = threading.Event()

    def run(self):
        while not self._done.wait(self.interval_s):
            now = time.time()
            for pid, cpu in _tree_cpu().items():
                self.samples.setdefault(pid, []).append((now, cpu))

    def stop(self):
        self._done.set()
        self.join()

    def at(self, pid: int, when: float) -> float:
        """CPU seconds of ``pid`` at its last sample up to ``when`` (NaN if none)."""
        before = [cpu for t, cpu in self.samples.get(pid, []) if t <= when]
        return before[-1] if before else math.nan


_LOG_TIME = re.compile(r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) controller ")


_LOG_PID = re.compile(r"\(PID: (\d+)\)")


def _logged_startups(lines, app: str, deployment: str) -> list[tuple[float, float, int]]:
    """For one deployment, each start as (seconds, ready time, pid): the seconds from an
    ``Adding N replica`` line of the controller (the replica's start call follows in the
    same loop turn) to the next ``started successfully`` line (the loop turn that finds it
    ready and makes it RUNNING), that line's time and the replica's process id."""
    dep = f"Deployment(name='{deployment}', app='{app}')"
    rep = f"deployment='{deployment}', app='{app}')"
    out, added = [], None
    for line in lines:
        m = _LOG_TIME.match(line)
        if m is None:
            continue
        t = log_time(m[1])
        if "Adding" in line and dep in line:
            added = t
        elif "started successfully" in line and rep in line and added is not None:
            pid = _LOG_PID.search(line)
            out.append((t - added, t, int(pid[1]) if pid else -1))
            added = None
    return out


# -- derivation ------------------------------------------------------------------------------------
def _per_request(load_cpu, load_wall, idle_cpu, idle_wall, n) -> float:
    return (load_cpu - idle_cpu / idle_wall * load_wall) / n


def calibrated_cluster(cal: dict) -> RealCluster:
    """A Ray cluster of 2 logical CPUs as the calibration ``cal`` was made on, with its host
    speed and native work unit: the diagnoses' cluster."""
    return RealCluster(num_cpus=2, ns_per_loop=cal["host_ns_per_loop"], native_unit=cal.get("native_unit_s"))


@contextlib.contextmanager
def noop_deployment(http: bool = False):
    """For the diagnoses (``pause_cpu``, ``loaded_cpu``): a Ray cluster of 2 logical CPUs
    with one no-op replica, as the calibration's; yields its handle (``http``: its URL
    through Serve's proxy instead) and a ``ProcessCPU``."""
    cal = load_calibration(None)
    cfg = scenario(name="noop", work=[("io", 0.0)], num_replicas=1, num_cpus=1, max_ongoing_requests=5,
                   cluster_cpus=2, rps=1.0)
    with calibrated_cluster(cal) as cl:
        handle, _ = cl.deploy(cfg, "noop")
        yield f"http://127.0.0.1:{cl.http_port}/noop" if http else handle, ProcessCPU()
        cl.delete("noop")


def per_request_by_role(load: dict, wall: float, idle: tuple[dict, float], n: int, roles) -> dict:
    """ms of CPU per request of each role's Python (``<rol>.py``) and C++ (``<rol>.na``)
    threads over a window of ``n`` requests (``_by_role`` of it, ``wall`` seconds), each
    minus its idle rate (``idle``: ``_by_role`` of an idle window and its seconds); for
    the diagnoses ``pause_cpu`` and ``loaded_cpu``."""
    idle_by_role, idle_wall = idle
    out = {}
    for role in roles:
        for kind in ("python_s", "native_s"):
            cpu = _per_request(load.get(role, {}).get(kind, 0.0), wall, idle_by_role.get(role, {}).get(kind, 0.0),
                               idle_wall, n)
            out[f"{role[:3]}.{kind[:2]}"] = round(1e3 * cpu, 3)
    return out


def _replica_per_request(ph: dict, kind: str) -> float:
    """A phase's replica CPU (``kind``: ``python_s`` or ``native_s``) per request, its idle
    rate subtracted."""
    return _per_request(ph["load_replica"][kind], ph["load_wall_s"], ph["idle_replica"][kind], ph["idle_wall_s"],
                        ph["n"])


def clamp(name: str, v: float, warnings: list) -> float:
    if v < 0:
        warnings.append(f"{name} came out negative ({v:.6g}); clamped to 0")
        return 0.0
    return v


def idle_cores(idle: dict) -> dict:
    """``driver_idle_cores``, ``proxy_idle_cores`` and ``replica_idle_cores`` (per replica
    process) from the idle phase: each role's CPU-seconds per second with Serve deployed
    and no traffic."""
    by_role, wall = idle["by_role"], idle["wall_s"]

    def rate(role: str) -> float:
        r = by_role.get(role)
        return r["cpu_s"] / wall / r["processes"] if r and r["processes"] else 0.0

    return {"driver_idle_cores": rate("driver"), "proxy_idle_cores": rate("proxy"),
            "replica_idle_cores": rate("replica")}


def derive(h: dict, web: dict, pr: dict, idle: dict, up: dict, warnings: list) -> dict:
    def nonneg(name, v):
        return clamp(name, v, warnings)

    def per(ph, role, kind="cpu_s"):
        ld, il = ph["load_by_role"].get(role), ph["idle_by_role"].get(role)
        if ld is None:
            return float("nan")
        return _per_request(ld[kind], ph["load_wall_s"], il[kind] if il else 0.0, ph["idle_wall_s"], ph["n"])

    v: dict = {}
    # Probes, forced on the router's loop.
    v["probe_cpu_s"] = nonneg("probe_cpu_s", _per_request(pr["router_load_cpu_s"], pr["load_wall_s"],
                                                         pr["router_idle_cpu_s"], pr["idle_wall_s"], pr["n"]))
    v["replica_probe_cpu_s"] = nonneg("replica_probe_cpu_s", _replica_per_request(pr, "python_s"))
    v["probe_driver_python_all_threads_cpu_s"] = per(pr, "driver", "python_s")
    v["probe_native_cpu_s"] = nonneg("probe_native_cpu_s", per(pr, "driver", "native_s"))
    v["replica_probe_native_cpu_s"] = nonneg("replica_probe_native_cpu_s", _replica_per_request(pr, "native_s"))
    v["probe_background_cpu_s"] = per(pr, "background")
    v["probe_rtt_median_s"] = pr["latency"]["median_s"]
    # Handle c=1.
    probes_per_req = h["probes"] / h["n"]
    v["probes_per_request_handle"] = probes_per_req
    router_all = _per_request(h["router_load_cpu_s"], h["load_wall_s"], h["router_idle_cpu_s"], h["idle_wall_s"],
                              h["n"])
    v["router_thread_cpu_s_per_request"] = router_all
    v["router_cpu_s"] = nonneg("router_cpu_s", router_all - probes_per_req * v["probe_cpu_s"])
    driver_py = per(h, "driver", "python_s")
    v["driver_python_cpu_s_per_request"] = driver_py
    v["client_cpu_s"] = nonneg("client_cpu_s", driver_py - router_all)
    v["client_native_cpu_s"] = nonneg("client_native_cpu_s", per(h, "driver", "native_s"))
    rep_py = _replica_per_request(h, "python_s")
    v["replica_python_cpu_s_per_request"] = rep_py
    v["replica_cpu_s"] = nonneg("replica_cpu_s", rep_py - probes_per_req * v["replica_probe_cpu_s"])
    v["replica_native_cpu_s"] = nonneg("replica_native_cpu_s", _replica_per_request(h, "native_s"))
    # Background idle rate: the idle phase and the handle phase's own idle window together
    # (11 s: the background's CPU comes in 10 ms ticks from periodic loops, so a longer
    # reference is less noisy than the 3 s window alone).
    bg_idle = idle["by_role"].get("background", {"cpu_s": 0.0})["cpu_s"]
    bg_idle_h = h["idle_by_role"].get("background", {"cpu_s": 0.0})["cpu_s"]
    v["ray_background_cores"] = bg_idle / idle["wall_s"]
    bg_rate = (bg_idle + bg_idle_h) / (idle["wall_s"] + h["idle_wall_s"])
    bg_load = h["load_by_role"].get("background", {"cpu_s": 0.0})["cpu_s"]
    v["ray_background_cpu_per_request_s"] = nonneg("ray_background_cpu_per_request_s",
                                                  (bg_load - bg_rate * h["load_wall_s"]) / h["n"])
    v["ray_background_cpu_per_request_s_3s_idle_only"] = per(h, "background")
    v.update(idle_cores(idle))
    path_cpu = v["client_cpu_s"] + v["router_cpu_s"] + v["replica_cpu_s"]
    v["hop_s"] = nonneg("hop_s", (h["latency"]["median_s"] - path_cpu) / 2)
    s = np.asarray(h["latencies_s"]) - path_cpu
    v["hop_cv_untrimmed"] = float(math.sqrt(2) * s.std() / s.mean())
    st = np.sort(s)[: int(math.floor(0.99 * s.size))]
    v["hop_cv"] = float(math.sqrt(2) * st.std() / st.mean())
    # HTTP c=1.
    v["http_client_cpu_s"] = nonneg("http_client_cpu_s", per(web, "driver"))
    v["http_client_python_cpu_s"] = per(web, "driver", "python_s")
    v["http_client_native_cpu_s"] = per(web, "driver", "native_s")
    v["proxy_probes_assumed"] = probes_per_req
    proxy_py = per(web, "proxy", "python_s")
    v["proxy_python_cpu_s_per_request"] = proxy_py
    if web["load_by_role"].get("proxy") is None:
        warnings.append("ProxyActor process not found; proxy_cpu_s is 0 (unmeasured)")
        proxy_py = 0.0
    v["proxy_cpu_s"] = nonneg("proxy_cpu_s", proxy_py - v["router_cpu_s"] - probes_per_req * v["probe_cpu_s"])
    v["proxy_native_cpu_s"] = nonneg("proxy_native_cpu_s", per(web, "proxy", "native_s"))
    v["replica_python_cpu_s_per_http_request"] = per(web, "replica", "python_s")
    v["replica_native_cpu_s_per_http_request"] = per(web, "replica", "native_s")
    v["background_cpu_s_per_http_request"] = per(web, "background")
    v["http_hop_s"] = nonneg("http_hop_s", (web["latency"]["median_s"] - v["http_client_cpu_s"] - v["proxy_cpu_s"]
                                           - v["router_cpu_s"] - 2 * v["hop_s"] - v["replica_cpu_s"]) / 2)
    # Start-up.
    ups = up["logged_add_to_running_s"]
    if len(ups) < STARTUP_REPS:
        warnings.append(f"only {len(ups)} replica start-ups found in the controller's log ({STARTUP_REPS} reps)")
    v["replica_startup_s"] = statistics.median(ups) if ups else 0.0
    v["replica_startup_cv"] = statistics.stdev(ups) / statistics.mean(ups) if len(ups) > 1 else 0.0
    cpus = [x for x in up.get("logged_process_cpu_s", []) if not math.isnan(x)]
    if len(cpus) < len(ups):
        warnings.append(f"the CPU of only {len(cpus)} of {len(ups)} starting replicas was sampled")
    cpu_s = statistics.median(cpus) if cpus else 0.0
    if cpu_s > v["replica_startup_s"]:
        warnings.append(f"replica_startup_cpu_s ({cpu_s:.3f}) exceeds replica_startup_s: clamped to it")
        cpu_s = v["replica_startup_s"]
    v["replica_startup_cpu_s"] = cpu_s
    polled = [x for x in up["starting_to_running_s"] if not math.isnan(x)]
    v["replica_startup_polled_s"] = statistics.median(polled) if polled else math.nan
    return v


def derive_sync(rounds: list[dict], replica_probe_cpu_s: float, replica_probe_native_cpu_s: float,
                warnings: list) -> dict:
    """``replica_sync_cpu_s`` / ``replica_sync_native_cpu_s``: the mean over the sync
    phase's pairs of the ``def`` replica's CPU per request less the ``async def`` one's,
    each less its probe answers (Python and C++ threads)."""
    def per_req(ph, kind, probe_s):
        return _replica_per_request(ph, kind) - ph["probes"] / ph["n"] * probe_s

    out = {}
    for name, kind, probe_s in (("replica_sync_cpu_s", "python_s", replica_probe_cpu_s),
                                ("replica_sync_native_cpu_s", "native_s", replica_probe_native_cpu_s)):
        diffs = [per_req(r["sync"], kind, probe_s) - per_req(r["async"], kind, probe_s) for r in rounds]
        out[f"{name}_pairs"] = diffs
        out[name] = clamp(name, statistics.fmean(diffs), warnings)
    return out


def derive_gil(g: dict, switch_interval_s: float, warnings: list, timeline: dict | None = None) -> dict:
    """The GIL phase's (``_gil_phase``) takes and hand-over cost: each take behind the
    spinning thread waits about one switch interval, so the median round trip's excess
    over the control's, in switch intervals, counts the takes (at least 1); the
    replica's CPU per request beside the spinner (the spinner's own subtracted) less the
    control's, over the takes, is what one take's hand-over costs.

    With the timeline phase (``gil_timeline.timeline_phase``, since 2026-11-27) the takes
    are counted leg by leg instead (``gil_timeline.takes``): before the handler, between
    it and the response, and between the response and the task's end, which the round
    trip does not see; the hand-over cost is spread over all of them. Without it (runs
    made before), every take counts as before the handler, as simserve then modelled."""
    wait_s = g["gil_held_in_replica"]["median_s"] - g["control_spinning_process"]["median_s"]
    counts = {"replica_gil_acquisitions": max(1, round(wait_s / switch_interval_s)),
              "replica_accept_gil_acquisitions": 0,
              "replica_response_gil_acquisitions": 0, "replica_release_gil_acquisitions": 0}
    if timeline is not None:
        counts = gil_timeline.takes(timeline, switch_interval_s)
    # The takes before the acceptance are some of those before the handler.
    total = (counts["replica_gil_acquisitions"] + counts["replica_response_gil_acquisitions"]
             + counts["replica_release_gil_acquisitions"])
    handoffs_cpu_s = g["gil_held_replica_cpu"]["cpu_s_per_request"] - g["control_replica_cpu"]["cpu_s_per_request"]
    probe_wait_s = g["probe_gil_held_in_replica"]["median_s"] - g["probe_control_spinning_process"]["median_s"]
    return {"replica_gil_wait_s": wait_s, **counts,
            "replica_gil_handoff_cpu_s": clamp("replica_gil_handoff_cpu_s", handoffs_cpu_s / total, warnings),
            "replica_probe_gil_wait_s": probe_wait_s,
            "replica_probe_gil_acquisitions": max(1, round(probe_wait_s / switch_interval_s))}


def done_lag(handle_raw: dict, vals: dict, warnings: list) -> float:
    """``done_callback_lag_s``: the handle phase's median lag from the answer to the done
    callback, less what simserve runs in between itself: the replica's takes after the
    response (``replica_release_gil_acquisitions``, each an equal share of
    ``replica_cpu_s``), after which the task's end leaves."""
    takes = (vals["replica_gil_acquisitions"] + vals["replica_response_gil_acquisitions"]
             + vals["replica_release_gil_acquisitions"])
    after_s = vals["replica_cpu_s"] * vals["replica_release_gil_acquisitions"] / takes
    return clamp("done_callback_lag_s", handle_raw["done_callback_lag"]["median_s"] - after_s, warnings)


def derive_reject(rj: dict, router_cpu_s: float, warnings: list) -> dict:
    """The rejection phase's costs per rejected send (``_reject_phase``)."""
    def per(role, kind):
        ld, il = rj["load_by_role"].get(role), rj["idle_by_role"].get(role)
        return _per_request(ld[kind] if ld else 0.0, rj["load_wall_s"], il[kind] if il else 0.0,
                            rj["idle_wall_s"], rj["n"])

    cycle = _per_request(rj["router_load_cpu_s"], rj["load_wall_s"], rj["router_idle_cpu_s"], rj["idle_wall_s"],
                         rj["n"])
    rep = {k: _per_request(rj["load_replica"][k], rj["load_wall_s"], rj["idle_replica"][k], rj["idle_wall_s"],
                           rj["n"]) for k in ("python_s", "native_s")}
    return {"reject_router_thread_cpu_s": cycle,
            "reject_cpu_s": clamp("reject_cpu_s", cycle - router_cpu_s, warnings),
            "reject_native_cpu_s": clamp("reject_native_cpu_s", per("driver", "native_s"), warnings),
            "replica_reject_cpu_s": clamp("replica_reject_cpu_s", rep["python_s"], warnings),
            "replica_reject_native_cpu_s": clamp("replica_reject_native_cpu_s", rep["native_s"], warnings),
            "ray_background_cpu_per_reject_s": clamp("ray_background_cpu_per_reject_s", per("background", "cpu_s"),
                                                     warnings)}


def clamp_late(v: float, warnings: list) -> float:
    if not v >= 0:  # also NaN: nothing logged
        warnings.append(f"a timer's lateness came out {v!r}; set to 0")
        return 0.0
    return v


def _spin_for(seconds: float) -> list[float]:
    """ns per iteration of the spin probe, in chunks, for ``seconds`` of wall time."""
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        out.append(probe_ns_per_loop(reps=1))
    return out


def _core_contention(n_procs: int) -> dict:
    """How fast a core runs when every core is busy, relative to one busy core alone.

    The spin probe runs alone for CONTENTION_S, then in ``n_procs`` processes at once
    for CONTENTION_S each; the middle third of each process's chunks (when all are
    surely running) gives its speed. Before Ray starts, on an otherwise idle machine."""
    import multiprocessing

    alone = _spin_for(CONTENTION_S)
    with multiprocessing.get_context("spawn").Pool(n_procs) as pool:
        runs = pool.map(_spin_for, [CONTENTION_S] * n_procs)
    middle = [statistics.median(r[len(r) // 3 : 2 * len(r) // 3] or r) for r in runs]
    alone_ns = statistics.median(alone[len(alone) // 3 : 2 * len(alone) // 3] or alone)
    together_ns = statistics.median(middle)
    return {
        "processes": n_procs,
        "alone_ns_per_loop": alone_ns,
        "together_ns_per_loop": middle,
        "contended_core_speed": min(1.0, alone_ns / together_ns),
    }


def calibrate_once(requests: int) -> dict:
    """One calibration: every phase once, on a Ray cluster of its own; the document
    ``main`` writes (without ``command``)."""
    import psutil
    import ray

    from validate.attempt_cpu import attempt_phase, derive  # they import this module
    from validate.batched_cpu import batched_phase, fit
    from validate.loaded_cpu import oversubscribed_cpu_factor, oversubscribed_phase

    if __name__ != "__main__":  # replicas must unpickle Empty without importing `validate`
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    warnings: list[str] = []
    # Only the deployment matters here (the phases drive it); an open-loop workload keeps
    # SimConfig's check against zero-cost closed loops quiet.
    cfg = scenario(name="Noop", work=[("io", 0.0)], num_replicas=1, num_cpus=1, max_ongoing_requests=5,
                   cluster_cpus=2, rps=1.0)
    t0 = time.time()
    busy_before = psutil.cpu_percent(interval=2.0) / 100.0
    if busy_before > 0.1:
        warnings.append(f"host {100 * busy_before:.0f}% busy before calibration: other processes are running")
    contention = _core_contention(os.cpu_count() or 1)
    cpu0 = psutil.cpu_times()
    with RealCluster(num_cpus=2, serve_log_level="INFO") as cl:
        host_before = cl.ns_per_loop  # taken before ray.init
        speeds = [host_before]
        pc = ProcessCPU()
        counter = ProbeCounter()
        try:
            handle, states = cl.deploy(cfg, "noop")
            if states.get("RUNNING", 0) < 1:
                raise SystemExit(f"no-op replica did not start: {states}")

            async def settle():
                for _ in range(WARMUP):
                    await handle.remote()
                await asyncio.sleep(2.0)  # let the warm-up's after-effects (metrics pushes) pass
                return await _idle_phase(pc)

            def then_probe(result):
                """A phase's result, and the spin probe right after it (between phases,
                outside every measured window), on the thread's CPU clock."""
                speeds.append(probe_ns_per_loop(clock=time.thread_time_ns))
                return result

            idle_raw = then_probe(asyncio.run(settle()))
            handle_raw = then_probe(asyncio.run(_handle_phase(handle, requests, pc, counter)))
            sync_raw = then_probe(_sync_phase(cl, handle, requests // 2, pc, counter))
            http_raw = then_probe(asyncio.run(_http_phase(f"http://127.0.0.1:{cl.http_port}/noop", requests,
                                                          pc, counter)))
            probe_raw = then_probe(asyncio.run(_probe_phase(handle, requests, pc)))
            reject_raw = then_probe(_looping_reject_phase(cl, pc, warnings))
            attempt_raw = then_probe(attempt_phase(cl))
            gil_raw = then_probe(_gil_phase(cl, handle, GIL_REQUESTS))
            ray.cloudpickle.register_pickle_by_value(gil_timeline)  # its TimedNoop, for the replicas
            timeline_raw = then_probe(gil_timeline.timeline_phase(cl, TIMELINE_REQUESTS))
            wake_raw = then_probe(asyncio.run(_wake_phase(handle, WAKE_REQUESTS)))
            wake_cpu_raw = then_probe(_wake_cpu_phase(cl, pc))
            sleep_raw = then_probe(_backoff_sleep_phase())
            timer_raw = then_probe(_timer_phase(cl))
            oversub_raw = then_probe(oversubscribed_phase(handle, pc))
            batched_raw = then_probe(batched_phase(handle, pc))
        finally:
            counter.restore()
        cl.delete("noop")
        startup_raw = _startup_phase(cl, STARTUP_REPS)
        speeds.append(probe_ns_per_loop(reps=7, clock=time.thread_time_ns))
    host_ns = statistics.median(speeds)
    cpu1 = psutil.cpu_times()
    if not probe_raw.get("found"):
        raise SystemExit("could not reach the router's replicas to force probes")
    phases = [("idle", {"load_by_role": idle_raw["by_role"]}), ("handle_c1", handle_raw), ("http_c1", http_raw),
              ("probe_c1", probe_raw), ("reject", reject_raw)]
    phases += [(f"sync_c1[{i}].{h}", r[h]) for i, r in enumerate(sync_raw) for h in ("async", "sync")]
    for ph_name, ph in phases:
        for w in ("idle_by_role", "load_by_role"):
            f = ph.get(w, {}).get("_foreign_cores")
            if f is not None and f > 0.1:
                warnings.append(f"{ph_name}.{w}: other processes took {f:.2f} cores: rerun on an idle machine")
    vals = derive(handle_raw, http_raw, probe_raw, idle_raw, startup_raw, warnings)
    vals.update(derive_reject(reject_raw, vals["router_cpu_s"], warnings))
    vals.update(derive_sync(sync_raw, vals["replica_probe_cpu_s"], vals["replica_probe_native_cpu_s"], warnings))
    vals["contended_core_speed"] = contention["contended_core_speed"]
    vals["gil_switch_interval_s"] = sys.getswitchinterval()
    vals.update(derive_gil(gil_raw, vals["gil_switch_interval_s"], warnings, timeline_raw))
    for task in ("record", "push"):
        st = timer_raw[task]
        if st["n"] < 5:
            warnings.append(f"only {st['n']} metrics {task} periods logged")
        vals[f"metrics_{task}_late_s"] = clamp_late(st["mean_s"], warnings)
        vals[f"metrics_{task}_late_cv"] = st["std_s"] / st["mean_s"] if st["mean_s"] > 0 else 0.0
    vals["idle_wake_s"], vals["idle_wake_after_s"] = idle_wake(wake_raw)
    for p in wake_cpu_raw["points"]:
        if p["foreign_cores"] > 0.1:
            warnings.append(f"wake_cpu after {1e3 * p['sleep_s']:g} ms: other processes took "
                            f"{p['foreign_cores']:.2f} cores: rerun on an idle machine")
    vals.update(wake_cpu(wake_cpu_raw, warnings))
    vals["oversubscribed_cpu_factor"] = oversubscribed_cpu_factor(oversub_raw, _wake_overheads(vals))
    vals["done_callback_lag_s"] = done_lag(handle_raw, vals, warnings)
    vals["done_callback_lag_cv"] = lag_cv(handle_raw["done_callback_lag"])
    vals["backoff_sleep_late_s"] = clamp("backoff_sleep_late_s", sleep_raw["median_s"], warnings)
    vals["control_loop_late_s"] = clamp_late(timer_raw["control_loop_period_s"] - CONTROL_LOOP_INTERVAL_S, warnings)
    attempt_raw["derived"] = derive([attempt_raw], {**vals, "host_ns_per_loop": host_ns})
    vals["router_attempt_cpu_s"] = min(attempt_raw["derived"]["router_attempt_cpu_s"], vals["router_cpu_s"])
    # Fitted last: simserve runs the phase's scenario with every other value (batched_cpu.fit).
    batched_raw["fit"] = fit(batched_raw, {**vals, "batched_cpu_factor": 1.0})
    vals["batched_cpu_factor"] = batched_raw["fit"]["batched_cpu_factor"]
    if not batched_raw["fit"]["agree"]:
        warnings.append(f"batched_cpu_factor: the driver's and the replica's differ: {batched_raw['fit']['per_role']}")
    doc = {k: vals[k] for k in FIELDS}
    # What differs for a request that comes through the HTTP proxy (simserve.calibration.costs).
    doc["http"] = {
        "replica_cpu_s": vals["replica_python_cpu_s_per_http_request"],
        "replica_native_cpu_s": vals["replica_native_cpu_s_per_http_request"],
    }
    doc.update(
        host_ns_per_loop=host_ns,
        native_unit_s=cl.native_unit,
        ray_version=ray.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        host={"hostname": socket.gethostname(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "platform": platform.platform()},
        raw={"idle": idle_raw, "handle_c1": handle_raw, "sync_c1": sync_raw, "http_c1": http_raw, "probe_c1": probe_raw,
             "reject": reject_raw, "attempt": attempt_raw, "gil": gil_raw, "gil_timeline": timeline_raw,
             "timers": timer_raw, "wake": wake_raw, "wake_cpu": wake_cpu_raw,
             "backoff_sleep": sleep_raw, "oversubscribed": oversub_raw, "batched": batched_raw, "startup": startup_raw,
             "derived": vals,
             "core_contention": contention,
             "host_ns_per_loop_probes": speeds,
             "host_busy_before": busy_before,
             "host_busy_during": 1.0 - ((cpu1.idle - cpu0.idle) / max(1e-9, sum(cpu1) - sum(cpu0))),
             "wall_s": time.time() - t0, "warnings": warnings},
    )
    return doc


def _wake_overheads(vals: dict) -> Overheads:
    """The wake-up table of a calibration's values, as ``Overheads`` (``wake_cpu``)."""
    return Overheads(**{k: vals[k] for k in ("wake_idle_s", "client_wake_cpu_s", "replica_wake_cpu_s")})


def rederive(doc: dict) -> dict:
    """A saved calibration run with the fields whose derivation changed after it was
    measured derived again from its raw data: ``oversubscribed_cpu_factor`` (the wake-up
    costs taken out since 2026-11-26 21:40)."""
    from validate.loaded_cpu import oversubscribed_cpu_factor  # it imports this module

    out = dict(doc)
    out["oversubscribed_cpu_factor"] = oversubscribed_cpu_factor(doc["raw"]["oversubscribed"], _wake_overheads(doc))
    timeline = doc["raw"].get("gil_timeline")
    if timeline is not None:
        # The takes before the acceptance (counted since 2026-11-27 12:00), from the same legs.
        out.update(gil_timeline.takes(timeline, doc["gil_switch_interval_s"]))
    # Runs made before the timeline phase (2026-11-27): every take before the handler, and
    # the acceptance on admission.
    out.setdefault("replica_accept_gil_acquisitions", 0)
    out.setdefault("replica_response_gil_acquisitions", 0)
    out.setdefault("replica_release_gil_acquisitions", 0)
    return out


def merge(docs: list[dict]) -> dict:
    """One calibration from several made one after another (``--repeats``).

    One calibration is a noisy sample on a shared virtual machine (the median error of
    one grid moved by several points between calibrations ten minutes apart, 2026-11-26),
    so the committed file is the median of a few: every field the median over the runs
    (element by element for the wake-up table; GIL acquisition counts rounded; with an
    even number of runs a median is the mean of the middle two), ``host_ns_per_loop``
    (how the harness sizes ``gil`` work) and ``native_unit_s`` (``native`` work) too.
    The costs are not first brought to one probe speed (as up to 2026-11-27): Ray's CPU
    per request does not follow the spin probe from one run to the next
    (``scenario.with_overheads``). No validation result enters. Each run's own document
    is kept under ``raw.runs``."""

    def median(values):
        if isinstance(values[0], list):
            if len({len(v) for v in values}) != 1:
                raise SystemExit("calibrations to merge have wake-up tables of different lengths")
            return [statistics.median(col) for col in zip(*values)]
        return statistics.median(values)

    # Runs made before done_callback_lag_cv existed (2026-11-27): from their own raw lags.
    docs = [d if "done_callback_lag_cv" in d else {**d, "done_callback_lag_cv": lag_cv(
        d["raw"]["handle_c1"]["done_callback_lag"])} for d in docs]
    # batched_cpu_factor and router_attempt_cpu_s: runs made before their phases (2026-11-27
    # 17:00 and 20:07) lack them; with none having one the file keeps the model's default
    # (1, 0) until ``python -m validate.batched_cpu --add-to`` or ``validate.attempt_cpu
    # --add-to`` measures it.
    doc = {k: median([d[k] for d in docs if k in d] or [getattr(Overheads, k)]) for k in FIELDS}
    for k in ("replica_gil_acquisitions", "replica_accept_gil_acquisitions", "replica_response_gil_acquisitions",
              "replica_release_gil_acquisitions", "replica_probe_gil_acquisitions"):
        doc[k] = round(doc[k])
    doc["http"] = {k: median([d["http"][k] for d in docs]) for k in docs[0]["http"]}
    doc.update(
        host_ns_per_loop=statistics.median(d["host_ns_per_loop"] for d in docs),
        native_unit_s=statistics.median(d["native_unit_s"] for d in docs),
        ray_version=docs[0]["ray_version"],
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        host=docs[0]["host"],
        raw={"runs": docs, "merge": "the median over the runs of every field"},
    )
    return doc


def _print(doc: dict) -> None:
    for k in FIELDS:
        if unit(k) in ("ratio", "count"):
            print(f"  {k:34s} {doc[k]:8.3f}")
        elif k.endswith("_cores"):
            print(f"  {k:34s} {doc[k]:8.4f} cores")
        elif isinstance(doc[k], list):
            print(f"  {k:34s} {' '.join(f'{1e3 * x:.3f}' for x in doc[k])} ms")
        else:
            print(f"  {k:34s} {doc[k] * 1e3:8.3f} ms")
    runs = doc["raw"].get("runs", [doc])
    if len(runs) > 1:
        each = ", ".join(f"{r['host_ns_per_loop']:.2f}" for r in runs)
        print(f"  host_ns_per_loop                   {doc['host_ns_per_loop']:8.2f} ns (median of the {len(runs)} "
              f"runs' {each})")
    for i, run in enumerate(runs):
        raw = run["raw"]
        speeds = raw["host_ns_per_loop_probes"]
        print(f"  run {i + 1} ({run['date']}): host_ns_per_loop {run['host_ns_per_loop']:.2f} ns (median of "
              f"{len(speeds)} probes, {min(speeds):.2f}-{max(speeds):.2f}: before Ray, between phases, after)")
        print(f"    handle c=1 latency median {raw['handle_c1']['latency']['median_s'] * 1e3:.2f} ms, "
              f"http c=1 median {raw['http_c1']['latency']['median_s'] * 1e3:.2f} ms, "
              f"probe median {raw['probe_c1']['latency']['median_s'] * 1e3:.2f} ms; probes during handle phase "
              f"{raw['handle_c1']['probes']}")
        print(f"    idle background by process (CPU-s over {raw['idle']['wall_s']:.1f} s): "
              + ", ".join(f"{k} {x:.2f}" for k, x in raw["idle"]["background_by_process"].items()))
        for w in raw["warnings"]:
            print("    warning:", w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per phase (default 2000)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="calibrations to make, each in a process and Ray cluster of its own, merged into one "
                         "(merge; default 3)")
    ap.add_argument("--out", default=None, help="output JSON (default validate/calibration/ray-2.60.0-<host>.json)")
    ap.add_argument("--merge", metavar="RUN", nargs="+", default=None,
                    help="merge saved runs (out/calibration-*-runK.json) again instead of measuring, each "
                         "derived again from its raw data where a derivation changed since (rederive)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats={args.repeats}: must be at least 1")
    out = args.out or calibration_path()
    if args.merge:
        docs = []
        for path in args.merge:
            with open(path) as f:
                docs.append(rederive(json.load(f)))
        doc = merge(docs)
    elif args.repeats == 1:
        doc = calibrate_once(args.requests)
    else:
        # Each run's own file stays in validate/out/ (not committed), also if a later one fails.
        stamp = utc_stamp()
        docs = []
        for i in range(args.repeats):
            part = os.path.join(OUT_DIR, f"calibration-{stamp}-run{i + 1}.json")
            print(f"calibration {i + 1} of {args.repeats}: {part}", flush=True)
            subprocess.run([sys.executable, "-m", "validate.calibrate", "--repeats", "1",
                            "--requests", str(args.requests), "--out", part], check=True)
            with open(part) as f:
                docs.append(json.load(f))
        doc = merge(docs)
    doc["command"] = "python -m validate.calibrate " + " ".join(argv if argv is not None else sys.argv[1:])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {out}")
    _print(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
