"""What a run records, and the tidy tables and summary made from it.

Per request we keep columns (plain lists, turned into one DataFrame at the end, never
row by row) unless ``keep_requests`` is off; then only streaming figures are kept: a
count, a sum, a maximum and a ``LatencyHistogram`` whose percentiles are within a
stated relative error, so memory stays flat however long the run.

Statistics cover the measurement window ``[warmup_s, end]``: latency percentiles over
the requests *sent* in the window and answered; throughput is answers *received* in
the window per second of window.

The timeline (``Timeline``) has one row per ``timeline_interval_s`` of simulated time
(a *base interval*): the replica and request counts sampled at ``time_s``, and over the
answers received in the interval since the previous row, ``throughput_rps`` (answers
per second) and ``latency_p50_ms``/``latency_p99_ms`` (numpy's default, linearly
interpolated percentiles; NaN without answers), and ``cpu_busy_cores``, the physical
cores of all nodes kept busy on average over the interval (Ray's daemons, the callers,
proxies and replicas, start-ups included). Row ``i`` covers
``(time_s[i-1], time_s[i]]``, the first ``(0, time_s[0]]``.

Without a request table (``keep_requests=False``) the timeline is bounded, so memory
stays flat however long the run: when it reaches ``TIMELINE_MAX_ROWS`` rows, adjacent
pairs of rows are merged into one and every later row covers twice as many base
intervals (the sampler still ticks every base interval; each row is built from the
ticks as they come). A row of ``2**k`` base intervals is always the merge of its two
halves, down to single intervals, whether it was merged at the cap or built after it,
so the rows mean the same whichever way they were made. Merging rows ``a`` then ``b``:

* ``time_s`` and the counts (replicas, ``ongoing_requests``, ``queued_requests``) are
  ``b``'s: the sample at the end of the merged window;
* ``throughput_rps`` is exact: the answers in the merged window over its length
  (base intervals x ``timeline_interval_s``); ``cpu_busy_cores`` is the mean of ``a``'s
  and ``b``'s weighted by their base intervals, which is exact too;
* ``latency_p50_ms`` and ``latency_p99_ms`` become the mean of ``a``'s and ``b``'s,
  weighted by their answers (an interval without answers has no weight; NaN if neither
  has any). So a merged row's latency figures are the answer-weighted mean of the exact
  per-interval percentiles of the base intervals it covers (up to float rounding), not
  the percentiles of the merged window, which two percentiles cannot give.

At the end of the run the base intervals not yet making a whole row are merged into
one last, shorter row, so the rows cover every tick of the run. With the request table
kept (the default) rows are never merged.
"""

from __future__ import annotations

import math
from array import array

import numpy as np
import pandas as pd

from simserve.request import FAILED, OK, REJECTED

PERCENTILES = (50, 90, 99)
_ceil = math.ceil
_log = math.log
_NAN = float("nan")

TIMELINE_COLUMNS = [
    "time_s",
    "target_replicas",
    "running_replicas",
    "starting_replicas",
    "stopping_replicas",
    "pending_replicas",
    "ongoing_requests",
    "queued_requests",
    "throughput_rps",
    "latency_p50_ms",
    "latency_p99_ms",
    "cpu_busy_cores",
]
# The timeline's row limit without a request table: 20,000 rows of 14 doubles, 2.2 MB.
TIMELINE_MAX_ROWS = 20_000
_THROUGHPUT, _P50, _P99, _CPU = 8, 9, 10, 11  # indexes in a row


def p50_p99_ms(latencies_s: list) -> tuple[float, float]:
    """``tuple(np.percentile(latencies_s, (50, 99)) * 1e3)``, bit for bit, in plain Python.

    numpy's default ("linear") method: the value at virtual index ``(n - 1) * q`` in the
    sorted sample, interpolated by ``_lerp`` (``a + (b - a) * t``, or ``b - (b - a) *
    (1 - t)`` when ``t >= 0.5``), the last value at or past the end. A numpy call per
    timeline row costs some 50 us, this a few; tests/test_memory.py checks the two agree."""
    a = sorted(latencies_s)
    n = len(a)
    if not n:
        return _NAN, _NAN
    out = []
    for q in (0.5, 0.99):
        v = (n - 1) * q
        lo = math.floor(v)
        if v >= n - 1:
            x = a[-1]
        else:
            t = v - lo
            lo_x = a[lo]
            hi_x = a[lo + 1]
            d = hi_x - lo_x
            x = hi_x - d * (1 - t) if t >= 0.5 else lo_x + d * t
        out.append(x * 1e3)
    return out[0], out[1]


def _weighted(pa: float, na: int, pb: float, nb: int) -> float:
    if not na:
        return pb  # NaN too when neither has answers
    if not nb:
        return pa
    return (pa * na + pb * nb) / (na + nb)


class Timeline:
    """The timeline's rows, as arrays of doubles; bounded to ``max_rows`` when given
    (the merge rule is in the module docstring)."""

    def __init__(self, interval_s: float, max_rows: int | None = None):
        if max_rows is not None and (max_rows < 2 or max_rows % 2):
            raise ValueError("max_rows must be an even number >= 2")
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.level = 0  # a full row covers 2**level base intervals
        self.cols = [array("d") for _ in TIMELINE_COLUMNS]
        self.answers = array("d")  # answers received in each row's window
        self.intervals = array("d")  # base intervals in each row's window
        self._partial: list = []  # (level, row, answers, intervals): a binary carry, oldest first

    def __len__(self) -> int:
        return len(self.answers)

    def add(self, row: tuple, answers: int) -> None:
        """One base interval's row (its ``throughput_rps`` = ``answers / interval_s``)."""
        if not self.level:
            self._append(row, answers, 1)
            return
        item = (0, row, answers, 1)
        partial = self._partial
        while partial and partial[-1][0] == item[0]:
            item = (item[0] + 1, *self._merge(partial.pop()[1:], item[1:]))
        if item[0] == self.level:
            self._append(*item[1:])
        else:
            partial.append(item)

    def finish(self) -> None:
        """Merge the base intervals that do not yet make a whole row into a last row."""
        partial, self._partial = self._partial, []
        if partial:
            last = partial[0][1:]
            for item in partial[1:]:
                last = self._merge(last, item[1:])
            self._append(*last)

    def _append(self, row: tuple, answers: int, intervals: int) -> None:
        for column, value in zip(self.cols, row):
            column.append(value)
        self.answers.append(answers)
        self.intervals.append(intervals)
        if self.max_rows is not None and len(self.answers) >= self.max_rows:
            self._halve()

    def _merge(self, a: tuple, b: tuple) -> tuple:
        (ra, na, ka), (rb, nb, kb) = a, b
        n = na + nb
        k = ka + kb
        row = list(rb)
        row[_THROUGHPUT] = n / (k * self.interval_s)
        row[_P50] = _weighted(ra[_P50], na, rb[_P50], nb)
        row[_P99] = _weighted(ra[_P99], na, rb[_P99], nb)
        row[_CPU] = (ra[_CPU] * ka + rb[_CPU] * kb) / k
        return tuple(row), n, k

    def _halve(self) -> None:
        """Merge adjacent pairs of rows; later rows cover twice the base intervals.

        Column by column in numpy (no row objects): the same IEEE operations, in the same
        order, as ``_merge``, so the result is bit for bit what ``_merge`` would give."""
        m = len(self.answers)
        n = m // 2 * 2
        ans = np.array(self.answers, dtype=float)
        ks = np.array(self.intervals, dtype=float)
        na, nb = ans[0:n:2], ans[1:n:2]
        answers = na + nb
        intervals = ks[0:n:2] + ks[1:n:2]
        cols = []
        for j, column in enumerate(self.cols):
            c = np.array(column, dtype=float)
            later = c[1:n:2]
            if j == _THROUGHPUT:
                v = answers / (intervals * self.interval_s)
            elif j == _CPU:
                v = (c[0:n:2] * ks[0:n:2] + later * ks[1:n:2]) / intervals
            elif j in (_P50, _P99):
                earlier = c[0:n:2]
                with np.errstate(invalid="ignore"):
                    mean = (earlier * na + later * nb) / answers
                v = np.where(na == 0, later, np.where(nb == 0, earlier, mean))
            else:
                v = later
            cols.append(v)
        if m > n:  # an odd row out (not with an even cap, reached one row at a time): kept
            cols = [np.append(v, column[-1]) for v, column in zip(cols, self.cols)]
            answers = np.append(answers, self.answers[-1])
            intervals = np.append(intervals, self.intervals[-1])
        self.cols = [array("d", v.tobytes()) for v in cols]
        self.answers = array("d", answers.tobytes())
        self.intervals = array("d", intervals.tobytes())
        self.level += 1

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (``TIMELINE_COLUMNS``, counts as integers)."""
        df = pd.DataFrame({c: np.frombuffer(v, dtype=float) if len(v) else np.empty(0)
                           for c, v in zip(TIMELINE_COLUMNS, self.cols)})
        counts = [c for c in TIMELINE_COLUMNS if c.endswith("replicas") or c.endswith("requests")]
        df[counts] = df[counts].astype(np.int64)
        return df


class LatencyHistogram:
    """Log-bucketed counts: any percentile within ``relative_error`` of a true sample.

    Bucket i holds values in (g**(i-1), g**i] with g = (1+a)/(1-a) (the DDSketch
    construction); reporting 2 g**i / (g+1) is then within a of every value in the
    bucket. Values at or below ``min_s`` share bucket 0 and are reported as ``min_s``.
    """

    def __init__(self, relative_error: float = 0.005, min_s: float = 1e-6):
        self.relative_error = relative_error
        self.min_s = min_s
        self._gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self._gamma)
        self._offset = math.log(min_s) / self._log_gamma
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, x: float) -> None:
        if x <= self.min_s:
            i = 0
        else:
            i = _ceil(_log(x) / self._log_gamma - self._offset)
            if i < 1:
                i = 1
        counts = self.counts
        counts[i] = counts.get(i, 0) + 1
        self.n += 1

    def _value(self, i: int) -> float:
        if i == 0:
            return self.min_s
        upper = math.exp((i + self._offset) * self._log_gamma)
        return 2.0 * upper / (self._gamma + 1.0)

    def add_many(self, xs: np.ndarray) -> None:
        """``add`` for every value of an array."""
        if not len(xs):
            return
        with np.errstate(divide="ignore"):
            idx = np.ceil(np.log(xs) / self._log_gamma - self._offset)
        idx = np.where(xs <= self.min_s, 0, np.maximum(idx, 1)).astype(np.int64)
        for i, n in zip(*np.unique(idx, return_counts=True)):
            self.counts[int(i)] = self.counts.get(int(i), 0) + int(n)
        self.n += len(xs)

    def percentile(self, q: float) -> float:
        """The value of rank ceil(q/100 * n) (nearest rank), within the error bound."""
        if self.n == 0:
            return float("nan")
        rank = max(1, math.ceil(q / 100.0 * self.n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return self._value(i)
        return self._value(max(self.counts))


class Recorder:
    """Collects answered and rejected requests as they finish."""

    COLUMNS = ("request_id", "client", "replica", "arrival_s", "dispatch_s", "start_s", "done_s", "released_s", "end_s", "status")

    def __init__(self, warmup_s: float, keep_requests: bool):
        self.warmup_s = warmup_s
        self.keep = keep_requests
        self.kept: list = []  # requests recorded one by one
        self.cols: dict[str, list] = {c: [] for c in self.COLUMNS}  # and in batches
        self.completed_in_window = 0  # answers received at or after warmup_s
        self.completed = 0  # answered requests sent at or after warmup_s
        self.rejected = 0
        self.failed = 0
        self.latency_sum_s = 0.0
        self.latency_max_s = 0.0
        self.wait_sum_s = 0.0
        self.hist = LatencyHistogram()
        self.latencies_s: list[float] = []
        self._tick_latencies_s: list[float] = []  # of the answers since the last timeline row

    def take_tick(self) -> tuple[int, list[float]]:
        """Answers and their latencies since the previous call."""
        lats, self._tick_latencies_s = self._tick_latencies_s, []
        return len(lats), lats

    def record(self, req) -> None:
        if self.keep:
            # The object, not its fields now: the replica may still free the slot later.
            self.kept.append(req)
        status = req.status
        lat = req.end_s - req.created_s
        if status == OK:
            self._tick_latencies_s.append(lat)
            if req.end_s >= self.warmup_s:
                self.completed_in_window += 1
        if req.created_s < self.warmup_s:
            return
        if status == REJECTED:
            self.rejected += 1
            return
        if status == FAILED:
            self.failed += 1
            return
        self.completed += 1
        self.latency_sum_s += lat
        self.wait_sum_s += req.dispatch_s - req.created_s
        if lat > self.latency_max_s:
            self.latency_max_s = lat
        if self.keep:
            self.latencies_s.append(lat)
        else:
            self.hist.add(lat)

    def record_answered(self, ids, replica, arrival_s, dispatch_s, done_s) -> None:
        """``record`` for many answered requests at once, in completion order, where the
        handler starts at dispatch and the answer arrives when it is done (no costs)."""
        if self.keep:
            c = self.cols
            n = len(ids)
            c["request_id"].extend(ids.tolist())
            c["client"].extend([-1] * n)
            c["replica"].extend(replica.tolist())
            c["arrival_s"].extend(arrival_s.tolist())
            c["dispatch_s"].extend(dispatch_s.tolist())
            c["start_s"].extend(dispatch_s.tolist())
            c["done_s"].extend(done_s.tolist())
            c["released_s"].extend(done_s.tolist())
            c["end_s"].extend(done_s.tolist())
            c["status"].extend([OK] * n)
        self.completed_in_window += int((done_s >= self.warmup_s).sum())
        mine = arrival_s >= self.warmup_s
        lat = (done_s - arrival_s)[mine]
        if not len(lat):
            return
        self.completed += len(lat)
        # cumsum adds one value after another, exactly as record() does.
        self.latency_sum_s = float(np.cumsum(np.concatenate(([self.latency_sum_s], lat)))[-1])
        wait = (dispatch_s - arrival_s)[mine]
        self.wait_sum_s = float(np.cumsum(np.concatenate(([self.wait_sum_s], wait)))[-1])
        self.latency_max_s = max(self.latency_max_s, float(lat.max()))
        if self.keep:
            self.latencies_s.extend(lat.tolist())
        else:
            self.hist.add_many(lat)

    def latency_ms(self) -> dict:
        n = self.completed
        if n == 0:
            nan = float("nan")
            return {"mean": nan, **{f"p{q}": nan for q in PERCENTILES}, "max": nan}
        if self.keep:
            ps = np.percentile(np.asarray(self.latencies_s), PERCENTILES)
        else:
            ps = [self.hist.percentile(q) for q in PERCENTILES]
        out = {"mean": 1e3 * self.latency_sum_s / n}
        out.update({f"p{q}": 1e3 * float(v) for q, v in zip(PERCENTILES, ps)})
        out["max"] = 1e3 * self.latency_max_s
        return out

    def requests_frame(self, in_flight) -> pd.DataFrame:
        """The request table: recorded requests, then those still in flight."""
        cols = {c: list(v) for c, v in self.cols.items()}
        for req in [*self.kept, *in_flight]:
            cols["request_id"].append(req.id)
            cols["client"].append(req.client)
            cols["replica"].append(req.replica)
            cols["arrival_s"].append(req.created_s)
            cols["dispatch_s"].append(req.dispatch_s)
            cols["start_s"].append(req.start_s)
            cols["done_s"].append(req.done_s)
            cols["released_s"].append(req.released_s)
            cols["end_s"].append(req.end_s)
            cols["status"].append(req.status)
        df = pd.DataFrame(cols)
        df["queue_wait_s"] = df["dispatch_s"] - df["arrival_s"]
        df["latency_s"] = df["end_s"] - df["arrival_s"]
        return df.sort_values("request_id", kind="stable").reset_index(drop=True)
