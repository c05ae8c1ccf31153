"""Where a CPU-bound grid scenario's latency goes, request by request, on real Ray and in
simserve (a diagnosis, not a validation).

    python -m validate.trace_work NAME [--json FILE]

Runs the grid scenario NAME, whose work must be one ``gil`` segment, on real Ray as
``python -m validate`` runs it, and keeps every answered request's latency beside what its
replica put in the answer (``harness._answer``): the gil work's thread CPU and wall time.
Meanwhile a process of its own reads the host's steal time from ``/proc/stat`` every 5 ms.
Then simserve runs the configuration the report would simulate for that run
(``validate.__main__.sim_config``), and its gil work's wall time is read off the request
table: an ``async def`` handler runs its CPU work one request at a time in arrival order,
so from the later of the handler's start and the end of the replica's previous request to
the handler's end; a ``def`` handler's from its start.

It prints p50 / p90 / p99 of the latency, the work's thread CPU, its wall time, wall minus
CPU (the work's thread runnable or waiting for the GIL, but not running), the rest of the
latency, and the steal during each request (cores, both CPUs together); the slowest 2 % of
the requests beside the middle fifth; and how the work's CPU per iteration correlates with
the next answers'. validate/README.md item 34 is what it found.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from simserve import simulate
from validate.harness import RealCluster
from validate.scenario import grid_scenarios, load_calibration

STEAL_INTERVAL_S = 0.005
TICK_S = 0.01  # /proc/stat counts in USER_HZ (100 per second)

# The steal reader: (perf_counter, [(idle, steal) ticks per CPU]) every interval, until a
# line on its stdin; then the samples as JSON on its stdout.
_STEAL_READER = r"""
import json, select, sys, time
out = []
while True:
    with open("/proc/stat") as f:
        cpus = [l.split() for l in f if l.startswith("cpu") and not l.startswith("cpu ")]
    out.append((time.perf_counter(), [(int(c[4]), int(c[8])) for c in cpus]))
    if select.select([sys.stdin], [], [], float(sys.argv[1]))[0]:
        break
json.dump(out, sys.stdout)
"""


def _percentiles(values) -> tuple:
    return tuple(float(x) for x in np.percentile(values, (50, 90, 99)))


def real_requests(cfg, cal: dict) -> tuple[dict, dict, list]:
    """One real run of ``cfg``: (its summary, {"t0", "records", "works"} from the load
    generator, the steal samples)."""
    with RealCluster(num_cpus=cfg.cluster.num_cpus, ns_per_loop=cal["host_ns_per_loop"],
                     native_unit=cal.get("native_unit_s")) as cl:
        drive, kept = cl._drive, {}

        async def kept_drive(c, handle, app_name, on_start=None):
            def started(t0):
                kept["t0"] = t0
                if on_start is not None:
                    on_start(t0)
            kept["records"], window, kept["works"] = await drive(c, handle, app_name, on_start=started)
            return kept["records"], window, kept["works"]

        cl._drive = kept_drive
        reader = subprocess.Popen([sys.executable, "-c", _STEAL_READER, str(STEAL_INTERVAL_S)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            real = cl.run(cfg)
        finally:
            out, _ = reader.communicate(input="stop\n", timeout=30)
    return real, kept, json.loads(out)


def real_table(kept: dict, steal: list, warmup_s: float) -> dict:
    """Per answered request after the warm-up: latency, the work's CPU and wall (ms), its
    CPU ns per iteration, the steal cores during it, ordered by answer time."""
    t0 = kept["t0"]
    bodies = {round(e, 9): b for e, b in kept["works"]}
    ts = np.array([t for t, _ in steal]) - t0
    stolen = np.array([sum(s for _, s in cpus) for _, cpus in steal], dtype=float) * TICK_S
    rows = []
    for s, e, _ in kept["records"]:
        body = bodies.get(round(e, 9))
        if s < warmup_s or body is None:
            continue
        _, cpu_ns, wall_ns, n = body.split()
        lat = e - s
        rows.append((e, lat * 1e3, int(cpu_ns) / 1e6, int(wall_ns) / 1e6, int(cpu_ns) / max(int(n), 1),
                     (np.interp(e, ts, stolen) - np.interp(s, ts, stolen)) / lat))
    a = np.array(sorted(rows))
    return {"latency": a[:, 1], "cpu": a[:, 2], "wall": a[:, 3], "ns_per_loop": a[:, 4], "steal_cores": a[:, 5]}


def sim_walls(sim_cfg, warmup_s: float) -> tuple[np.ndarray, np.ndarray]:
    """simserve's latency and gil work wall time (ms) per request answered after the warm-up."""
    from dataclasses import replace

    req = simulate(replace(sim_cfg, keep_requests=True)).requests
    req = req[req["status"] == "ok"].sort_values(["replica", "start_s"])
    start = req["start_s"].to_numpy()
    done = req["done_s"].to_numpy()
    if sim_cfg.deployment.handler == "async":
        prev = np.r_[-np.inf, done[:-1]]
        same = np.r_[False, req["replica"].to_numpy()[1:] == req["replica"].to_numpy()[:-1]]
        start = np.where(same, np.maximum(start, prev), start)
    keep = req["arrival_s"].to_numpy() >= warmup_s
    return ((req["end_s"] - req["arrival_s"]).to_numpy()[keep] * 1e3, (done - start)[keep] * 1e3)


def report(name: str, t: dict, sim_latency, sim_wall) -> list[str]:
    lat, cpu, wall = t["latency"], t["cpu"], t["wall"]
    lines = [f"{name}: {len(lat)} real answers after the warm-up, {len(sim_latency)} simulated",
             f"{'':24s} {'p50':>8s} {'p90':>8s} {'p99':>8s}"]
    for label, v in (("latency ms", lat), ("work CPU ms", cpu), ("work wall ms", wall), ("wall - CPU ms", wall - cpu),
                     ("rest of latency ms", lat - wall), ("steal cores", t["steal_cores"]),
                     ("sim latency ms", sim_latency), ("sim work wall ms", sim_wall)):
        lines.append(f"{label:24s} " + " ".join(f"{x:8.2f}" for x in _percentiles(v)))
    top = lat >= np.percentile(lat, 98)
    mid = (lat >= np.percentile(lat, 40)) & (lat <= np.percentile(lat, 60))
    for label, m in (("slowest 2%", top), ("middle fifth", mid)):
        lines.append(f"{label:13s} latency {lat[m].mean():7.1f}  CPU {cpu[m].mean():6.1f}  wall {wall[m].mean():6.1f}  "
                     f"rest {(lat - wall)[m].mean():7.1f} ms  steal {t['steal_cores'][m].mean():.3f} cores")
    ns = t["ns_per_loop"]
    lines.append("work CPU ns/iteration p5 / p50 / p95: " + " / ".join(f"{x:.1f}" for x in np.percentile(ns, (5, 50, 95)))
                 + "; correlation with the answer k later: "
                 + ", ".join(f"k={k} {np.corrcoef(ns[:-k], ns[k:])[0, 1]:+.2f}" for k in (1, 2, 4, 8)))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.trace_work", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="a grid scenario whose work is one gil segment")
    ap.add_argument("--json", metavar="FILE", help="also write the real run's per-request table here")
    args = ap.parse_args(argv)
    cfg = next((s for s in grid_scenarios() if s.deployment.name == args.name), None)
    if cfg is None or [s.kind for s in cfg.deployment.work.segments] != ["gil"]:
        print(f"name: {args.name!r} is not a grid scenario with one gil segment", file=sys.stderr)
        return 2
    from validate.__main__ import sim_config

    cal = load_calibration()
    real, kept, steal = real_requests(cfg, cal)
    table = real_table(kept, steal, cfg.workload.warmup_s)
    sim_latency, sim_wall = sim_walls(sim_config(cfg, real, cal), cfg.workload.warmup_s)
    print("\n".join(report(args.name, table, sim_latency, sim_wall)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v.tolist() for k, v in table.items()}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
