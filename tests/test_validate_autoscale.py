"""The pure comparison logic of validate/autoscale.py on tiny synthetic data (no Ray)."""

import datetime
import math

import numpy as np
import pytest

from simserve.autoscaling import AutoscalingConfig
from validate.autoscale import (
    EVENT_TOL_S,
    changes,
    compare,
    controller_events,
    first_scale_up,
    last_scale_down,
    spread_rows,
    agreement_rows,
    window_cores,
    window_latency,
)
from validate.harness import ray_autoscaling_config

T = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
N = [1, 1, 2, 3, 3, 2, 1]


def test_first_scale_up_is_the_first_sample_above_the_first_count():
    """The first scale-up is the first sample whose count exceeds the first sample's, and None if none does."""
    assert first_scale_up(T, N) == 1.0
    assert first_scale_up(T, [2, 2, 1, 2, 2, 2, 2]) is None


def test_last_scale_down_is_the_last_decrease():
    """The last scale-down is the time of the last sample below its predecessor, and None without a decrease."""
    assert last_scale_down(T, N) == 3.0
    assert last_scale_down(T, [1, 1, 2, 2, 3, 3, 4]) is None


def test_changes_lists_every_new_count():
    """Every change of the count is listed once, with its time and the new count."""
    assert changes(T, N) == [(1.0, 2), (1.5, 3), (2.5, 2), (3.0, 1)]


def test_window_latency_groups_by_send_time():
    """Requests fall in the window of their send time; p50 and mean are in ms and an empty window is NaN."""
    w = window_latency([0.1, 4.9, 5.0, 5.2, 5.4], [0.1, 0.3, 0.05, 0.05, 0.2], horizon_s=15.0, window_s=5.0)
    assert list(w["start_s"]) == [0.0, 5.0, 10.0]
    assert list(w["n"]) == [2, 3, 0]
    assert w["p50_ms"][0] == pytest.approx(200.0) and w["mean_ms"][0] == pytest.approx(200.0)
    assert w["p50_ms"][1] == pytest.approx(50.0) and w["mean_ms"][1] == pytest.approx(100.0)
    assert math.isnan(w["p50_ms"][2]) and math.isnan(w["mean_ms"][2])


def _side(t, n, sent, lat):
    return {"t": t, "running": n, "starting": [0] * len(n), "sent_s": sent, "latency_s": lat}


def test_compare_identical_sides_pass_every_criterion():
    """A side compared with itself passes every criterion with zero latency error."""
    sent = list(np.arange(0, 10, 0.1))
    side = _side(T, N, sent, [0.05] * len(sent))
    cmp = compare(side, side, horizon_s=10.0)
    assert cmp["pass"]
    assert all(cmp["events"][c]["pass"] for c in cmp["criteria"])
    assert list(cmp["windows"]["p50_err"]) == [0.0, 0.0]


def test_compare_fails_only_the_criterion_that_is_off():
    """A last scale-down later than the tolerance fails that criterion alone; a 30% slower window fails latency."""
    sent = list(np.arange(0, 10, 0.1))
    real = _side(T, N, sent, [0.05] * len(sent))
    t_late = T + [3.0 + EVENT_TOL_S + 0.5]
    sim = _side(t_late, [1, 1, 2, 3, 3, 2, 2, 1], sent, [0.05] * len(sent))
    ev = compare(real, sim, horizon_s=10.0)["events"]
    assert not ev["last_scale_down_s"]["pass"]
    assert ev["first_scale_up_s"]["pass"] and ev["peak_running"]["pass"] and ev["latency_p50_windows"]["pass"]
    slow = _side(T, N, sent, [0.05 if s < 5 else 0.065 for s in sent])
    ev = compare(real, slow, horizon_s=10.0)["events"]
    assert not ev["latency_p50_windows"]["pass"] and ev["latency_p50_windows"]["failing"] == [5.0]


def test_window_cores_are_the_cpu_seconds_in_each_window_over_its_length():
    """Cumulative CPU sampled every 2.5 s, one core busy for 5 s and half a core for the next 5: the
    windows read 1.0 and 0.5 cores; between samples the sum is interpolated; without samples, NaN."""
    t = [0.0, 2.5, 5.0, 7.5, 10.0]
    cpu = [0.0, 2.5, 5.0, 6.25, 7.5]
    assert window_cores(t, cpu, horizon_s=10.0, window_s=5.0) == pytest.approx([1.0, 0.5])
    assert window_cores(t, cpu, horizon_s=9.0, window_s=3.0) == pytest.approx([1.0, 2.5 / 3, 0.5])
    assert all(math.isnan(x) for x in window_cores([], [], horizon_s=10.0, window_s=5.0))


def test_compare_peak_must_be_equal():
    """One replica more at the peak fails the peak criterion."""
    sent = [0.1]
    cmp = compare(_side(T, N, sent, [0.05]), _side(T, [1, 1, 2, 4, 3, 2, 1], sent, [0.05]), horizon_s=1.0)
    assert not cmp["events"]["peak_running"]["pass"]


def test_controller_events_parses_decisions_and_startups_of_one_app():
    """The controller log's scaling lines and start-up lines of the named application are read, times from wall0."""
    wall0 = datetime.datetime(2026, 1, 1, 12, 0, 0).timestamp()
    lines = [
        "INFO 2026-01-01 12:00:22,100 controller 1 -- Upscaling Deployment(name='A', app='autoscale1') from 1 to 2 "
        "replicas. Current ongoing requests: 2.80, current running replicas: 1.\n",
        "INFO 2026-01-01 12:00:24,000 controller 1 -- Replica(id='x', deployment='A', app='autoscale1') started "
        "successfully on node 'n' after 1.9s (PID: 7). Replica constructor, reconfigure method took 0.1s.\n",
        "INFO 2026-01-01 12:00:25,000 controller 1 -- Downscaling Deployment(name='A', app='other') from 4 to 2 "
        "replicas. Current ongoing requests: 3.73, current running replicas: 4.\n",
        "INFO 2026-01-01 12:00:26,000 controller 1 -- Adding 1 replica to Deployment(name='A', app='autoscale1').\n",
    ]
    ev = controller_events(lines, wall0, horizon_s=100.0, app="autoscale1")
    assert ev["decisions"] == [(pytest.approx(22.1), 1, 2, 2.8)]
    assert ev["startups"] == [(pytest.approx(24.0), 1.9)]


def test_ray_autoscaling_config_passes_only_the_fields_set():
    """Ray gets only the fields set away from the defaults, so it applies its own defaults to the rest."""
    a = AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=2, upscale_delay_s=2.0,
                          downscale_delay_s=10.0)
    assert ray_autoscaling_config(a) == {"max_replicas": 4, "upscale_delay_s": 2.0, "downscale_delay_s": 10.0}


def test_spread_rows_count_the_seeds_within_the_limit_of_each_real_run():
    """Per event: the real runs, the seeds' min / median / max, every seed's value with its
    count, and how many seeds fall within the event tolerance (or equal the peak) of each
    real run."""
    def run(up, down, peak):
        return {"compare": {"events": {"first_scale_up_s": {"real": up}, "last_scale_down_s": {"real": down},
                                       "peak_running": {"real": peak}}}}

    runs = [run(24.0, 60.0, 4), run(24.5, 80.0, 3)]
    spread = [{"first_scale_up_s": 24.0, "last_scale_down_s": d, "peak_running": 4}
              for d in (60.5, 61.0, 64.0, 70.0)]
    rows = {r[0]: r for r in spread_rows(runs, spread)}
    down = rows["last scale-down (s)"]
    assert down[1] == "60.0 80.0"
    assert down[2] == "60.5 / 62.5 / 70.0"
    assert down[3] == "60.5 61.0 64.0 70.0"
    assert rows["peak RUNNING replicas"][3] == "4x4"
    assert down[4] == f"{sum(abs(d - 60.0) <= EVENT_TOL_S for d in (60.5, 61.0, 64.0, 70.0))}/4 0/4"
    assert rows["peak RUNNING replicas"][4] == "4/4 0/4"
    assert rows["first scale-up (s)"][4] == "4/4 4/4"


def test_agreement_rows_count_pairs_of_runs_that_meet_each_criterion():
    """Ray against Ray takes every ordered pair of real runs, simserve against Ray every
    (real run, seed) pair; a run scaling down 10 s later misses only the scale-down."""
    def side(down_s):
        t = [i * 0.5 for i in range(200)]
        running = [1 if x < 24 else (4 if x < down_s else 1) for x in t]
        return {"t": t, "running": running, "starting": [0] * len(t),
                "sent_s": [i * 0.1 for i in range(900)], "latency_s": [0.05] * 900}

    reals = [side(60.5), side(61.0), side(70.5)]
    sims = [side(60.5), side(73.0)]
    rows = {r[0]: r[1:] for r in agreement_rows(reals, sims, 90.0)}
    assert rows["first scale-up within 3 s"] == ["6/6 (100%)", "6/6 (100%)"]
    assert rows["last scale-down within 3 s"] == ["2/6 (33%)", "3/6 (50%)"]
    assert rows["p50 of every window within 25%"] == ["6/6 (100%)", "6/6 (100%)"]
    assert rows["all of them"] == ["2/6 (33%)", "3/6 (50%)"]
