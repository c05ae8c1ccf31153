"""Real Ray Serve vs simserve.

    python -m validate --smoke        # 3 small configurations, ~2 minutes, exit 1 if a
                                      # throughput differs by more than 25 %
    python -m validate                # the grid; writes validate/REPORT.md
    python -m validate --only io50,pending   # scenarios whose name contains one of these
    python -m validate --autoscale    # real autoscaling on a step load, twice, ~4 minutes;
                                      # writes validate/AUTOSCALE.md (validate/autoscale.py)

Each scenario (a ``SimConfig``) runs on real Ray (``validate.harness``), then in
simserve with the calibration file's ``Overheads`` as measured (``gil`` segments scaled
by the thread CPU per iteration the replicas' work took over the speed the harness sized
them with, ``native`` ones by the run's own matmul time over the sizing one, see
``scenario.with_overheads``). The table also shows the spin probe's speed against the
calibration's (``speed``, for information: Ray's costs do not follow it),
``foreign``: cores not ours busy during the real run (system busy time, the hypervisor's
steal included, minus our process tree's CPU; simserve runs on the cores net of the
steal and of the rest, ``sim_config``), ``simall``: simserve's throughput on all the
cores, and (in the report) simserve's throughput over ``SPREAD_SEEDS`` seeds --
diagnosis columns, not the pass/fail one. Each configuration runs on a Ray
cluster of its own, shared by its repeats (``run_all``). Raw results go
to ``validate/out/<mode>-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import math
import os
import statistics
import sys
import time

from simserve import simulate
from simserve.calibration import unit
from validate.host_speed import probe_samples, run_ns_per_loop, speed_trace
from validate.scenario import (
    HERE,
    OUT_DIR,
    OVERHEAD_FIELDS,
    describe,
    grid_scenarios,
    load_calibration,
    smoke_scenarios,
    utc_stamp,
    with_overheads,
)

THRESHOLD = 0.25


def run_all(cfgs, cal: dict, repeats: int = 1) -> list[dict]:
    """One row per scenario and repeat; repeats run back to back, so that their spread is
    the real system's own run-to-run noise."""
    from validate.harness import RealCluster

    rows = []
    for cfg in cfgs:
        # A fresh cluster per configuration, as a user's cluster runs one deployment: Ray's
        # log monitor stats every worker's log file ten times a second and keeps the files
        # of dead workers on its list, so in a cluster that has hosted many deployments its
        # CPU grows with each until 200 files are open (RAY_LOG_MONITOR_MAX_OPEN_FILES):
        # 0.02 to 0.12 cores over the first 41 runs of the 2026-11-26 20:05 grid, which
        # shared one cluster per logical-CPU count, and 0.03 after it passed 200.
        with RealCluster(num_cpus=cfg.cluster.num_cpus, ns_per_loop=cal["host_ns_per_loop"],
                         native_unit=cal.get("native_unit_s")) as cl:
            for k in range(repeats):
                t0 = time.perf_counter()
                try:
                    # A fresh app name per run: Serve caches one handle (and its router, with
                    # its queue-length cache) per app and deployment name in the driver.
                    real = cl.run(cfg, app_name=f"{cfg.deployment.name.lower()}-{k}")
                except Exception as e:  # noqa: BLE001 - one failed scenario must not stop the rest
                    print(f"  {cfg.deployment.name}: real run failed: {e!r}", file=sys.stderr)
                    rows.append({"name": cfg.deployment.name, "describe": describe(cfg), "error": repr(e)})
                    continue
                row = compare(cfg, real, cal)
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def _host_ns(real: dict) -> float:
    """A real run's host speed, ns per spin iteration (``run_ns_per_loop``; runs saved
    without probes keep their single reading)."""
    probe = real.get("host_probe")
    return run_ns_per_loop(probe) if probe else real["host_ns_per_loop"]


# The fewest cores a run is simulated on, whatever steal and other users' processes took.
MIN_CORES = 0.25


def sim_config(cfg, real: dict, cal: dict, physical_cores: float | None = None):
    """What simserve runs for one real run of ``cfg``: the calibration's costs at the run's
    host speed, its work at the speed the harness sized it with (the calibration of its
    day) and measured in the replicas, on ``physical_cores`` (default: the cores the
    hypervisor and other users' processes left the run), the host's speed moving within the run as its sampler read
    it (``host_speed.speed_trace``)."""
    probe = real.get("host_probe") or {}
    sized_ns_per_loop = probe.get("work_ns_per_loop")
    host_ns = _host_ns(real)
    native_run = [x for x in probe.get("run_native_unit_s") or () if x]
    native_stretch = statistics.mean(native_run) / probe["native_unit_s"] if native_run else None
    # The gil work's own speed: its thread CPU per iteration in the replicas (runs before
    # 2026-11-27 02:00 lack it and keep the probe's): in the grid of that night 0.92-1.14
    # times the sampler's reading, a median 4 % slower (validate/README.md, item 30).
    gil = real.get("gil_work")
    gil_stretch = gil["cpu_ns_per_loop"] / sized_ns_per_loop if gil and sized_ns_per_loop else None
    speeds = {"sized_ns_per_loop": sized_ns_per_loop, "native_stretch": native_stretch, "gil_stretch": gil_stretch}
    if physical_cores is None:
        # The cores the hypervisor left the run (steal, measured over the window; runs
        # before 2026-11-27 lack it) and those other users' processes left it (Ray's
        # replicas run at nice 15 and yield to them): host drift the spin probe cannot see,
        # like its speed (validate/README.md, items 29 and 50). ``foreign_busy_cores`` is
        # the node's busy time not ours over the run, and busy time counts steal.
        node = real["nodes"][0]
        steal = node.get("window_steal_cores") or 0.0
        taken = steal + max(0.0, (node.get("foreign_busy_cores") or 0.0) - steal)
        physical_cores = max(MIN_CORES, cfg.cluster.physical_cores - taken) if taken else None
    w = cfg.workload
    trace = speed_trace(probe, (w.warmup_s, w.duration_s or float("inf")))
    return with_overheads(cfg, cal, host_ns, physical_cores=physical_cores, core_speed_trace=trace, **speeds)


# Diagnosis only: simserve's throughput over this many seeds (the run's own first). Where
# the router polls or collapses one seed can land anywhere in a wide range (validate/README
# item 40), so the report shows the range beside the run's own seed, which it scores.
SPREAD_SEEDS = 5


def compare(cfg, real: dict, cal: dict) -> dict:
    """One real run and simserve on the same configuration (``sim_config``)."""
    sim_cfg = sim_config(cfg, real, cal)
    sim = simulate(sim_cfg).summary
    # Diagnosis only: the same on other seeds, and on all the node's cores (none netted).
    seeds_rps = [sim["throughput_rps"]] + [
        simulate(dataclasses.replace(sim_cfg, seed=sim_cfg.seed + k)).summary["throughput_rps"]
        for k in range(1, SPREAD_SEEDS)]
    foreign = real["nodes"][0].get("foreign_busy_cores", 0.0) or 0.0
    sim_all = simulate(sim_config(cfg, real, cal, physical_cores=cfg.cluster.physical_cores)).summary
    return {"name": cfg.deployment.name, "describe": describe(cfg), "real": real, "sim": _lean(sim),
            "sim_seeds_rps": seeds_rps, "sim_all_cores": _lean(sim_all), "foreign_cores": foreign,
            "probe_speed": cal["host_ns_per_loop"] / _host_ns(real), "sim_cpu_ms_per_request": charged_cpu_ms(sim_cfg, sim)}


def _seeds_cell(row: dict) -> str:
    """simserve's throughput over ``SPREAD_SEEDS`` seeds, min-max (rows saved before: -)."""
    rps = row.get("sim_seeds_rps")
    return f"{min(rps):.1f}-{max(rps):.1f}" if rps else "-"


def _seeds_note(row: dict) -> str:
    rps = row.get("sim_seeds_rps")
    if not rps:
        return ""
    real = row["real"]["throughput_rps"]
    where = "within" if min(rps) <= real <= max(rps) else "outside"
    return f"; over {len(rps)} seeds simserve gave {_seeds_cell(row)} rps, Ray's {real:.1f} {where} that range"


def charged_cpu_ms(cfg, sim: dict) -> dict:
    """The CPU simserve charges per completed request, by the process role the harness
    measures (ms, Python and C++ together): each ``Overheads`` cost times simserve's own
    count of its occasions (routing attempts, sends, probes, rejected sends per request), the
    handler's CPU segments, the daemons' and each process's idle cores spread over the
    throughput, and the CPU the simulation burned on wake-ups (``wake_cpu_ms_per_request``),
    on GIL hand-overs in the replicas (``gil_handoff_cpu_ms_per_request``) and on costs
    started on oversubscribed cores (``oversubscribed_cpu_ms_per_request``), less what
    batching took off (``batched_cpu_saved_ms_per_request``).
    With HTTP ingress the router runs in the proxy and the driver is the load generator."""
    oh, r = cfg.overheads, sim["router"]
    attempts, probes, rejects = r["attempts_per_request"], r["probes_per_request"], r["rejections_per_request"]
    http = oh.ingress == "http"
    # One send per request plus one per rejected send; each attempt, sent or not, its share.
    attempt = oh.cpu("router_attempt_cpu_s")
    router = (attempt * attempts + (oh.cpu("router_cpu_s") - attempt) * (1 + rejects)
              + probes * (oh.cpu("probe_cpu_s") + oh.cpu("probe_native_cpu_s"))
              + rejects * (oh.cpu("reject_cpu_s") + oh.cpu("reject_native_cpu_s")))
    work = sum(s.duration.mean_s for s in cfg.deployment.work.segments if s.kind != "io")
    replica = (work + sum(oh.pool_cpu(cfg.deployment.handler))
               + oh.cpu("replica_cpu_s") + oh.cpu("replica_native_cpu_s") + oh.cpu("replica_post_cpu_s")
               + probes * (oh.cpu("replica_probe_cpu_s") + oh.cpu("replica_probe_native_cpu_s"))
               + rejects * (oh.cpu("replica_reject_cpu_s") + oh.cpu("replica_reject_native_cpu_s")))
    rps = sim["throughput_rps"] or float("nan")
    # Each replica's idle rate, at the run's final count (the grid's counts are fixed).
    replica += oh.cpu("replica_idle_cores") * sim["replicas"]["running"] / rps
    background = (oh.cpu("ray_background_cores") / rps + oh.cpu("ray_background_cpu_per_request_s")
                  + rejects * oh.cpu("ray_background_cpu_per_reject_s"))
    if http:
        driver, proxy = oh.cpu("http_client_cpu_s"), oh.cpu("proxy_cpu_s") + oh.cpu("proxy_native_cpu_s") + router
    else:
        driver, proxy = oh.cpu("client_cpu_s") + oh.cpu("client_native_cpu_s") + router, 0.0
    # The idle rates (Serve's proxy runs, and idles, with handle ingress too).
    driver += oh.cpu("driver_idle_cores") / rps
    proxy += oh.cpu("proxy_idle_cores") / rps
    out = {k: 1e3 * v for k, v in
           {"driver": driver, "proxy": proxy, "replica": replica, "background": background}.items()}
    for key in ("wake_cpu_ms_per_request", "oversubscribed_cpu_ms_per_request"):
        for role, ms in sim.get(key, {}).items():
            out[role] += ms
    for role, ms in sim.get("batched_cpu_saved_ms_per_request", {}).items():
        out[role] -= ms
    out["replica"] += sim.get("gil_handoff_cpu_ms_per_request", 0.0)
    return out


def resimulate(paths: list[str], cal: dict) -> tuple[list[dict], dict]:
    """The real runs saved in ``paths`` (``out/grid-*.json``, ``REPORT.json``) against
    today's simserve and calibration: the model changes, the measurements do not. A later
    file's runs replace an earlier file's runs of the same scenarios (a rerun subset); a
    file whose runs are all there already (merged into REPORT.json before) adds nothing,
    so that merging it again neither counts its wall time twice nor names it twice."""
    saved_rows: list[dict] = []
    measured, wall_s = [], 0.0
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        known = {_run_key(r) for r in saved_rows}
        if saved_rows and all(_run_key(r) in known for r in saved["rows"]):
            continue
        names = {r["name"] for r in saved["rows"]}
        stamp = saved.get("measured") or os.path.basename(path).removeprefix("grid-").removesuffix(".json")
        measured.append(stamp if not saved_rows else f"{stamp} for {', '.join(sorted(names))}")
        saved_rows = [r for r in saved_rows if r["name"] not in names] + saved["rows"]
        wall_s += saved["wall_s"]
    by_name = {c.deployment.name: c for c in grid_scenarios() + smoke_scenarios()}
    rows = []
    for old in saved_rows:
        cfg = by_name.get(old["name"])
        if "error" in old or cfg is None:
            rows.append(old if "error" in old else {**old, "error": "no longer in the grid"})
            continue
        rows.append(compare(cfg, old["real"], cal))
        print(_line(rows[-1]), flush=True)
    return rows, {"measured": "; ".join(measured), "wall_s": wall_s}


def _run_key(row: dict) -> tuple:
    """A saved real run's identity: its scenario and its measurements."""
    return row["name"], json.dumps(row.get("real"), sort_keys=True, default=str)


def _lean(sim: dict) -> dict:
    return {k: v for k, v in sim.items() if k != "config"}


def _err(sim: float, real: float) -> float:
    return (sim - real) / real if real and not math.isnan(real) else float("nan")


HEADER = (f"{'scenario':22s} {'real rps':>9s} {'sim rps':>8s} {'err%':>6s} | {'real p50':>8s} {'sim p50':>8s} "
          f"{'err%':>6s} | {'real p99':>8s} {'sim p99':>8s} | {'run/pend r':>10s} {'run/pend s':>10s} | "
          f"{'rej r/s':>9s} | {'speed':>5s} {'foreign':>7s} {'simall':>7s} | {'busy r/s':>9s} | "
          f"{'tries r/s':>9s} {'probes r/s':>10s}")


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['name']:22s} ERROR {row['error']}"
    r, s = row["real"], row["sim"]
    rr, sr = r["replicas"], s["replicas"]
    return (f"{row['name']:22s} {r['throughput_rps']:9.2f} {s['throughput_rps']:8.2f} "
            f"{100 * _err(s['throughput_rps'], r['throughput_rps']):+6.1f} | "
            f"{r['latency_ms']['p50']:8.1f} {s['latency_ms']['p50']:8.1f} "
            f"{100 * _err(s['latency_ms']['p50'], r['latency_ms']['p50']):+6.1f} | "
            f"{r['latency_ms']['p99']:8.1f} {s['latency_ms']['p99']:8.1f} | "
            f"{rr['running']:>4d}/{rr['pending']:<5d} {sr['running']:>4d}/{sr['pending']:<5d} | "
            f"{r['rejected']:>4d}/{s['rejected']:<4d} | {row['probe_speed']:5.2f} {row['foreign_cores']:7.2f} "
            f"{row['sim_all_cores']['throughput_rps']:7.2f} | {_busy(row):>9s} | {_routing(row)}")


def _routing(row: dict) -> str:
    """Routing attempts and queue-length probes per request, real/sim (handle path only)."""
    r, s = row["real"]["router"], row["sim"]["router"]
    if "attempts_per_request" not in r:
        return ""
    return (f"{r['attempts_per_request']:4.1f}/{s['attempts_per_request']:<4.1f} "
            f"{r['probes_per_request']:4.1f}/{s['probes_per_request']:<4.1f}")


def failures(rows) -> list[str]:
    bad = []
    for row in rows:
        if "error" in row:
            bad.append(f"{row['name']}: {row['error']}")
            continue
        e = _err(row["sim"]["throughput_rps"], row["real"]["throughput_rps"])
        if math.isnan(e) or abs(e) > THRESHOLD:
            bad.append(f"{row['name']}: throughput error {100 * e:+.1f}% (limit {100 * THRESHOLD:.0f}%); {diagnose(row)}"
                       + _seeds_note(row) + _speed_note(row))
    return bad


def speed_range(row: dict) -> tuple[float, float] | None:
    """The slowest and the fastest of a run's probes, as speeds against the calibration's
    (``probe_speed`` is their time average, ``host_speed.run_ns_per_loop``; for older runs
    their median). A wide range is a host that changed speed within the run: on 2026-11-26
    from 17:40 the probes of one run read 30 and 60 ns in turn."""
    probe = row["real"].get("host_probe") or {}
    samples = probe_samples(probe)
    if not samples:
        return None
    calibration_ns = row["probe_speed"] * run_ns_per_loop(probe)
    return calibration_ns / max(samples), calibration_ns / min(samples)


def _speed_note(row: dict) -> str:
    r = speed_range(row)
    return f"; the host ran at {r[0]:.2f}-{r[1]:.2f} of the calibration's speed during it" if r else ""


def _speed_cell(row: dict) -> str:
    r = speed_range(row)
    return f"{row['probe_speed']:.2f} ({r[0]:.2f}-{r[1]:.2f})" if r else f"{row['probe_speed']:.2f}"


def _gil_work_cell(row: dict) -> str:
    """The gil work's thread CPU per iteration in the replicas over the run's probe speed:
    above 1, the work ran slower than the sampler read (and is simulated so)."""
    gil, real = row["real"].get("gil_work"), row["real"]
    if not gil:
        return "-"
    return f"{gil['cpu_ns_per_loop'] / run_ns_per_loop(real['host_probe']):.2f}"


def diagnose(row: dict) -> str:
    """Which mechanism the measured CPU points to: under-counted CPU where the real run is
    CPU-bound, lost time (waiting, not working) where it is not."""
    real, sim = row["real"], row["sim"]
    cores = sim["nodes"][0]["physical_cores"]
    busy = real["nodes"][0].get("ours_busy_cores", float("nan"))
    real_ms = 1e3 * busy / real["throughput_rps"] if real["throughput_rps"] else float("nan")
    sim_ms = 1e3 * sim["nodes"][0]["physical_busy"] * cores / sim["throughput_rps"] if sim["throughput_rps"] else float("nan")
    if busy >= 0.85 * cores:
        idle = real["nodes"][0].get("window_idle_cores")
        return (f"CPU-bound in real ({busy:.2f} of {cores:g} cores): {real_ms:.1f} ms of CPU per request real, "
                f"{sim_ms:.1f} simulated, so Ray's CPU under load is under-counted"
                + (f"; {idle:.2f} cores stood idle in the window, which simserve does not model" if idle else ""))
    return (f"not CPU-bound in real ({busy:.2f} of {cores:g} cores; CPU {real_ms:.1f} ms real, {sim_ms:.1f} simulated "
            f"per request): time is lost waiting (p50 {real['latency_ms']['p50']:.0f} ms real, "
            f"{sim['latency_ms']['p50']:.0f} simulated): router polling, probe time-outs or GIL hand-offs")


METRICS = ("throughput_rps", "p50_ms", "p99_ms")


def _metric(summary: dict, m: str) -> float:
    return summary["throughput_rps"] if m == "throughput_rps" else summary["latency_ms"][m.removesuffix("_ms")]


def pool(rows) -> dict:
    """Per scenario: the real repeats' mean and spread, the simulations' mean, the error."""
    out: dict = {}
    for name, group in itertools.groupby(sorted((r for r in rows if "error" not in r), key=lambda r: r["name"]),
                                         key=lambda r: r["name"]):
        group = list(group)
        entry = {"runs": len(group)}
        for m in METRICS:
            real = [_metric(r["real"], m) for r in group]
            sim = statistics.mean(_metric(r["sim"], m) for r in group)
            mean = statistics.mean(real)
            entry[m] = {"real": mean, "sim": sim, "noise": (max(real) - min(real)) / mean if mean else float("nan"),
                        "err": _err(sim, mean)}
        out[name] = entry
    return out


# The cases that must match in shape as well as in number: how a metric changes from
# configuration A to configuration B, real against simulated.
SHAPES = (
    ("more clients than one-slot replicas can take (4 -> 20 clients)", "io50-handle-m1-c4", "io50-m1-c20",
     "throughput_rps"),
    ("async CPU-bound handlers run one request at a time, sync ones share the GIL", "gil20-async-c8",
     "gil20-sync-c8", "p50_ms"),
    ("logical CPUs above physical: 4 replicas on 4 logical CPUs over 2 cores, against 2 on 2",
     "gil20-sync-c8", "gil20-sync-4rep-L4", "throughput_rps"),
    ("8 async gil replicas on 8 logical CPUs over 2 cores, against 2 on 2 (16 and 8 clients)", "gil20-async-c8",
     "gil20-async-8rep-L8-c16", "p50_ms"),
    ("a third replica that cannot be placed changes nothing", "io50-handle-m1-c4", "pending-3of2",
     "throughput_rps"),
    ("native work releases the GIL: a second sync replica", "native20-sync-c4", "native20-sync-2rep-c8",
     "throughput_rps"),
)


def shape_lines(pooled: dict) -> list[str]:
    lines = ["| case | A | B | metric | real B/A | sim B/A | same direction |", "|---|---|---|---|---|---|---|"]
    for case, a, b, m in SHAPES:
        if a not in pooled or b not in pooled:
            continue
        real = pooled[b][m]["real"] / pooled[a][m]["real"]
        sim = pooled[b][m]["sim"] / pooled[a][m]["sim"]
        same = _direction(real) == _direction(sim)
        lines.append(f"| {case} | {a} | {b} | {m} | {real:.2f} | {sim:.2f} | {'yes' if same else 'no'} |")
    return lines


def _direction(ratio: float) -> int:
    """Up, down, or no change (within 5%)."""
    return 0 if abs(ratio - 1) < 0.05 else 1 if ratio > 1 else -1


def _plot(pooled: dict, path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    for ax, m in zip(fig.subplots(1, 3), METRICS):
        real = [p[m]["real"] for p in pooled.values()]
        sim = [p[m]["sim"] for p in pooled.values()]
        noise = [p[m]["noise"] * p[m]["real"] / 2 for p in pooled.values()]
        ax.errorbar(real, sim, xerr=noise, fmt="o")
        lo, hi = min(real + sim) * 0.8, max(real + sim) * 1.25
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="sim = real")
        ax.fill_between([lo, hi], [lo * 0.75, hi * 0.75], [lo * 1.25, hi * 1.25], alpha=0.1, label="within 25%")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"real {m}")
        ax.set_ylabel(f"simulated {m}")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _busy(row: dict) -> str:
    r, s = row["real"]["nodes"][0], row["sim"]["nodes"][0]
    real = r.get("ours_busy_cores", float("nan"))
    sim = s["physical_busy"] * s["physical_cores"]
    return f"{real:.2f}/{sim:.2f}"


def _idle_steal(row: dict) -> str:
    n = row["real"]["nodes"][0]
    return f"{n['window_idle_cores']:.2f}/{n['window_steal_cores']:.2f}" if "window_idle_cores" in n else "-"


def write_report(rows, cal: dict, path: str, wall_s: float, command: str = "python -m validate",
                 source: str = "", measured: str | None = None) -> None:
    lines = [
        "# simserve vs real Ray Serve 2.60.0",
        "",
        f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, wall time of the real runs {wall_s:.0f} s.{source} "
        f"Calibration: `{os.path.relpath(cal['_path'], HERE)}` "
        f"(measured {cal.get('date', '?')}, `{cal.get('command', '?').strip()}`). Error = (sim - real) / real. "
        f"Threshold for throughput: {100 * THRESHOLD:.0f}%.",
        "",
        "Calibration values used (every `Overheads` field; ms unless noted):",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for k in OVERHEAD_FIELDS:
        if isinstance(cal[k], list):  # the wake-up table
            lines.append(f"| {k} | {', '.join(f'{1e3 * float(x):.3f}' for x in cal[k])} |")
            continue
        v = float(cal[k])
        if unit(k) == "ratio":
            lines.append(f"| {k} | {v:.3f} |")
        elif unit(k) == "count":
            lines.append(f"| {k} | {v:.0f} |")
        elif k.endswith("_cores"):
            lines.append(f"| {k} | {v:.4f} cores |")
        else:
            lines.append(f"| {k} | {1e3 * v:.3f} |")
    lines += [f"| host_ns_per_loop | {cal['host_ns_per_loop']:.2f} ns |", ""]
    lines += [
        "Columns `busy real/sim`: cores in use on the node during the run, real (our process tree only, "
        "foreign load excluded) vs simserve (`nodes[0].physical_busy` x cores). Column `idle/steal "
        "cores`: over the measurement window, the real node's idle cores and the cores the hypervisor "
        "took (steal); column `foreign cores`: the node's busy cores not ours over the run, steal "
        "included. simserve runs on the cores net of the steal and of what other users' processes "
        "took (foreign less steal; runs before 2026-11-27 lack steal); column `sim rps on all cores`: "
        "simserve on all of them, for comparison. "
        "Column `gil work/probe`: the `gil` work's thread CPU per iteration in the replicas over the "
        "run's probe speed; simserve runs the work at that speed (runs before 2026-11-27 02:00 lack it: "
        "at the probe's). Column `sim rps over seeds`: simserve's throughput for the same run over "
        f"{SPREAD_SEEDS} seeds, min-max (the `sim rps` column is the first of them): where the router "
        "polls or collapses, one seed can land anywhere in a wide range.",
        "",
        "| scenario | config | real rps | sim rps | err | sim rps over seeds | real p50 ms | sim p50 ms "
        "| real p99 ms | sim p99 ms "
        "| replicas real (run/pend) | sim | rejected real/sim | probe speed (range) | foreign cores "
        "| sim rps on all cores "
        "| busy real/sim | idle/steal cores | gil work/probe |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | {row['describe']} | error: {row['error']} ||||||||||||")
            continue
        r, s = row["real"], row["sim"]
        lines.append(
            f"| {row['name']} | {row['describe']} | {r['throughput_rps']:.1f} | {s['throughput_rps']:.1f} | "
            f"{100 * _err(s['throughput_rps'], r['throughput_rps']):+.0f}% | {_seeds_cell(row)} | "
            f"{r['latency_ms']['p50']:.1f} | "
            f"{s['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} | {s['latency_ms']['p99']:.1f} | "
            f"{r['replicas']['running']}/{r['replicas']['pending']} | "
            f"{s['replicas']['running']}/{s['replicas']['pending']} | {r['rejected']}/{s['rejected']} | "
            f"{_speed_cell(row)} | {row['foreign_cores']:.2f} | {row['sim_all_cores']['throughput_rps']:.1f} | "
            f"{_busy(row)} | {_idle_steal(row)} | {_gil_work_cell(row)} |")
    lines += ["", "## Per configuration, repeats pooled", "",
              "Real: mean of the repeats, and their spread (max - min) / mean as the noise band. "
              "Error = (sim - real mean) / real mean.", "",
              "| scenario | runs | real rps | noise | sim rps | err | real p50 | noise | sim p50 | err "
              "| real p99 | noise | sim p99 | err |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pooled = pool(rows)
    for name, p in pooled.items():
        cells = [name, str(p["runs"])]
        for m in METRICS:
            cells += [f"{p[m]['real']:.1f}", f"{100 * p[m]['noise']:.0f}%", f"{p[m]['sim']:.1f}", f"{100 * p[m]['err']:+.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| metric | median abs. error | worst | median real noise |", "|---|---|---|---|"]
    for m in METRICS:
        errs = [abs(p[m]["err"]) for p in pooled.values() if not math.isnan(p[m]["err"])]
        worst = max(pooled, key=lambda n: abs(pooled[n][m]["err"]) if not math.isnan(pooled[n][m]["err"]) else -1)
        noise = [p[m]["noise"] for p in pooled.values()]
        lines.append(f"| {m} | {100 * statistics.median(errs):.0f}% | {100 * pooled[worst][m]['err']:+.0f}% ({worst}) "
                     f"| {100 * statistics.median(noise):.0f}% |")
    lines += ["", "## Shapes: how a metric changes between two configurations",
              "", "A change under 5% counts as none.", ""] + shape_lines(pooled)
    plot_path = os.path.splitext(path)[0] + ".png"
    _plot(pooled, plot_path)
    lines += ["", f"![simulated against real]({os.path.basename(plot_path)})"]
    bad = failures(rows)
    lines += ["", "## Outside the threshold, with the mechanism the numbers point to", ""]
    lines += [f"- {b}" for b in bad] or ["- none"]
    lines += ["", "## CPU by process: real, and what simserve charges (ms per completed request)", "",
              "Real: Python/GIL threads + C++ threads, over the whole drive (warm-up included) per request "
              "completed in it. Simulated: `charged_cpu_ms` in `validate/__main__.py`, each calibrated cost "
              "times simserve's own count of its occasions; `background` includes the daemons' time-based "
              "cores spread over the throughput. Where a CPU-bound run's simulated throughput is too high, "
              "this table says which process's CPU simserve under-counts.", "",
              "| scenario | driver | sim | proxy | sim | replicas | sim | background | sim |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            continue
        cb = row["real"].get("cpu_by_role", {})
        charged = row.get("sim_cpu_ms_per_request", {})
        cells = []
        for role in ("driver", "proxy", "replica", "background"):
            x = cb.get(role)
            cells.append(f"{x['python_ms_per_request']:.2f} + {x['native_ms_per_request']:.2f}" if x else "-")
            cells.append(f"{charged[role]:.2f}" if role in charged else "-")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", "## Routing per completed request, real/sim (handle path; the proxy's router is not instrumented)",
              "", "Every request needs at least one routing attempt, so a real count below 1 means the wrapper "
              "in the driver missed calls in that run (seen in some runs, cause not found): read the real "
              "counts as lower bounds.", "",
              "| scenario | attempts | queue-length probes | probes past the deadline | rejected sends |",
              "|---|---|---|---|---|"]
    for row in rows:
        if "error" in row or "attempts_per_request" not in row["real"]["router"]:
            continue
        r, s = row["real"]["router"], row["sim"]["router"]
        lines.append(f"| {row['name']} | " + " | ".join(
            f"{r[k]:.2f}/{s[k]:.2f}" if k in r else f"-/{s[k]:.2f}"  # runs before 2026-11-26 01:00 lack it
            for k in ("attempts_per_request", "probes_per_request", "probe_timeouts_per_request",
                      "rejections_per_request")) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    # The measurements behind the report, committed beside it: `--resimulate` reads them.
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump({"rows": rows, "wall_s": wall_s, "measured": measured or utc_stamp(),
                   "calibration": {k: v for k, v in cal.items() if k != "raw"}}, f, indent=0, default=str)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate", description="real Ray Serve vs simserve")
    ap.add_argument("--smoke", action="store_true", help="the small smoke set only")
    ap.add_argument("--only", default=None, help="run scenarios whose name contains one of these (comma-separated)")
    ap.add_argument("--calibration", default=None, help="calibration JSON (default: this machine's)")
    ap.add_argument("--autoscale", action="store_true", help="the autoscaling comparison (validate/autoscale.py)")
    ap.add_argument("--report", default=None, help="report path (default validate/REPORT.md, or AUTOSCALE.md)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="runs per scenario (default 1 for --smoke, 2 for the grid and --autoscale)")
    ap.add_argument("--resimulate", metavar="FILE", nargs="+", default=None,
                    help="no Ray: the real runs saved in FILE (out/grid-*.json, REPORT.json; a later file's "
                         "runs replace an earlier one's of the same scenarios; with --autoscale, "
                         "out/autoscale-*.json, all their runs) against today's model and calibration; "
                         "writes the report")
    args = ap.parse_args(argv)
    cal = load_calibration(args.calibration)
    if args.autoscale:
        from validate import autoscale

        command = " ".join(["python -m validate", *(sys.argv[1:] if argv is None else argv)])
        try:
            return autoscale.main(cal, args.repeats or 2, command, args.report, args.resimulate)
        except KeyboardInterrupt:
            print("interrupted; Ray was shut down", file=sys.stderr)
            return 130
    if args.resimulate:
        print(HEADER)
        rows, saved = resimulate(args.resimulate, cal)
        report = args.report or os.path.join(HERE, "REPORT.md")
        command = " ".join(["python -m validate", *(sys.argv[1:] if argv is None else argv)])
        measured = saved["measured"]
        write_report(rows, cal, report, saved["wall_s"], command,
                     f" Real runs measured {measured} by `python -m validate` (kept in `REPORT.json`), simulated "
                     f"again with today's model and the calibration below.", measured)
        print(f"wrote {report}")
        return 0
    cfgs = smoke_scenarios() if args.smoke else grid_scenarios()
    if args.only:
        keys = [k.strip().lower() for k in args.only.split(",") if k.strip()]
        cfgs = [c for c in cfgs if any(k in c.deployment.name.lower() for k in keys)]
    t0 = time.perf_counter()
    print(f"calibration: {cal['_path']}")
    print(HEADER)
    try:
        rows = run_all(cfgs, cal, args.repeats or (1 if args.smoke else 2))
    except KeyboardInterrupt:
        print("interrupted; Ray was shut down", file=sys.stderr)
        return 130
    wall = time.perf_counter() - t0
    mode = "smoke" if args.smoke else "grid"
    os.makedirs(OUT_DIR, exist_ok=True)
    stamp = utc_stamp()
    with open(os.path.join(OUT_DIR, f"{mode}-{stamp}.json"), "w") as f:
        json.dump({"rows": rows, "wall_s": wall, "calibration": {k: v for k, v in cal.items() if k != "raw"}}, f,
                  indent=1, default=str)
    if not args.smoke and not args.only:
        report = args.report or os.path.join(HERE, "REPORT.md")
        write_report(rows, cal, report, wall, measured=stamp)
        print(f"wrote {report}")
    noisy = [r["name"] for r in rows if r.get("foreign_cores", 0) > 0.2]
    if noisy:
        print(f"note: other processes or the hypervisor's steal took > 0.2 cores during {', '.join(noisy)}: see 'foreign' and 'simall'")
    bad = failures(rows)
    print(f"wall time {wall:.0f} s; {len(rows) - len(bad)}/{len(rows)} within {100 * THRESHOLD:.0f}% throughput")
    for b in bad:
        print("  FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
