"""One run: build the cluster, place replicas, wire clients, router and replicas, go.

The request path, with the costs ``Overheads`` names (all zero with ``--no-overheads``):

    client --client_cpu_s--> [http: --http_hop_s--> proxy --proxy_cpu_s-->]
    router (FIFO; each routing attempt costs router_attempt_cpu_s and each send the
            rest of router_cpu_s; each probe probe_cpu_s, a hop each way and
            replica_probe_cpu_s at the replica)
    --hop_s--> replica admits or rejects (the answer travels back one hop; a rejection
               costs replica_reject_cpu_s first, and reject_cpu_s at the router
               before the retry; an acceptance leaves after the first
               replica_accept_gil_acquisitions of the takes below)
    replica: replica_cpu_s in replica_gil_acquisitions takes of its GIL, the handler's
             segments, more takes (replica_response_gil_acquisitions), the response leaves,
             more takes (replica_release_gil_acquisitions) and replica_post_cpu_s, then
             the slot is free and the task's end leaves (with the response if nothing
             held the slot after it)
    --hop_s--> router [--http_hop_s--> client]; the task's end --hop_s--> router, and
               done_callback_lag_s later (drawn) the router's done callbacks (cache
               decrement, autoscaling count)

A hop to a node whose request-path processes, other than the sender, had been quiet for
``idle_wake_after_s`` when the sender's spell of work began takes ``idle_wake_s`` longer: on a
virtual machine the idle core must be woken (``message_s``).
Messages between the router and one replica keep their order each way, however the hops'
jitter falls (one connection carries them).

Beside the path, without holding it up: each process's C++ threads (``*_native_cpu_s``),
Ray's daemons (``ray_background_*``) and the request path's processes when idle
(``*_idle_cores``: periodic tasks) burn cores.

The caller's CPU (client loop, ``DeploymentHandle``, router) runs in one driver
process on the first node; with HTTP ingress the router and proxy costs run in the
proxy process and the client's in a load-generator process, both on the first node.
Randomness comes from one ``SeedSequence`` split into independent streams for
arrivals, service demand, routing, hop jitter, the autoscaling timers' lateness, where
the run starts on Ray's clocks, replica start-up times and done-callback lags, so
changing the router leaves the arrivals and the demands untouched.

The timeline samples every ``timeline_interval_s``. Without a request table
(``keep_requests=False``) it holds at most ``TIMELINE_MAX_ROWS`` (20,000) rows: at the
cap adjacent rows merge pairwise and later rows cover twice the time, so memory stays
flat however long the run. A merged row's counts are its last sample, its throughput
is exact, its p50/p99 the answer-weighted mean of the per-interval percentiles it
covers; ``simserve/metrics.py`` states the rule in full.

Internal callbacks (timers, routing tasks, hops) go on SimPy's calendar as the light
events of ``simserve/events.py`` (``Simulation.later``; those due at once,
``Simulation.soon``, in a FIFO beside it), and ``events.run`` drives the calendar as
``env.run`` would; the hot paths read the clock as ``env._now``, which is what
``env.now`` returns.
"""

from __future__ import annotations

import gc
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from simserve.autoscaling import CONTROL_LOOP_INTERVAL_S, Autoscaler
from simserve import fcfs
from simserve.bottleneck import diagnose
from simserve.config import SimConfig
from simserve.cpu import Node
from simserve.distributions import Distribution
from simserve import events
from simserve.metrics import TIMELINE_COLUMNS, TIMELINE_MAX_ROWS, Recorder, Timeline, p50_p99_ms  # noqa: F401
from simserve.controller import Controller
from simserve.placement import Placer
from simserve.replica import PENDING, RUNNING, STARTING, STOPPING
from simserve.request import IN_FLIGHT, OK, REJECTED, Request
from simserve.router import IdealRouter, RayRouter
from simserve.workload import make_source

# A closed-loop client that gets a 503 pauses this long before sending again (a load
# tester's behaviour, not Ray's); without it a zero-cost rejection would loop forever.
CLIENT_RETRY_PAUSE_S = 0.01

REPLICA_COLUMNS = ["replica", "node", "state", "created_s", "running_since_s", "completed", "rejected", "utilisation", "mean_ongoing", "loop_busy", "gil_busy"]


# While a simulation runs, the cyclic garbage collector runs every GC_THRESHOLD net
# allocations instead of CPython's 700 (see fewer_collections).
GC_THRESHOLD = 10_000


@contextmanager
def fewer_collections():
    """Collect cyclic garbage less often while a simulation runs, then restore the settings.

    By default CPython collects its youngest generation every 700 allocations and
    promotes the survivors; a run keeps thousands of requests and pending events alive
    for a while, so they survive, get promoted and are walked again and again by the
    older generations' collections: a fifth of S3's time (2,560 clients). Every 10,000
    allocations the same cycles are freed, a little later. A process that has switched
    the collector off, or tuned it higher, is left alone."""
    old = gc.get_threshold()
    if 0 < old[0] < GC_THRESHOLD:
        gc.set_threshold(GC_THRESHOLD, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@dataclass
class SimResult:
    """What one run produced: ``summary`` (the JSON document), and tidy tables."""

    summary: dict
    requests: pd.DataFrame | None
    replicas: pd.DataFrame
    nodes: pd.DataFrame
    timeline: pd.DataFrame
    config: SimConfig


def streams(seed: int) -> dict:
    """Independent random streams, one per concern, from one seed."""
    # spawn(n) gives the same first children for any n: a stream added at the end leaves
    # the others' draws unchanged.
    arrivals, service, routing, platform, timers, clocks, startups, lags = np.random.SeedSequence(seed).spawn(8)
    return {
        "arrivals": np.random.default_rng(arrivals),
        "service": np.random.default_rng(service),
        "platform": np.random.default_rng(platform),  # hop latency jitter
        "timers": np.random.default_rng(timers),  # lateness of the autoscaling timers
        "clocks": np.random.default_rng(clocks),  # where the run starts on Ray's clocks
        "startups": np.random.default_rng(startups),  # each new replica's start-up time
        "lags": np.random.default_rng(lags),  # each response's done-callback lag
        # The router draws one or two small integers per attempt: Python's Mersenne
        # Twister does that ten times faster than a NumPy call, and is as portable.
        "routing": random.Random(int(routing.generate_state(1, np.uint64)[0])),
    }


class Simulation:
    def __init__(self, config: SimConfig):
        self.cfg = config
        self.env = events.Environment()
        self.later = events.later(self.env)  # later(delay, fn, arg): fn(arg) after delay
        self.soon = events.soon(self.env)  # soon(fn, arg): fn(arg) now, after what is due
        self.streams = rngs = streams(config.seed)
        d = config.deployment
        oh = config.overheads
        c = config.cluster
        self.nodes = [
            Node(self.env, i, c.num_cpus, c.physical_cores, oh.contended_core_speed, oh.gil_switch_interval_s,
                 oh.oversubscribed_cpu_factor, tracks_path=oh.idle_wake_s > 0.0,
                 batched_cpu_factor=oh.batched_cpu_factor)
            for i in range(c.nodes)
        ]
        for from_s, speed in c.core_speed_trace:
            for node in self.nodes:
                self.later(from_s, node.set_core_speed, speed)
        head = self.nodes[0]
        self.http = oh.ingress == "http"
        self.hop_s = oh.hop_s
        self.hop = Distribution("lognormal", oh.hop_s, oh.hop_cv).sampler(rngs["platform"])
        self.http_hop_s = oh.http_hop_s if self.http else 0.0
        self.idle_wake_s = oh.idle_wake_s
        self.idle_wake_after_s = oh.idle_wake_after_s
        self.done_callback_lag_s = oh.done_callback_lag_s
        # Lognormal with the measured median and spread (the mean is the median x sqrt(1 + cv^2)).
        cv = oh.done_callback_lag_cv
        lag = (Distribution("lognormal", oh.done_callback_lag_s * math.sqrt(1.0 + cv * cv), cv) if cv > 0.0
               else Distribution("deterministic", oh.done_callback_lag_s))
        self.done_callback_lag = lag.sampler(rngs["lags"])
        self.client_cpu_s = oh.cpu("http_client_cpu_s" if self.http else "client_cpu_s")
        self.proxy_cpu_s = oh.cpu("proxy_cpu_s") if self.http else 0.0
        # C++ threads: the driver's (handle ingress) or the proxy's (HTTP), and Ray's daemons.
        self.caller_native_cpu_s = oh.cpu("proxy_native_cpu_s" if self.http else "client_native_cpu_s")
        self.ray_cpu_per_request_s = oh.cpu("ray_background_cpu_per_request_s")
        self.ray_cpu_per_reject_s = oh.cpu("ray_background_cpu_per_reject_s")
        self.client_process = head.process("http-client" if self.http else "driver")
        router_process = head.process("proxy") if self.http else self.client_process
        self.proxy_process = router_process
        self.ray_process = head.process("ray", on_path=False)  # raylet, GCS, Serve controller, agents
        if not self.http:  # the HTTP load generator is not Ray's, and the proxy's is not measured
            self.client_process.wake = oh.wake_cpu("client")
            if oh.batched_cpu_factor != 1.0:
                self.client_process.others = self._holds_others
        head.occupy(sum(oh.cpu(n) for n in ("ray_background_cores", "driver_idle_cores", "proxy_idle_cores")))

        self.controller = Controller(self, d, oh, Placer(self.nodes, c.placement), rngs["startups"])
        if config.router.policy == "ideal":
            self.router = IdealRouter(self, d.max_queued_requests)
        else:
            self.router = RayRouter(self, config.router, router_process, rngs["routing"], oh, d.max_queued_requests,
                                    local_node=head if self.http else None)
        self.controller.routers.append(self.router)
        self.controller.start(d.initial_replicas)
        self.autoscaler = Autoscaler(d.autoscaling_config) if d.autoscaling_config is not None else None
        if self.autoscaler is not None:
            self._record_late = Distribution("gamma", oh.cpu("metrics_record_late_s"),
                                             oh.metrics_record_late_cv).sampler(rngs["timers"])
            self._push_late = Distribution("gamma", oh.cpu("metrics_push_late_s"),
                                           oh.metrics_push_late_cv).sampler(rngs["timers"])
            self._control_loop_s = CONTROL_LOOP_INTERVAL_S + oh.cpu("control_loop_late_s")
            # Where the run starts on Ray's clocks. Ray stamps metrics with time.time() and
            # the controller rounds merged timestamps to 10 ms, so the digits below 10 ms
            # decide some of its comparisons; and the controller's loop is already turning
            # when the router starts. A real run starts at a uniformly random fraction of a
            # second and point of the loop's period. With punctual timers (the pure model,
            # no lateness) every clock starts at 0, so that timelines are exact.
            clocks = rngs["clocks"]
            punctual = not (oh.metrics_record_late_s or oh.metrics_push_late_s or oh.control_loop_late_s)
            self._clock_offset_s = 0.0 if punctual else float(clocks.uniform(0.0, 1.0))  # time.time() at 0
            self._control_loop_phase_s = 0.0 if punctual else float(clocks.uniform(0.0, self._control_loop_s))
        # The router's sent-but-unfinished requests per replica: the autoscaler's metric,
        # kept only when there is an autoscaler to read it.
        self.sent: dict[int, int] = {}
        self._decision = None  # the autoscaler's last target, applied on the next tick
        self.peak_running = self.controller.count(RUNNING)

        segments = d.work.segments
        self._samplers = [s.duration.sampler(rngs["service"]) for s in segments]
        self.source = make_source(self, config.workload, rngs["arrivals"])
        self.recorder = Recorder(config.workload.warmup_s, config.keep_requests)
        self.in_flight: dict[int, Request] = {}
        # Per replica, when the last message on each connection arrives (see _in_order).
        self._to_replica: dict[int, float] = {}
        self._from_replica: dict[int, float] = {}
        self._next_id = 0
        self.answered = 0
        self._stop_after = None  # set by run()
        self.done = self.env.event()
        self._snapshot = None
        # One row per timeline_interval_s, in arrays of doubles; without a request table
        # at most TIMELINE_MAX_ROWS rows (merged pairwise: see simserve/metrics.py).
        self.timeline = Timeline(config.timeline_interval_s, None if config.keep_requests else TIMELINE_MAX_ROWS)
        self._timeline_busy_s = 0.0  # the nodes' core-seconds busy at the last timeline row

    def _holds_others(self) -> bool:
        """The driver holds more than one request: issued and not yet answered
        (``Process.others``)."""
        return len(self.in_flight) > 1

    # -- the request path ---------------------------------------------------------------
    def issue(self, client: int) -> None:
        samplers = self._samplers
        demand = [samplers[0]()] if len(samplers) == 1 else [s() for s in samplers]
        req = Request(self._next_id, client, self.env._now, demand)
        self._next_id += 1
        self.in_flight[req.id] = req
        if self.client_cpu_s > 0.0:
            self.client_process.run_overhead(self.client_cpu_s, self._to_ingress, req)
        elif self.http:
            self._to_ingress(req)
        else:
            self.router.submit(req)

    def on_queued(self) -> None:
        """The router has taken a new request for its first routing attempt, past
        ``max_queued_requests``: from here it costs the caller's C++ threads (the actor
        call) and Ray's daemons their CPU per request. A request refused by backpressure
        never reaches Ray's core worker, so it costs neither (Ray's router raises
        ``BackPressureError`` in ``assign_request`` before any call is made)."""
        if self.caller_native_cpu_s > 0.0:
            self.proxy_process.burn(self.caller_native_cpu_s)
        if self.ray_cpu_per_request_s > 0.0:
            self.ray_process.burn(self.ray_cpu_per_request_s)
        if self.autoscaler is not None and not self.router.replicas:
            a = self.autoscaler
            if a.metrics.should_push_now(0, self.router.num_queued):
                a.metrics.push(0, self.wall_clock_s, self.router.num_queued, self.sent)

    def _to_ingress(self, req) -> None:
        if not self.http:
            self.router.submit(req)
        elif self.http_hop_s > 0.0:
            self.later(self.message_s(self.proxy_process, self.client_process, self.http_hop_s), self._at_proxy, req)
        else:
            self._at_proxy(req)

    def message_s(self, process, sender, hop_s: float, channel: dict | None = None, key: int = 0) -> float:
        """How long a message from ``sender`` to ``process`` takes: ``hop_s``, plus
        ``idle_wake_s`` when the receiving node's cores had been left to sleep for
        ``idle_wake_after_s`` (``Node.quiet_for_message``: a core, on a virtual machine a
        halted virtual CPU, must be woken); with a ``channel``, never arriving before a
        message sent earlier on it (``_in_order``). Its sending counts as the sender busy,
        its arrival as the receiver busy (``Node.seen``).

        A property of the node's cores, not of the receiving process: a host kept busy by
        its other processes pays it nowhere (one client on 2 to 4 io replicas paid it once
        per request in Ray, as with one replica: validate/README.md item 16). The
        calibration's client idled a gap, then spent its own CPU and sent: from a 5 ms gap
        on it paid the wake-up, so the sender's spell of work before the message does not
        keep the receiver's core awake (item 43). The messages a process receives count as
        work: back to back, where the calibration found no wake-up, the driver waits longer
        than ``idle_wake_after_s`` for a response, but the replica's acceptance reaches it
        before."""
        node = process.node
        if self.idle_wake_s > 0.0 and node.quiet_for_message(self.env._now, sender) >= self.idle_wake_after_s:
            hop_s += self.idle_wake_s
        if channel is not None:
            hop_s = self._in_order(channel, key, hop_s)
        if node.tracks_path:
            node.seen(process, self.env._now + hop_s)
            sender.node.seen(sender, self.env._now)  # its thread is awake to send
        return hop_s

    def _at_proxy(self, req) -> None:
        if self.proxy_cpu_s > 0.0:
            self.proxy_process.run_overhead(self.proxy_cpu_s, self.router.submit, req)
        else:
            self.router.submit(req)

    def to_replica_s(self, replica) -> float:
        """How long a message from the router to ``replica`` takes: a hop, plus a core's
        wake-up if the node's cores slept (``message_s``), but never arriving before one sent
        earlier (calls and probes from one caller to one actor share a connection, which
        keeps order)."""
        return self.message_s(replica.process, self.proxy_process, self.hop(), self._to_replica, replica.index)

    def from_replica_s(self, replica) -> float:
        """The same, back from ``replica`` to the router: answers, probe replies and
        responses keep their order too (an acceptance before its response, always)."""
        return self.message_s(self.proxy_process, replica.process, self.hop(), self._from_replica, replica.index)

    def _in_order(self, channel: dict, key: int, delay_s: float) -> float:
        now = self.env._now
        last = channel.get(key, 0.0)
        if now + delay_s < last:
            delay_s = last - now
        channel[key] = now + delay_s
        return delay_s

    def send(self, req, replica) -> None:
        """The router's actor call; the replica answers accepted or rejected. The
        autoscaling metric counts it as running from the send (Ray's
        ``_register_completion_callback``, in the same step as the queued count's decrement)
        until its done callback, or until a rejection cancels it."""
        if self.autoscaler is not None:
            self.sent[replica.index] = self.sent.get(replica.index, 0) + 1
        if self.hop_s > 0.0:
            self.later(self.to_replica_s(replica), self._arrive, (req, replica))
        else:
            self._deliver(req, replica)

    def _arrive(self, pair) -> None:
        self._deliver(*pair)

    def _deliver(self, req, replica) -> None:
        if not replica.admit(req):
            if self.ray_cpu_per_reject_s > 0.0:
                self.ray_process.burn(self.ray_cpu_per_reject_s)
            replica.answer_reject(self._reply, (self._rejected, req, replica, replica.ongoing))
            return
        if replica.accept_takes:
            replica.begin(req)  # the acceptance leaves after its takes (answer_accepted)
            return
        # _reply((self.router.on_accepted, req, replica, replica.ongoing)), written out: every
        # request is accepted once.
        if self.hop_s > 0.0:
            self.later(self.from_replica_s(replica), self._answer,
                       (self.router.on_accepted, req, replica, replica.ongoing))
        else:
            self.router.on_accepted(req, replica, replica.ongoing)
        replica.begin(req)

    def answer_accepted(self, req, replica, qlen: int) -> None:
        """A replica's acceptance leaves for the router, with its queue length ``qlen``."""
        self._reply((self.router.on_accepted, req, replica, qlen))

    def _reply(self, args) -> None:
        """The replica's first answer to a call, accepted or rejected, on its way back."""
        if self.hop_s > 0.0:
            self.later(self.from_replica_s(args[2]), self._answer, args)
        else:
            self._answer(args)

    def _rejected(self, req, replica, qlen: int) -> None:
        """A rejection reaches the router: ``result.cancel()`` fires the call's done
        callback, which stops counting it as running."""
        if self.autoscaler is not None:
            self.sent[replica.index] -= 1
        self.router.on_rejected(req, replica, qlen)

    @staticmethod
    def _answer(args) -> None:
        answer, req, replica, qlen = args
        answer(req, replica, qlen)

    def on_response_sent(self, replica, req, ended: bool = True) -> None:
        """The response leaves ``replica``; with it the task's end (``ended``), unless the
        replica still holds the slot, when ``on_released`` sends that later."""
        if self.hop_s > 0.0:
            self.later(self.from_replica_s(replica), self._at_router, (req, replica, ended))
        else:
            self._at_router((req, replica, ended))

    def _at_router(self, message) -> None:
        """The response reaches the router's process."""
        req, replica, ended = message
        if ended:
            if self.done_callback_lag_s > 0.0 or self.autoscaler is not None:
                self._task_ended((req, replica))
            else:
                # _task_ended and _done, written out: with no lag to wait for and no count
                # to keep, the done callbacks are the router's (once per request).
                self.router.on_response(req, replica)
        if self.http_hop_s > 0.0:
            self.later(self.message_s(self.client_process, self.proxy_process, self.http_hop_s), self._at_client, req)
        else:
            self._at_client(req)

    def on_released(self, replica, req) -> None:
        """The replica freed the slot after the response: the task's end leaves for the router."""
        if self.hop_s > 0.0:
            self.later(self.from_replica_s(replica), self._task_ended, (req, replica))
        else:
            self._task_ended((req, replica))

    def _task_ended(self, pair) -> None:
        """The task's end reaches the router's process: its done callbacks run
        ``done_callback_lag_s`` (drawn) later."""
        if self.done_callback_lag_s > 0.0:
            self.later(self.done_callback_lag(), self._done, pair)
        else:
            self._done(pair)

    def _done(self, pair) -> None:
        """The router's done callbacks for a finished request."""
        req, replica = pair
        if self.autoscaler is not None:
            self.sent[replica.index] -= 1
        self.router.on_response(req, replica)

    def _at_client(self, req) -> None:
        req.end_s = self.env._now
        if req.status == IN_FLIGHT:
            req.status = OK
        self._finish(req)
        self.source.on_answer(req)

    def on_backpressure(self, req) -> None:
        """``max_queued_requests`` overflow: a 503 straight back to the client."""
        if self.http_hop_s > 0.0:
            self.later(self.http_hop_s, self._rejected_at_client, req)
        else:
            # Through the calendar, so a closed-loop client's next try is not a recursion.
            self.soon(self._rejected_at_client, req)

    def _rejected_at_client(self, req) -> None:
        req.status = REJECTED
        req.end_s = self.env.now
        self._finish(req)
        if self.source.w.kind == "closed":
            self.later(CLIENT_RETRY_PAUSE_S, self.source.on_answer, req)

    def _finish(self, req) -> None:
        del self.in_flight[req.id]
        self.recorder.record(req)
        self.answered += 1
        if self._stop_after is not None and self.answered >= self._stop_after and not self.done.triggered:
            self.done.succeed()

    def _total_requests(self) -> int:
        total = getattr(self.source, "total", None)
        return total if total is not None else self.cfg.workload.requests

    # -- helpers ----------------------------------------------------------------------------
    def at(self, t: float, fn, arg) -> None:
        """Call ``fn(arg)`` at simulated time ``t``."""
        self.later(max(t - self.env.now, 0.0), fn, arg)

    def add_timeline_row(self, row: tuple, answers: int) -> None:
        """One timeline interval's row (``TIMELINE_COLUMNS``) and its number of answers."""
        self.timeline.add(row, answers)

    def _sample_timeline(self, _=None) -> None:
        """One row per ``timeline_interval_s``: the replica counts now, and the answers
        received since the previous row."""
        ctl = self.controller
        dt = self.cfg.timeline_interval_s
        done, lats = self.recorder.take_tick()
        p50, p99 = p50_p99_ms(lats)  # np.percentile(lats, (50, 99)) * 1e3, exactly
        busy = sum(n.core_busy_until_now() for n in self.nodes)
        cores, self._timeline_busy_s = (busy - self._timeline_busy_s) / dt, busy
        self.add_timeline_row(
            (
                self.env.now,
                ctl.target,
                ctl.count(RUNNING),
                ctl.count(STARTING),
                ctl.count(STOPPING),
                ctl.count(PENDING),
                sum(r.ongoing for r in ctl.replicas),
                self.router.num_queued,
                done / dt,
                p50,
                p99,
                cores,
            ),
            done,
        )
        if self.env.peek() < float("inf"):  # stop sampling once nothing else can happen
            self.later(dt, self._sample_timeline, None)

    # -- autoscaling ---------------------------------------------------------------------------
    # Ray runs each periodic task, then sleeps its full interval (``MetricsPusher``, the
    # controller's ``run_control_loop``), so every turn comes a little later than the
    # interval and the tasks drift against each other: where the sample's and the push's
    # periods meet, either may run first, and that decides what the controller sees. The
    # router's two tasks are asyncio tasks on the router's loop: a turn whose sleep has
    # ended waits there behind the routing (the lateness drawn per turn is the measured
    # one at concurrency 1, where the loop is idle).
    @property
    def wall_clock_s(self) -> float:
        """Ray's ``time.time()`` now: what the autoscaling metrics and timers read."""
        return self.env.now + self._clock_offset_s

    def _record_metrics(self, _=None) -> None:
        self.router.run_on_loop(self._record_turn, None)

    def _record_turn(self, _) -> None:
        """The router's metrics sample, every ``sample_interval_s`` plus its lateness."""
        running = {r.index for r in self.controller.running()}
        self.sent = {k: n for k, n in self.sent.items() if n or k in running}
        self.autoscaler.metrics.record(0, self.wall_clock_s, self.router.num_queued, self.sent)
        self.later(self.autoscaler.config.sample_interval_s + self._record_late(), self._record_metrics, None)

    def _push_metrics(self, _=None) -> None:
        self.router.run_on_loop(self._push_turn, None)

    def _push_turn(self, _) -> None:
        self.autoscaler.metrics.push(0, self.wall_clock_s, self.router.num_queued, self.sent)
        self.later(self.autoscaler.config.push_interval_s + self._push_late(), self._push_metrics, None)

    def _control_loop(self, _=None) -> None:
        """The controller's loop: apply the last decision, then decide again."""
        ctl = self.controller
        if self._decision is not None and self._decision != ctl.target:
            ctl.set_target(self._decision)
        running = [r.index for r in ctl.running()]
        self.peak_running = max(self.peak_running, len(running))
        self._decision = self.autoscaler.step(self.wall_clock_s, running, ctl.target)
        self.later(self._control_loop_s, self._control_loop, None)

    def _take_snapshot(self, _=None) -> None:
        self._snapshot = self._measure()

    def _measure(self) -> dict:
        return {
            "t": self.env.now,
            "replicas": [r.stats_now() for r in self.controller.replicas],
            "cores": [n.core_busy_until_now() for n in self.nodes],
            "queued": self.router.queued_area_now(),
            "probes": self.router.probes,
            "probe_timeouts": self.router.probe_timeouts,
            "attempts": self.router.attempts,
            "wake_cpu": (self.client_process.wake_cpu_s, sum(r.process.wake_cpu_s for r in self.controller.replicas if r.process is not None)),
            "handoff_cpu": sum(r.process.handoff_cpu_s for r in self.controller.replicas if r.process is not None),
            "oversubscribed_cpu": self.oversubscribed_cpu_by_role(),
            "batched_cpu": (self.client_process.batched_cpu_s,
                            sum(r.process.batched_cpu_s for r in self.controller.replicas if r.process is not None)),
        }

    def oversubscribed_cpu_by_role(self) -> dict:
        """The CPU oversubscribed cores have added to the ``Overheads`` costs so far, by the
        process role the harness measures (with handle ingress the router is the driver's)."""
        reps = sum(r.process.oversubscribed_cpu_s for r in self.controller.replicas if r.process is not None)
        proxy = self.proxy_process.oversubscribed_cpu_s if self.http else 0.0
        return {"driver": self.client_process.oversubscribed_cpu_s, "proxy": proxy, "replica": reps,
                "background": self.ray_process.oversubscribed_cpu_s}

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> SimResult:
        with fewer_collections():
            return self._run()

    def _run(self) -> SimResult:
        wall0 = time.perf_counter()
        w = self.cfg.workload
        if w.warmup_s > 0.0:
            self.later(w.warmup_s, self._take_snapshot, None)
        else:
            self._take_snapshot()
        if self.autoscaler is not None:
            self._record_metrics()  # a router's first sample, then its first push
            self._push_metrics()
            self.later(self._control_loop_phase_s, self._control_loop, None)
        # Answers after which the run is over (``requests`` runs only).
        self._stop_after = self._total_requests() if w.requests is not None else None
        self.source.start()
        self.later(self.cfg.timeline_interval_s, self._sample_timeline, None)
        if w.requests is not None:
            until = self.done if w.duration_s is None else simpy.AnyOf(self.env, [self.done, self.env.timeout(w.duration_s)])
            if self._total_requests() > 0:
                try:
                    events.run(self.env, until)
                except RuntimeError as e:
                    # Nothing left to happen (no replica can ever serve): end here, with
                    # the unserved requests in flight, as a real run would hang.
                    if "No scheduled events left" not in str(e):
                        raise
        else:
            events.run(self.env, w.duration_s)
        if self._snapshot is None:  # the run ended inside the warm-up
            self._take_snapshot()
        end = self._measure()
        return self._result(self._snapshot, end, time.perf_counter() - wall0)

    def _result(self, start: dict, end: dict, wall_s: float) -> SimResult:
        cfg = self.cfg
        window = end["t"] - start["t"]
        rec = self.recorder
        rep_rows = []
        n_start = len(start["replicas"])
        for r, b in zip(self.controller.replicas, end["replicas"]):
            a = start["replicas"][r.index] if r.index < n_start else None
            row = {
                "replica": r.index,
                "node": r.node.index if r.node is not None else -1,
                "state": r.state,
                "created_s": r.created_s,
                "running_since_s": r.running_since_s,
            }
            if window <= 0:
                row.update(completed=0, rejected=0, utilisation=0.0, mean_ongoing=0.0, loop_busy=0.0, gil_busy=0.0)
            else:
                a = a or dict.fromkeys(b, 0)  # created after the window opened
                row.update(
                    completed=b["completed"] - a["completed"],
                    rejected=b["rejected"] - a["rejected"],
                    utilisation=(b["busy_s"] - a["busy_s"]) / window,
                    mean_ongoing=(b["ongoing_area"] - a["ongoing_area"]) / window,
                    loop_busy=(b["loop_busy_s"] - a["loop_busy_s"]) / window if r.is_async else float("nan"),
                    gil_busy=(b["gil_busy_s"] - a["gil_busy_s"]) / window,
                )
            rep_rows.append(row)
        replicas = pd.DataFrame(rep_rows, columns=REPLICA_COLUMNS)
        node_rows = []
        for n, a, b in zip(self.nodes, start["cores"], end["cores"]):
            node_rows.append(
                {
                    "node": n.index,
                    "logical_cpus": n.num_cpus,
                    "logical_reserved_cpus": n.reserved_cpus,
                    "logical_reserved": n.reserved_cpus / n.num_cpus if n.num_cpus else float("nan"),
                    "physical_cores": n.physical_cores,
                    "physical_busy": (b - a) / (n.physical_cores * window) if window > 0 else float("nan"),
                }
            )
        nodes = pd.DataFrame(node_rows)
        ctl = self.controller
        running = ctl.count(RUNNING)
        routed = max(1, rec.completed_in_window)
        summary = {
            "throughput_rps": rec.completed_in_window / window if window > 0 else float("nan"),
            "latency_ms": rec.latency_ms(),
            "queue_wait_ms": {"mean": 1e3 * rec.wait_sum_s / rec.completed if rec.completed else float("nan")},
            "completed": rec.completed,
            "rejected": rec.rejected,
            "failed": rec.failed,
            "in_flight": len(self.in_flight),
            "replicas": {"requested": ctl.target, "running": running, "pending": ctl.count(PENDING)},
            "nodes": node_rows,
            "router": {
                "policy": cfg.router.policy,
                "mean_queued": (end["queued"] - start["queued"]) / window if window > 0 else float("nan"),
                "probes_per_request": (end["probes"] - start["probes"]) / routed,
                "probe_timeouts_per_request": (end["probe_timeouts"] - start["probe_timeouts"]) / routed,
                "attempts_per_request": (end["attempts"] - start["attempts"]) / routed,
                "rejections_per_request": sum(row.get("rejected", 0) for row in rep_rows) / routed,
            },
            # Overheads.*_wake_cpu_s as charged: CPU burned on wake-ups, per request answered.
            "wake_cpu_ms_per_request": {
                role: 1e3 * (b - a) / routed for role, a, b in zip(("driver", "replica"), start["wake_cpu"], end["wake_cpu"])
            },
            # Overheads.replica_gil_handoff_cpu_s as charged, per request answered.
            "gil_handoff_cpu_ms_per_request": 1e3 * (end["handoff_cpu"] - start["handoff_cpu"]) / routed,
            # Overheads.oversubscribed_cpu_factor as charged: the CPU it added, per request answered.
            "oversubscribed_cpu_ms_per_request": {
                role: 1e3 * (end["oversubscribed_cpu"][role] - start["oversubscribed_cpu"][role]) / routed
                for role in end["oversubscribed_cpu"]
            },
            # Overheads.batched_cpu_factor as charged: the CPU it took off, per request answered.
            "batched_cpu_saved_ms_per_request": {
                role: 1e3 * (b - a) / routed for role, a, b in zip(("driver", "replica"), start["batched_cpu"], end["batched_cpu"])
            },
            "sim_time_s": end["t"],
            "window_s": window,
            "wall_time_s": wall_s,
            "seed": cfg.seed,
        }
        if self.autoscaler is not None:
            summary["autoscaling"] = {
                "peak_running_replicas": self.peak_running,
                "final_target": self.controller.target,
                "last_total_ongoing": self.autoscaler.last_total,
            }
        summary["bottleneck"] = diagnose(cfg, summary, replicas)
        summary["config"] = cfg.to_dict()
        requests = None
        if cfg.keep_requests:
            requests = rec.requests_frame(sorted(self.in_flight.values(), key=lambda r: r.id))
        self.timeline.finish()
        timeline = self.timeline.frame()
        return SimResult(summary, requests, replicas, nodes, timeline, cfg)


def simulate(config: SimConfig) -> SimResult:
    """Run one simulation of ``config`` and return its summary and tables.

    Configurations that are a plain FCFS queue take ``fcfs.run``, which gives the same
    times without an event calendar."""
    sim = Simulation(config)
    if fcfs.eligible(sim):
        return fcfs.run(sim)
    return sim.run()
