"""Autoscaling in the simulation: the controller loop, the replica lifecycle and the
load shapes together (the policy and metric pipeline alone: test_autoscaling_policy.py)."""

import math

import pytest

from hypothesis import example, given, settings
from hypothesis import strategies as st

from simserve import ClusterConfig, DeploymentConfig, Distribution, Overheads, RouterConfig, SimConfig, WorkloadConfig, WorkModel, simulate
from simserve.autoscaling import AutoscalingConfig
from simserve.load_shape import LoadShape


def _run(autoscaling, steps, *, service_s=0.05, startup_s=0.5, interval_s=0.1, max_ongoing=5, work="io",
         startup_cpu_s=0.0, cpu_speed=1.0, cores=8.0):
    cfg = SimConfig(
        deployment=DeploymentConfig(
            num_replicas=None,
            autoscaling_config=autoscaling,
            max_ongoing_requests=max_ongoing,
            work=WorkModel.single(work, Distribution("deterministic", service_s)),
        ),
        cluster=ClusterConfig(physical_cores=cores),
        overheads=Overheads(replica_startup_s=startup_s, replica_startup_cpu_s=startup_cpu_s, cpu_speed=cpu_speed),
        workload=WorkloadConfig(
            concurrent=int(max(n for _, n in steps)), duration_s=sum(d for d, _ in steps), shape=LoadShape("steps", steps=steps)
        ),
        timeline_interval_s=interval_s,
    )
    return simulate(cfg)


def test_two_clients_scale_one_replica_to_two_on_the_expected_ticks():
    """1 s io, 2 clients, target 1: the first push with load (t=1) makes the policy want 2
    from the 1.1 s tick; after upscale_delay_s=1 it decides at 2.1 s, the controller acts at
    2.2 s, and the new replica runs 0.5 s later; 2 ongoing over 2 replicas then holds."""
    a = AutoscalingConfig(
        min_replicas=1, max_replicas=3, target_ongoing_requests=1, upscale_delay_s=1, downscale_delay_s=2,
        metrics_interval_s=1, look_back_period_s=1,
    )
    res = _run(a, ((8.0, 2),), service_s=1.0)
    reps = res.replicas
    assert len(reps) == 2
    assert math.isclose(reps.loc[1, "created_s"], 2.2, abs_tol=1e-9)
    assert math.isclose(reps.loc[1, "running_since_s"], 2.7, abs_tol=1e-9)
    tl = res.timeline
    assert (tl.loc[tl["time_s"] < 2.2 - 1e-9, "target_replicas"] == 1).all()
    assert (tl.loc[tl["time_s"] > 2.2 + 1e-9, "target_replicas"] == 2).all()


@pytest.mark.parametrize(
    "work, cores, cpu_speed, running_s",
    [
        ("io", 8.0, 1.0, 2.7),  # a free core: 0.3 s of CPU, then 0.2 s of waiting
        ("gil", 1.0, 1.0, 3.0),  # the core shared with the running replica's handler: 0.6 s
        ("io", 8.0, 0.5, 3.0),  # a host at half the calibration's speed: 0.6 s
    ],
)
def test_a_replica_start_up_runs_its_cpu_on_the_node(work, cores, cpu_speed, running_s):
    """The scenario above with 0.3 s of the 0.5 s start-up as the new process's CPU: it
    takes 0.5 s on a free core, and its CPU part doubles on a core shared with one busy
    thread or on a host at half speed, while the rest of the start stays 0.2 s."""
    a = AutoscalingConfig(
        min_replicas=1, max_replicas=3, target_ongoing_requests=1, upscale_delay_s=1, downscale_delay_s=2,
        metrics_interval_s=1, look_back_period_s=1,
    )
    res = _run(a, ((8.0, 2),), service_s=1.0, work=work, startup_cpu_s=0.3, cpu_speed=cpu_speed, cores=cores)
    assert math.isclose(res.replicas.loc[1, "created_s"], 2.2, abs_tol=1e-9)
    assert math.isclose(res.replicas.loc[1, "running_since_s"], running_s, abs_tol=1e-9)


autoscaling_configs = st.builds(
    AutoscalingConfig,
    min_replicas=st.integers(1, 2),
    max_replicas=st.integers(2, 5),
    target_ongoing_requests=st.sampled_from([1, 2, 3]),
    upscale_delay_s=st.sampled_from([0.5, 2.0, 5.0]),
    downscale_delay_s=st.sampled_from([1.0, 4.0, 8.0]),
    metrics_interval_s=st.sampled_from([0.5, 1.0, 2.0]),
    look_back_period_s=st.sampled_from([1.0, 3.0]),
)


@settings(max_examples=25)
@given(autoscaling_configs, st.integers(1, 12), st.sampled_from([5.0, 10.0]))
# Ray's time-weighted mean of a steady 9 can come out as 9.000000000000002, so one
# replica wants ceil(3.0000000000000007) = 4; four then want 3 all through the peak.
@example(AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=3, upscale_delay_s=5.0,
                           downscale_delay_s=4.0, metrics_interval_s=2.0, look_back_period_s=1.0), 9, 5.0)
def test_replicas_stay_in_bounds_and_respect_the_delays(a, peak, quiet_s):
    """Target replicas stay within [min, max]; no scale-up comes sooner than upscale_delay_s
    after the load rises; each change of target comes at least its direction's delay after
    the one before (Ray's decision counter restarts at each decision); and no scale-down
    comes sooner than downscale_delay_s after the load falls unless the peak alone already
    wanted fewer replicas than were running (then Ray's counter started during the peak)."""
    rise_at, fall_at = 2.0, 2.0 + 15.0
    res = _run(a, ((rise_at, 0), (15.0, peak), (quiet_s, 0)))
    tl = res.timeline
    assert tl["target_replicas"].between(a.min_replicas, a.max_replicas).all()
    assert (tl["running_replicas"] + tl["starting_replicas"] <= a.max_replicas).all()
    step = tl["target_replicas"].diff()
    up = tl[step > 0]
    if len(up):
        assert up["time_s"].iloc[0] >= rise_at + a.upscale_delay_s - 1e-9
    changes = tl[step.fillna(0) != 0]
    times, dirs = changes["time_s"].to_numpy(), step[changes.index].to_numpy()
    for before, after, direction in zip(times, times[1:], dirs[1:]):
        delay = a.upscale_delay_s if direction > 0 else a.downscale_delay_s
        assert after - before >= delay - 1e-9
    running_at_fall = tl.loc[tl["time_s"] <= fall_at, "running_replicas"].iloc[-1]
    if math.ceil(peak / a.target_ongoing_requests) >= running_at_fall:
        after_fall = tl[tl["time_s"] >= fall_at]
        down = after_fall[after_fall["target_replicas"].diff() < 0]
        if len(down):
            assert down["time_s"].iloc[0] >= fall_at + a.downscale_delay_s - 1e-9


@settings(max_examples=15)
@given(st.sampled_from([2, 3, 4]), st.sampled_from([0.5, 1.0]))
def test_constant_load_below_target_never_scales_up(target, delay):
    """One client (at most one request ongoing) against target_ongoing_requests >= 2 never scales up."""
    a = AutoscalingConfig(
        min_replicas=1, max_replicas=4, target_ongoing_requests=target, upscale_delay_s=delay, metrics_interval_s=0.5,
        look_back_period_s=1.0,
    )
    tl = _run(a, ((30.0, 1),)).timeline
    assert (tl["target_replicas"] == 1).all()


def test_issue_example_step_load_scales_up_then_down():
    """The README example: 1, then 8, then 1 client of 50 ms io with target 2 scales 1 -> 4 -> fewer."""
    a = AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=2, upscale_delay_s=2, downscale_delay_s=10)
    res = _run(a, ((15.0, 1), (30.0, 8), (30.0, 1)))
    tl = res.timeline
    assert tl["running_replicas"].max() == 4
    assert tl.loc[tl["time_s"] < 15 + 2, "target_replicas"].max() == 1
    assert res.summary["autoscaling"]["final_target"] < 4


def test_timers_start_each_turn_their_interval_plus_their_lateness_after_the_last():
    """With deterministic lateness, the router samples at k x (1 + 0.01) s, pushes at
    k x (2 + 0.005) s, and the controller's loop turns every 0.1 + 0.05 s from its phase;
    the metrics carry time.time(), the simulated time plus the clock's drawn offset."""
    from simserve.simulation import Simulation

    a = AutoscalingConfig(min_replicas=1, max_replicas=1, metrics_interval_s=2, look_back_period_s=5)
    cfg = SimConfig(
        deployment=DeploymentConfig(num_replicas=None, autoscaling_config=a,
                                    work=WorkModel.single("io", Distribution("deterministic", 0.05))),
        overheads=Overheads(metrics_record_late_s=0.01, metrics_push_late_s=0.005, control_loop_late_s=0.05),
        workload=WorkloadConfig(concurrent=1, duration_s=4.5),
    )
    sim = Simulation(cfg)
    ticks = []
    step = sim.autoscaler.step
    sim.autoscaler.step = lambda now, running, target: ticks.append(now) or step(now, running, target)
    sim.run()
    epoch, phase = sim._clock_offset_s, sim._control_loop_phase_s
    assert 0 <= epoch < 1 and 0 <= phase < 0.15
    report = sim.autoscaler.metrics._reports[0]
    assert report.timestamp - epoch == pytest.approx(4.01)
    assert [t - epoch for t, _ in report.queued] == pytest.approx([0.0, 1.01, 2.02, 3.03])
    assert [t - epoch for t in ticks[:4]] == pytest.approx([phase, phase + 0.15, phase + 0.30, phase + 0.45])
    assert len(ticks) == 30  # turns at phase + 0, 0.15, ..., 4.35 (the run ends at 4.5 s)


def test_the_clocks_start_at_zero_only_when_the_timers_are_punctual():
    """Without timer lateness (the pure model) the controller's loop and time.time() start
    at 0; with it, each seed draws both, and the draws spread over their ranges."""
    from simserve.simulation import Simulation

    a = AutoscalingConfig(min_replicas=1, max_replicas=1)
    work = WorkModel.single("io", Distribution("deterministic", 0.05))

    def clocks(overheads, seed):
        sim = Simulation(SimConfig(deployment=DeploymentConfig(num_replicas=None, autoscaling_config=a, work=work),
                                   overheads=overheads, workload=WorkloadConfig(concurrent=1, duration_s=1.0),
                                   seed=seed))
        return sim._clock_offset_s, sim._control_loop_phase_s

    assert {clocks(Overheads(), seed) for seed in range(5)} == {(0.0, 0.0)}
    late = Overheads(control_loop_late_s=0.01)
    epochs, phases = zip(*(clocks(late, seed) for seed in range(200)))
    assert 0 <= min(epochs) < 0.05 and 0.95 < max(epochs) < 1
    assert 0 <= min(phases) < 0.01 and 0.10 < max(phases) < 0.11
    assert clocks(late, 7) == clocks(late, 7)


def test_a_metrics_sample_waits_for_the_routers_loop():
    """The sample is a task on the router's loop. One client, 1 s io, every routing attempt
    holding the loop for 0.3 s: the loop is busy over 0-0.3, 1.3-1.6, 2.6-2.9 and 3.9-4.2 s,
    so of the turns due every second only the one due at 4.0 s waits, and samples at 4.2 s."""
    from simserve.simulation import Simulation

    a = AutoscalingConfig(min_replicas=1, max_replicas=1, metrics_interval_s=5, look_back_period_s=5)

    def samples(router_cpu_s):
        cfg = SimConfig(
            deployment=DeploymentConfig(num_replicas=None, autoscaling_config=a,
                                        work=WorkModel.single("io", Distribution("deterministic", 1.0))),
            overheads=Overheads(router_cpu_s=router_cpu_s),
            workload=WorkloadConfig(concurrent=1, duration_s=4.5),
        )
        sim = Simulation(cfg)
        times = []
        record = sim.autoscaler.metrics.record
        sim.autoscaler.metrics.record = lambda *args: times.append(args[1]) or record(*args)
        sim.run()
        return times

    assert samples(0.0) == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert samples(0.3) == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.2])


def test_ideal_router_lets_a_replica_leaving_the_routing_set_finish_its_requests():
    """With the ideal router, a replica stopped by a downscale while it still runs requests frees
    its slots without error, and every request is answered (seeds that once raised KeyError)."""
    a = AutoscalingConfig(min_replicas=0, max_replicas=3, downscale_delay_s=0.5, upscale_delay_s=0.5)
    for seed in (1, 4, 5):
        cfg = SimConfig(
            deployment=DeploymentConfig(num_replicas=None, autoscaling_config=a,
                                        work=WorkModel.single("io", Distribution("exponential", 0.1))),
            router=RouterConfig(policy="ideal"),
            workload=WorkloadConfig(concurrent=3, duration_s=60),
            seed=seed,
        )
        result = simulate(cfg)
        assert result.summary["failed"] == 0 and result.summary["completed"] > 0


def test_the_metric_counts_every_request_of_a_closed_loop_at_every_sample():
    """Ray counts a request as queued until its send and as running from that send until
    its done callback, so with N closed-loop clients (no client CPU) every sample sees at
    least N, however the sends and answers fall between samples."""
    from simserve.simulation import Simulation

    a = AutoscalingConfig(min_replicas=1, max_replicas=1, metrics_interval_s=0.5, look_back_period_s=1)
    cfg = SimConfig(
        deployment=DeploymentConfig(num_replicas=None, autoscaling_config=a, max_ongoing_requests=5,
                                    work=WorkModel.single("io", Distribution("exponential", 0.05))),
        overheads=Overheads(hop_s=0.002, hop_cv=0.5, done_callback_lag_s=0.001),
        workload=WorkloadConfig(concurrent=8, duration_s=30.0),
    )
    sim = Simulation(cfg)
    seen = []
    record = sim.autoscaler.metrics.record
    sim.autoscaler.metrics.record = lambda rid, t, q, sent: seen.append(q + sum(sent.values())) or record(rid, t, q, sent)
    sim.run()
    assert len(seen) > 100 and min(seen[1:]) >= 8  # the first sample is taken before any request
