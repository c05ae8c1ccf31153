"""Ray Serve 2.60's request-based autoscaler, as pure logic the simulation calls with times.

Nothing here imports SimPy: the simulation owns the clock and calls in. Paths below are
relative to ``ray/serve/`` in the installed Ray 2.60.0, which is the ground truth.

What is modelled, and where each rule comes from:

* ``AutoscalingConfig``: every 2.60 field and default, the validators and the deprecated
  smoothing fields with Ray's precedence (``config.py`` ``AutoscalingConfig``,
  ``get_upscaling_factor``/``get_downscaling_factor``); ``num_replicas="auto"`` defaults
  (``AutoscalingConfig.default`` and ``_private/config.py`` ``handle_num_replicas_auto``);
  the num_replicas/autoscaling_config rule (``deployment.py`` ``options``, ``api.py``
  ``deployment``, ``schema.py`` ``validate_num_replicas_and_autoscaling_config``).
* The metric pipeline with ``RAY_SERVE_COLLECT_AUTOSCALING_METRICS_ON_HANDLE=1`` (the 2.60
  default): each router (deployment handle) samples its queued count and, per replica, its
  sent-but-unfinished count every ``min(0.2 * look_back_period_s, metrics_interval_s)``,
  keeps the samples newer than ``look_back_period_s`` and pushes them every
  ``metrics_interval_s``, or at once when a request is queued while the router knows of
  no running replica (``_private/router.py`` ``RouterMetricsManager``,
  ``_private/metrics_utils.py`` ``InMemoryMetricsStore``). The controller keeps each
  router's latest report, forgets a router after ``max(2 * metrics_interval_s, 10)`` s
  without a report, and reduces all series to one number
  (``_private/autoscaling_state.py`` ``get_total_num_requests``, whose arithmetic is
  ``_private/autoscaling_metrics_merge.py`` ``merge_and_aggregate_arrays``, the columnar
  path 2.60 takes by default).
* The default policy: cold start, scaling factors, wall-clock up/down delay timers,
  ``downscale_to_zero_delay_s``, bounds (``autoscaling_policy.py``
  ``_apply_autoscaling_config`` around ``replica_queue_length_autoscaling_policy``;
  ``_private/autoscaling_state.py`` ``get_decision_num_replicas``/``apply_bounds``/``register``).
* Which replicas a downscale stops (``_private/deployment_scheduler.py``
  ``_get_replicas_to_stop``).

Left out: custom and application-level policies, ``target_capacity``, gang scheduling,
label selectors (every node matches), replica-side metric pushes (off in 2.60 unless direct
ingress), controller recovery, clock skew, and the router skipping a push while the
previous one is still in flight (a push here reaches the controller at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Hashable, Iterable, Mapping, Sequence

from simserve.config import ConfigError, _choice, _number

# --- Ray 2.60.0 constants (file:line in ray/serve/) -------------------------------------
CONTROL_LOOP_INTERVAL_S = 0.1  # _private/constants.py:77 RAY_SERVE_CONTROL_LOOP_INTERVAL_S
DEFAULT_TARGET_ONGOING_REQUESTS = 2  # _private/constants.py:291
DEFAULT_METRICS_INTERVAL_S = 10.0  # config.py:414
RECORD_INTERVAL_FACTOR = 0.2  # _private/constants.py:488 RAY_SERVE_AUTOSCALING_METRIC_RECORD_INTERVAL_FACTOR
MIN_HANDLE_METRICS_TIMEOUT_S = 10.0  # _private/constants.py:586 RAY_SERVE_MIN_HANDLE_METRICS_TIMEOUT_S
DELAY_ELAPSED_EPS_S = 1e-6  # autoscaling_policy.py:30 _DELAY_ELAPSED_EPS_S
# RAY_SERVE_{HANDLE,REPLICA}_AUTOSCALING_METRIC_PUSH_INTERVAL_S (_private/constants.py:493,498)
# are defined but read nowhere in 2.60: routers push every metrics_interval_s.

AGGREGATIONS = ("mean", "max", "min")  # config.py:418 AggregationFunction
RUNNING_STATES = ("RUNNING", "PENDING_MIGRATION", "UPDATING")  # in the scheduler's running map

_FIELDS_OPTIONAL_POSITIVE = ("upscale_smoothing_factor", "downscale_smoothing_factor", "upscaling_factor", "downscaling_factor")


@dataclass(frozen=True)
class AutoscalingConfig:
    """``serve.config.AutoscalingConfig`` 2.60: Ray's names, defaults and validators."""

    min_replicas: int = 1
    max_replicas: int = 1
    initial_replicas: int | None = None  # None: start at min_replicas
    target_ongoing_requests: float = DEFAULT_TARGET_ONGOING_REQUESTS
    metrics_interval_s: float = DEFAULT_METRICS_INTERVAL_S  # deprecated in Ray, still the push interval
    look_back_period_s: float = 30.0
    smoothing_factor: float = 1.0  # deprecated; the fallback for both factors
    upscale_smoothing_factor: float | None = None  # deprecated; beaten by upscaling_factor
    downscale_smoothing_factor: float | None = None  # deprecated; beaten by downscaling_factor
    upscaling_factor: float | None = None
    downscaling_factor: float | None = None
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None  # None: downscale_delay_s
    upscale_delay_s: float = 30.0
    aggregation_function: str = "mean"

    def __post_init__(self):
        # Field types first, as pydantic does before the model validator.
        _number("min_replicas", self.min_replicas, low=0, integer=True)
        _number("max_replicas", self.max_replicas, low=1, integer=True)
        if self.initial_replicas is not None:
            _number("initial_replicas", self.initial_replicas, low=0, integer=True)
        # Ray's field is Optional, but None crashes its policy at the first decision.
        _number("target_ongoing_requests", self.target_ongoing_requests, low=0, low_open=True)
        _number("metrics_interval_s", self.metrics_interval_s, low=0, low_open=True)
        _number("look_back_period_s", self.look_back_period_s, low=0, low_open=True)
        _number("smoothing_factor", self.smoothing_factor, low=0, low_open=True)
        for name in _FIELDS_OPTIONAL_POSITIVE:
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), low=0, low_open=True)
        _number("downscale_delay_s", self.downscale_delay_s, low=0)
        if self.downscale_to_zero_delay_s is not None:
            _number("downscale_to_zero_delay_s", self.downscale_to_zero_delay_s, low=0)
        _number("upscale_delay_s", self.upscale_delay_s, low=0)
        agg = self.aggregation_function
        if isinstance(agg, str) and agg.lower() != agg:
            object.__setattr__(self, "aggregation_function", agg.lower())  # Ray lower-cases it
        _choice("aggregation_function", self.aggregation_function, AGGREGATIONS)
        # config.py:713 replicas_settings_valid, with Ray's wording.
        mn, mx, ini = self.min_replicas, self.max_replicas, self.initial_replicas
        if mx < mn:
            raise ConfigError(
                "max_replicas", mx, f"max_replicas ({mx}) must be greater than or equal to min_replicas ({mn})"
            )
        if ini is not None:
            if ini < mn:
                raise ConfigError(
                    "initial_replicas", ini, f"min_replicas ({mn}) must be less than or equal to initial_replicas ({ini})"
                )
            if ini > mx:
                raise ConfigError(
                    "initial_replicas", ini, f"max_replicas ({mx}) must be greater than or equal to initial_replicas ({ini})"
                )

    @classmethod
    def auto(cls, **overrides) -> "AutoscalingConfig":
        """``num_replicas="auto"``: ``AutoscalingConfig.default()`` (min 1, max 100, target 2),
        with the fields the user set laid over it (``handle_num_replicas_auto``)."""
        base = {"target_ongoing_requests": DEFAULT_TARGET_ONGOING_REQUESTS, "min_replicas": 1, "max_replicas": 100}
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: Mapping, *, auto: bool = False) -> tuple["AutoscalingConfig", list[str]]:
        """Load a Serve YAML ``autoscaling_config:`` mapping; returns (config, ignored keys).

        ``policy`` (custom policies) and unknown keys are not modelled and come back in the
        ignored list. ``auto=True`` applies the ``num_replicas: auto`` defaults under it.
        """
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ConfigError("autoscaling_config", d, "must be a mapping")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        ignored = [f"autoscaling_config.{k}" for k in d if k not in known]
        return (cls.auto(**kwargs) if auto else cls(**kwargs)), ignored

    # config.py:784-797: the explicit factor wins, then the deprecated per-direction
    # smoothing factor, then smoothing_factor. Ray tests truthiness, so None falls through.
    def get_upscaling_factor(self) -> float:
        return self.upscaling_factor or self.upscale_smoothing_factor or self.smoothing_factor

    def get_downscaling_factor(self) -> float:
        return self.downscaling_factor or self.downscale_smoothing_factor or self.smoothing_factor

    @property
    def sample_interval_s(self) -> float:
        """How often each router samples (``router.py`` ``update_deployment_config``)."""
        return min(self.look_back_period_s * RECORD_INTERVAL_FACTOR, self.metrics_interval_s)

    @property
    def push_interval_s(self) -> float:
        """How often each router pushes: ``metrics_interval_s``, not the env constants."""
        return self.metrics_interval_s

    @property
    def stale_timeout_s(self) -> float:
        """A router silent this long is forgotten (``drop_stale_handle_metrics``)."""
        return max(2 * self.metrics_interval_s, MIN_HANDLE_METRICS_TIMEOUT_S)

    @property
    def initial_target(self) -> int:
        """The first target: ``initial_replicas``, else ``min_replicas`` (``register``
        bounds the new deployment's target of 0)."""
        start = self.initial_replicas if self.initial_replicas is not None else 0
        return max(self.min_replicas, min(self.max_replicas, start))

    def warnings(self) -> list[str]:
        """Ray's non-fatal complaints (it warns, and says a future release will raise)."""
        out = []
        if self.look_back_period_s <= self.metrics_interval_s:
            out.append(
                f"`look_back_period_s` ({self.look_back_period_s}) must be greater than "
                f"`metrics_interval_s` ({self.metrics_interval_s})."
            )
        if self.metrics_interval_s != DEFAULT_METRICS_INTERVAL_S:
            out.append("The `metrics_interval_s` field in AutoscalingConfig is deprecated.")
        return out


def check_deployment(num_replicas, autoscaling_config) -> AutoscalingConfig | None:
    """Ray's rule for ``num_replicas`` beside ``autoscaling_config``; returns the effective
    autoscaling config (None: a fixed replica count).

    An integer ``num_replicas`` with any autoscaling config is refused
    (``deployment.py:373``, ``api.py:715``, ``schema.py:573``); ``"auto"`` or None may
    carry one; ``"auto"`` without one gets ``AutoscalingConfig.auto()``. ``autoscaling_config``
    may be a mapping (YAML) or an ``AutoscalingConfig`` (for ``"auto"`` its non-default
    fields count as the ones the user set, as ``model_dump(exclude_unset=True)`` would).
    """
    if isinstance(num_replicas, bool) or not (num_replicas is None or num_replicas == "auto" or isinstance(num_replicas, int)):
        raise ConfigError("num_replicas", num_replicas, f'`num_replicas` must be an int or "auto", but got: {num_replicas}')
    if isinstance(num_replicas, int) and autoscaling_config is not None:
        raise ConfigError(
            "num_replicas", num_replicas, "Manually setting num_replicas is not allowed when autoscaling_config is provided."
        )
    if num_replicas == 0:
        raise ConfigError("num_replicas", num_replicas, "num_replicas is expected to larger than 0")
    if isinstance(num_replicas, int):
        return None
    if autoscaling_config is None:
        return AutoscalingConfig.auto() if num_replicas == "auto" else None
    if isinstance(autoscaling_config, AutoscalingConfig):
        if num_replicas != "auto":
            return autoscaling_config
        default = AutoscalingConfig()
        set_fields = {
            f.name: getattr(autoscaling_config, f.name)
            for f in fields(AutoscalingConfig)
            if getattr(autoscaling_config, f.name) != getattr(default, f.name)
        }
        return AutoscalingConfig.auto(**set_fields)
    cfg, _ignored = AutoscalingConfig.from_dict(autoscaling_config, auto=num_replicas == "auto")
    return cfg


# --- Metrics: router side ---------------------------------------------------------------

_QUEUED = ("__queued__",)  # the metrics-store key for the queued count (Ray: "queued")

Series = list  # list[tuple[float, float]], sorted by time


class _RouterStore:
    """One router's ``InMemoryMetricsStore`` (``metrics_utils.py:143``)."""

    __slots__ = ("data",)

    def __init__(self):
        self.data: dict[Hashable, Series] = {}

    def add(self, key, t: float, value: float) -> None:
        s = self.data.setdefault(key, [])
        # bisect.insort on a timestamp-only ordering: after any equal timestamps.
        if not s or s[-1][0] <= t:
            s.append((t, value))
        else:
            i = len(s)
            while i > 0 and s[i - 1][0] > t:
                i -= 1
            s.insert(i, (t, value))

    def prune(self, start: float) -> None:
        # prune_keys_and_compact_data (metrics_utils.py:164): drop a key whose newest point
        # is older than start; otherwise keep points strictly after start (a key can be
        # left with an empty list when its newest point is exactly at start).
        for key in list(self.data):
            s = self.data[key]
            if not s or s[-1][0] < start:
                del self.data[key]
            else:
                i = 0
                while i < len(s) and s[i][0] <= start:
                    i += 1
                if i:
                    self.data[key] = s[i:]


@dataclass(frozen=True)
class HandleReport:
    """What a router pushes (``router.py:503`` ``_get_metrics_report``)."""

    router_id: Hashable
    timestamp: float
    queued: tuple  # ((t, v), ...)
    running: Mapping  # replica id -> ((t, v), ...)


class RouterLoad:
    """The counters Ray's ``RouterMetricsManager`` keeps, for a router that wants them kept
    the Ray way. Optional: any router holding the same two numbers can call
    ``MetricsAggregator.record``/``push`` directly.

    ``sent`` gets a key the first time a request is sent to a replica (a defaultdict in
    Ray), so a replica this router never used has no series, and that matters: the
    controller's averaging window opens at the latest first sample of any series.
    """

    def __init__(self):
        self.queued = 0
        self.sent: dict[Hashable, int] = {}

    def on_queued(self) -> None:  # wrap_queued_request: routing started
        self.queued += 1

    def on_assigned(self, replica_id) -> None:  # left the queue and was sent to replica_id
        self.queued -= 1
        self.sent[replica_id] = self.sent.get(replica_id, 0) + 1

    def on_unqueued(self) -> None:  # routing given up (cancelled, rejected) without a send
        self.queued -= 1

    def on_finished(self, replica_id) -> None:  # the result reached the router
        self.sent[replica_id] -= 1

    def on_running_replicas(self, running_ids: Iterable) -> None:
        """The controller's broadcast of running replicas (``_update_running_replicas``):
        forget replicas that are gone and have nothing in flight."""
        running = set(running_ids)
        self.sent = {r: n for r, n in self.sent.items() if n or r in running}


# --- Metrics: controller side -----------------------------------------------------------


def _round_10ms(t: float) -> float:
    # autoscaling_metrics_merge.py:27: C round-half-away-from-zero to 10 ms.
    return math.floor(t * 100.0 + 0.5) / 100.0


def merge_instantaneous_total(sources: Sequence[Sequence[tuple]]) -> list[tuple[float, float]]:
    """Sum step functions into one (``merge_instantaneous_total_arrays``, merge.py:34).

    One non-empty source passes through untouched. With several, each source keeps only
    points where its value changed (baseline 0), their times are rounded to 10 ms, and the
    deltas are summed per rounded time and accumulated; an event survives even if its
    deltas cancel.
    """
    active = [s for s in sources if len(s)]
    if not active:
        return []
    if len(active) == 1:
        return [(float(t), float(v)) for t, v in active[0]]
    deltas: dict[float, float] = {}
    for s in active:
        prev = 0.0
        for t, v in s:
            d = v - prev
            prev = v
            if d != 0:
                key = _round_10ms(t)
                deltas[key] = deltas.get(key, 0.0) + d
    out, total = [], 0.0
    for t in sorted(deltas):
        total += deltas[t]
        out.append((t, total))
    return out


def aggregate(sources: Sequence[Sequence[tuple]], now: float, function: str = "mean") -> float:
    """``merge_and_aggregate_arrays`` (merge.py:129): the controller's one number.

    MEAN is the time-weighted mean of the summed step function from the window start to
    ``now``, the last value held until ``now``. The window starts at the first merged
    event, or, with several sources, at the latest first sample of any source (a source is
    0 before its first sample, which would drag the mean down) if that is not after the
    last event. MAX/MIN take the event values from the window start on.
    """
    merged = merge_instantaneous_total(sources)
    if not merged:
        return 0.0
    last_t = merged[-1][0]
    last_window_s = now - last_t
    if last_window_s <= 0:
        last_window_s = 1e-3  # Ray's guard against clock skew
    window_start = None
    active = [s for s in sources if len(s)]
    if len(active) > 1:
        aligned = max(s[0][0] for s in active)  # unrounded, as Ray compares it
        if aligned <= last_t:
            window_start = max(aligned, merged[0][0])
    if function == "mean":
        return time_weighted_mean(merged, window_start, last_window_s)
    vals = [v for t, v in merged if window_start is None or t >= window_start]
    if not vals:
        return 0.0
    return float(max(vals) if function == "max" else min(vals))


def time_weighted_mean(merged: Sequence[tuple], window_start: float | None, last_window_s: float) -> float:
    """``time_weighted_average_arrays`` (merge.py:75): integrate the right-continuous step
    function over [window_start, last event + last_window_s]; a window start between
    events carries the earlier value forward."""
    ws = merged[0][0] if window_start is None else window_start
    end = merged[-1][0] + last_window_s
    if end <= ws:
        return 0.0
    area = 0.0
    seg_start, active = ws, 0.0
    for t, v in merged:  # the value in force at ws: the last event at or before it
        if t <= ws:
            active = v
        else:
            area += active * (t - seg_start)
            seg_start, active = t, v
    area += active * (end - seg_start)
    return area / (end - ws)


class MetricsAggregator:
    """All routers' metric stores plus the controller's view of them, for one deployment.

    The simulation calls, per router (``router_id`` any hashable):

    * ``record(router_id, t, queued, sent)`` when the router starts (its config arrives)
      and then every ``config.sample_interval_s``;
    * ``push(router_id, t, queued, sent)`` right after that first record, then every
      ``config.push_interval_s``, and also whenever ``should_push_now(...)`` is true
      as a request is queued for the first time;

    where ``queued`` is the number of requests the router is routing (not yet sent) and
    ``sent`` maps replica id -> requests sent to it whose results have not come back, with
    a key for every replica this router has sent to that is still running or still owes
    results (``RouterLoad.sent`` keeps exactly that). When a sample and a push fall at the
    same instant, record first: Ray's first record runs before its first push.

    The controller side, once per control-loop tick (``Autoscaler.step`` does both):
    ``total(now, running_replica_ids)`` then ``drop_stale(now)``.
    """

    def __init__(self, config: AutoscalingConfig):
        self.config = config
        self._stores: dict[Hashable, _RouterStore] = {}
        self._reports: dict[Hashable, HandleReport] = {}
        self._received_at: dict[Hashable, float] = {}
        self.pushes = 0

    # router side
    def record(self, router_id, t: float, queued: int, sent: Mapping) -> None:
        """One sample (``_add_autoscaling_metrics_point``, router.py:456)."""
        store = self._stores.setdefault(router_id, _RouterStore())
        store.add(_QUEUED, t, queued)
        for rid, n in sent.items():
            store.add(rid, t, n)
        store.prune(t - self.config.look_back_period_s)

    def report(self, router_id, t: float, queued: int, sent: Mapping) -> HandleReport:
        """Build the router's report (``_get_metrics_report``): the stored samples newer
        than the look-back window; a series with no samples yet is the current value."""
        store = self._stores.setdefault(router_id, _RouterStore())
        store.prune(t - self.config.look_back_period_s)
        q = store.data.get(_QUEUED, [(t, queued)])
        running = {rid: tuple(store.data.get(rid, [(t, n)])) for rid, n in sent.items()}
        return HandleReport(router_id, t, tuple(q), running)

    def push(self, router_id, t: float, queued: int, sent: Mapping) -> None:
        """Build the report and deliver it to the controller at ``t``."""
        self.receive(self.report(router_id, t, queued, sent), t)

    @staticmethod
    def should_push_now(num_running_replicas_known: int, queued: int) -> bool:
        """The cold-start push (``should_send_scaled_to_zero_optimized_push``): check as a
        request is queued for its first routing attempt (not retries), with the router's
        own count of running replicas and its queued count including that request."""
        return num_running_replicas_known == 0 and queued > 0

    def forget_router(self, router_id) -> None:
        """A router that goes away (its series stays at the controller until stale)."""
        self._stores.pop(router_id, None)

    # controller side
    def receive(self, report: HandleReport, now: float) -> bool:
        # _HandleMetricStore.accept keeps only strictly fresher producer timestamps; here
        # delivery is in order, so an equal time is a later report, and is taken.
        last = self._reports.get(report.router_id)
        if last is not None and report.timestamp < last.timestamp:
            return False
        self._reports[report.router_id] = report
        self._received_at[report.router_id] = now
        self.pushes += 1
        return True

    def drop_stale(self, now: float) -> list:
        """Forget routers not heard from for ``stale_timeout_s`` (``autoscaling_state.py:613``;
        the controller calls it after the decision in each loop, controller.py:726)."""
        timeout = self.config.stale_timeout_s
        dropped = [r for r, at in self._received_at.items() if now - at >= timeout]
        for r in dropped:
            del self._reports[r], self._received_at[r]
        return dropped

    def sources(self, running_replica_ids: Iterable) -> list[tuple]:
        """Every series the controller sums: each router's running series for replicas
        still RUNNING, and each router's queued series (``_array_aggregate_total_requests``)."""
        running = set(running_replica_ids)
        out = []
        for rep in self._reports.values():
            for rid, s in rep.running.items():
                if s and rid in running:
                    out.append(s)
            if rep.queued:
                out.append(rep.queued)
        return out

    def total(self, now: float, running_replica_ids: Iterable) -> float:
        """The policy's ``total_num_requests`` at ``now`` (``get_total_num_requests``)."""
        return aggregate(self.sources(running_replica_ids), now, self.config.aggregation_function)

    @property
    def routers(self) -> list:
        """Routers whose report the controller currently holds."""
        return list(self._reports)


# --- Policy -----------------------------------------------------------------------------


class Policy:
    """Ray 2.60's default policy with its wrapper, state and bounds, for one deployment.

    ``decide`` is one call of ``DeploymentAutoscalingState.get_decision_num_replicas``:
    the cold-start shortcut, ``replica_queue_length_autoscaling_policy``, scaling factors,
    the wall-clock delay timers, then ``apply_bounds``. Call it every control-loop tick
    (``CONTROL_LOOP_INTERVAL_S``) with the ``total`` of that tick.
    """

    def __init__(self, config: AutoscalingConfig):
        self.config = config
        # SERVE_AUTOSCALING_DECISION_COUNTERS_KEY / _TIMESTAMP_KEY: direction and start.
        self.decision_counter = 0
        self.decision_timestamp: float | None = None
        self.last_desired: int | None = None  # before bounds (serve_autoscaling_desired_replicas)

    def initial_target(self) -> int:
        return self.config.initial_target

    def desired(self, total: float, current_running: int, current_target: int) -> int | float:
        """The raw policy plus scaling factors (no delay, no bounds)."""
        cfg = self.config
        if current_running == 0:
            # _core_replica_queue_length_policy: keep the target when nothing runs.
            raw = current_target
        else:
            target_num_requests = cfg.target_ongoing_requests * current_running
            error_ratio = total / target_num_requests
            raw = current_running * error_ratio
        return _apply_scaling_factors(raw, current_running, cfg)

    def decide(self, now: float, total: float, current_running: int, current_target: int) -> int:
        """New target replica count; ``current_running`` counts RUNNING replicas only."""
        cfg = self.config
        if current_running == 0 and total > 0:
            # _get_cold_start_scale_up_replicas: immediate, no timer, state untouched.
            decision = max(math.ceil(1 * cfg.get_upscaling_factor()), current_target)
        else:
            desired = self.desired(total, current_running, current_target)
            if current_running == 0 and desired > 0:
                decision = desired  # _apply_default_params: bypass the delay logic
            else:
                decision = self._apply_delay_logic(max(0, desired), current_target, now)
        if isinstance(decision, float):
            decision = math.ceil(decision)
        self.last_desired = decision
        return max(cfg.min_replicas, min(cfg.max_replicas, decision))

    def _apply_delay_logic(self, desired: int, target: int, now: float) -> int:
        """``autoscaling_policy.py:68``: a direction must persist for the delay, measured on
        the clock from the first tick that wanted it; any tick that wants no change, or the
        other direction, restarts it. The value applied is the one desired at that moment."""
        cfg = self.config
        decision = target
        counter, stamp = self.decision_counter, self.decision_timestamp
        if desired > target:
            if counter < 0:
                counter, stamp = 0, None
            counter += 1
            if stamp is None:
                stamp = now
            if now - stamp + DELAY_ELAPSED_EPS_S >= cfg.upscale_delay_s:
                counter, stamp, decision = 0, None, desired
        elif desired < target:
            if counter > 0:
                counter, stamp = 0, None
            counter -= 1
            if target == 1:  # only 1 -> 0 uses the to-zero delay
                delay = cfg.downscale_to_zero_delay_s if cfg.downscale_to_zero_delay_s is not None else cfg.downscale_delay_s
            else:
                delay = cfg.downscale_delay_s
                desired = max(1, desired)  # never straight to 0 from above 1
            if stamp is None:
                stamp = now
            if now - stamp + DELAY_ELAPSED_EPS_S >= delay:
                counter, stamp, decision = 0, None, desired
        else:
            counter, stamp = 0, None
        self.decision_counter, self.decision_timestamp = counter, stamp
        return decision


def _apply_scaling_factors(desired: int | float, current: int, cfg: AutoscalingConfig) -> int:
    """``autoscaling_policy.py:33``: move only a factor of the way from current to desired."""
    if current == 0:
        return math.ceil(desired)
    delta = desired - current
    factor = cfg.get_upscaling_factor() if delta > 0 else cfg.get_downscaling_factor()
    scaled = math.ceil(current + factor * delta)
    # A small downscaling factor would never get below current: step down by one.
    if math.ceil(float(desired)) < current and scaled == current:
        scaled -= 1
    return scaled


class Autoscaler:
    """Aggregator and policy wired in Ray's order, for the simulation's control loop.

    Each tick (every ``CONTROL_LOOP_INTERVAL_S``), after the simulation has moved replicas
    toward the previous target and updated which are RUNNING (Ray's deployment-state
    update), call ``step(now, running_replica_ids, current_target)`` and apply the returned
    target from the next tick on.
    """

    def __init__(self, config: AutoscalingConfig):
        self.config = config
        self.metrics = MetricsAggregator(config)
        self.policy = Policy(config)
        self.last_total = 0.0

    def initial_target(self) -> int:
        return self.config.initial_target

    def step(self, now: float, running_replica_ids: Sequence, current_target: int) -> int:
        running = list(running_replica_ids)
        self.last_total = self.metrics.total(now, running)
        new_target = self.policy.decide(now, self.last_total, len(running), current_target)
        self.metrics.drop_stale(now)  # controller.py:726, after application-state update
        return new_target


# --- Downscale victims ------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaRecord:
    """What the scheduler knows of a replica. ``started_at`` orders replicas the way Ray's
    running map does (insertion when the replica became RUNNING; for a replica not yet
    running, its creation time)."""

    id: Hashable
    state: str  # "STARTING", "RUNNING", ... (STOPPING replicas are no candidates)
    node: int
    is_head_node: bool
    started_at: float


def choose_downscale_victims(
    replicas: Iterable[ReplicaRecord], n: int, other_replicas_per_node: Mapping[int, int] | None = None
) -> list:
    """Ids of the ``n`` replicas Ray 2.60 stops first (``deployment_scheduler.py:1308``).

    Order: replicas not yet running (Ray takes them from a set, so their order is
    arbitrary; here newest first); then running ones node by node, off the head node
    first, then nodes with the fewest running replicas of all deployments (this one plus
    ``other_replicas_per_node``), ties in the order nodes first appear among this
    deployment's running replicas, oldest first; within a node, newest first.
    """
    reps = [r for r in replicas if r.state != "STOPPING"]
    pending = sorted((r for r in reps if r.state not in RUNNING_STATES), key=lambda r: -r.started_at)
    running = sorted((r for r in reps if r.state in RUNNING_STATES), key=lambda r: r.started_at)
    per_node: dict[int, list[ReplicaRecord]] = {}
    head: dict[int, bool] = {}
    for r in running:  # insertion order = first appearance, oldest first
        per_node.setdefault(r.node, []).append(r)
        head[r.node] = head.get(r.node, False) or r.is_head_node
    others = other_replicas_per_node or {}
    nodes = sorted(per_node, key=lambda nd: (int(head[nd]), len(per_node[nd]) + others.get(nd, 0)))
    order = [r.id for r in pending]
    for nd in nodes:
        order += [r.id for r in reversed(per_node[nd])]
    return order[: max(0, n)]
