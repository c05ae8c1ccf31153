"""Exact event timelines for tiny deterministic scenarios, the seed article's claims,
and determinism."""

from dataclasses import replace

import pandas as pd
import pytest
from helpers import config

from simserve import ClusterConfig, DeploymentConfig, Distribution, Overheads, RouterConfig, SimConfig, WorkloadConfig, WorkModel, simulate
from simserve.simulation import Simulation


def _timeline(cfg):
    df = simulate(cfg).requests
    return [tuple(r) for r in df[["request_id", "arrival_s", "dispatch_s", "done_s"]].round(9).itertuples(index=False)]


def test_ideal_router_two_one_slot_replicas_four_clients():
    """Ideal router, 2 one-slot replicas, 0.5 s gil, 4 clients: pairs of requests run in lock-step."""
    cfg = config(kind="gil", mean_s=0.5, replicas=2, max_ongoing=1, router="ideal", concurrent=4, requests=8, duration_s=None)
    assert _timeline(cfg) == [
        (0, 0.0, 0.0, 0.5),
        (1, 0.0, 0.0, 0.5),
        (2, 0.0, 0.5, 1.0),  # waited for the first free slot
        (3, 0.0, 0.5, 1.0),
        (4, 0.5, 1.0, 1.5),  # sent at 0.5 by a client answered then; behind 2 and 3
        (5, 0.5, 1.0, 1.5),
        (6, 1.0, 1.5, 2.0),
        (7, 1.0, 1.5, 2.0),
    ]


def test_sync_handlers_share_the_gil_pairwise():
    """Ray's router spreads 4 clients 2 and 2 over 2 sync replicas; each pair shares one GIL and ends together at 1.0 s."""
    cfg = config(kind="gil", mean_s=0.5, replicas=2, max_ongoing=5, handler="sync", concurrent=4, requests=8, duration_s=None)
    df = simulate(cfg).requests
    first = df[df["arrival_s"] == 0.0]
    assert sorted(first.groupby("replica").size()) == [2, 2]
    assert list(first["done_s"]) == [1.0, 1.0, 1.0, 1.0]
    assert list(df["latency_s"]) == [1.0] * 8


def test_ray_router_polls_and_a_step_fills_one_replica_twice_from_the_stale_cache():
    """Ray's router, 2 one-slot replicas, 3 clients: request 2 waits from 0 s in back-off. At 0.5 s
    both slots free; the routing task of request 3 reads both as free in the cache and, the cache not
    bumped until its step ends, gives replica 0 first to request 2 (FIFO) and then to request 3
    itself; replica 0 rejects 3, whose retry takes replica 1, and request 4 polls until 1.0 s."""
    cfg = config(kind="gil", mean_s=0.5, replicas=2, max_ongoing=1, concurrent=3, requests=6, duration_s=None)
    result = simulate(cfg)
    assert _timeline(cfg) == [
        (0, 0.0, 0.0, 0.5),
        (1, 0.0, 0.0, 0.5),
        (2, 0.0, 0.5, 1.0),
        (3, 0.5, 0.5, 1.0),
        (4, 0.5, 1.0, 1.5),
        (5, 1.0, 1.0, 1.5),
    ]
    assert result.requests.set_index("request_id").loc[[2, 3, 4], "replica"].tolist() == [0, 1, 1]
    assert result.replicas["rejected"].sum() == 1


def test_a_rejection_costs_the_replica_and_then_the_router_before_the_retry():
    """The stale-cache scenario above with io work: replica 0 spends 10 ms on rejecting request 3 and
    the router 20 ms on the answer before the retry, so request 3 reaches replica 1 at 0.53 s, not 0.5."""
    cfg = config(kind="io", mean_s=0.5, replicas=2, max_ongoing=1, concurrent=3, requests=4, duration_s=None)
    cfg = replace(cfg, overheads=Overheads(replica_reject_cpu_s=0.01, reject_cpu_s=0.02))
    result = simulate(cfg)
    assert _timeline(cfg)[:4] == [(0, 0.0, 0.0, 0.5), (1, 0.0, 0.0, 0.5), (2, 0.0, 0.5, 1.0), (3, 0.5, 0.53, 1.03)]
    assert result.requests.set_index("request_id").loc[[2, 3], "replica"].tolist() == [0, 1]
    assert result.replicas["rejected"].sum() == 1


def test_ray_router_backoff_schedule_when_nothing_else_arrives():
    """With one open-loop request stuck behind a busy one-slot replica, dispatch waits for the back-off
    poll after the slot frees: polls at 0, 0, 0.025, 0.075, 0.175, 0.375, 0.775 s -> dispatched at 0.775 s."""
    cfg = config(kind="io", mean_s=0.5, replicas=1, max_ongoing=1, trace_arrivals_s=(0.0, 0.0), requests=2, duration_s=None)
    assert _timeline(cfg) == [(0, 0.0, 0.0, 0.5), (1, 0.0, 0.775, 1.275)]


def test_each_back_off_sleep_ends_late_by_the_measured_lateness():
    """The same stuck request with every back-off sleep ending 1 ms late: its five sleeps put the
    dispatch 5 ms later, at 0.780 s."""
    cfg = config(kind="io", mean_s=0.5, replicas=1, max_ongoing=1, trace_arrivals_s=(0.0, 0.0), requests=2, duration_s=None)
    cfg = replace(cfg, overheads=Overheads(backoff_sleep_late_s=0.001))
    assert _timeline(cfg) == [(0, 0.0, 0.0, 0.5), (1, 0.0, 0.78, 1.28)]



def test_the_http_proxys_router_adds_a_local_node_pass_without_a_sleep():
    """The same stuck request through the HTTP proxy: its router first tries its own node's replicas,
    once and without a sleep after it, so it makes 8 candidate sets where a handle makes 7 (the
    first request 1 each) and still dispatches at 0.775 s."""
    cfg = config(kind="io", mean_s=0.5, replicas=1, max_ongoing=1, trace_arrivals_s=(0.0, 0.0), requests=2, duration_s=None)
    runs = {ing: simulate(replace(cfg, overheads=Overheads(ingress=ing))) for ing in ("handle", "http")}
    assert runs["handle"].summary["router"]["attempts_per_request"] == (1 + 7) / 2
    assert runs["http"].summary["router"]["attempts_per_request"] == (1 + 8) / 2
    assert _timeline(replace(cfg, overheads=Overheads(ingress="http"))) == [(0, 0.0, 0.0, 0.5), (1, 0.0, 0.775, 1.275)]


@pytest.mark.parametrize("attempt_cpu_s", [0.0, 0.001, 0.002])
def test_one_request_at_a_time_pays_router_cpu_s_however_it_is_split(attempt_cpu_s):
    """One client, 100 ms of io, 2 ms of routing: whatever share of it each attempt takes
    (router_attempt_cpu_s) and the send the rest, the request leaves after 2 ms and is back at
    102 ms, then the next."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, concurrent=1, requests=2, duration_s=None)
    oh = Overheads(router_cpu_s=0.002, router_attempt_cpu_s=attempt_cpu_s)
    assert _timeline(replace(cfg, overheads=oh)) == [(0, 0.0, 0.002, 0.102), (1, 0.102, 0.104, 0.204)]


@pytest.mark.parametrize("attempt_cpu_s, leaves_s", [(0.001, 0.011), (0.01, 0.02)])
def test_the_first_send_waits_for_the_next_attempt_then_pays_the_rest_of_the_routing(attempt_cpu_s, leaves_s):
    """Two requests at once on one one-slot replica, 10 ms of routing: the first's attempt, then
    the second's (the loop runs one step at a time and the send is queued behind it), then the
    first's send: it leaves at 1 + 1 + 9 = 11 ms when an attempt costs 1 ms of the 10, at 10 +
    10 = 20 ms when an attempt costs all of it and the send nothing."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, max_ongoing=1, trace_arrivals_s=(0.0, 0.0), requests=2,
                 duration_s=None)
    res = simulate(replace(cfg, overheads=Overheads(router_cpu_s=0.01, router_attempt_cpu_s=attempt_cpu_s)))
    assert round(float(res.requests["dispatch_s"].min()), 9) == leaves_s


def test_a_probe_answered_after_its_deadline_counts_as_no_answer():
    """With 60 ms hops a probe's answer takes 0.12 s: the first probe times out at Ray's 0.1 s
    deadline, the second (deadline doubled to 0.2 s) is answered at 0.22 s, the request reaches
    the replica at 0.28 s, runs 0.5 s and is back at 0.84 s."""
    cfg = config(kind="io", mean_s=0.5, replicas=1, max_ongoing=1, trace_arrivals_s=(0.0,), requests=1, duration_s=None)
    result = simulate(replace(cfg, overheads=Overheads(hop_s=0.06, hop_cv=0.0)))
    assert _timeline(result.config) == [(0, 0.0, 0.28, 0.78)]
    assert result.requests["end_s"].round(9).tolist() == [0.84]
    assert result.summary["router"]["probe_timeouts_per_request"] == 1.0


def test_each_gil_acquisition_of_ray_machinery_waits_behind_a_spinning_handler():
    """A request reaching a sync replica while another spins: its 3 ms of Ray machinery in 3 GIL takes
    each waits the 5 ms switch interval, then runs at half speed beside the spinner (2 ms): the handler
    starts at 0.05 + 3 * 7 ms = 0.071 s; taken in one piece it starts at 0.05 + 5 + 6 ms = 0.061 s."""
    cfg = config(kind="gil", mean_s=0.1, replicas=1, handler="sync", trace_arrivals_s=(0.0, 0.05), requests=2,
                 duration_s=None)

    def second_start_s(acquisitions: int) -> float:
        oh = Overheads(replica_cpu_s=0.003, replica_gil_acquisitions=acquisitions, gil_switch_interval_s=0.005)
        return round(float(simulate(replace(cfg, overheads=oh)).requests["start_s"].iloc[1]), 9)

    assert second_start_s(3) == 0.071
    assert second_start_s(1) == 0.061


def test_each_take_behind_a_handler_thread_costs_the_hand_over():
    """The same with a 1 ms hand-over: each of the 3 takes waits 5 ms, then runs 1 + 1 ms at half
    speed beside the spinner (4 ms), so the handler starts at 0.05 + 3 * 9 ms = 0.077 s; and the
    second handler's own thread, finding the first's holding the GIL, pays one more, and 19 more
    for the switch intervals of its 100 ms beside the first's thread."""
    cfg = config(kind="gil", mean_s=0.1, replicas=1, handler="sync", trace_arrivals_s=(0.0, 0.05), requests=2,
                 duration_s=None)
    oh = Overheads(replica_cpu_s=0.003, replica_gil_acquisitions=3, gil_switch_interval_s=0.005,
                   replica_gil_handoff_cpu_s=0.001)
    res = simulate(replace(cfg, overheads=oh))
    assert round(float(res.requests["start_s"].iloc[1]), 9) == 0.077
    assert res.summary["gil_handoff_cpu_ms_per_request"] == pytest.approx((4 + 19) * 1.0 / 2)


@pytest.mark.parametrize("handler, ends_s", [("sync", [0.035, 0.044]), ("async", [0.02, 0.04])])
def test_handler_threads_side_by_side_hand_the_gil_over_every_switch_interval(handler, ends_s):
    """Two requests of 20 ms gil work at once, 5 ms switch interval, 1 ms hand-over: a def handler
    runs the second on a thread of its own, which waits 5 ms, then takes the GIL 4 times beside
    the first's and pays 1 ms for each (24 ms of work): the first ends at 5 + 2 * 15 = 35 ms, the
    second 9 ms later; an async def handler runs them one after the other and pays none."""
    cfg = config(kind="gil", mean_s=0.02, replicas=1, handler=handler, trace_arrivals_s=(0.0, 0.0), requests=2,
                 duration_s=None)
    oh = Overheads(gil_switch_interval_s=0.005, replica_gil_handoff_cpu_s=0.001)
    res = simulate(replace(cfg, overheads=oh))
    assert sorted(res.requests["done_s"].round(9)) == ends_s


def test_ray_takes_behind_ray_takes_are_no_hand_over():
    """Ray's takes for two requests arriving together run on one thread, the replica's main loop:
    an io handler's requests start at the same times with or without a hand-over cost."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, trace_arrivals_s=(0.0, 0.0), requests=2, duration_s=None)

    def starts(handoff_s: float) -> list[float]:
        oh = Overheads(replica_cpu_s=0.003, replica_gil_acquisitions=3, gil_switch_interval_s=0.005,
                       replica_gil_handoff_cpu_s=handoff_s)
        return simulate(replace(cfg, overheads=oh)).requests["start_s"].round(9).tolist()

    assert starts(0.001) == starts(0.0)


def test_ray_takes_waiting_together_behind_a_handler_pay_one_hand_over():
    """Two requests reach a sync replica at 0.05 s while a third spins: the first one's take (3 ms)
    wakes the main loop and pays 1 ms, the second's waits on the same awake thread and pays none; both
    join the spinner at 0.055 s and share the GIL three ways, so the second's take ends at 0.064 s and
    the first's at 0.066 s."""
    cfg = config(kind="gil", mean_s=0.1, replicas=1, handler="sync", trace_arrivals_s=(0.0, 0.05, 0.05),
                 requests=3, duration_s=None)
    oh = Overheads(replica_cpu_s=0.003, replica_gil_acquisitions=1, gil_switch_interval_s=0.005,
                   replica_gil_handoff_cpu_s=0.001)
    starts = simulate(replace(cfg, overheads=oh)).requests.sort_values("arrival_s", kind="stable")["start_s"]
    assert starts.round(9).tolist() == [0.003, 0.066, 0.064]


@pytest.mark.parametrize(("handler", "kind", "done_s"), [
    ("sync", "gil", 0.102),  # one take: the pool's thread picks the call up and spins on
    ("sync", "io", 0.102),  # a take of its own, then the sleep
    ("async", "gil", 0.1),  # no pool
])
def test_a_def_handlers_call_through_the_thread_pool_costs_replica_sync_cpu_s(handler, kind, done_s):
    """One request of 100 ms with ``replica_sync_cpu_s`` = 2 ms ends at 0.102 s from a def handler and at
    0.1 s from an async def one."""
    cfg = config(kind=kind, mean_s=0.1, replicas=1, handler=handler, trace_arrivals_s=(0.0,), requests=1,
                 duration_s=None)
    oh = Overheads(replica_sync_cpu_s=0.002, replica_sync_native_cpu_s=0.001)
    assert _timeline(replace(cfg, overheads=oh)) == [(0, 0.0, 0.0, done_s)]


def test_a_def_handlers_first_gil_segment_shares_the_pool_take():
    """Two def requests 50 ms apart on one replica, 100 ms of GIL work each, 2 ms through the pool: the
    second waits one switch interval (5 ms) and pays one hand-over (1 ms) in a single take, and 19.4
    more for the switch intervals of its 102 ms beside the first's thread, so the GIL holds 0.204 +
    0.001 + 0.0194 s of work and both end by 0.2244 s (a take of its own for the pool would wait
    behind the first request again and pay a second hand-over: 0.2254 s)."""
    cfg = config(kind="gil", mean_s=0.1, replicas=1, handler="sync", trace_arrivals_s=(0.0, 0.05), requests=2,
                 duration_s=None)
    oh = Overheads(replica_sync_cpu_s=0.002, gil_switch_interval_s=0.005, replica_gil_handoff_cpu_s=0.001)
    done = simulate(replace(cfg, overheads=oh)).requests["done_s"]
    assert round(float(done.max()), 9) == 0.2244


# -- the seed article's scenarios -------------------------------------------------------------


def test_seed_two_cpu_bound_replicas_give_about_four_rps():
    """500 ms CPU-bound requests on 2 replicas of 1 CPU give about 4 requests/s."""
    s = simulate(config(kind="gil", mean_s=0.5, replicas=2, num_cpus=1, concurrent=4, duration_s=120, warmup_s=5)).summary
    assert s["throughput_rps"] == pytest.approx(4.0, rel=0.02)


def test_seed_ten_replicas_on_eight_cpus_leave_two_pending():
    """num_replicas=10, num_cpus=1 on 8 logical CPUs: 8 run, 2 stay pending and serve nothing."""
    res = simulate(config(kind="gil", mean_s=0.5, replicas=10, num_cpus=1, cluster_cpus=8, concurrent=20, duration_s=20))
    assert res.summary["replicas"] == {"requested": 10, "running": 8, "pending": 2}
    assert res.replicas.loc[res.replicas["state"] != "RUNNING", "completed"].tolist() == [0, 0]
    assert res.requests["replica"].max() < 8


def test_seed_four_two_cpu_replicas_process_four_at_once_while_six_wait():
    """num_replicas=4, num_cpus=2, 10 clients, max_ongoing_requests=1: at most 4 run at once, the other 6 wait."""
    res = simulate(config(kind="gil", mean_s=0.5, replicas=4, num_cpus=2, max_ongoing=1, concurrent=10, duration_s=30))
    df = res.requests
    times = sorted(set(df["dispatch_s"].dropna()) | set(df["done_s"].dropna()))
    for t in times:
        running = ((df["dispatch_s"] <= t) & ~(df["done_s"] <= t)).sum()
        waiting = ((df["arrival_s"] <= t) & ~(df["dispatch_s"] <= t)).sum()
        assert running <= 4
        assert running + waiting == 10  # closed loop, no think time: every client has a request out
    assert max(((df["dispatch_s"] <= t) & ~(df["done_s"] <= t)).sum() for t in times) == 4


# -- determinism ----------------------------------------------------------------------------------


def test_same_seed_same_results():
    """The same configuration and seed give an identical summary and request table."""
    cfg = config(kind="gil", dist="lognormal", cv=1.0, mean_s=0.05, replicas=3, concurrent=8, duration_s=20, seed=42)
    a, b = simulate(cfg), simulate(cfg)
    sa, sb = dict(a.summary), dict(b.summary)
    sa.pop("wall_time_s"), sb.pop("wall_time_s")
    assert sa == sb
    pd.testing.assert_frame_equal(a.requests, b.requests)
    c = simulate(config(kind="gil", dist="lognormal", cv=1.0, mean_s=0.05, replicas=3, concurrent=8, duration_s=20, seed=43))
    assert not a.requests["latency_s"].equals(c.requests["latency_s"])


def test_changing_the_router_leaves_arrivals_and_demands_alone():
    """Random streams are per concern: another router policy sees the same Poisson arrivals."""
    base = dict(kind="io", dist="exponential", mean_s=0.05, replicas=3, rps=30, duration_s=10, seed=7)
    a = simulate(config(router="pow2", **base)).requests
    b = simulate(config(router="ideal", **base)).requests
    assert a["arrival_s"].tolist() == b["arrival_s"].tolist()


def test_a_hop_to_a_node_idle_for_idle_wake_after_s_takes_idle_wake_s_longer():
    """1 ms hops, 2 ms wake after 10 ms idle, 50 ms of io, no CPU. The first request probes the
    replica (the cache is empty: 2 ms more) and its response reaches a node idle for 53 ms (+2 ms);
    the second, sent at 1 s, needs no probe but finds the node idle (+2 ms), and so does its
    response (+2 ms)."""
    def latencies(wake_s):
        cfg = SimConfig(
            deployment=DeploymentConfig(num_replicas=1, work=WorkModel.single("io", Distribution("deterministic", 0.05))),
            overheads=Overheads(hop_s=0.001, hop_cv=0.0, idle_wake_s=wake_s, idle_wake_after_s=0.01),
            workload=WorkloadConfig(trace_arrivals_s=(0.0, 1.0), requests=2, duration_s=None),
            keep_requests=True,
        )
        return sorted(simulate(cfg).requests["latency_s"])

    assert latencies(0.0) == pytest.approx([0.052, 0.054])
    assert latencies(0.002) == pytest.approx([0.056, 0.056])


def test_the_timeline_counts_the_cores_kept_busy():
    """One client on one sync replica doing 100 ms of gil work, nothing else: one core is busy
    all the time, so every timeline row shows 1.0 cores."""
    cfg = SimConfig(
        deployment=DeploymentConfig(num_replicas=1, handler="sync",
                                    work=WorkModel.single("gil", Distribution("deterministic", 0.1))),
        workload=WorkloadConfig(concurrent=1, duration_s=3.0),
        timeline_interval_s=0.5,
    )
    cores = simulate(cfg).timeline["cpu_busy_cores"].tolist()
    assert cores == pytest.approx([1.0] * len(cores))


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_closed_loop_of_one_client_pays_one_wake_up_per_request(replicas):
    """With the driver's and replica's CPU, a request sent on an answer finds the node awake (the
    answer was just handled), and its own answer reaches a node idle through the 50 ms of io: one
    wake-up per request, however many replicas take turns."""
    def latencies(wake_s):
        cfg = SimConfig(
            deployment=DeploymentConfig(num_replicas=replicas,
                                        work=WorkModel.single("io", Distribution("deterministic", 0.05))),
            overheads=Overheads(hop_s=0.001, hop_cv=0.0, client_cpu_s=0.0005, replica_cpu_s=0.0005,
                                idle_wake_s=wake_s, idle_wake_after_s=0.01),
            workload=WorkloadConfig(concurrent=1, requests=6, duration_s=None),
            router=RouterConfig(policy="round_robin"),
            keep_requests=True,
        )
        return simulate(cfg).requests.sort_values("arrival_s")["latency_s"].to_numpy()

    extra = latencies(0.002) - latencies(0.0)
    assert extra == pytest.approx([0.002] * 6)


@pytest.mark.parametrize("cores, extra", [(2, [0.0, 0.003, 0.003]), (1, [0.0, 0.0, 0.0])])
def test_a_request_sent_after_an_idle_spell_pays_the_wake_up_on_a_node_of_two_cores(cores, extra):
    """Requests at 0, 50 and 100 ms, each after 2 ms of the client's CPU, 1 ms hops, 5 ms of io, a
    3 ms wake-up after 10 ms of quiet. On two cores the second and third requests pay it on their
    way to the replica, quiet for 40 ms when the client woke (the client's CPU keeps only its own
    core awake, as in the calibration's wake phase); on one core that CPU keeps the replica's core
    awake too. The first finds the node just started, and no response pays: the replica was
    reached 5 ms before."""
    def latencies(wake_s):
        cfg = SimConfig(
            deployment=DeploymentConfig(num_replicas=1, work=WorkModel.single("io", Distribution("deterministic", 0.005))),
            cluster=ClusterConfig(num_cpus=2, physical_cores=cores),
            overheads=Overheads(hop_s=0.001, hop_cv=0.0, client_cpu_s=0.002, idle_wake_s=wake_s, idle_wake_after_s=0.01),
            workload=WorkloadConfig(trace_arrivals_s=(0.0, 0.05, 0.1), requests=3, duration_s=None),
            keep_requests=True,
        )
        return simulate(cfg).requests.sort_values("arrival_s")["latency_s"].to_numpy()

    assert latencies(0.003) - latencies(0.0) == pytest.approx(extra)


def test_a_done_callback_later_than_the_response_makes_the_next_request_probe():
    """One one-slot replica, one client, 1 ms hops: with the done callback 1.5 ms after each response,
    the next request (sent on that response) still finds the slot counted in the cache and probes,
    so each dispatch waits a 2 ms probe round trip; with no lag only the first request probes."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, max_ongoing=1, concurrent=1, requests=4, duration_s=None)
    runs = {lag: simulate(replace(cfg, overheads=Overheads(hop_s=0.001, hop_cv=0.0, done_callback_lag_s=lag)))
            for lag in (0.0, 0.0015)}
    late = runs[0.0015].requests[["dispatch_s", "end_s"]].round(9).values.tolist()
    assert late == [[0.003, 0.104], [0.107, 0.208], [0.211, 0.312], [0.315, 0.416]]
    assert runs[0.0015].summary["router"]["probes_per_request"] == 1.0
    assert runs[0.0].requests["dispatch_s"].round(9).tolist() == [0.003, 0.105, 0.207, 0.309]
    assert runs[0.0].summary["router"]["probes_per_request"] == 0.25


def test_the_done_callback_lag_is_drawn_lognormal_around_its_measured_median():
    """With done_callback_lag_cv, each response's lag is drawn: lognormal with median
    done_callback_lag_s and that coefficient of variation; without it, the constant."""
    import numpy as np

    from simserve.simulation import Simulation

    cfg = config(kind="io", mean_s=0.1, replicas=1, concurrent=1, requests=1, duration_s=None)
    draw = Simulation(replace(cfg, overheads=Overheads(done_callback_lag_s=0.002, done_callback_lag_cv=0.5)))
    lags = np.array([draw.done_callback_lag() for _ in range(40_000)])
    assert np.median(lags) == pytest.approx(0.002, rel=0.02)
    assert lags.std() / lags.mean() == pytest.approx(0.5, rel=0.05)
    fixed = Simulation(replace(cfg, overheads=Overheads(done_callback_lag_s=0.002)))
    assert {fixed.done_callback_lag() for _ in range(10)} == {0.002}


def test_takes_after_the_handler_delay_the_response_and_hold_the_slot_until_the_done_callback():
    """Ray's 3 ms per request in 1 take before the handler, 1 between it and the response and 1 after
    the response: a lone 100 ms io request starts at 1 ms, its handler ends at 101 ms, the response
    reaches the client at 102 ms and the slot frees at 103 ms, when the router's done callback runs; with
    all 3 takes before the handler it starts at 3 ms and everything else happens at 103 ms. (A second
    request at 0.5 s keeps the run going past the first answer.)"""
    cfg = config(kind="io", mean_s=0.1, replicas=1, trace_arrivals_s=(0.0, 0.5), requests=2, duration_s=None)

    def times(before: int, response: int, release: int) -> list[float]:
        oh = Overheads(replica_cpu_s=0.003, replica_gil_acquisitions=before,
                       replica_response_gil_acquisitions=response, replica_release_gil_acquisitions=release)
        sim = Simulation(replace(cfg, overheads=oh))
        done = []
        on_response = sim.router.on_response
        sim.router.on_response = lambda req, replica: (done.append(sim.env.now), on_response(req, replica))
        row = sim.run().requests.iloc[0]
        return [round(float(t), 9) for t in (row["start_s"], row["done_s"], row["end_s"], row["released_s"], done[0])]

    assert times(1, 1, 1) == [0.001, 0.101, 0.102, 0.103, 0.103]
    assert times(3, 0, 0) == [0.003, 0.103, 0.103, 0.103, 0.103]


def _acceptances(sim) -> list:
    """(time, queue length) of each acceptance as it reaches ``sim``'s router, filled as it runs."""
    answers = []
    on_accepted = sim.router.on_accepted
    sim.router.on_accepted = lambda req, replica, qlen: (answers.append((round(sim.env.now, 9), qlen)),
                                                         on_accepted(req, replica, qlen))
    return answers


def _probe_burst(sim, n: int, at_s: float) -> list:
    """``n`` queue-length probes queued on ``sim``'s router loop at once at ``at_s`` (Ray's background
    probe, to every replica); each answer's time after ``at_s`` as it reaches the router, filled as it runs."""
    router, answers = sim.router, []
    probe_back = router._probe_back
    router._probe_back = lambda answer: (answers.append(round(sim.env.now - at_s, 9)), probe_back(answer))

    def burst(_):
        for _ in range(n):
            router._call_soon(router._background_probe, (list(router.replicas), 0))

    sim.later(at_s, burst, None)
    return answers


def test_the_acceptance_leaves_after_its_takes_and_the_handler_starts_after_the_rest():
    """Ray's 4 ms per request in 4 takes before the handler, the acceptance yielded after the first 2:
    the request reaches the replica at 3 ms (a probe's round trip, then the 1 ms hop), its acceptance
    reaches the router at 6 ms, read as one request ongoing, and the handler starts at 7 ms; with the
    acceptance on admission it arrives at 4 ms, and the handler starts at 7 ms too."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, concurrent=1, requests=1, duration_s=None)

    def times(accept: int) -> list:
        oh = Overheads(hop_s=0.001, hop_cv=0.0, replica_cpu_s=0.004, replica_gil_acquisitions=4,
                       replica_accept_gil_acquisitions=accept)
        sim = Simulation(replace(cfg, overheads=oh))
        answers = _acceptances(sim)
        row = sim.run().requests.iloc[0]
        return [*answers, round(float(row["start_s"]), 9)]

    assert times(2) == [(0.006, 1), 0.007]
    assert times(0) == [(0.004, 1), 0.007]


def test_acceptances_leave_in_turn_with_the_queue_length_at_admission():
    """Two requests reach a two-slot replica together (no hops) whose 2 ms per request are 2 takes, the
    acceptance after the first: the first is answered at 1 ms; the second's take starts then and shares
    the GIL with the first's take after its answer, so it is answered at 3 ms. They read 1 and 2 requests
    ongoing, as at their admission (Ray reads it in the capacity check's step), although both were
    admitted by the time the first answer left."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, max_ongoing=2, trace_arrivals_s=(0.0, 0.0), requests=2,
                 duration_s=None)
    oh = Overheads(replica_cpu_s=0.002, replica_gil_acquisitions=2, replica_accept_gil_acquisitions=1)
    sim = Simulation(replace(cfg, overheads=oh))
    answers = _acceptances(sim)
    sim.run()
    assert answers == [(0.001, 1), (0.003, 2)]


def test_a_burst_of_probes_is_answered_one_call_after_another():
    """Five queue-length probes fired at once at one replica whose main loop spends 1 ms of Python on
    each (no hops): answered at 1, 2, 3, 4 and 5 ms, in turn (Ray's main loop runs each call up to its
    answer in one go), not all at 5 ms as the GIL's processor sharing alone would have it."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, trace_arrivals_s=(1.0,), requests=1, duration_s=None)
    sim = Simulation(replace(cfg, overheads=Overheads(replica_probe_cpu_s=0.001, replica_probe_gil_acquisitions=1)))
    answers = _probe_burst(sim, 5, 0.5)
    sim.run()
    assert answers[:5] == [0.001, 0.002, 0.003, 0.004, 0.005]


def test_beside_a_busy_gil_only_the_first_call_of_a_burst_waits_for_its_takes():
    """A thread spins pure Python in the replica (5 ms switch interval); three probes arrive at once,
    each 1 ms of Python in 2 takes. The first waits a switch interval for each take and runs at half
    the GIL: answered at 12 ms. The next two run on the loop's thread as it goes on holding the GIL,
    without takes of their own: 2 ms apart (at 14 and 16 ms), not 12 ms apart."""
    cfg = config(kind="io", mean_s=0.1, replicas=1, trace_arrivals_s=(1.0,), requests=1, duration_s=None)
    oh = Overheads(replica_probe_cpu_s=0.001, replica_probe_gil_acquisitions=2, gil_switch_interval_s=0.005)
    sim = Simulation(replace(cfg, overheads=oh))

    def spin(_):
        sim.router.replicas[0].process.run_handler_gil(100.0, lambda _: None, None)

    sim.later(0.4, spin, None)
    answers = _probe_burst(sim, 3, 0.5)
    sim.run()
    assert answers[:3] == [0.012, 0.014, 0.016]


@pytest.mark.parametrize("router", ["pow2", "ideal"])
def test_a_request_refused_by_max_queued_requests_costs_no_cpp_or_daemon_cpu(router):
    """Three clients on one one-slot io replica with max_queued_requests=1: the requests refused
    by backpressure never reach Ray's core worker, so the driver's C++ threads and Ray's daemons
    burn their per-request CPU (1 ms and 0.5 ms here) only for the requests the router took."""
    cfg = config(kind="io", mean_s=0.05, max_ongoing=1, router=router, concurrent=3, duration_s=2.0)
    cfg = replace(cfg, deployment=replace(cfg.deployment, max_queued_requests=1),
                  overheads=Overheads(client_native_cpu_s=0.001, ray_background_cpu_per_request_s=0.0005))
    sim = Simulation(cfg)
    res = sim.run()
    refused = (res.requests["status"] == "rejected").sum()
    taken = len(res.requests) - refused
    assert refused > 0
    assert sim.nodes[0].core_busy_until_now() == pytest.approx(taken * 0.0015)


@pytest.mark.parametrize("clients", [1, 4])
def test_batched_costs_apply_only_with_more_than_one_request_in_flight(clients):
    """Ray's per-request CPU (caller, router, replica, C++ threads) with batched_cpu_factor 0.5
    against 1: one client's requests never meet another's, so every latency is the same; four
    clients' work overlaps in the driver and the replica, which then spend less per request."""
    def run(factor):
        cfg = SimConfig(
            deployment=DeploymentConfig(num_replicas=1, work=WorkModel.single("io", Distribution("deterministic", 0.002))),
            cluster=ClusterConfig(num_cpus=2, physical_cores=2),
            overheads=Overheads(hop_s=0.0005, hop_cv=0.0, client_cpu_s=0.0005, router_cpu_s=0.0015,
                                client_native_cpu_s=0.002, replica_cpu_s=0.002, replica_native_cpu_s=0.0005,
                                batched_cpu_factor=factor),
            workload=WorkloadConfig(concurrent=clients, requests=200, duration_s=None, warmup_s=0.0),
            keep_requests=True,
        )
        result = simulate(cfg)
        return result.requests.sort_values("arrival_s")["latency_s"].to_numpy(), result.summary

    (full, full_summary), (batched, summary) = run(1.0), run(0.5)
    saved = summary["batched_cpu_saved_ms_per_request"]
    if clients == 1:
        assert batched.tolist() == full.tolist()
        assert saved == {"driver": 0.0, "replica": 0.0}
    else:
        assert saved["driver"] > 0.0 and saved["replica"] > 0.0
        assert summary["throughput_rps"] > full_summary["throughput_rps"]
