"""Flat memory without a request table: the bounded timeline, and a heap that does not grow."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from helpers import config
from simserve import fcfs, metrics, simulate
from simserve.metrics import TIMELINE_COLUMNS, TIMELINE_MAX_ROWS, Timeline, p50_p99_ms
from simserve.simulation import Simulation

STATE = [c for c in TIMELINE_COLUMNS if c.endswith("replicas") or c.endswith("requests")]
DT = 0.01


def _long(keep: bool, duration_s: float = 1000.0):
    """100,000 timeline ticks (0.01 s), 20,000 Poisson requests, two replicas."""
    return config(kind="io", dist="exponential", mean_s=0.05, replicas=2, max_ongoing=1, router="pow2", rps=20,
                  duration_s=duration_s, seed=5, keep=keep)


def _run(cfg, monkeypatch):
    """Simulate, recording the timeline's row count after every row."""
    sizes = []
    append = Timeline._append

    def spy(self, *args):
        append(self, *args)
        sizes.append(len(self))

    with monkeypatch.context() as m:
        m.setattr(Timeline, "_append", spy)
        res = simulate(replace(cfg, timeline_interval_s=DT))
    return res, sizes


def test_timeline_rows_stay_under_the_cap_and_merge_exactly(monkeypatch):
    """A 100,000-tick run without a request table never holds more than TIMELINE_MAX_ROWS rows;
    each merged row covers 2**k base ticks, its counts are the last tick's, its throughput is the
    answers in its window over the window, its latencies the answer-weighted mean of the ticks'."""
    bounded, sizes = _run(_long(keep=False), monkeypatch)
    full, _ = _run(_long(keep=True), monkeypatch)
    assert max(sizes) <= TIMELINE_MAX_ROWS
    tb, tf = bounded.timeline, full.timeline
    assert len(tf) > 4 * TIMELINE_MAX_ROWS  # the same run with the table keeps every tick
    assert TIMELINE_MAX_ROWS // 2 <= len(tb) <= TIMELINE_MAX_ROWS

    # The rows cover every tick: their end times are base tick times, the last one the last tick's.
    idx = np.searchsorted(tf["time_s"].to_numpy(), tb["time_s"].to_numpy())
    assert (tf["time_s"].to_numpy()[idx] == tb["time_s"].to_numpy()).all()
    assert idx[-1] == len(tf) - 1
    widths = np.diff(np.concatenate(([-1], idx)))
    full_width = widths[:-1].max()
    assert full_width >= 8 and (widths[:-1] == full_width).all() and widths[-1] <= full_width

    answers = np.rint(tf["throughput_rps"].to_numpy() * DT).astype(np.int64)
    starts = np.concatenate(([0], idx[:-1] + 1))
    for i, (a, b) in enumerate(zip(starts, idx + 1)):
        row = tb.iloc[i]
        window_answers = answers[a:b].sum()
        # Throughput: the answers in the window over its length, exactly.
        assert row["throughput_rps"] == window_answers / ((b - a) * DT)
        # Counts: the sample at the end of the window.
        assert (row[STATE].to_numpy() == tf.iloc[b - 1][STATE].to_numpy()).all()
        # Latencies: the answer-weighted mean of the ticks' exact percentiles.
        w = answers[a:b]
        for col in ("latency_p50_ms", "latency_p99_ms"):
            if window_answers == 0:
                assert np.isnan(row[col])
            else:
                v = tf[col].to_numpy()[a:b]
                expect = (v[w > 0] * w[w > 0]).sum() / window_answers
                assert row[col] == pytest.approx(expect, rel=1e-12)
    assert (tb["throughput_rps"] * widths * DT).round().sum() == answers.sum()


def test_short_runs_and_kept_tables_keep_every_row(monkeypatch):
    """Below the cap, or with the request table, the timeline is one row per tick, unmerged."""
    full, sizes = _run(_long(keep=True, duration_s=100.0), monkeypatch)
    bounded, _ = _run(_long(keep=False, duration_s=100.0), monkeypatch)
    assert len(full.timeline) == len(bounded.timeline) == max(sizes) > 9_000
    np.testing.assert_array_equal(full.timeline.to_numpy(float), bounded.timeline.to_numpy(float))


def test_bounded_timeline_is_the_same_from_the_fcfs_path(monkeypatch):
    """The FCFS fast path writes the same merged rows as the event engine, bit for bit."""
    monkeypatch.setattr(metrics, "TIMELINE_MAX_ROWS", 200)
    import simserve.simulation as simulation

    monkeypatch.setattr(simulation, "TIMELINE_MAX_ROWS", 200)
    cfg = config(kind="io", dist="exponential", mean_s=0.05, replicas=2, max_ongoing=1, router="ideal", rps=20,
                 duration_s=100.0, seed=3, keep=False)
    cfg = replace(cfg, timeline_interval_s=0.05)
    fast_sim = Simulation(cfg)
    assert fcfs.eligible(fast_sim)
    fast = fcfs.run(fast_sim)
    slow = Simulation(cfg).run()
    assert 100 <= len(fast.timeline) <= 200
    np.testing.assert_array_equal(fast.timeline.to_numpy(float), slow.timeline.to_numpy(float))


def test_timeline_unit_rules():
    """Direct checks of the merge rule on hand-made rows, including rows without answers."""
    t = Timeline(1.0, max_rows=4)

    def row(i, p):
        return (float(i), 1, 1, 0, 0, 0, i, 0, 0.0, p, p, i / 10)

    answers = [2, 0, 1, 3, 0, 0, 4, 1, 5]
    for i, n in enumerate(answers, start=1):
        r = list(row(i, 10.0 * i if n else float("nan")))
        r[8] = n / 1.0
        t.add(tuple(r), n)
        assert len(t) <= 4
    t.finish()
    df = t.frame()
    # 9 ticks: at the 4th row the cap halves (2 ticks a row), at the 4th row again (4 ticks a row);
    # ticks 1-4 and 5-8 make two rows, tick 9 a last, shorter row.
    assert df["time_s"].tolist() == [4.0, 8.0, 9.0]
    assert df["ongoing_requests"].tolist() == [4, 8, 9]
    assert df["throughput_rps"].tolist() == [6 / 4, 5 / 4, 5 / 1]
    p = df["latency_p50_ms"].tolist()
    assert p[0] == pytest.approx((2 * 10 + 1 * 30 + 3 * 40) / 6)
    assert p[1] == pytest.approx((4 * 70 + 1 * 80) / 5)
    assert p[2] == 90.0
    # Cores busy: the mean over the ticks.
    assert df["cpu_busy_cores"].tolist() == pytest.approx([0.25, 0.65, 0.9])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 101, 1000])
def test_percentiles_match_numpy_bit_for_bit(n):
    rng = np.random.default_rng(n)
    for sample in (rng.lognormal(-3, 1, n), rng.integers(0, 5, n).astype(float) / 7, np.full(n, 0.1)):
        want = tuple(np.percentile(sample, (50, 99)) * 1e3)
        assert p50_p99_ms(sample.tolist()) == want
    assert all(np.isnan(p50_p99_ms([])))


def test_python_heap_does_not_grow_with_requests(monkeypatch):
    """Without a request table, 8x the requests leave the traced Python heap's peak flat
    (the timeline capped at 64 rows so that the small run already merges; the collector at
    CPython's default threshold so that the peak is live data, not cycles awaiting collection)."""
    import simserve.simulation as simulation

    monkeypatch.setattr(simulation, "TIMELINE_MAX_ROWS", 64)
    monkeypatch.setattr(simulation, "GC_THRESHOLD", 700)

    def peak(requests):
        cfg = config(kind="gil", dist="lognormal", cv=1.0, mean_s=0.02, replicas=3, rps=100, requests=requests,
                     duration_s=None, seed=1, keep=False)
        sim = Simulation(cfg)
        tracemalloc.start()
        sim.run()
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p

    small, large = peak(4_000), peak(32_000)
    assert large < small * 1.1 + 100_000, (small, large)
