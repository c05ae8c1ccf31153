"""The simulated world, described once: frozen dataclasses named like Ray Serve's own.

``SimConfig`` holds a ``DeploymentConfig`` (``num_replicas``, ``num_cpus`` from
``ray_actor_options``, ``max_ongoing_requests``, ``max_queued_requests``, the handler
kind and its ``WorkModel``), a ``ClusterConfig`` (nodes with logical CPUs and physical
cores), a ``RouterConfig`` (Ray 2.60's routing constants), ``Overheads`` (what Ray's
own machinery costs per request) and a ``WorkloadConfig``.

Every check lives in this module, and each failure raises ``ConfigError`` naming the
field and the value, so the command line can turn it into a one-line message.
Configurations are inert: nothing here runs a simulation.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from simserve.distributions import KINDS, Distribution
from simserve.load_shape import LoadShape

if TYPE_CHECKING:  # autoscaling.py imports this module's checks
    from simserve.autoscaling import AutoscalingConfig

SEGMENT_KINDS = ("io", "gil", "native")
HANDLERS = ("async", "sync")
ROUTERS = ("pow2", "round_robin", "ideal")
INGRESSES = ("handle", "http")
PLACEMENTS = ("spread", "pack")
TIMER_LATENESS = ("metrics_record_late_s", "metrics_record_late_cv", "metrics_push_late_s", "metrics_push_late_cv",
                  "control_loop_late_s")
WAKE_TABLE = ("wake_idle_s", "client_wake_cpu_s", "replica_wake_cpu_s")


class WakeCost:
    """``cost(g)``: piecewise linear through the points, 0 before the first, flat after
    the last."""

    __slots__ = ("gaps", "costs", "first")

    def __init__(self, gaps: tuple, costs: tuple):
        self.gaps, self.costs, self.first = gaps, costs, gaps[0]

    def __call__(self, g: float) -> float:
        if g < self.first:
            return 0.0
        gaps = self.gaps
        i = bisect.bisect_right(gaps, g)
        if i == len(gaps):
            return self.costs[-1]
        g0, g1, c0, c1 = gaps[i - 1], gaps[i], self.costs[i - 1], self.costs[i]
        return c0 + (c1 - c0) * (g - g0) / (g1 - g0)


# Loads in cores that run with or without traffic.
IDLE_CORES = ("ray_background_cores", "driver_idle_cores", "proxy_idle_cores", "replica_idle_cores")
PER_REQUEST_COSTS = (
    "hop_s",
    "http_hop_s",
    "client_cpu_s",
    "router_cpu_s",
    "router_attempt_cpu_s",
    "probe_cpu_s",
    "replica_cpu_s",
    "replica_post_cpu_s",
    "replica_probe_cpu_s",
    "proxy_cpu_s",
    "http_client_cpu_s",
    "client_native_cpu_s",
    "proxy_native_cpu_s",
    "replica_native_cpu_s",
    "replica_sync_cpu_s",
    "replica_sync_native_cpu_s",
    "probe_native_cpu_s",
    "replica_probe_native_cpu_s",
    "ray_background_cpu_per_request_s",
    "reject_cpu_s",
    "reject_native_cpu_s",
    "replica_reject_cpu_s",
    "replica_reject_native_cpu_s",
    "ray_background_cpu_per_reject_s",
)
# The costs ``cpu_speed`` divides (read through ``Overheads.cpu``, the wake-up tables
# through ``Overheads.wake_cpu``): CPU work and the
# lateness of Ray's periodic tasks (their own run time). Hops, the start-up's fixed wait,
# wake-up delays, spreads and host properties are not CPU work here and are not scaled.
SPEED_SCALED = frozenset(
    [n for n in PER_REQUEST_COSTS if n not in ("hop_s", "http_hop_s")]
    + [*IDLE_CORES, "metrics_record_late_s", "metrics_push_late_s", "control_loop_late_s", "replica_startup_cpu_s",
       "replica_gil_handoff_cpu_s", "client_wake_cpu_s", "replica_wake_cpu_s"]
)


class ConfigError(ValueError):
    """An invalid configuration value; ``field`` uses Ray's (snake_case) name."""

    def __init__(self, field: str, value, message: str):
        self.field = field
        self.value = value
        self.message = message
        super().__init__(f"{field}={value!r}: {message}")


def _number(field: str, value, *, low=None, low_open=False, integer=False, allow=()):
    """Check one numeric field; ``allow`` lists extra accepted sentinel values."""
    if value in allow:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(field, value, "must be a finite number")
    if integer and int(value) != value:
        raise ConfigError(field, value, "must be a whole number")
    if low is not None and (value <= low if low_open else value < low):
        bound = f"> {low}" if low_open else f">= {low}"
        extra = f" or one of {list(allow)}" if allow else ""
        raise ConfigError(field, value, f"must be {bound}{extra}")


def _choice(field: str, value, choices):
    if value not in choices:
        raise ConfigError(field, value, f"must be one of {', '.join(choices)}")


def check_distribution(field: str, dist: Distribution) -> None:
    _choice(f"{field}.kind", dist.kind, KINDS)
    if dist.kind == "empirical":
        if not dist.samples_s:
            raise ConfigError(field, dist.samples_s, "empirical samples are empty")
        for s in dist.samples_s:
            _number(f"{field}.samples_s", s, low=0)
        return
    _number(f"{field}.mean_s", dist.mean_s, low=0)
    _number(f"{field}.cv", dist.cv, low=0)


@dataclass(frozen=True)
class Segment:
    """One phase of a request's work.

    ``io`` waits without CPU (sleep, remote call); ``gil`` is pure-Python CPU that holds
    its process's GIL; ``native`` is CPU that releases the GIL and runs on up to
    ``OMP_NUM_THREADS`` threads. ``duration`` is the time the segment takes alone on an
    idle core (for ``native``: its single-thread CPU time, split evenly over threads).
    """

    kind: str
    duration: Distribution

    def __post_init__(self):
        _choice("work.kind", self.kind, SEGMENT_KINDS)
        check_distribution(f"work.{self.kind}", self.duration)


@dataclass(frozen=True)
class WorkModel:
    """The handler's work per request: segments run in order."""

    segments: tuple[Segment, ...] = (Segment("io", Distribution("deterministic", 0.1)),)

    def __post_init__(self):
        if not self.segments:
            raise ConfigError("work", (), "needs at least one segment")

    @classmethod
    def single(cls, kind: str, dist: Distribution) -> "WorkModel":
        return cls((Segment(kind, dist),))

    @property
    def mean_s(self) -> float:
        return sum(s.duration.mean_s for s in self.segments)

    def mean_of(self, kind: str) -> float:
        return sum(s.duration.mean_s for s in self.segments if s.kind == kind)


@dataclass(frozen=True)
class DeploymentConfig:
    """One Serve deployment (``@serve.deployment`` arguments, Ray's names and defaults)."""

    name: str = "Model"
    num_replicas: int | str | None = 1  # an int, or "auto"/None with autoscaling
    num_cpus: float = 1.0  # ray_actor_options.num_cpus
    max_ongoing_requests: int = 5  # DEFAULT_MAX_ONGOING_REQUESTS (serve/_private/constants.py)
    max_queued_requests: int = -1  # serve/_private/config.py: -1 is unlimited
    handler: str = "async"  # async def or plain def (sync runs in a threadpool)
    work: WorkModel = field(default_factory=WorkModel)
    init_s: float = 0.0  # the user's __init__ (model loading), on top of Ray's start-up
    graceful_shutdown_wait_loop_s: float = 2.0  # DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S
    graceful_shutdown_timeout_s: float = 20.0  # DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S
    autoscaling_config: AutoscalingConfig | None = None

    def __post_init__(self):
        from simserve.autoscaling import check_deployment

        if not isinstance(self.num_replicas, str) and self.num_replicas is not None:
            _number("num_replicas", self.num_replicas, low=1, integer=True)
        # Ray's rule for num_replicas beside autoscaling_config; keep the effective config.
        object.__setattr__(self, "autoscaling_config", check_deployment(self.num_replicas, self.autoscaling_config))
        _number("num_cpus", self.num_cpus, low=0)
        _number("max_ongoing_requests", self.max_ongoing_requests, low=1, integer=True)
        _number("max_queued_requests", self.max_queued_requests, low=1, integer=True, allow=(-1,))
        _choice("handler", self.handler, HANDLERS)
        _number("init_s", self.init_s, low=0)
        _number("graceful_shutdown_wait_loop_s", self.graceful_shutdown_wait_loop_s, low=0, low_open=True)
        _number("graceful_shutdown_timeout_s", self.graceful_shutdown_timeout_s, low=0)

    @property
    def initial_replicas(self) -> int:
        """Replicas deployed at t=0: num_replicas, or the autoscaler's initial target."""
        a = self.autoscaling_config
        return a.initial_target if a is not None else self.num_replicas

    @property
    def omp_num_threads(self) -> int:
        """What Ray sets for an actor when unset: max(floor(num_cpus), 1) (_private/utils.py)."""
        return max(int(math.floor(self.num_cpus)), 1)


@dataclass(frozen=True)
class ClusterConfig:
    """Identical nodes; ``num_cpus`` is Ray's logical CPUs per node (``ray.init(num_cpus=)``),
    ``physical_cores`` what the OS time-shares. ``placement`` is Serve's replica
    scheduling strategy: SPREAD by default, PACK with RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY=1.

    ``core_speed_trace`` is the host's speed over time, as ``(from_s, speed)`` pairs in
    ascending time: from ``from_s`` on, every core of every node does ``speed`` times its
    normal work per second (all of it: the handlers' and Ray's alike). A shared virtual
    machine's cores are not a constant: on the project's machine a fixed pure-Python probe
    read about 35 and about 58 ns per iteration in turn within one run, for spells of a
    few hundred milliseconds (validate/README.md). Empty: a constant speed of 1.
    ``Overheads.cpu_speed`` differs: it rescales the calibrated costs once, not the user's
    work."""

    nodes: int = 1
    num_cpus: float = 8.0
    physical_cores: float = 8.0
    placement: str = "spread"
    core_speed_trace: tuple = ()

    def __post_init__(self):
        _number("nodes", self.nodes, low=1, integer=True)
        _number("cluster_cpus", self.num_cpus, low=0)
        _number("physical_cores", self.physical_cores, low=0, low_open=True)
        _choice("placement", self.placement, PLACEMENTS)
        if not isinstance(self.core_speed_trace, (tuple, list)):
            raise ConfigError("core_speed_trace", self.core_speed_trace, "must be (from_s, speed) pairs")
        last = 0.0
        for pair in self.core_speed_trace:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ConfigError("core_speed_trace", pair, "must be (from_s, speed) pairs")
            from_s, speed = pair
            _number("core_speed_trace.from_s", from_s, low=last)
            _number("core_speed_trace.speed", speed, low=0, low_open=True)
            last = from_s
        object.__setattr__(self, "core_speed_trace", tuple(tuple(p) for p in self.core_speed_trace))


@dataclass(frozen=True)
class RouterConfig:
    """The caller-side request router and Ray 2.60's constants for it.

    ``pow2`` is ``PowerOfTwoChoicesRequestRouter``; ``round_robin`` samples one replica
    in turn with the same cache, probe and back-off machinery; ``ideal`` is no Ray
    router at all but the reference point: the oldest waiting request goes to the first
    free slot at once.
    """

    policy: str = "pow2"
    queue_len_cache_timeout_s: float = 10.0  # RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S
    initial_backoff_s: float = 0.025  # RAY_SERVE_ROUTER_RETRY_INITIAL_BACKOFF_S
    backoff_multiplier: float = 2.0  # RAY_SERVE_ROUTER_RETRY_BACKOFF_MULTIPLIER
    max_backoff_s: float = 0.5  # RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S
    max_num_routing_tasks_cap: int = 50  # RequestRouter.max_num_routing_tasks_cap
    # A probe unanswered by then counts as no answer: RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S,
    # doubled per back-off step up to RAY_SERVE_MAX_QUEUE_LENGTH_RESPONSE_DEADLINE_S.
    queue_len_response_deadline_s: float = 0.1
    max_queue_len_response_deadline_s: float = 1.0

    def __post_init__(self):
        _choice("router", self.policy, ROUTERS)
        _number("queue_len_cache_timeout_s", self.queue_len_cache_timeout_s, low=0)
        _number("initial_backoff_s", self.initial_backoff_s, low=0)
        _number("backoff_multiplier", self.backoff_multiplier, low=1)
        _number("max_backoff_s", self.max_backoff_s, low=0)
        _number("max_num_routing_tasks_cap", self.max_num_routing_tasks_cap, low=1, integer=True)
        _number("queue_len_response_deadline_s", self.queue_len_response_deadline_s, low=0, low_open=True)
        _number("max_queue_len_response_deadline_s", self.max_queue_len_response_deadline_s, low=0)


@dataclass(frozen=True)
class Overheads:
    """What Ray Serve's own machinery costs, beside the user's handler.

    Costs with ``cpu`` in the name are CPU seconds. Python-level costs (no ``native``)
    run as GIL-holding work in the process that pays them (the driver or HTTP load
    generator, the proxy, the replica), so they compete with the handlers for the GIL
    and the cores; ``native`` costs are C++ core-worker and gRPC threads, which burn a
    core without the GIL and run beside the request rather than in its path (the
    caller's, ``client_native_cpu_s`` or ``proxy_native_cpu_s``, from the moment the router
    takes the request: one that ``max_queued_requests`` refuses never reaches them). Ray's
    own processes (raylet, GCS, controller, agents) use ``ray_background_cores`` all the
    time plus ``ray_background_cpu_per_request_s`` per request the router takes and
    ``ray_background_cpu_per_reject_s`` per rejected send, on the first node; the
    driver, the proxy and each replica burn ``*_idle_cores`` while they live.
    ``contended_core_speed`` is how fast a core runs when all of the node's cores are
    busy, relative to one busy core alone (a host property, measured, not a Ray cost);
    ``oversubscribed_cpu_factor`` is how much dearer the per-request and per-event CPU
    costs are when handler threads take all of the node's cores, ``batched_cpu_factor``
    how much cheaper when the driver's or a replica's threads are already at work on
    another request;
    ``gil_switch_interval_s`` is CPython's, read from the interpreter.
    One-way message latencies are lognormal with mean ``hop_s`` and coefficient of
    variation ``hop_cv``. The ``*_late_*`` fields are how late each turn of Ray's periodic
    autoscaling tasks starts (the router's metrics sample and push, the controller's loop).
    ``done_callback_lag_s`` is how long after its response the router learns that a
    request's replica task has ended (the median; lognormal with coefficient of variation
    ``done_callback_lag_cv``). ``*_wake_cpu_s`` is what a process burns when work
    wakes it from idleness, beyond the per-request costs (a table over ``wake_idle_s``).
    ``cpu_speed`` scales every CPU cost: 0.5 means this host runs at half the speed the
    costs were measured at.

    All default to zero (the pure queueing model); ``python -m validate.calibrate``
    measures them on real Ray and ``--calibration FILE`` loads them
    (``simserve/calibration.py``).
    """

    ingress: str = "handle"
    hop_s: float = 0.0  # one way, caller <-> replica, per Ray actor-call message
    hop_cv: float = 0.0
    http_hop_s: float = 0.0  # one way, HTTP client <-> proxy
    client_cpu_s: float = 0.0  # driver (handle ingress): client loop + handle call + reply
    router_cpu_s: float = 0.0  # caller side, per request sent (one at a time: its attempt, send, done callback)
    # Of router_cpu_s, what each routing attempt (candidate set) costs, sent or not: a router
    # polling full replicas pays this (and its probes) per attempt, the rest per send.
    router_attempt_cpu_s: float = 0.0
    probe_cpu_s: float = 0.0  # caller side, per queue-length probe sent
    replica_cpu_s: float = 0.0  # replica side, per request (admit, deserialise, reply, release)
    replica_post_cpu_s: float = 0.0  # replica side, after the response left, still holding the slot
    replica_probe_cpu_s: float = 0.0  # replica side, per probe answered
    proxy_cpu_s: float = 0.0  # HTTP proxy, per request (uvicorn, ASGI, pickling)
    http_client_cpu_s: float = 0.0  # HTTP load generator, per request
    client_native_cpu_s: float = 0.0  # driver's C++ threads, per request
    proxy_native_cpu_s: float = 0.0  # proxy's C++ threads, per request
    replica_native_cpu_s: float = 0.0  # replica's C++ threads, per request
    # A plain ``def`` handler's call through the replica's thread pool (anyio's
    # to_thread.run_sync), beyond what an ``async def`` handler's call costs: Python and
    # C++ CPU per request. Charged only to def (sync) handlers.
    replica_sync_cpu_s: float = 0.0
    replica_sync_native_cpu_s: float = 0.0
    probe_native_cpu_s: float = 0.0  # caller's C++ threads, per queue-length probe sent
    replica_probe_native_cpu_s: float = 0.0  # replica's C++ threads, per probe answered
    ray_background_cores: float = 0.0  # Ray's own processes, always (cores)
    # What the request path's processes burn with no traffic at all (their periodic tasks:
    # the handle's metrics pushes and long poll in the driver, the proxy's, a replica's
    # health checks and metrics), in cores for as long as each lives: the driver's and the
    # proxy's on the first node (Serve runs a proxy whichever the ingress), a replica's on
    # its node from RUNNING until it exits. Per-request costs are measured above them. The
    # driver's is a Ray driver's (a handle's tasks), charged with HTTP ingress too, as in
    # the harness, whose HTTP load generator is its Ray driver.
    driver_idle_cores: float = 0.0
    proxy_idle_cores: float = 0.0
    replica_idle_cores: float = 0.0
    ray_background_cpu_per_request_s: float = 0.0  # Ray's own processes, per request
    # A send the replica rejects (it was full): the caller's Python to take the answer and
    # queue the request again, beyond routing it again (router_cpu_s);
    # its C++ threads; the replica's Python (its main loop, which also logs a warning) and
    # C++ threads; and Ray's own processes.
    reject_cpu_s: float = 0.0
    reject_native_cpu_s: float = 0.0
    replica_reject_cpu_s: float = 0.0
    replica_reject_native_cpu_s: float = 0.0
    ray_background_cpu_per_reject_s: float = 0.0
    replica_startup_s: float = 0.0  # Ray's part of a new replica's start: allocation to RUNNING
    replica_startup_cv: float = 0.0  # its spread from replica to replica (a gamma draw)
    # Of replica_startup_s, the CPU the new replica's own process spends starting (the
    # interpreter, Ray's and Serve's modules, the actor): one thread's work on its node, so
    # a busy or slow host stretches the start.
    replica_startup_cpu_s: float = 0.0
    contended_core_speed: float = 1.0  # a core's speed with all cores busy, relative to one alone
    # How much more CPU the per-request and per-event costs above take when they start on a
    # node whose cores are all taken by handler threads (cpu.Node.overhead_cpu): Ray's code
    # then competes with CPU-bound threads for its core. Measured on the driver's and the
    # replica's CPU per request beside spinning processes; not a speed (cpu_speed does not
    # scale it). Start-ups, idle rates and timer lateness are not scaled.
    oversubscribed_cpu_factor: float = 1.0
    # How much of its CPU one of those costs takes when it starts while its process is
    # already at work (its threads busy) and holds another request too (the driver: more
    # than one request in flight; a replica: more than one ongoing): Ray's event loops and
    # gRPC threads then take several requests' messages in one wake-up, with warm caches
    # (cpu.Process.overhead_cpu). Measured on the driver's and the replica's CPU per no-op
    # request with 4 in flight against 1 (validate.batched_cpu); 1: no such saving. The
    # proxy and the HTTP load generator keep 1 (not measured).
    batched_cpu_factor: float = 1.0
    gil_switch_interval_s: float = 0.0  # CPython's sys.getswitchinterval(); 0: pure processor sharing
    # Separate GIL acquisitions the replica's Ray machinery makes per request (receive, hand to
    # the user loop, reply...); replica_cpu_s is spread over them, and each waits for the GIL
    # like any other thread when a handler holds it.
    replica_gil_acquisitions: int = 1
    # Of those, the takes before the acceptance's answer leaves for the router
    # (handle_request_with_rejection yields it once _wrap_request and _start_request have
    # run); the rest come between it and the handler. 0: the answer leaves on admission.
    replica_accept_gil_acquisitions: int = 0
    # More of the same machinery's takes after the handler: before the response leaves
    # (the result handed back to the main loop and sent), and after it, before the slot is
    # free and the task's end goes to the caller (the generator closed, the semaphore
    # released). Each burns an equal share of replica_cpu_s with the takes before.
    replica_response_gil_acquisitions: int = 0
    replica_release_gil_acquisitions: int = 0
    replica_probe_gil_acquisitions: int = 1  # the same for answering one queue-length probe
    # What a replica's thread spends beyond its work each time it takes the GIL from another
    # thread that holds it: it slept on the GIL and is woken (two context switches, caches
    # gone cold). Added to that take's GIL work, so a CPU-bound handler makes Ray's takes
    # dearer as well as later, and to a def handler's work once per switch interval while
    # another handler thread wants the GIL too (they take turns). Paid only where a take
    # waits, so never with gil_switch_interval_s = 0 (pure processor sharing has no hand-overs).
    replica_gil_handoff_cpu_s: float = 0.0
    # How late each turn of Ray's periodic autoscaling tasks starts, beyond its interval: the
    # task's own run time plus its event loop's wake-up (Ray sleeps the full interval after
    # each run, so the lateness accumulates). Per turn a gamma draw with this mean and cv.
    metrics_record_late_s: float = 0.0  # a router's metrics sample
    metrics_record_late_cv: float = 0.0
    metrics_push_late_s: float = 0.0  # a router's push to the controller
    metrics_push_late_cv: float = 0.0
    control_loop_late_s: float = 0.0  # the controller's loop, every turn (its loop body)
    # How late a routing task's back-off sleep ends on this host: asyncio's timer and the
    # router thread's wake-up, with the loop otherwise idle (a busy loop's own delay is
    # modelled: the task's turn waits behind the step under way).
    backoff_sleep_late_s: float = 0.0
    # A message (a hop) to a node whose request-path processes, other than the sender, had
    # been quiet (no work, no message) for idle_wake_after_s when the sender's spell of work
    # began arrives idle_wake_s later: on a virtual machine the idle core must be woken
    # first (Simulation.message_s). A property of the host, not of Ray.
    idle_wake_s: float = 0.0
    idle_wake_after_s: float = 0.0
    # The CPU a process spends when work wakes it after its Python threads have idled g
    # seconds, beyond what the per-request costs above (measured back to back) include:
    # piecewise linear through (wake_idle_s[i], *_wake_cpu_s[i]), 0 before the first
    # point, flat after the last. It runs beside the path on a thread of its own, taking a
    # core but holding nothing up. The driver (handle ingress) and the replicas.
    wake_idle_s: tuple = ()
    client_wake_cpu_s: tuple = ()
    replica_wake_cpu_s: tuple = ()
    # How long after a response reaches the caller its router's done callbacks run (they
    # wait for the end of the replica's task, not for the response): the queue-length
    # cache's decrement and the autoscaling count of running requests come that late.
    done_callback_lag_s: float = 0.0
    # Its spread from request to request: the lag is drawn lognormal with median
    # done_callback_lag_s. Where it falls against the client's and router's CPU before the
    # next routing decision decides whether that decision sees the slot freed.
    done_callback_lag_cv: float = 0.0
    cpu_speed: float = 1.0

    def __post_init__(self):
        _choice("ingress", self.ingress, INGRESSES)
        others = ("hop_cv", *IDLE_CORES, "replica_startup_s", "replica_startup_cv", "replica_startup_cpu_s",
                  "gil_switch_interval_s", "idle_wake_s", "idle_wake_after_s", "done_callback_lag_s",
                  "done_callback_lag_cv",
                  "backoff_sleep_late_s", "replica_gil_handoff_cpu_s")
        for name in PER_REQUEST_COSTS + others + TIMER_LATENESS:
            _number(name, getattr(self, name), low=0)
        _number("replica_gil_acquisitions", self.replica_gil_acquisitions, low=1, integer=True)
        _number("replica_accept_gil_acquisitions", self.replica_accept_gil_acquisitions, low=0, integer=True)
        if self.replica_accept_gil_acquisitions > self.replica_gil_acquisitions:
            raise ConfigError("replica_accept_gil_acquisitions", self.replica_accept_gil_acquisitions,
                              f"must be <= replica_gil_acquisitions ({self.replica_gil_acquisitions})")
        _number("replica_response_gil_acquisitions", self.replica_response_gil_acquisitions, low=0, integer=True)
        _number("replica_release_gil_acquisitions", self.replica_release_gil_acquisitions, low=0, integer=True)
        _number("replica_probe_gil_acquisitions", self.replica_probe_gil_acquisitions, low=1, integer=True)
        _number("cpu_speed", self.cpu_speed, low=0, low_open=True)
        _number("contended_core_speed", self.contended_core_speed, low=0, low_open=True)
        _number("oversubscribed_cpu_factor", self.oversubscribed_cpu_factor, low=0, low_open=True)
        _number("batched_cpu_factor", self.batched_cpu_factor, low=0, low_open=True)
        if self.batched_cpu_factor > 1:
            raise ConfigError("batched_cpu_factor", self.batched_cpu_factor, "must be <= 1")
        if self.router_attempt_cpu_s > self.router_cpu_s:
            raise ConfigError("router_attempt_cpu_s", self.router_attempt_cpu_s,
                              f"must be <= router_cpu_s ({self.router_cpu_s})")
        self._wake_table()
        if self.replica_startup_cpu_s > self.replica_startup_s:
            raise ConfigError("replica_startup_cpu_s", self.replica_startup_cpu_s,
                              f"must be <= replica_startup_s ({self.replica_startup_s})")
        if self.contended_core_speed > 1:
            raise ConfigError("contended_core_speed", self.contended_core_speed, "must be <= 1")

    @property
    def is_zero(self) -> bool:
        """No per-request cost at all: the pure queueing model."""
        return all(getattr(self, n) == 0.0 for n in PER_REQUEST_COSTS)

    @property
    def idle_load(self) -> bool:
        """Some process burns cores with no traffic (``IDLE_CORES``)."""
        return any(getattr(self, n) > 0.0 for n in IDLE_CORES)

    def delay_every_request(self, handler: str, policy: str) -> bool:
        """Whether some cost holds up every request on its way: a hop, or GIL work it
        waits for. Native costs burn beside the path, probe and rejection costs come with
        some requests only, and the ideal router charges no routing attempt."""
        http = self.ingress == "http"
        on_path = ["hop_s", "replica_cpu_s", *(("http_hop_s", "http_client_cpu_s", "proxy_cpu_s") if http
                                               else ("client_cpu_s",))]
        if policy != "ideal":
            on_path.append("router_cpu_s")
        return any(getattr(self, n) > 0.0 for n in on_path) or self.pool_cpu(handler)[0] > 0.0

    def pool_cpu(self, handler: str) -> tuple[float, float]:
        """What a call through the replica's thread pool costs beyond an ``async def``
        call, at this run's host speed: (Python, C++) seconds for a ``def`` handler, none
        for an ``async def`` one."""
        if handler != "sync":
            return 0.0, 0.0
        return self.cpu("replica_sync_cpu_s"), self.cpu("replica_sync_native_cpu_s")

    def with_startup_s(self, startup_s: float) -> Overheads:
        """These costs with a replica start-up of ``startup_s`` seconds, of which the
        same share as before is CPU work: a start-up time given alone scales the measured
        CPU part with it (``--replica-startup-s``, a sweep over it)."""
        _number("replica_startup_s", startup_s, low=0)
        share = self.replica_startup_cpu_s / self.replica_startup_s if self.replica_startup_s > 0 else 0.0
        return replace(self, replica_startup_s=startup_s, replica_startup_cpu_s=startup_s * share)

    def cpu(self, name: str) -> float:
        """A CPU cost (seconds, or cores for ``IDLE_CORES``) at this run's host speed."""
        return self._scaled(name) / self.cpu_speed

    def _scaled(self, name: str):
        """The field ``name``, which must be one that ``cpu_speed`` scales: one list says
        what scales."""
        if name not in SPEED_SCALED:
            raise KeyError(f"{name} is not in SPEED_SCALED")
        return getattr(self, name)

    def _wake_table(self) -> None:
        """Check the wake-up table and store its three fields as tuples (a calibration
        file gives lists)."""
        for name in WAKE_TABLE:
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise ConfigError(name, value, "must be a list of numbers")
            for x in value:
                _number(name, x, low=0)
            object.__setattr__(self, name, tuple(float(x) for x in value))
        gaps = self.wake_idle_s
        if any(b <= a for a, b in zip(gaps, gaps[1:])):
            raise ConfigError("wake_idle_s", list(gaps), "must increase")
        for name in WAKE_TABLE[1:]:
            if getattr(self, name) and len(getattr(self, name)) != len(gaps):
                raise ConfigError(name, list(getattr(self, name)), f"must have one value per wake_idle_s ({len(gaps)})")

    def wake_cpu(self, role: str):
        """``g -> CPU seconds`` at this run's host speed for ``role`` ("client" or
        "replica"), or None when the table is empty."""
        costs = self._scaled(f"{role}_wake_cpu_s")
        if not costs or not any(costs):
            return None
        return WakeCost(self.wake_idle_s, tuple(c / self.cpu_speed for c in costs))


@dataclass(frozen=True)
class WorkloadConfig:
    """Who sends requests, and for how long.

    Exactly one of ``concurrent`` (closed loop: each client sends its next request when
    the previous answer arrives, after ``think_time_s``), ``rps`` (open loop, Poisson)
    or ``trace_arrivals_s`` (replayed arrival times). The run ends at ``duration_s`` of
    simulated time, or, with ``requests``, once that many have been sent and answered.
    Requests sent before ``warmup_s`` are left out of the statistics. A ``shape``
    makes the level (clients, or requests per second) change over time; then
    ``concurrent`` or ``rps`` is its peak and only says which loop it is.
    """

    concurrent: int | None = None
    think_time_s: float = 0.0
    rps: float | None = None
    trace_arrivals_s: tuple[float, ...] | None = None
    duration_s: float | None = 60.0
    requests: int | None = None
    warmup_s: float = 0.0
    shape: LoadShape | None = None

    def __post_init__(self):
        given = [n for n in ("concurrent", "rps", "trace_arrivals_s") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigError("workload", given, "give exactly one of concurrent, rps or a trace")
        if self.concurrent is not None:
            _number("concurrent", self.concurrent, low=1, integer=True)
        if self.rps is not None:
            _number("rps", self.rps, low=0, low_open=True)
        if self.trace_arrivals_s is not None:
            if not self.trace_arrivals_s:
                raise ConfigError("trace", (), "has no arrivals")
            prev = 0.0
            for t in self.trace_arrivals_s:
                _number("trace.arrival_s", t, low=0)
                if t < prev:
                    raise ConfigError("trace.arrival_s", t, f"arrival times must not decrease (after {prev})")
                prev = t
        _number("think_time_s", self.think_time_s, low=0)
        if self.duration_s is None and self.requests is None:
            raise ConfigError("duration_s", None, "give duration_s or requests")
        if self.duration_s is not None:
            _number("duration_s", self.duration_s, low=0, low_open=True)
        if self.requests is not None:
            _number("requests", self.requests, low=1, integer=True)
        _number("warmup_s", self.warmup_s, low=0)
        if self.duration_s is not None and self.requests is None and self.warmup_s >= self.duration_s:
            raise ConfigError("warmup_s", self.warmup_s, f"must be below duration_s ({self.duration_s})")
        if self.shape is not None:
            if self.trace_arrivals_s is not None:
                raise ConfigError("shape", self.shape.kind, "cannot be combined with a trace")
            if self.concurrent is not None and self.shape.kind == "bursts":
                raise ConfigError("shape", "bursts", "bursts are an open-loop shape (give rps)")
            if self.concurrent is not None and self.shape.kind == "steps":
                for _, level in self.shape.steps:
                    if level != int(level):
                        raise ConfigError("load_steps", level, "clients must be whole numbers")

    @property
    def kind(self) -> str:
        if self.concurrent is not None:
            return "closed"
        return "poisson" if self.rps is not None else "trace"


@dataclass(frozen=True)
class SimConfig:
    """Everything one simulation run needs; ``seed`` makes it reproducible."""

    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    overheads: Overheads = field(default_factory=Overheads)
    workload: WorkloadConfig = field(default_factory=lambda: WorkloadConfig(concurrent=1))
    seed: int = 0
    keep_requests: bool = True
    timeline_interval_s: float = 1.0  # one timeline row per this much simulated time

    def __post_init__(self):
        _number("seed", self.seed, low=0, integer=True)
        _number("timeline_interval_s", self.timeline_interval_s, low=0, low_open=True)
        w = self.workload
        if (w.kind == "closed" and w.think_time_s == 0 and self.deployment.work.mean_s == 0
                and not self.overheads.delay_every_request(self.deployment.handler, self.router.policy)):
            # Each answer would come back at the instant of its request: infinitely
            # many requests in zero simulated time.
            raise ConfigError("service_ms", 0, "a closed loop needs some work, think time or overhead per request")

    def to_dict(self) -> dict:
        """The effective configuration as plain JSON-able data."""
        d = asdict(self)
        d["deployment"]["work"] = [
            {"kind": s.kind, **_dist_dict(s.duration)} for s in self.deployment.work.segments
        ]
        if self.workload.trace_arrivals_s is not None:
            d["workload"]["trace_arrivals_s"] = f"<{len(self.workload.trace_arrivals_s)} arrivals>"
        return d


def _dist_dict(dist: Distribution) -> dict:
    d = {"dist": dist.kind, "mean_s": dist.mean_s, "cv": dist.effective_cv}
    if dist.kind == "empirical":
        d["samples"] = len(dist.samples_s)
    return d
