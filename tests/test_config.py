"""Configuration checks, placement and the streaming histogram's error bound."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simserve import (
    ClusterConfig,
    ConfigError,
    DeploymentConfig,
    Distribution,
    Overheads,
    RouterConfig,
    SimConfig,
    WorkloadConfig,
    WorkModel,
)
from simserve.cpu import Node
from simserve.metrics import LatencyHistogram
from simserve.placement import place


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: DeploymentConfig(num_replicas=-1), "num_replicas"),
        (lambda: DeploymentConfig(max_ongoing_requests=0), "max_ongoing_requests"),
        (lambda: DeploymentConfig(max_queued_requests=0), "max_queued_requests"),
        (lambda: DeploymentConfig(num_cpus=float("nan")), "num_cpus"),
        (lambda: ClusterConfig(physical_cores=0), "physical_cores"),
        (lambda: ClusterConfig(core_speed_trace=((1.0, 1.0), (0.5, 1.0))), "core_speed_trace.from_s"),
        (lambda: ClusterConfig(core_speed_trace=((0.0, 0.0),)), "core_speed_trace.speed"),
        (lambda: ClusterConfig(core_speed_trace=(0.5,)), "core_speed_trace"),
        (lambda: WorkloadConfig(concurrent=1, rps=3.0), "workload"),
        (lambda: WorkloadConfig(trace_arrivals_s=(1.0, 0.5)), "trace.arrival_s"),
        (lambda: WorkloadConfig(concurrent=1, duration_s=5, warmup_s=5), "warmup_s"),
        (lambda: Overheads(wake_idle_s=(0.01, 0.01)), "wake_idle_s"),
        (lambda: Overheads(wake_idle_s=(0.01, 0.1), client_wake_cpu_s=(0.001,)), "client_wake_cpu_s"),
        (lambda: Overheads(wake_idle_s=(0.01,), replica_wake_cpu_s=(-0.001,)), "replica_wake_cpu_s"),
        (lambda: Overheads(client_wake_cpu_s=0.001), "client_wake_cpu_s"),
        (lambda: Overheads(replica_startup_s=1.0, replica_startup_cpu_s=1.5), "replica_startup_cpu_s"),
        (lambda: Overheads(oversubscribed_cpu_factor=0.0), "oversubscribed_cpu_factor"),
        (lambda: Overheads(batched_cpu_factor=0.0), "batched_cpu_factor"),
        (lambda: Overheads(batched_cpu_factor=1.5), "batched_cpu_factor"),
        (lambda: Overheads(replica_gil_acquisitions=3, replica_accept_gil_acquisitions=4),
         "replica_accept_gil_acquisitions"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(make, field):
    """Every invalid value raises ConfigError carrying Ray's field name."""
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field


def _nodes(n, cpus):
    return [Node(None, i, cpus, cpus) for i in range(n)]


@pytest.mark.parametrize(
    "handler,policy,costs",
    [
        ("async", "pow2", {"client_native_cpu_s": 0.001, "replica_native_cpu_s": 0.001}),  # beside the path
        ("async", "pow2", {"replica_sync_cpu_s": 0.001}),  # a def handler's cost, not an async one's
        ("async", "ideal", {"router_cpu_s": 0.001}),  # the ideal router charges no attempt
        ("sync", "pow2", {"probe_cpu_s": 0.001, "reject_cpu_s": 0.001}),  # some requests only
    ],
)
def test_a_closed_loop_whose_requests_nothing_holds_up_is_refused(handler, policy, costs):
    """A closed loop with no work, no think time and no cost on every request's path
    would answer infinitely many requests in zero simulated time: it is a ConfigError."""
    no_work = DeploymentConfig(handler=handler, work=WorkModel.single("io", Distribution("deterministic", 0.0)))
    with pytest.raises(ConfigError, match="service_ms"):
        SimConfig(deployment=no_work, router=RouterConfig(policy=policy), overheads=Overheads(**costs),
                  workload=WorkloadConfig(concurrent=2, duration_s=1.0, warmup_s=0.0))
    # The same loop with a cost that holds each request up is accepted.
    held = "replica_sync_cpu_s" if handler == "sync" else "replica_cpu_s"
    SimConfig(deployment=no_work, router=RouterConfig(policy=policy), overheads=Overheads(**{**costs, held: 0.001}),
              workload=WorkloadConfig(concurrent=2, duration_s=1.0, warmup_s=0.0))


def test_spread_takes_nodes_in_turn_and_pack_fills_one_first():
    """SPREAD alternates nodes; PACK fills the first node before the next."""
    spread = place(4, 1, _nodes(2, 4), "spread")
    pack = place(4, 1, _nodes(2, 4), "pack")
    assert [n.index for n in spread] == [0, 1, 0, 1]
    assert [n.index for n in pack] == [0, 0, 0, 0]


def test_fractional_cpus_fit_exactly_and_the_rest_stay_pending():
    """Ten replicas of 0.3 CPU on 2 logical CPUs: six fit (1.8), four stay pending."""
    placed = place(10, 0.3, _nodes(1, 2), "spread")
    assert sum(p is not None for p in placed) == 6


@given(st.lists(st.floats(1e-5, 1e3), min_size=1, max_size=300), st.sampled_from([50, 90, 99, 100]))
def test_histogram_percentiles_within_the_stated_relative_error(xs, q):
    """A streamed percentile is within relative_error of the exact nearest-rank percentile."""
    h = LatencyHistogram(relative_error=0.005)
    for x in xs:
        h.add(x)
    exact = sorted(xs)[max(1, math.ceil(q / 100 * len(xs))) - 1]
    assert abs(h.percentile(q) - exact) <= 0.005 * exact * (1 + 1e-9)


def test_distributions_have_the_requested_mean_and_cv():
    """Lognormal and gamma draws have the mean and coefficient of variation asked for."""
    rng = np.random.default_rng(1)
    for kind in ("lognormal", "gamma"):
        x = Distribution(kind, 0.2, 0.8).draw(rng, 400_000)
        assert x.mean() == pytest.approx(0.2, rel=0.01)
        assert x.std() / x.mean() == pytest.approx(0.8, rel=0.03)


def test_only_the_costs_cpu_speed_scales_are_read_at_the_hosts_speed():
    """``Overheads.cpu`` doubles a listed cost at half speed and refuses an unlisted one (a hop), so
    ``SPEED_SCALED``, which a calibration merge also reads, is the one list of what scales."""
    from simserve.config import SPEED_SCALED

    oh = Overheads(router_cpu_s=0.001, hop_s=0.001, cpu_speed=0.5)
    assert oh.cpu("router_cpu_s") == 0.002
    with pytest.raises(KeyError):
        oh.cpu("hop_s")
    assert SPEED_SCALED <= {f.name for f in dataclasses.fields(Overheads)}
