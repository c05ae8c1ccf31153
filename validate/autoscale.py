"""Autoscaling: real Ray Serve 2.60.0 against simserve on one step load.

The scenario (issue 4, item 6): the io-50ms async deployment (``max_ongoing_requests``
5) with ``autoscaling_config`` min_replicas 1, max_replicas 4, target_ongoing_requests 2,
upscale_delay_s 2, downscale_delay_s 10 and Ray's defaults for the rest (so the handle
samples its load every 6 s, pushes it every ``metrics_interval_s`` = 10 s, and the
controller averages over ``look_back_period_s`` = 30 s), on ``ray.init(num_cpus=4)`` with
``num_cpus=1`` per replica (4 fit; the machine's 2 cores time-share them, the work is
io). Closed-loop clients call through a ``DeploymentHandle``: 1 for 15 s, 8 for 30 s, 1
for 30 s, then none for ``TAIL_S`` while the replica states are still sampled, so that a
scale-down after the load ends is seen rather than cut off.

Both sides are observed the same way, on the clock the requests' times count from:
the replica states every ``SAMPLE_S`` (``serve.status()`` in a thread; simserve's
timeline at the same interval) and every request's send and answer time. The simulated
side is ``simserve.simulate`` of the same ``SimConfig`` with the calibration file's
``Overheads`` (``with_overheads``, the measured replica start-up included), the host's
speed moving as the run's sampler read it (``host_speed.speed_trace``; the spread over
seeds without it): nothing is fitted to this run.

The criteria, from the issue, on the RUNNING count (the state a replica takes traffic
in, and the one ``serve.status()`` shows):

* first scale-up: the first sample whose count exceeds the first sample's; real and
  simulated within ``EVENT_TOL_S``;
* last scale-down: the last sample whose count is below the previous sample's; within
  ``EVENT_TOL_S``;
* peak count: equal;
* latency per ``WINDOW_S`` window of send time, over the load: p50 and mean each within
  ``LATENCY_TOL`` of real in every window (two criteria).

Beside seed 0, the report shows the simulation's spread over ``SEEDS`` seeds (the
autoscaling timers' lateness and the clocks' start are random, as real runs differ),
per real run how many seeds meet each event criterion, and per criterion how often
the seeds meet it against the real runs beside how often the real runs meet it
against each other (``agreement_rows``).

For diagnosis: when the first new replica was seen at all (STARTING: the controller's
decision) and how long it then took to be RUNNING, every change of the count, the cores
other processes took during the run, the cores the run's own processes kept busy in each
window (real: the CPU of the driver and every Ray process, sampled with the states;
simulated: the timeline's ``cpu_busy_cores``), and from the real controller's log (Serve
at INFO) each scaling decision with the total ongoing requests its policy saw, and each
replica's start-up time as Ray reports it (simulated: from its creation, Ray's ``Adding``
line, to RUNNING).

Left out: HTTP ingress, other load shapes, several handles.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import math
import os
import platform
import re
import socket
import sys
import threading
import time

import numpy as np
import pandas as pd

from simserve import (
    ClusterConfig,
    DeploymentConfig,
    Distribution,
    Overheads,
    SimConfig,
    WorkloadConfig,
    WorkModel,
)
from simserve.autoscaling import AutoscalingConfig
from simserve.load_shape import LoadShape
from simserve.request import OK as SIM_OK
from simserve.simulation import Simulation
from validate.harness import log_time
from validate.host_speed import speed_trace
from validate.scenario import HERE, OUT_DIR, physical_cores, utc_stamp, with_overheads

STEPS = ((15.0, 1), (30.0, 8), (30.0, 1))  # (duration_s, clients)
TAIL_S = 20.0  # no clients, states still sampled
SAMPLE_S = 0.5
WINDOW_S = 5.0
EVENT_TOL_S = 3.0
LATENCY_TOL = 0.25
SEEDS = 100  # simulated seeds for the spread section


def autoscale_scenario(seed: int = 0) -> SimConfig:
    load_s = sum(d for d, _ in STEPS)
    return SimConfig(
        deployment=DeploymentConfig(
            name="Autoscale",
            num_replicas=None,
            num_cpus=1.0,
            work=WorkModel.single("io", Distribution("deterministic", 0.05)),
            autoscaling_config=AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=2,
                                                 upscale_delay_s=2.0, downscale_delay_s=10.0),
        ),
        cluster=ClusterConfig(nodes=1, num_cpus=4, physical_cores=physical_cores()),
        overheads=Overheads(ingress="handle"),
        workload=WorkloadConfig(concurrent=max(n for _, n in STEPS), duration_s=load_s + TAIL_S, warmup_s=0.0,
                                shape=LoadShape("steps", steps=STEPS + ((TAIL_S, 0),))),
        seed=seed,
        keep_requests=True,
        timeline_interval_s=SAMPLE_S,
    )


# -- the comparison (pure; tests/test_validate_autoscale.py) ---------------------------------------
def first_scale_up(t, n) -> float | None:
    """The first time the count exceeds its first value."""
    above = np.flatnonzero(np.asarray(n) > n[0]) if len(n) else []
    return float(t[above[0]]) if len(above) else None


def last_scale_down(t, n) -> float | None:
    """The last time the count is below the previous sample's."""
    down = np.flatnonzero(np.diff(np.asarray(n)) < 0)
    return float(t[down[-1] + 1]) if len(down) else None


def changes(t, n) -> list[tuple[float, int]]:
    """(time, new count) at every change of the count."""
    n = np.asarray(n)
    return [(float(t[i]), int(n[i])) for i in np.flatnonzero(np.diff(n) != 0) + 1]


def window_latency(sent_s, latency_s, horizon_s: float, window_s: float = WINDOW_S) -> pd.DataFrame:
    """Per window of send time [k w, (k+1) w) up to ``horizon_s``: count, p50 and mean (ms)."""
    sent, lat = np.asarray(sent_s, float), 1e3 * np.asarray(latency_s, float)
    rows = []
    for k in range(math.ceil(horizon_s / window_s - 1e-9)):
        x = lat[(sent >= k * window_s) & (sent < (k + 1) * window_s)]
        rows.append({"start_s": k * window_s, "n": x.size, "p50_ms": float(np.median(x)) if x.size else math.nan,
                     "mean_ms": float(x.mean()) if x.size else math.nan})
    return pd.DataFrame(rows)


def window_cores(cpu_t, cpu_s, horizon_s: float, window_s: float = WINDOW_S) -> list[float]:
    """Per window [k w, (k+1) w): cores kept busy on average, from cumulative CPU-seconds
    ``cpu_s`` sampled at ``cpu_t`` (interpolated at the window's ends; NaN without samples)."""
    if len(cpu_t) < 2:
        return [math.nan] * math.ceil(horizon_s / window_s - 1e-9)
    t, c = np.asarray(cpu_t, float), np.asarray(cpu_s, float)
    edges = np.arange(math.ceil(horizon_s / window_s - 1e-9) + 1) * window_s
    at = np.interp(edges, t, c, left=math.nan, right=math.nan)
    return list(np.diff(at) / window_s)


def _err(sim: float, real: float) -> float:
    return (sim - real) / real if real and not math.isnan(real) else math.nan


def compare(real: dict, sim: dict, horizon_s: float) -> dict:
    """Both sides as {"t", "running", "starting", "sent_s", "latency_s"}: the events, the
    per-window latency table and each criterion's verdict."""
    ev = {}
    for name, fn in (("first_scale_up_s", first_scale_up), ("last_scale_down_s", last_scale_down)):
        r, s = fn(real["t"], real["running"]), fn(sim["t"], sim["running"])
        ok = r is not None and s is not None and abs(s - r) <= EVENT_TOL_S or r is None and s is None
        ev[name] = {"real": r, "sim": s, "pass": bool(ok)}
    r, s = int(max(real["running"])), int(max(sim["running"]))
    ev["peak_running"] = {"real": r, "sim": s, "pass": r == s}
    # Diagnosis: the first new replica seen at all (the decision), and its start-up.
    for side, x in (("real", real), ("sim", sim)):
        live = np.asarray(x["running"]) + np.asarray(x["starting"])
        seen = first_scale_up(x["t"], live)
        up = ev["first_scale_up_s"][side]
        ev.setdefault("first_starting_s", {})[side] = seen
        ev.setdefault("startup_seen_s", {})[side] = up - seen if up is not None and seen is not None else None
    w = window_latency(real["sent_s"], real["latency_s"], horizon_s).merge(
        window_latency(sim["sent_s"], sim["latency_s"], horizon_s), on="start_s", suffixes=("_real", "_sim"))
    # Cores busy (diagnosis): runs recorded before 2026-11-26 08:00 have no real CPU samples.
    for side, x in (("real", real), ("sim", sim)):
        w[f"cores_{side}"] = window_cores(x.get("cpu_t", []), x.get("cpu_s", []), horizon_s)
    for m in ("p50", "mean"):
        w[f"{m}_err"] = [_err(s, r) for s, r in zip(w[f"{m}_ms_sim"], w[f"{m}_ms_real"])]
        bad = w[~(w[f"{m}_err"].abs() <= LATENCY_TOL)]  # NaN (an empty window) fails too
        ev[f"latency_{m}_windows"] = {"worst": float(w[f"{m}_err"].abs().max()), "failing": list(bad["start_s"]),
                                      "pass": bad.empty}
    criteria = ("first_scale_up_s", "last_scale_down_s", "peak_running", "latency_p50_windows", "latency_mean_windows")
    return {"events": ev, "windows": w, "pass": all(ev[c]["pass"] for c in criteria), "criteria": criteria,
            "changes": {side: changes(x["t"], x["running"]) for side, x in (("real", real), ("sim", sim))}}


_LOG_LINE = re.compile(
    r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) controller \d+ -- (?:"
    r"(?:Up|Down)scaling .*? from (\d+) to (\d+) replicas\. Current ongoing requests: ([\d.]+)"
    r"|.*? started successfully .*? after ([\d.]+)s)")


def controller_events(lines, wall0: float, horizon_s: float, app: str) -> dict:
    """From Serve controller log lines: ``decisions`` (t, from, to, total ongoing requests
    the policy saw; deployment_state.py's Upscaling/Downscaling line) and ``startups``
    (t RUNNING, Ray's own start-up seconds; its 'started successfully' line), with t in
    seconds since ``wall0`` (``time.time()``; the log's clock, to the ms) within
    [0, horizon_s], for application ``app``."""
    out = {"decisions": [], "startups": []}
    for line in lines:
        m = _LOG_LINE.match(line)
        if m is None or f"app='{app}'" not in line:
            continue
        t = log_time(m[1]) - wall0
        if not 0 <= t <= horizon_s:
            continue
        if m[2] is not None:
            out["decisions"].append((t, int(m[2]), int(m[3]), float(m[4])))
        else:
            out["startups"].append((t, float(m[5])))
    return out


# -- the two sides ---------------------------------------------------------------------------------
class StateSampler(threading.Thread):
    """``serve.status()`` replica states every ``interval_s``, stamped with ``perf_counter``
    at the middle of the call (one call takes a few ms); and beside them the CPU-seconds
    used so far by this driver and every Ray process it started (``cpu``: a process that
    exited keeps its last reading, so the sum never falls)."""

    def __init__(self, app_name: str, dep_name: str, interval_s: float = SAMPLE_S):
        super().__init__(daemon=True, name="state-sampler")
        self.app_name, self.dep_name, self.interval_s = app_name, dep_name, interval_s
        self.samples: list[tuple[float, dict]] = []
        self.cpu: list[tuple[float, float]] = []
        self._by_pid: dict[int, float] = {}
        self._stop_ev = threading.Event()

    def run(self):
        from validate.harness import RealCluster, _tree_cpu

        while not self._stop_ev.is_set():
            a = time.perf_counter()
            self._by_pid.update(_tree_cpu())
            self.cpu.append((a, sum(self._by_pid.values())))
            states = RealCluster.replica_states(self.app_name, self.dep_name)
            if states:  # {} is a failed call, not zero replicas
                self.samples.append(((a + time.perf_counter()) / 2, states))
            self._stop_ev.wait(max(0.0, self.interval_s - (time.perf_counter() - a)))

    def stop(self) -> list[tuple[float, dict]]:
        self._stop_ev.set()
        self.join(timeout=5)
        return self.samples


def run_real(cl, cfg: SimConfig, app: str) -> dict:
    """Deploy, drive and sample ``cfg`` as application ``app`` on the running
    ``RealCluster``; times from the load's start. ``app`` must be new to this cluster:
    Serve's client caches one handle per (deployment, application), so a reused name
    would reuse the previous run's router, whose metric timers and samples would not
    start with this load."""
    import psutil

    from validate.harness import (
        OK,
        _busy_seconds,
        _tree_cpu,
        controller_log_lines,
    )
    from validate.host_speed import HostSpeedSampler, probe_ns_per_loop, run_ns_per_loop

    d = cfg.deployment
    try:
        handle, states0 = cl.deploy(cfg, app)
        if states0.get("RUNNING", 0) < 1:
            raise RuntimeError(f"{app}: no replica RUNNING ({states0})")
        before = probe_ns_per_loop()
        cpu0, ours0 = psutil.cpu_times(), _tree_cpu()
        sampler, probe = StateSampler(app, d.name), HostSpeedSampler()
        sampler.start()
        probe.start()
        clock = {"router_s": time.perf_counter()}  # the handle's router starts at its first call
        try:
            records, _, _ = asyncio.run(cl._drive(cfg, handle, app,
                                                  on_start=lambda t0: clock.update(t0=t0, wall0=time.time())))
        finally:
            samples = sampler.stop()
            during = probe.stop()
        ours1, cpu1 = _tree_cpu(), psutil.cpu_times()
        after = probe_ns_per_loop()
    finally:
        cl.delete(app)
    t0, horizon = clock["t0"], cfg.workload.duration_s
    samples = [(t - t0, s) for t, s in samples if 0 <= t - t0 <= horizon]
    cpu = [(t - t0, c) for t, c in sampler.cpu]
    span = (sum(cpu1) - sum(cpu0)) / (os.cpu_count() or 1)
    ours = sum(v - ours0.get(k, 0.0) for k, v in ours1.items())
    ok = [(s, e) for s, e, st in records if st == OK]
    host_probe = {"before_ns_per_loop": before, "after_ns_per_loop": after, "sampler_ns": during}
    return {
        "controller": controller_events(controller_log_lines(), clock["wall0"], horizon, app),
        "t": [t for t, _ in samples],
        **{k.lower(): [s.get(k, 0) for _, s in samples] for k in ("RUNNING", "STARTING", "STOPPING")},
        "sent_s": [s for s, _ in ok], "latency_s": [e - s for s, e in ok],
        "cpu_t": [t for t, _ in cpu], "cpu_s": [c for _, c in cpu],
        "not_ok": len(records) - len(ok), "router_start_s": clock["router_s"] - t0,
        "host_ns_per_loop": run_ns_per_loop(host_probe), "host_probe": host_probe,
        "foreign_cores": max(0.0, (_busy_seconds(cpu0, cpu1) - ours) / span) if span > 0 else math.nan,
    }


def run_sim(cfg: SimConfig, cal: dict, host_ns_per_loop: float | None, host_probe: dict | None = None) -> dict:
    """The simulated side, with the host's speed moving as a real run's sampler read it
    (``host_probe``; the sampler starts with the drive); ``decisions`` as the real
    controller's log has them (t, from, to, total ongoing requests the policy saw), read
    off the autoscaler's steps."""
    trace = speed_trace(host_probe, (0.0, float("inf"))) if host_probe else ()
    sim = Simulation(with_overheads(cfg, cal, host_ns_per_loop, core_speed_trace=trace))
    step, decisions = sim.autoscaler.step, []

    def logged_step(now, running, target):
        new = step(now, running, target)
        if new != target:
            decisions.append((sim.env.now, target, new, sim.autoscaler.last_total))
        return new

    sim.autoscaler.step = logged_step
    res = sim.run()
    tl, req, reps = res.timeline, res.requests, res.replicas
    req = req[req["status"] == SIM_OK]
    started = reps[(reps["created_s"] > 0) & reps["running_since_s"].notna()]
    return {"t": list(tl["time_s"]), "running": list(tl["running_replicas"]), "starting": list(tl["starting_replicas"]),
            "stopping": list(tl["stopping_replicas"]), "target": list(tl["target_replicas"]),
            "sent_s": list(req["arrival_s"]), "latency_s": list(req["latency_s"]), "decisions": decisions,
            # Cumulative CPU-seconds of all processes, as the real side samples them.
            "cpu_t": [0.0, *tl["time_s"]],
            "cpu_s": [0.0, *np.cumsum(tl["cpu_busy_cores"] * np.diff(tl["time_s"], prepend=0.0))],
            # As the real controller's log has them: (t RUNNING, seconds since the replica was added).
            "startups": [(float(r), float(r - c)) for c, r in zip(started["created_s"], started["running_since_s"])]}


def seed_sims(cal: dict, host_ns_per_loop: float | None, seeds: int = SEEDS) -> list[dict]:
    """The simulation's own run-to-run spread: seeds 0..seeds-1 (the autoscaling timers'
    lateness, the hops and the clocks' start are random, so the seed moves where the
    timers meet, as real runs differ)."""
    return [run_sim(autoscale_scenario(seed), cal, host_ns_per_loop) for seed in range(seeds)]


def seed_spread(sims: list[dict]) -> list[dict]:
    """Each seed's events and decisions."""
    return [{"seed": seed, "first_scale_up_s": first_scale_up(sim["t"], sim["running"]),
             "last_scale_down_s": last_scale_down(sim["t"], sim["running"]),
             "peak_running": int(max(sim["running"])), "decisions": sim["decisions"]}
            for seed, sim in enumerate(sims)]


def agreement_rows(reals: list[dict], sims: list[dict], horizon_s: float) -> list[list[str]]:
    """Per criterion (and all of them), the share of pairs of runs that meet it: Ray
    against Ray (every ordered pair of real runs, the first as the reference) and simserve
    against Ray (every seed against every real run). A stochastic system cannot meet a
    criterion more often against a model than against itself."""
    ray = [compare(a, b, horizon_s) for i, a in enumerate(reals) for j, b in enumerate(reals) if i != j]
    sim = [compare(a, s, horizon_s) for a in reals for s in sims]
    labels = {"first_scale_up_s": "first scale-up within 3 s", "last_scale_down_s": "last scale-down within 3 s",
              "peak_running": "peak RUNNING replicas equal", "latency_p50_windows": "p50 of every window within 25%",
              "latency_mean_windows": "mean of every window within 25%"}

    def share(cmps, key):
        if not cmps:
            return "-"
        ok = sum(c["pass"] if key is None else c["events"][key]["pass"] for c in cmps)
        return f"{ok}/{len(cmps)} ({100 * ok / len(cmps):.0f}%)"

    return [[labels.get(k, "all of them"), share(ray, k), share(sim, k)] for k in (*labels, None)]


AGREEMENT_HEADER = ["criterion", "Ray against Ray (pairs of runs)", "simserve against Ray (seed, run)"]


def spread_rows(runs: list[dict], spread: list[dict]) -> list[list[str]]:
    """Per event: the real runs, the seeds' range and median, and for each real run the
    share of seeds within the criterion's limit of it."""
    rows = []
    for key, label in (("first_scale_up_s", "first scale-up (s)"), ("last_scale_down_s", "last scale-down (s)"),
                       ("peak_running", "peak RUNNING replicas")):
        sims = [x[key] for x in spread if x[key] is not None]
        reals = [r["compare"]["events"][key]["real"] for r in runs]
        fmt = "{:d}" if key == "peak_running" else "{:.1f}"

        def near(real, key=key, sims=sims):
            if real is None:
                return "-"
            ok = sum(1 for x in sims if (x == real if key == "peak_running" else abs(x - real) <= EVENT_TOL_S))
            return f"{ok}/{len(spread)}"

        values = sorted(sims)
        counts = collections.Counter(fmt.format(x) for x in values)
        rows.append([label, " ".join(_s(x, fmt) for x in reals),
                     f"{_s(values[0], fmt)} / {_s(float(np.median(values)), '{:.1f}')} / {_s(values[-1], fmt)}"
                     if values else "-",
                     " ".join(f"{v}x{n}" if n > 1 else v for v, n in counts.items()),
                     " ".join(near(x) for x in reals)])
    return rows


SPREAD_HEADER = ["event", "real runs", "seeds: min / median / max", "every seed (value x seeds)",
                 "seeds within the limit of each real run"]


def run(cal: dict, repeats: int = 2) -> list[dict]:
    """``repeats`` real runs back to back on one Ray instance, each beside its simulation."""
    from validate.harness import RealCluster

    cfg = autoscale_scenario()
    load_s = sum(d for d, _ in STEPS)
    out = []
    with RealCluster(num_cpus=cfg.cluster.num_cpus, ns_per_loop=cal["host_ns_per_loop"],
                     native_unit=cal.get("native_unit_s"), serve_log_level="INFO") as cl:
        for i in range(repeats):
            real = run_real(cl, cfg, f"autoscale{i + 1}")
            sim = run_sim(cfg, cal, real["host_ns_per_loop"], real.get("host_probe"))
            cmp = compare(real, sim, load_s)
            out.append({"run": i + 1, "real": real, "sim": sim, "compare": cmp})
            print(f"-- run {i + 1}\n{table(cmp, real, sim, cal)}", flush=True)
    return out


# -- output -------------------------------------------------------------------------------------------
def _s(x, fmt="{:.1f}"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def event_rows(cmp: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(what, real, sim, sim - real, limit, verdict): the criteria, then the diagnosis rows."""
    ev = cmp["events"]
    rows = []
    for key, label in (("first_scale_up_s", "first scale-up (s)"), ("last_scale_down_s", "last scale-down (s)")):
        r, s = ev[key]["real"], ev[key]["sim"]
        rows.append((label, _s(r), _s(s), _s(None if r is None or s is None else s - r, "{:+.1f}"),
                     f"±{EVENT_TOL_S:g} s", _verdict(ev[key]["pass"])))
    p = ev["peak_running"]
    rows.append(("peak RUNNING replicas", str(p["real"]), str(p["sim"]), f"{p['sim'] - p['real']:+d}", "equal",
                 _verdict(p["pass"])))
    for m in ("p50", "mean"):
        e = ev[f"latency_{m}_windows"]
        fails = ", ".join(f"{t:g}" for t in e["failing"]) or "none"
        rows.append((f"latency {m}, worst window", "", "", f"{100 * e['worst']:.0f}%",
                     f"±{100 * LATENCY_TOL:.0f}%", f"{_verdict(e['pass'])} (failing windows from: {fails})"))
    for key, label in (("first_starting_s", "diag: first new replica STARTING (s)"),
                       ("startup_seen_s", "diag: its STARTING -> RUNNING (s)")):
        r, s = ev[key]["real"], ev[key]["sim"]
        rows.append((label, _s(r), _s(s), _s(None if r is None or s is None else s - r, "{:+.1f}"), "", ""))
    return rows


def window_rows(cmp: dict) -> list[list[str]]:
    shape = LoadShape("steps", steps=STEPS)
    out = []
    for r in cmp["windows"].itertuples(index=False):
        out.append([f"{r.start_s:g}-{r.start_s + WINDOW_S:g}", f"{shape.level(r.start_s):g}", f"{r.n_real}/{r.n_sim}",
                    _s(r.p50_ms_real), _s(r.p50_ms_sim), _s(100 * r.p50_err, "{:+.0f}%"),
                    _s(r.mean_ms_real), _s(r.mean_ms_sim), _s(100 * r.mean_err, "{:+.0f}%"),
                    f"{_s(r.cores_real, '{:.2f}')}/{_s(r.cores_sim, '{:.2f}')}"])
    return out


WINDOW_HEADER = ["window s", "clients", "n real/sim", "p50 real", "p50 sim", "err", "mean real", "mean sim", "err",
                 "cores real/sim"]


def mechanism_lines(cmp: dict, real: dict, sim: dict, cal: dict) -> list[str]:
    """The scaling decisions and start-ups behind the events, both sides."""
    c = _controller(real)
    return [
        f"RUNNING count changes (count@s): real {_changes(cmp['changes']['real'])}; "
        f"simulated {_changes(cmp['changes']['sim'])}",
        f"decisions (from->to@s (total ongoing requests the policy saw)): real {_decisions(c['decisions'])}; "
        f"simulated {_decisions(sim['decisions'])}",
        f"replica start-ups (s): real (Ray's log) {_startups(c['startups'])}; simulated {_startups(sim['startups'])} "
        f"(calibration: {_startup_cal(cal)})",
        f"other processes' cores during the run {real['foreign_cores']:.2f}; failed or rejected requests "
        f"{real['not_ok']}; the handle's router started {-real['router_start_s']:.2f} s before the load "
        f"(simserve: at 0)",
    ]


def table(cmp: dict, real: dict, sim: dict, cal: dict) -> str:
    lines = [f"{'':38s} {'real':>7s} {'sim':>7s} {'diff':>7s} {'limit':>8s}  verdict"]
    lines += [f"{a:38s} {b:>7s} {c:>7s} {d:>7s} {e:>8s}  {f}" for a, b, c, d, e, f in event_rows(cmp)]
    lines += mechanism_lines(cmp, real, sim, cal)
    lines += ["", " ".join(f"{h:>10s}" for h in WINDOW_HEADER)]
    lines += [" ".join(f"{c:>10s}" for c in row) for row in window_rows(cmp)]
    lines.append(f"overall: {_verdict(cmp['pass'])}")
    return "\n".join(lines)


def _controller(real: dict) -> dict:
    """The real run's decisions and start-ups (none in runs saved before 2026-11-25 19:58,
    which did not read the controller's log)."""
    return real.get("controller", {"decisions": [], "startups": []})


def _startups(ups) -> str:
    return " ".join(f"{x:.1f}" for _, x in ups) or "none"


def _startup_cal(cal: dict) -> str:
    return (f"replica_startup_s {cal['replica_startup_s']:.2f} s, of which CPU "
            f"{cal.get('replica_startup_cpu_s', 0.0):.2f} s, cv {cal.get('replica_startup_cv', 0.0):.2f}")


def _decisions(ds) -> str:
    return " ".join(f"{a}->{b}@{t:.1f} ({x:.2f})" for t, a, b, x in ds) or "none"


def _changes(ch) -> str:
    return " ".join(f"{n}@{t:.1f}" for t, n in ch) or "none"


def diagnosis(runs: list[dict], cal: dict) -> list[str]:
    """What the numbers say about each failed criterion (mechanism, not a fit)."""
    out = []
    for r in runs:
        cmp, ev, i = r["compare"], r["compare"]["events"], r["run"]
        real_d, sim_d = _controller(r["real"])["decisions"], r["sim"]["decisions"]
        if not ev["first_scale_up_s"]["pass"]:
            out.append(f"run {i}, first scale-up: first decision real {_decisions(real_d[:1])}, simulated "
                       f"{_decisions(sim_d[:1])}; replica start-ups real {_startups(_controller(r['real'])['startups'])}"
                       f" s (Ray's log), simulated {_startups(r['sim']['startups'])} s "
                       f"(calibration: {_startup_cal(cal)}).")
        if not ev["last_scale_down_s"]["pass"] or not ev["peak_running"]["pass"]:
            out.append(f"run {i}, last scale-down or peak: the decisions differ: real {_decisions(real_d)}; "
                       f"simulated {_decisions(sim_d)}.")
        w = cmp["windows"].set_index("start_s")
        for m in ("p50", "mean"):
            for t in ev[f"latency_{m}_windows"]["failing"]:
                nxt = {side: [(x, n) for x, n in cmp["changes"][side] if x >= t][:1] for side in ("real", "sim")}
                out.append(f"run {i}, latency {m} {t:g}-{t + WINDOW_S:g} s: {w.at[t, f'{m}_ms_real']:.0f} ms real, "
                           f"{w.at[t, f'{m}_ms_sim']:.0f} simulated; the first RUNNING count change from {t:g} s: "
                           f"real {_changes(nxt['real'])}, simulated {_changes(nxt['sim'])}.")
    return out


WHY = """## Why runs differ from each other and from the simulation

These are properties of Ray's code (paths under `ray/serve/`), not of one run:

- The handle samples its queued and sent-but-unanswered counts every
  min(0.2 x look_back_period_s, metrics_interval_s) = 6 s and pushes them every
  metrics_interval_s = 10 s (`_private/router.py` `update_deployment_config`,
  `_private/metrics_utils.py` `MetricsPusher`). Each sample is one instant of a request
  cycle of 50-100 ms, so a sample can catch a busy or an idle moment.
- The controller averages the merged samples from the latest first sample of any series,
  but only if that time is not after the last merged event, whose timestamp is rounded to
  10 ms while the bound is not (`_private/autoscaling_metrics_merge.py`
  `merge_and_aggregate_arrays`). When a new replica's first sample is the newest event,
  the sub-10 ms digits of `time.time()` decide whether the average restarts there (the
  new load only) or covers the whole 30 s look-back (old and new load): the next
  scale-up comes at once or about a push interval later, and the scale-down that follows
  moves differently.
- The sample and push tasks run and then sleep their whole interval, so each turn comes
  late by the task's run time plus the event loop's wake-up (measured at c=1 by
  `python -m validate.calibrate`: `metrics_record_late_s`, `metrics_push_late_s`, about
  1 ms a turn, with the spread in `*_late_cv`), and the lateness accumulates: where their
  periods meet (every 30 s) either may run first. If the push runs first, the report
  carries the queued count of the sample before and a new replica's current count, and the
  controller can see more requests than there are clients.
- The controller's loop turns every 0.1 s plus its own run time (`control_loop_late_s`), so
  its decisions fall on a drifting grid, not on multiples of 0.1 s.

A real run starts at a uniformly random fraction of a second of `time.time()`, and
simserve draws that fraction per seed (and the controller loop's phase against the
router's start): a clock started at 0 would keep those digits at the timers' small
accumulated lateness and favour one outcome of the coin.

simserve performs the controller's arithmetic (replaying one real handle's reports through
`simserve.autoscaling.aggregate` gave 4 of the 5 totals the controller logged, to 0.01) and
draws each timer turn's lateness from the measured mean and spread, so its seeds take the
branches above as the real runs do (the spread and agreement sections). A simulated replica
start-up is the calibration's `replica_startup_s`, timed by the controller's own log from the
turn that adds a replica to the turn that makes it RUNNING on an idle host
(`validate/calibrate.py`): first its new process's own CPU, `replica_startup_cpu_s`, run as one
thread on the node beside the load and at the run's host speed, then the rest as a fixed wait,
both scaled by one gamma draw with cv `replica_startup_cv`. The real start-ups above are Ray's
own timing of the replicas the autoscaler added: under the step's load and on a slower host
they take longer than the calibration's, and so do the simulated ones.
"""


def plot(runs: list[dict], path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    sim = runs[0]["sim"]
    ax1.step(sim["t"], sim["running"], where="post", color="k", lw=2, label="simulated RUNNING")
    ax1.step(sim["t"], sim["target"], where="post", color="k", lw=1, ls=":", label="simulated target")
    for r in runs:
        ax1.step(r["real"]["t"], r["real"]["running"], where="post", color=f"C{r['run']}",
                 label=f"real RUNNING, run {r['run']}")
    load = LoadShape("steps", steps=STEPS + ((TAIL_S, 0),))
    t = np.arange(0, sum(d for d, _ in STEPS) + TAIL_S, 0.1)
    twin = ax1.twinx()
    twin.fill_between(t, [load.level(x) for x in t], step="post", color="grey", alpha=0.15)
    twin.set_ylabel("clients (shaded)")
    ax1.set_ylabel("replicas")
    ax1.legend(loc="center right", fontsize="small")
    for r in runs:
        w, c = r["compare"]["windows"], f"C{r['run']}"
        mid = w["start_s"] + WINDOW_S / 2
        ax2.plot(mid, w["p50_ms_real"], "o-", color=c, label=f"real p50, run {r['run']}")
        ax2.plot(mid, w["mean_ms_real"], "x--", color=c, alpha=0.6, label=f"real mean, run {r['run']}")
    w = runs[0]["compare"]["windows"]
    ax2.plot(w["start_s"] + WINDOW_S / 2, w["p50_ms_sim"], "ks-", lw=2, label="simulated p50")
    ax2.plot(w["start_s"] + WINDOW_S / 2, w["mean_ms_sim"], "k+:", label="simulated mean")
    ax2.set_ylabel(f"latency per {WINDOW_S:g} s window (ms)")
    ax2.set_xlabel("time since the load started (s)")
    ax2.set_ylim(bottom=0)
    ax2.legend(loc="upper right", fontsize="small")
    fig.savefig(path, dpi=100)


def write_report(runs: list[dict], spread: list[dict], agreement: list[list[str]], cal: dict, path: str,
                 command: str, wall_s: float, measured: str | None = None) -> None:
    """AUTOSCALE.md and its plot; ``measured``: when the real runs were, if they were
    measured before (simulated again now)."""
    import ray

    cfg = autoscale_scenario()
    a = cfg.deployment.autoscaling_config
    lines = [
        "# Autoscaling: simserve vs real Ray Serve",
        "",
        f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"Ray {ray.__version__}; host `{socket.gethostname()}`, {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}; wall time {wall_s:.0f} s. Calibration "
        f"`{os.path.relpath(cal['_path'], HERE)}` (measured {cal.get('date', '?')}; {_startup_cal(cal)})."
        + (f" Real runs measured {measured} (UTC) by `python -m validate --autoscale` (kept in `validate/out/`), "
           f"simulated again with today's model and calibration." if measured else "")
        + " The module docstring of `validate/autoscale.py` defines every number.",
        "",
        f"Scenario: io 50 ms async handler, max_ongoing_requests {cfg.deployment.max_ongoing_requests}, "
        f"autoscaling_config min_replicas {a.min_replicas}, max_replicas {a.max_replicas}, target_ongoing_requests "
        f"{a.target_ongoing_requests:g}, upscale_delay_s {a.upscale_delay_s:g}, downscale_delay_s "
        f"{a.downscale_delay_s:g} (Ray's defaults: metrics_interval_s {a.metrics_interval_s:g}, look_back_period_s "
        f"{a.look_back_period_s:g}); ray.init(num_cpus={cfg.cluster.num_cpus:g}), num_cpus=1 per replica; "
        f"closed-loop clients through a DeploymentHandle: "
        + ", ".join(f"{n} for {d:g} s" for d, n in STEPS) + f", then none for {TAIL_S:g} s (states still sampled). "
        f"Replica states sampled every {SAMPLE_S:g} s on both sides. Error = (sim - real) / real.",
        "",
    ]
    for r in runs:
        cmp, real = r["compare"], r["real"]
        lines += [f"## Run {r['run']}: {_verdict(cmp['pass'])}", "",
                  "| | real | sim | sim - real | limit | verdict |", "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in event_rows(cmp)]
        lines += [""] + [f"- {x}" for x in mechanism_lines(cmp, real, r["sim"], cal)]
        lines += ["", "| " + " | ".join(WINDOW_HEADER) + " |", "|" + "---|" * len(WINDOW_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in window_rows(cmp)]
        lines.append("")
    png = os.path.splitext(path)[0] + ".png"
    plot(runs, png)
    lines += [f"![replicas and latency, real vs simulated]({os.path.basename(png)})", "",
              f"## The simulation's spread over {len(spread)} seeds", "",
              ("Each run above is compared with seed 0. Real runs differ from each other (the "
               "timers meet in a different order, see below), and so do simulated seeds: the "
               "autoscaling timers' lateness (measured, `metrics_*_late_s`, `control_loop_late_s`), "
               "the hops, and where the run starts on Ray's clocks (the fraction of a second of "
               "`time.time()`, the controller loop's phase) are random draws."), "",
              "| " + " | ".join(SPREAD_HEADER) + " |", "|" + "---|" * len(SPREAD_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in spread_rows(runs, spread)]
    lines += ["", "## How often two runs agree", "",
              ("Real runs take different branches, so a single real run can miss a single "
               "simulated one however faithful the model. The fair test is whether simserve's "
               "seeds meet each criterion against Ray's runs as often as Ray's runs meet it "
               "against each other:"), "",
              "| " + " | ".join(AGREEMENT_HEADER) + " |", "|" + "---|" * len(AGREEMENT_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in agreement]
    lines += ["", "## Diagnosis of what failed", ""]
    lines += [f"- {d}" for d in diagnosis(runs, cal)] or ["- nothing failed"]
    lines += ["", WHY]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def resimulate(paths: list[str], cal: dict) -> tuple[list[dict], str]:
    """The real runs saved in ``paths`` (``out/autoscale-*.json``), in order, each against
    today's simserve and calibration at its own host speed: the model changes, the
    measurements do not. Returns the runs and when they were measured."""
    cfg = autoscale_scenario()
    load_s = sum(d for d, _ in STEPS)
    runs, stamps = [], []
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        stamps.append(os.path.basename(path).removeprefix("autoscale-").removesuffix(".json"))
        for old in saved["runs"] if isinstance(saved, dict) else saved:  # files before 2026-11-25 19:58: a list
            real = old["real"]
            sim = run_sim(cfg, cal, real["host_ns_per_loop"], real.get("host_probe"))
            cmp = compare(real, sim, load_s)
            runs.append({"run": len(runs) + 1, "real": real, "sim": sim, "compare": cmp})
            print(f"-- run {len(runs)} ({stamps[-1]} run {old['run']})\n{table(cmp, real, sim, cal)}", flush=True)
    return runs, ", ".join(stamps)


def main(cal: dict, repeats: int, command: str, report: str | None = None, saved: list[str] | None = None) -> int:
    """``python -m validate --autoscale``: run, print, write AUTOSCALE.md/.png and the raw JSON
    (with ``saved``, the real runs of those files instead, simulated again; no Ray, no JSON)."""
    t0 = time.perf_counter()
    if saved:
        runs, measured = resimulate(saved, cal)
    else:
        runs, measured = run(cal, repeats), None
    # After the real runs, so that the simulations do not take the real runs' cores.
    sims = seed_sims(cal, float(np.mean([r["real"]["host_ns_per_loop"] for r in runs])))
    spread = seed_spread(sims)
    agreement = agreement_rows([r["real"] for r in runs], sims, sum(d for d, _ in STEPS))
    wall = time.perf_counter() - t0
    if not saved:
        os.makedirs(OUT_DIR, exist_ok=True)
        with open(os.path.join(OUT_DIR, f"autoscale-{utc_stamp()}.json"), "w") as f:
            json.dump({"runs": [{**r, "compare": {**r["compare"], "windows": r["compare"]["windows"].to_dict("list")}}
                                for r in runs], "seed_spread": spread, "agreement": agreement}, f, default=str)
    report = report or os.path.join(HERE, "AUTOSCALE.md")
    write_report(runs, spread, agreement, cal, report, command, wall, measured)
    print(f"wrote {report}; {sum(r['compare']['pass'] for r in runs)}/{len(runs)} runs pass", file=sys.stderr)
    return 0 if all(r["compare"]["pass"] for r in runs) else 1
