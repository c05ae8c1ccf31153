"""The FCFS fast path gives exactly what the event-driven model gives on the same draws."""

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from simserve import ClusterConfig, DeploymentConfig, Distribution, RouterConfig, Segment, SimConfig, WorkloadConfig, WorkModel
from simserve import fcfs
from simserve.simulation import Simulation

dists = st.builds(
    Distribution,
    kind=st.sampled_from(["deterministic", "exponential", "lognormal", "gamma"]),
    mean_s=st.sampled_from([0.0, 0.01, 0.05, 0.2]),
    cv=st.sampled_from([0.5, 2.0]),
)

eligible_configs = st.builds(
    SimConfig,
    deployment=st.builds(
        DeploymentConfig,
        num_replicas=st.integers(1, 6),
        num_cpus=st.sampled_from([0.5, 1.0, 3.0]),
        max_ongoing_requests=st.integers(1, 4),
        work=st.lists(st.builds(Segment, kind=st.just("io"), duration=dists), min_size=1, max_size=3).map(lambda s: WorkModel(tuple(s))),
    ),
    cluster=st.builds(ClusterConfig, num_cpus=st.sampled_from([2.0, 8.0])),
    router=st.just(RouterConfig(policy="ideal")),
    workload=st.one_of(
        st.builds(WorkloadConfig, rps=st.sampled_from([5.0, 30.0, 120.0]), duration_s=st.sampled_from([5.0, 30.0]), warmup_s=st.sampled_from([0.0, 2.0])),
        st.builds(WorkloadConfig, rps=st.sampled_from([5.0, 30.0]), requests=st.integers(1, 400), duration_s=st.none(), warmup_s=st.just(0.0)),
    ),
    seed=st.integers(0, 2**32 - 1),
    keep_requests=st.booleans(),
    timeline_interval_s=st.sampled_from([0.5, 1.0]),
)


def _comparable(x):
    """NaN as None, so that two undefined figures compare equal."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _comparable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_comparable(v) for v in x]
    return x


def _without_engine_facts(summary):
    s = _comparable(summary)
    s.pop("wall_time_s")
    s.pop("bottleneck")  # names the busiest replica, and the two paths fill slots differently
    s["router"] = dict(s["router"])
    s["router"].pop("mean_queued")  # an integral summed in another order: compared apart
    return s


@settings(max_examples=60)
@given(eligible_configs)
def test_fast_path_agrees_with_the_event_model(cfg):
    """Same summary, same request times and same timeline, bit for bit; only slot choice differs."""
    fast_sim = Simulation(cfg)
    assume(fcfs.eligible(fast_sim))  # at least one replica placed
    fast = fcfs.run(fast_sim)
    slow = Simulation(cfg).run()
    assert _without_engine_facts(fast.summary) == _without_engine_facts(slow.summary)
    assert np.isclose(
        fast.summary["router"]["mean_queued"], slow.summary["router"]["mean_queued"], rtol=1e-9, atol=1e-12, equal_nan=True
    )
    cols = ["request_id", "arrival_s", "dispatch_s", "start_s", "done_s", "end_s", "status"]
    if cfg.keep_requests:
        assert fast.requests[cols].equals(slow.requests[cols])
    np.testing.assert_array_equal(fast.timeline.to_numpy(float), slow.timeline.to_numpy(float))
    assert fast.replicas["completed"].sum() == slow.replicas["completed"].sum()
    assert np.isclose(fast.replicas["mean_ongoing"].sum(), slow.replicas["mean_ongoing"].sum())


def test_the_ray_router_and_cpu_work_take_the_event_model():
    """Anything but ideal routing of io work with no costs is not FCFS and is not eligible."""
    base = SimConfig(router=RouterConfig(policy="ideal"), workload=WorkloadConfig(rps=5.0, duration_s=5.0))
    assert fcfs.eligible(Simulation(base))
    assert not fcfs.eligible(Simulation(SimConfig(workload=WorkloadConfig(rps=5.0, duration_s=5.0))))
    gil = DeploymentConfig(work=WorkModel.single("gil", Distribution("deterministic", 0.1)))
    assert not fcfs.eligible(Simulation(SimConfig(deployment=gil, router=RouterConfig(policy="ideal"), workload=base.workload)))
