"""Ray 2.60 autoscaling logic in simserve.autoscaling: metrics, policy, victims, config."""

from __future__ import annotations

import math
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simserve.autoscaling import (
    Autoscaler,
    AutoscalingConfig,
    MetricsAggregator,
    Policy,
    ReplicaRecord,
    RouterLoad,
    aggregate,
    check_deployment,
    choose_downscale_victims,
)
from simserve.config import ConfigError

TICK = 0.1


def cfg(**kw):
    base = dict(min_replicas=1, max_replicas=10, upscale_delay_s=3.0, downscale_delay_s=6.0)
    base.update(kw)
    return AutoscalingConfig(**base)


def run(policy, loads, *, running, target, start=0.0):
    """Feed one total per 0.1 s tick, replicas following the target at once; return targets."""
    out = []
    for i, total in enumerate(loads):
        target = policy.decide(start + i * TICK, total, running if running is not None else target, target)
        out.append(target)
    return out


# --- metrics ----------------------------------------------------------------------------


def test_total_is_hand_computed_time_weighted_mean():
    """Two series merge into a step function averaged from the latest first sample to now."""
    agg = MetricsAggregator(AutoscalingConfig(max_replicas=5))
    agg.record("r", 0.0, 2, {})
    agg.record("r", 6.0, 1, {"A": 1})
    agg.record("r", 12.0, 0, {"A": 4})
    agg.push("r", 12.0, 0, {"A": 4})
    # queued 2,1,0 at 0,6,12 and A 1,4 at 6,12 sum to 2 on [6,12) and 4 on [12,15]; the
    # window opens at 6 (A's first sample, not 0), so the mean is (2*6 + 4*3) / 9 = 8/3.
    assert agg.total(15.0, ["A"]) == pytest.approx(8 / 3)
    # A is no longer running: only the queued series, averaged from its own start.
    assert agg.total(15.0, []) == pytest.approx((2 * 6 + 1 * 6 + 0 * 3) / 15)


def test_single_series_holds_last_value_until_now():
    """A lone series passes through unmerged and its last value counts until now."""
    assert aggregate([[(0.0, 2.0), (6.0, 0.0)]], 10.0) == pytest.approx(1.2)
    assert aggregate([], 10.0) == 0.0
    assert aggregate([[(0.0, 1.0), (6.0, 3.0)], [(1.0, 2.0)]], 6.0, "max") == 5.0


def test_sample_and_push_intervals_and_staleness_timeout_follow_ray():
    """Sampling is min(0.2*look_back, metrics_interval_s); push is metrics_interval_s; stale after max(2*interval, 10)."""
    c = AutoscalingConfig()
    assert (c.sample_interval_s, c.push_interval_s, c.stale_timeout_s) == (6.0, 10.0, 20.0)
    c = AutoscalingConfig(metrics_interval_s=2.0, look_back_period_s=30.0)
    assert (c.sample_interval_s, c.stale_timeout_s) == (2.0, 10.0)


def test_stale_router_is_dropped():
    """A router silent for max(2*metrics_interval_s, 10 s) is forgotten and stops counting."""
    agg = MetricsAggregator(AutoscalingConfig(max_replicas=5))
    agg.record("r", 0.0, 3, {})
    agg.push("r", 0.0, 3, {})
    assert agg.drop_stale(19.9) == []
    assert agg.total(19.9, []) == pytest.approx(3.0)
    assert agg.drop_stale(20.0) == ["r"]
    assert agg.total(20.0, []) == 0.0


def test_router_prunes_samples_older_than_look_back():
    """A push carries only samples newer than look_back_period_s before it."""
    agg = MetricsAggregator(AutoscalingConfig(max_replicas=5, look_back_period_s=10.0))
    for t in range(0, 13, 2):
        agg.record("r", float(t), t, {})
    rep = agg.report("r", 13.0, 12, {})
    assert [t for t, _ in rep.queued] == [4.0, 6.0, 8.0, 10.0, 12.0]


def test_router_load_keeps_ray_keys():
    """A replica gets a series only once sent a request, and is forgotten when gone and idle."""
    load = RouterLoad()
    load.on_queued()
    load.on_assigned("A")
    assert (load.queued, load.sent) == (0, {"A": 1})
    load.on_running_replicas(["B"])
    assert load.sent == {"A": 1}
    load.on_finished("A")
    load.on_running_replicas(["B"])
    assert load.sent == {}
    assert MetricsAggregator.should_push_now(0, 1) and not MetricsAggregator.should_push_now(1, 1)


ray_merge = None
try:  # the installed Ray's own reference kernel, when Ray is installed
    from ray.serve._private import autoscaling_metrics_merge as ray_merge  # noqa: E402
except Exception:  # pragma: no cover
    pass

series_st = st.lists(
    st.tuples(st.integers(0, 400).map(lambda i: i * 0.05), st.integers(0, 6).map(float)), max_size=5
).map(lambda pts: sorted(pts, key=lambda p: p[0]))


@pytest.mark.skipif(ray_merge is None, reason="ray 2.60 not installed")
@given(st.lists(series_st, max_size=5), st.floats(0, 40), st.sampled_from(["mean", "max", "min"]))
def test_aggregate_matches_ray_kernel(sources, now_extra, fn):
    """Our merge and mean agree with Ray 2.60's merge_and_aggregate_arrays."""
    import numpy as np

    ts = [t for s in sources for t, _ in s]
    val = [v for s in sources for _, v in s]
    offsets = np.cumsum([0] + [len(s) for s in sources]).astype(np.int64)
    now = max(ts, default=0.0) + now_extra
    expected = ray_merge.merge_and_aggregate_arrays(
        np.array(ts, dtype=float), np.array(val, dtype=float), offsets, now, fn
    )
    assert aggregate(sources, now, fn) == pytest.approx(expected, rel=1e-9, abs=1e-9)


# --- policy -----------------------------------------------------------------------------


def test_no_scale_up_before_upscale_delay():
    """Sustained demand raises the target only once upscale_delay_s has passed."""
    p = Policy(cfg())
    out = run(p, [8.0] * 40, running=2, target=2)  # wants 4 replicas
    first_up = out.index(4)
    assert all(t == 2 for t in out[:first_up])
    assert first_up * TICK == pytest.approx(3.0)


def test_upscale_timer_resets_when_demand_drops():
    """A tick with no wish to scale restarts the upscale timer."""
    p = Policy(cfg())
    loads = [8.0] * 25 + [4.0] + [8.0] * 40  # a hold at 2.5 s
    out = run(p, loads, running=2, target=2)
    first_up = out.index(4)
    assert first_up * TICK == pytest.approx(2.6 + 3.0)


def test_no_scale_down_before_downscale_delay():
    """A drop in demand lowers the target only after downscale_delay_s."""
    p = Policy(cfg())
    out = run(p, [2.0] * 80, running=4, target=4)  # wants 1
    first_down = next(i for i, t in enumerate(out) if t < 4)
    assert all(t == 4 for t in out[:first_down])
    assert first_down * TICK == pytest.approx(6.0) and out[first_down] == 1


def test_direction_flip_resets_timer():
    """Wanting down after wanting up starts the downscale clock afresh."""
    p = Policy(cfg())
    out = run(p, [20.0] * 20 + [1.0] * 70, running=4, target=4)
    assert 4 == out[19] and out[20 + 59] == 4 and out[20 + 60] == 1


def test_bounds_clip_decisions():
    """Decisions stay within [min_replicas, max_replicas]."""
    p = Policy(cfg(min_replicas=2, max_replicas=5, upscale_delay_s=0.0, downscale_delay_s=0.0))
    assert p.decide(0.0, 1000.0, 3, 3) == 5
    assert p.decide(0.1, 0.0, 3, 3) == 2


def test_load_below_target_never_scales_up():
    """Constant load at or below target_ongoing_requests per replica never raises the target."""
    p = Policy(cfg(upscale_delay_s=0.0))
    assert set(run(p, [6.0] * 300, running=3, target=3)) == {3}


def test_scale_from_zero_is_immediate():
    """With no running replicas, any demand sets the target to ceil(upscaling_factor) at once."""
    p = Policy(cfg(min_replicas=0, upscale_delay_s=1000.0))
    assert p.decide(0.0, 0.5, 0, 0) == 1
    p = Policy(cfg(min_replicas=0, upscaling_factor=2.5))
    assert p.decide(0.0, 0.5, 0, 0) == 3
    assert p.decide(0.0, 0.0, 0, 0) == 0


def test_downscale_to_zero_uses_its_own_delay():
    """Going 1 -> 0 waits downscale_to_zero_delay_s, not downscale_delay_s."""
    p = Policy(cfg(min_replicas=0, downscale_delay_s=100.0, downscale_to_zero_delay_s=2.0))
    out = run(p, [0.0] * 30, running=1, target=1)
    assert out.index(0) * TICK == pytest.approx(2.0)
    p = Policy(cfg(min_replicas=0, downscale_delay_s=100.0, downscale_to_zero_delay_s=2.0))
    out = run(p, [0.0] * 30, running=3, target=3)  # from 3, never straight to 0
    assert set(out) == {3}


def test_downscaling_factor_still_moves_by_one():
    """A tiny downscaling factor steps down by at least one replica."""
    p = Policy(cfg(downscaling_factor=0.01, downscale_delay_s=0.0))
    assert p.decide(0.0, 2.0, 5, 5) == 4


def test_deprecated_smoothing_factors_precedence():
    """upscaling_factor beats upscale_smoothing_factor beats smoothing_factor, as in Ray."""
    c = AutoscalingConfig(smoothing_factor=3.0, upscale_smoothing_factor=2.0)
    assert (c.get_upscaling_factor(), c.get_downscaling_factor()) == (2.0, 3.0)
    c = AutoscalingConfig(upscaling_factor=0.5, upscale_smoothing_factor=2.0, downscale_smoothing_factor=0.7)
    assert (c.get_upscaling_factor(), c.get_downscaling_factor()) == (0.5, 0.7)


@given(
    st.lists(st.floats(0, 500), min_size=1, max_size=200),
    st.integers(0, 3),
    st.integers(0, 12),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_target_always_within_bounds(loads, mn, extra, up_delay, down_delay):
    """Whatever the load sequence, the target stays within [min_replicas, max_replicas]."""
    c = AutoscalingConfig(
        min_replicas=mn, max_replicas=mn + extra + 1, upscale_delay_s=up_delay, downscale_delay_s=down_delay
    )
    p = Policy(c)
    target = c.initial_target
    for i, total in enumerate(loads):
        target = p.decide(i * TICK, total, target, target)
        assert c.min_replicas <= target <= c.max_replicas


ray_policy = None
try:
    from ray.serve import autoscaling_policy as ray_policy  # noqa: E402
    from ray.serve.config import AutoscalingConfig as RayAutoscalingConfig  # noqa: E402
    from ray.serve.config import AutoscalingContext  # noqa: E402
except Exception:  # pragma: no cover
    ray_policy = None


@pytest.mark.skipif(ray_policy is None, reason="ray 2.60 not installed")
@given(
    st.lists(st.tuples(st.floats(0, 60), st.integers(0, 6)), min_size=1, max_size=120),
    st.sampled_from([None, 0.5, 2.0]),
    st.sampled_from([None, 0.3]),
    st.sampled_from([None, 0.4]),
)
def test_policy_matches_ray(steps, upf, downf, to_zero):
    """Policy.decide equals Ray 2.60's wrapped default policy plus apply_bounds, tick by tick."""
    kw = dict(min_replicas=0, max_replicas=8, upscale_delay_s=0.5, downscale_delay_s=1.0,
              upscaling_factor=upf, downscaling_factor=downf, downscale_to_zero_delay_s=to_zero)
    ours = Policy(AutoscalingConfig(**kw))
    ray_cfg = RayAutoscalingConfig(**kw)
    wrapped = ray_policy._apply_autoscaling_config(ray_policy.replica_queue_length_autoscaling_policy)
    clock = types.SimpleNamespace(time=lambda: now)
    real_time = ray_policy.time
    ray_policy.time = clock
    try:
        state, target = {}, 1
        for i, (total, running) in enumerate(steps):
            now = 1000.0 + i * TICK
            ctx = AutoscalingContext(
                deployment_id=None, deployment_name="d", app_name="a", current_num_replicas=running,
                target_num_replicas=target, running_replicas=[], total_num_requests=total,
                total_queued_requests=0.0, aggregated_metrics={}, raw_metrics={},
                capacity_adjusted_min_replicas=0, capacity_adjusted_max_replicas=8, policy_state=state,
                last_scale_up_time=None, last_scale_down_time=None, current_time=now, config=ray_cfg,
            )
            decision, state = wrapped(ctx)
            expected = max(0, min(8, math.ceil(decision)))
            got = ours.decide(now, total, running, target)
            assert got == expected, (i, total, running, target)
            target = got
    finally:
        ray_policy.time = real_time


def test_autoscaler_step_end_to_end():
    """Routers' samples and pushes drive the controller from zero replicas up, immediately."""
    a = Autoscaler(AutoscalingConfig(min_replicas=0, max_replicas=4))
    assert a.initial_target() == 0
    a.metrics.record("h", 0.0, 0, {})
    a.metrics.push("h", 0.0, 0, {})
    assert a.step(0.1, [], 0) == 0
    assert MetricsAggregator.should_push_now(0, 3)
    # The cold-start push sends the router's stored samples, not its current queue: the
    # sample at 0 s (queued 0) is all the controller sees until the next sample.
    a.metrics.push("h", 1.0, 3, {})
    assert a.metrics.total(1.1, []) == 0.0
    a.metrics.record("h", 6.0, 3, {})
    a.metrics.push("h", 6.0, 3, {})
    assert a.step(6.1, [], 0) == 1


# --- victims ----------------------------------------------------------------------------


def test_downscale_victims_follow_ray_priority():
    """Non-running first, then off the head node, emptiest nodes first, newest first."""
    reps = [
        ReplicaRecord("h1", "RUNNING", 0, True, 1.0),
        ReplicaRecord("a1", "RUNNING", 1, False, 2.0),
        ReplicaRecord("a2", "RUNNING", 1, False, 5.0),
        ReplicaRecord("b1", "RUNNING", 2, False, 3.0),
        ReplicaRecord("s1", "STARTING", 2, False, 9.0),
        ReplicaRecord("x", "STOPPING", 2, False, 9.5),
    ]
    assert choose_downscale_victims(reps, 10) == ["s1", "b1", "a2", "a1", "h1"]
    assert choose_downscale_victims(reps, 2) == ["s1", "b1"]
    # node 2 busier with other deployments' replicas: node 1 goes first
    assert choose_downscale_victims(reps, 3, {2: 5}) == ["s1", "a2", "a1"]


# --- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, field, text",
    [
        (dict(min_replicas=3, max_replicas=2), "max_replicas", "max_replicas (2) must be greater than or equal to min_replicas (3)"),
        (dict(min_replicas=2, max_replicas=5, initial_replicas=1), "initial_replicas", "min_replicas (2) must be less than or equal to initial_replicas (1)"),
        (dict(max_replicas=5, initial_replicas=6), "initial_replicas", "max_replicas (5) must be greater than or equal to initial_replicas (6)"),
        (dict(target_ongoing_requests=0), "target_ongoing_requests", "> 0"),
        (dict(max_replicas=0), "max_replicas", ">= 1"),
        (dict(upscale_delay_s=-1), "upscale_delay_s", ">= 0"),
        (dict(upscaling_factor=0), "upscaling_factor", "> 0"),
        (dict(aggregation_function="median"), "aggregation_function", "mean, max, min"),
    ],
)
def test_validation_errors(kw, field, text):
    """Invalid autoscaling settings raise ConfigError naming the field, in Ray's words."""
    with pytest.raises(ConfigError) as e:
        AutoscalingConfig(**kw)
    assert e.value.field == field and text in str(e.value)


def test_check_deployment_rules():
    """An int num_replicas with autoscaling_config is refused; "auto" gets Ray's defaults."""
    with pytest.raises(ConfigError, match="Manually setting num_replicas is not allowed"):
        check_deployment(2, {"max_replicas": 3})
    with pytest.raises(ConfigError, match='must be an int or "auto"'):
        check_deployment("many", None)
    assert check_deployment(3, None) is None
    auto = check_deployment("auto", None)
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 100, 2)
    assert check_deployment("auto", {"min_replicas": 4}).max_replicas == 100
    assert check_deployment(None, {"min_replicas": 0}).max_replicas == 1
    assert check_deployment("auto", AutoscalingConfig(min_replicas=0)).max_replicas == 100


def test_from_dict_returns_ignored_keys():
    """A YAML autoscaling_config loads known fields and lists the rest as ignored."""
    c, ignored = AutoscalingConfig.from_dict({"max_replicas": 4, "policy": {"policy_function": "x:y"}, "bogus": 1})
    assert c.max_replicas == 4 and c.initial_target == 1
    assert ignored == ["autoscaling_config.policy", "autoscaling_config.bogus"]
