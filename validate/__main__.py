"""Real Ray Serve vs simserve.

    python -m validate --smoke        # 3 small configurations, ~2 minutes, exit 1 if a
                                      # throughput differs by more than 25 %
    python -m validate                # the grid; writes validate/REPORT.md
    python -m validate --only io50,pending   # scenarios whose name contains one of these

Each scenario (a ``SimConfig``) runs on real Ray (``validate.harness``), then in
simserve with the calibration file's ``Overheads`` and ``cpu_speed`` = calibration
``host_ns_per_loop`` / this run's ``host_ns_per_loop`` (``gil``/``native`` segments
scaled by the same ratio, see ``scenario.with_overheads``). The table also shows
``foreign``: cores other users' processes took during the real run (system busy time
minus our process tree's CPU), and ``simfree``: simserve's throughput on the cores
left free -- a diagnosis column, not the pass/fail one. Scenarios that share a logical
CPU count share one ``ray.init``; apps are deleted between scenarios. Raw results go
to ``validate/out/<mode>-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import statistics
import sys
import time

from simserve import simulate
from validate.scenario import HERE, OVERHEAD_FIELDS, describe, grid_scenarios, load_calibration, smoke_scenarios, with_overheads

THRESHOLD = 0.25


def run_all(cfgs, cal: dict, repeats: int = 1) -> list[dict]:
    """One row per scenario and repeat; repeats run back to back, so that their spread is
    the real system's own run-to-run noise."""
    from validate.harness import RealCluster

    rows = []
    cfgs = sorted(cfgs, key=lambda c: c.cluster.num_cpus)
    for cpus, group in itertools.groupby(cfgs, key=lambda c: c.cluster.num_cpus):
        with RealCluster(num_cpus=cpus, ns_per_loop=cal["host_ns_per_loop"],
                         native_unit=cal.get("native_unit_s")) as cl:
            for cfg in [c for c in group for _ in range(repeats)]:
                t0 = time.perf_counter()
                try:
                    real = cl.run(cfg, app_name=cfg.deployment.name.lower())
                except Exception as e:  # noqa: BLE001 - one failed scenario must not stop the rest
                    print(f"  {cfg.deployment.name}: real run failed: {e!r}", file=sys.stderr)
                    rows.append({"name": cfg.deployment.name, "describe": describe(cfg), "error": repr(e)})
                    continue
                sim_cfg = with_overheads(cfg, cal, real["host_ns_per_loop"])
                sim = simulate(sim_cfg).summary
                # Diagnosis only: the same, on the cores other users' processes left free.
                foreign = real["nodes"][0].get("foreign_busy_cores", 0.0) or 0.0
                free = max(0.25, cfg.cluster.physical_cores - foreign)
                sim_free = simulate(with_overheads(cfg, cal, real["host_ns_per_loop"], physical_cores=free)).summary
                row = {"name": cfg.deployment.name, "describe": describe(cfg), "real": real, "sim": _lean(sim),
                       "sim_free_cores": _lean(sim_free), "free_cores": free, "foreign_cores": foreign,
                       "cpu_speed": sim_cfg.overheads.cpu_speed, "seconds": time.perf_counter() - t0}
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def _lean(sim: dict) -> dict:
    return {k: v for k, v in sim.items() if k != "config"}


def _err(sim: float, real: float) -> float:
    return (sim - real) / real if real and not math.isnan(real) else float("nan")


HEADER = (f"{'scenario':22s} {'real rps':>9s} {'sim rps':>8s} {'err%':>6s} | {'real p50':>8s} {'sim p50':>8s} "
          f"{'err%':>6s} | {'real p99':>8s} {'sim p99':>8s} | {'run/pend r':>10s} {'run/pend s':>10s} | "
          f"{'rej r/s':>9s} | {'speed':>5s} {'foreign':>7s} {'simfree':>7s} | {'busy r/s':>9s}")


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
            f"{r['rejected']:>4d}/{s['rejected']:<4d} | {row['cpu_speed']:5.2f} {row['foreign_cores']:7.2f} "
            f"{row['sim_free_cores']['throughput_rps']:7.2f} | {_busy(row):>9s}")


def failures(rows) -> list[str]:
    bad = []
    for row in rows:
        if "error" in row:
            bad.append(f"{row['name']}: {row['error']}")
            continue
        e = _err(row["sim"]["throughput_rps"], row["real"]["throughput_rps"])
        if math.isnan(e) or abs(e) > THRESHOLD:
            bad.append(f"{row['name']}: throughput error {100 * e:+.1f}% (limit {100 * THRESHOLD:.0f}%); {diagnose(row)}")
    return bad


def diagnose(row: dict) -> str:
    """Which mechanism the measured CPU points to: under-counted CPU where the real run is
    CPU-bound, lost time (waiting, not working) where it is not."""
    real, sim = row["real"], row["sim"]
    cores = sim["nodes"][0]["physical_cores"]
    busy = real["nodes"][0].get("ours_busy_cores", float("nan"))
    real_ms = 1e3 * busy / real["throughput_rps"] if real["throughput_rps"] else float("nan")
    sim_ms = 1e3 * sim["nodes"][0]["physical_busy"] * cores / sim["throughput_rps"] if sim["throughput_rps"] else float("nan")
    if busy >= 0.85 * cores:
        return (f"CPU-bound in real ({busy:.2f} of {cores:g} cores): {real_ms:.1f} ms of CPU per request real, "
                f"{sim_ms:.1f} simulated, so Ray's CPU under load is under-counted")
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


def write_report(rows, cal: dict, path: str, wall_s: float) -> None:
    lines = [
        "# simserve vs real Ray Serve 2.60.0",
        "",
        f"Generated by `python -m validate` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, wall time {wall_s:.0f} s. Calibration: `{os.path.relpath(cal['_path'], HERE)}` "
        f"(measured {cal.get('date', '?')}, `{cal.get('command', '?').strip()}`). Error = (sim - real) / real. "
        f"Threshold for throughput: {100 * THRESHOLD:.0f}%.",
        "",
        "Calibration values used (every `Overheads` field; ms unless noted):",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for k in OVERHEAD_FIELDS:
        v = float(cal[k])
        if k in ("hop_cv", "contended_core_speed"):
            lines.append(f"| {k} | {v:.3f} |")
        elif k == "ray_background_cores":
            lines.append(f"| {k} | {v:.4f} cores |")
        else:
            lines.append(f"| {k} | {1e3 * v:.3f} |")
    lines += [f"| host_ns_per_loop | {cal['host_ns_per_loop']:.2f} ns |", ""]
    lines += [
        "Columns `busy real/sim`: cores in use on the node during the run, real (our process tree only, "
        "foreign load excluded) vs simserve (`nodes[0].physical_busy` x cores).",
        "",
        "| scenario | config | real rps | sim rps | err | real p50 ms | sim p50 ms | real p99 ms | sim p99 ms "
        "| replicas real (run/pend) | sim | rejected real/sim | cpu_speed | foreign cores | sim rps on free cores "
        "| busy real/sim |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | {row['describe']} | error: {row['error']} |||||||||||")
            continue
        r, s = row["real"], row["sim"]
        lines.append(
            f"| {row['name']} | {row['describe']} | {r['throughput_rps']:.1f} | {s['throughput_rps']:.1f} | "
            f"{100 * _err(s['throughput_rps'], r['throughput_rps']):+.0f}% | {r['latency_ms']['p50']:.1f} | "
            f"{s['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} | {s['latency_ms']['p99']:.1f} | "
            f"{r['replicas']['running']}/{r['replicas']['pending']} | "
            f"{s['replicas']['running']}/{s['replicas']['pending']} | {r['rejected']}/{s['rejected']} | "
            f"{row['cpu_speed']:.2f} | {row['foreign_cores']:.2f} | {row['sim_free_cores']['throughput_rps']:.1f} | "
            f"{_busy(row)} |")
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
    plot_path = os.path.splitext(path)[0] + ".png"
    _plot(pooled, plot_path)
    lines += ["", f"![simulated against real]({os.path.basename(plot_path)})"]
    bad = failures(rows)
    lines += ["", "## Outside the threshold, with the mechanism the numbers point to", ""]
    lines += [f"- {b}" for b in bad] or ["- none"]
    lines += ["", "## CPU by process, real (ms per completed request, Python/GIL + C++ threads)", "",
              "| scenario | driver | proxy | replicas | background |", "|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            continue
        cb = row["real"].get("cpu_by_role", {})
        cells = []
        for role in ("driver", "proxy", "replica", "background"):
            x = cb.get(role)
            cells.append(f"{x['python_ms_per_request']:.2f} + {x['native_ms_per_request']:.2f}" if x else "-")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate", description="real Ray Serve vs simserve")
    ap.add_argument("--smoke", action="store_true", help="the small smoke set only")
    ap.add_argument("--only", default=None, help="run scenarios whose name contains one of these (comma-separated)")
    ap.add_argument("--calibration", default=None, help="calibration JSON (default: this machine's)")
    ap.add_argument("--report", default=os.path.join(HERE, "REPORT.md"), help="grid report path")
    ap.add_argument("--repeats", type=int, default=None, help="runs per scenario (default 1 for --smoke, 2 for the grid)")
    args = ap.parse_args(argv)
    cal = load_calibration(args.calibration)
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
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(out_dir, f"{mode}-{stamp}.json"), "w") as f:
        json.dump({"rows": rows, "wall_s": wall, "calibration": cal}, f, indent=1, default=str)
    if not args.smoke and not args.only:
        write_report(rows, cal, args.report, wall)
        print(f"wrote {args.report}")
    noisy = [r["name"] for r in rows if r.get("foreign_cores", 0) > 0.2]
    if noisy:
        print(f"note: other processes used > 0.2 cores during {', '.join(noisy)}: see 'foreign' and 'simfree'")
    bad = failures(rows)
    print(f"wall time {wall:.0f} s; {len(rows) - len(bad)}/{len(rows)} within {100 * THRESHOLD:.0f}% throughput")
    for b in bad:
        print("  FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
