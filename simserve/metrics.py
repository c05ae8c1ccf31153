"""What a run records, and the tidy tables and summary made from it.

Per request we keep columns (plain lists, turned into one DataFrame at the end, never
row by row) unless ``keep_requests`` is off; then only streaming figures are kept: a
count, a sum, a maximum and a ``LatencyHistogram`` whose percentiles are within a
stated relative error, so memory stays flat however long the run.

Statistics cover the measurement window ``[warmup_s, end]``: latency percentiles over
the requests *sent* in the window and answered; throughput is answers *received* in
the window per second of window.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from simserve.request import FAILED, OK, REJECTED

PERCENTILES = (50, 90, 99)


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
        i = 0 if x <= self.min_s else max(1, math.ceil(math.log(x) / self._log_gamma - self._offset))
        self.counts[i] = self.counts.get(i, 0) + 1
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
        self._tick_done = 0  # answers since the last timeline row
        self._tick_latencies_s: list[float] = []

    def take_tick(self) -> tuple[int, list[float]]:
        """Answers and their latencies since the previous call."""
        out = (self._tick_done, self._tick_latencies_s)
        self._tick_done, self._tick_latencies_s = 0, []
        return out

    def record(self, req) -> None:
        if self.keep:
            # The object, not its fields now: the replica may still free the slot later.
            self.kept.append(req)
        if req.status == OK:
            self._tick_done += 1
            self._tick_latencies_s.append(req.end_s - req.created_s)
            if req.end_s >= self.warmup_s:
                self.completed_in_window += 1
        if req.created_s < self.warmup_s:
            return
        if req.status == REJECTED:
            self.rejected += 1
            return
        if req.status == FAILED:
            self.failed += 1
            return
        lat = req.end_s - req.created_s
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
