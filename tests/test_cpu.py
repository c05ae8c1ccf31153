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


def test_a_thread_waits_the_switch_interval_for_a_held_gil():
    """With a 5 ms switch interval, a 1 s job that finds the GIL held by another 1 s job waits
    5 ms before sharing: the first, 5 ms ahead, ends at 1.995 s; the GIL never idles, so the
    second ends when the 2 s of work are done."""
    cfg = config(kind="gil", mean_s=1.0, replicas=1, handler="sync", concurrent=2, requests=2, duration_s=None)
    cfg = replace(cfg, overheads=Overheads(gil_switch_interval_s=0.005))
    assert _done(cfg) == [1.995, 2.0]
