"""Exact timelines of the CPU model: processor sharing of cores, the GIL, native threads."""

from dataclasses import replace

import pytest

from helpers import config
from simserve import Overheads, simulate


def _done(cfg):
    return sorted(simulate(cfg).requests["done_s"].round(9).tolist())


def test_two_sync_gil_requests_share_one_gil():
    """Two 1 s pure-Python requests in one sync replica share its GIL: both end at 2 s, even with 8 cores."""
    cfg = config(kind="gil", mean_s=1.0, replicas=1, handler="sync", concurrent=2, requests=2, duration_s=None)
    assert _done(cfg) == [2.0, 2.0]


def test_async_cpu_work_runs_one_request_at_a_time():
    """An async handler's CPU work blocks its event loop: two 1 s requests end at 1 s and 2 s."""
    cfg = config(kind="gil", mean_s=1.0, replicas=1, handler="async", concurrent=2, requests=2, duration_s=None)
    assert _done(cfg) == [1.0, 2.0]


def test_four_cpu_bound_replicas_on_two_cores_are_stretched_twice():
    """Four replicas each running 1 s of GIL work on 2 cores (one request each, placed by the
    ideal router): every request takes 2 s."""
    cfg = config(
        kind="gil", mean_s=1.0, replicas=4, num_cpus=0.5, cluster_cpus=2, cores=2, router="ideal", concurrent=4, requests=4,
        duration_s=None,
    )
    assert _done(cfg) == [2.0] * 4


@pytest.mark.parametrize("num_cpus,expected", [(1.0, 1.0), (2.0, 0.5), (2.5, 0.5), (4.0, 0.25)])
def test_native_work_uses_omp_num_threads(num_cpus, expected):
    """1 s of GIL-free work runs on max(floor(num_cpus), 1) threads: num_cpus=2 halves it."""
    cfg = config(kind="native", mean_s=1.0, replicas=1, num_cpus=num_cpus, concurrent=1, requests=1, duration_s=None)
    assert _done(cfg) == [expected]


def test_gil_bound_replica_gains_nothing_from_more_cpus():
    """num_cpus=2 on a GIL-bound sync handler: two 1 s requests still share one GIL."""
    cfg = config(kind="gil", mean_s=1.0, replicas=1, num_cpus=2, handler="sync", concurrent=2, requests=2, duration_s=None)
    assert _done(cfg) == [2.0, 2.0]


def test_contended_cores_run_slower():
    """With contended_core_speed=0.8 on 2 cores, two busy replicas run at 0.8: 1 s of work takes 1.25 s;
    one alone runs at full speed."""
    cfg = config(kind="gil", mean_s=1.0, replicas=2, cluster_cpus=2, cores=2, concurrent=2, requests=2, duration_s=None)
    cfg = replace(cfg, overheads=Overheads(contended_core_speed=0.8))
    assert _done(cfg) == [1.25, 1.25]
    alone = replace(cfg, workload=replace(cfg.workload, concurrent=1, requests=1))
    assert _done(alone) == [1.0]


def test_work_under_way_slows_with_the_hosts_cores_and_recovers():
    """Two 1 s requests on two cores whose speed halves at 0.5 s and comes back at 1 s: each has done
    0.5 s of work by 0.5 s, 0.25 s more by 1 s, and the last 0.25 s at full speed, ending at 1.25 s.
    The trace moves every node's cores, and a trace of speed 1 changes nothing."""
    cfg = config(kind="gil", mean_s=1.0, replicas=2, cluster_cpus=2, cores=2, concurrent=2, requests=2, duration_s=None)
    slowed = replace(cfg, cluster=replace(cfg.cluster, core_speed_trace=((0.5, 0.5), (1.0, 1.0))))
    assert _done(slowed) == [1.25, 1.25]
    flat = replace(cfg, cluster=replace(cfg.cluster, core_speed_trace=((0.0, 1.0),)))
    assert _done(flat) == _done(cfg) == [1.0, 1.0]


def test_a_thread_waits_the_switch_interval_for_a_held_gil():
    """With a 5 ms switch interval, a 1 s job that finds the GIL held by another 1 s job waits
    5 ms before sharing: the first, 5 ms ahead, ends at 1.995 s; the GIL never idles, so the
    second ends when the 2 s of work are done."""
    cfg = config(kind="gil", mean_s=1.0, replicas=1, handler="sync", concurrent=2, requests=2, duration_s=None)
    cfg = replace(cfg, overheads=Overheads(gil_switch_interval_s=0.005))
    assert _done(cfg) == [1.995, 2.0]


def test_a_process_woken_after_idling_burns_its_wake_cost_beside_the_path():
    """Work reaching a process idle for 55 ms, with a wake cost rising linearly from 0 at
    10 ms to 0.5 s at 100 ms, burns 0.25 s on a thread of its own: on two cores the work
    itself ends on time and the cores were busy 0.25 s longer; on one core it shares it."""
    from simserve import events
    from simserve.config import WakeCost
    from simserve.cpu import Node

    def run(cores):
        env = events.Environment()
        node = Node(env, 0, num_cpus=cores, physical_cores=cores)
        proc = node.process("driver")
        proc.wake = WakeCost((0.01, 0.1), (0.0, 0.5))
        ends = []
        proc.run_gil(1.0, lambda _: ends.append(env.now), None)  # idle 0 s at t=0: no cost
        node.later(1.055, lambda _: proc.run_gil(1.0, lambda _: ends.append(env.now), None), None)
        events.run(env)
        return ends, proc.wake_cpu_s, node.core_busy_until_now()

    ends, woke, busy = run(2)
    assert ends == pytest.approx([1.0, 2.055]) and woke == pytest.approx(0.25) and busy == pytest.approx(2.25)
    ends, _, _ = run(1)
    assert ends == pytest.approx([1.0, 1.055 + 0.5 + 0.75])  # half speed while both run


def test_a_vacated_load_stops_slowing_the_work_beside_it():
    """On one core, a constant load of one thread (Node.occupy) halves a 1 s job's speed
    until it is vacated at 1 s: 0.5 s done by then, the rest at full speed, done at 1.5 s."""
    from simserve import events
    from simserve.cpu import Node

    env = events.Environment()
    node = Node(env, 0, num_cpus=1, physical_cores=1)
    load = node.occupy(1.0)
    ends = []
    node.process("replica").run_gil(1.0, lambda _: ends.append(env.now), None)
    node.later(1.0, lambda _: node.vacate(load), None)
    events.run(env)
    assert ends == pytest.approx([1.5])
    assert node.core_busy_until_now() == pytest.approx(1.5)



def test_a_constant_load_below_a_fair_share_keeps_its_rate_beside_cpu_bound_threads():
    """On 2 cores, a constant load of 0.5 cores beside three 1 s jobs in three processes
    keeps its 0.5 (a periodic task beside spinners does: validate/README.md item 31), the
    jobs share the other 1.5 cores and end at 2 s, with the 2 cores busy throughout."""
    from simserve import events
    from simserve.cpu import Node

    env = events.Environment()
    node = Node(env, 0, num_cpus=2, physical_cores=2)
    node.occupy(0.5)
    ends = []
    for i in range(3):
        node.process(f"replica-{i}").run_gil(1.0, lambda _: ends.append(env.now), None)
    events.run(env)
    assert ends == pytest.approx([2.0, 2.0, 2.0])
    assert node.core_busy_until_now() == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("cores", "threads", "loads", "expected"),
    [
        (2.0, 0, [0.1, 0.3], (1.0, 0.4)),  # no threads: the loads get their rates
        (2.0, 1, [0.1, 0.3], (1.0, 0.4)),  # room for all
        (2.0, 4, [0.1, 0.3], (0.4, 0.4)),  # both loads under the split: the threads share 1.6
        (1.0, 1, [0.8], (0.5, 0.5)),  # a load above an equal split gets the split
        (1.0, 2, [0.1, 0.6], (0.3, 0.4)),  # 0.1 met; then 0.9 split three ways
        (4.0, 1, [2.5], (1.0, 2.5)),  # a load over one core, met after the thread's core
    ],
)
def test_loads_and_threads_share_the_cores_max_min_fairly(cores, threads, loads, expected):
    """Each demand (a load's rate, a thread's one core) is met smallest first while it fits
    in an equal split of what is left, and the others get that split."""
    from simserve.cpu import _fill

    assert _fill(cores, threads, loads) == pytest.approx(expected)


def test_running_replicas_and_the_caller_load_the_cores_at_their_idle_rates():
    """Two replicas on one core, each idling at 0.25 cores while it runs: the idle loads
    keep their half of the core, so a 1 s request gets the other half and ends at 2 s; the
    driver's and the proxy's idle rates load the first node the same way."""
    cfg = config(kind="gil", mean_s=1.0, replicas=2, num_cpus=0.5, cluster_cpus=1, cores=1, router="ideal",
                 concurrent=1, requests=1, duration_s=None)
    assert _done(replace(cfg, overheads=Overheads(replica_idle_cores=0.25))) == [2.0]
    assert _done(replace(cfg, overheads=Overheads(driver_idle_cores=0.25, proxy_idle_cores=0.25))) == [2.0]


def test_the_wake_cost_is_zero_before_the_first_point_linear_between_and_flat_after():
    """WakeCost interpolates its table and holds its last value."""
    from simserve.config import WakeCost

    w = WakeCost((0.004, 0.014, 0.104), (0.0, 0.001, 0.002))
    assert [w(g) for g in (0.0, 0.0039, 0.004, 0.009, 0.014, 0.059, 1.0)] == pytest.approx(
        [0.0, 0.0, 0.0, 0.0005, 0.001, 0.0015, 0.002])


@pytest.mark.parametrize("busy,handler,expected_end_s,extra_s",
                         [(1, True, 1.0, 0.0), (2, True, 2.25, 0.5), (2, False, 1.5, 0.0)])
def test_an_overhead_started_on_cores_taken_by_handlers_costs_the_oversubscribed_factor(
        busy, handler, expected_end_s, extra_s):
    """On two cores with oversubscribed_cpu_factor 1.5, 1 s of Ray's work beside one busy
    handler thread costs 1 s and ends at 1 s; beside two it costs 1.5 s, shared three ways
    on two cores (2/3 speed), and ends at 2.25 s; beside two threads of Ray's own work it
    costs 1 s (ends at 1.5 s): only handler threads count."""
    from simserve import events
    from simserve.cpu import Node

    env = events.Environment()
    node = Node(env, 0, num_cpus=2, physical_cores=2, oversubscribed_cpu_factor=1.5)
    for i in range(busy):
        p = node.process(f"busy-{i}")
        (p.run_handler_gil if handler else p.run_gil)(10.0, lambda _: None, None)
    ray = node.process("driver")
    ends = []
    ray.run_overhead(1.0, lambda _: ends.append(env.now), None)
    events.run(env, until=5.0)
    assert ends == pytest.approx([expected_end_s])
    assert ray.oversubscribed_cpu_s == pytest.approx(extra_s)


@pytest.mark.parametrize("busy,cost,others,saved_s", [
    (None, "python", True, 0.0), ("python", "python", True, 0.4), ("python", "python", False, 0.0),
    ("native", "python", True, 0.0), ("native", "native", True, 0.4), ("python", "native", True, 0.0)])
def test_an_overhead_started_beside_its_own_kind_of_work_on_another_request_costs_the_batched_factor(
        busy, cost, others, saved_s):
    """With batched_cpu_factor 0.6, 1 s of Ray's work costs 0.6 s only when it starts while its
    process's threads of the same kind (Python for a Python cost, C++ for a C++ one) are at
    work and the process holds another request; otherwise it is paid whole."""
    from simserve import events
    from simserve.cpu import Node

    env = events.Environment()
    node = Node(env, 0, num_cpus=2, physical_cores=2, batched_cpu_factor=0.6)
    driver = node.process("driver")
    driver.others = lambda: others
    if busy == "python":
        driver.run_overhead(10.0, lambda _: None, None)
    elif busy == "native":
        driver.burn(10.0)
    if cost == "python":
        driver.run_overhead(1.0, lambda _: None, None)
    else:
        driver.burn(1.0)
    events.run(env, until=20.0)
    assert driver.batched_cpu_s == pytest.approx(saved_s)
