"""How fast simserve simulates, and how much memory it needs: ``python -m simserve.bench``.

What it measures: *simulated requests completed per wall-clock second* (req/s) of
``simserve.simulate`` on four scenarios, the median of ``--repeats`` runs (default 5),
and each scenario's peak resident memory. Every scenario runs in a fresh child process
(``python -m simserve.bench --scenario S1 --child``) so ``ru_maxrss`` is that
scenario's own peak. All timing is single-process, single-threaded Python: one core,
whatever the machine has. On a shared machine, compare medians, not single runs.

Scenarios (S1 to S3 with ``Overheads()``, every cost zero, which is what
``--no-overheads`` means):

* S1  M/M/4 at 80 % load: Poisson 32 rps, exponential ``io`` service 100 ms, 4
  replicas, max_ongoing_requests=1, router ``ideal``. Timed side by side (interleaved
  per repeat, same simulated horizon) with the same queue in Ciw
  (``ciw.Simulation``, ``simulate_until_max_time``, completed records counted) and in
  plain SimPy written the obvious way: one process per customer and ONE
  ``simpy.Resource(capacity=4)`` -- a shared FIFO queue served by 4 servers, which is
  exactly what the ``ideal`` router models (oldest waiting request to the first free
  slot). Four capacity-1 Resources with join-the-shortest-queue would be a different
  queue (not M/M/4), so it is not used. Ratios simserve/ciw and simserve/simpy > 1
  mean simserve is faster. This configuration is a plain FCFS queue, so ``simulate``
  takes its FCFS fast path (``simserve/fcfs.py``); the event-driven engine's rate on
  the same runs is reported beside it.
* S2  the full model: 8 replicas, pow2, max_ongoing_requests=5, sync handlers doing
  lognormal ``gil`` work (mean 50 ms, cv 1) on 4 physical cores (cluster num_cpus 8),
  Poisson 64 rps (80 % of 4 cores / 50 ms). Reports the projected wall time for one
  million simulated requests.
* S3  scale: 512 replicas (cluster num_cpus 512, 512 cores), 2560 closed-loop clients,
  exponential ``io`` 10 ms, max_ongoing 5, pow2, 2 simulated seconds (10 with
  ``--full``). Reports cost per request relative to S1 in the event-driven engine
  (ratio of microseconds per request, the median over repeats, S1 timed in the same
  process right after each S3 run), and the microseconds per request of the same load
  per replica (five clients each) on 8 and 64 replicas beside 512's, timed in the same
  repeats (``S3_SCALE``): whether routing grows with the number of replicas.
* S4  the seed example: 4 replicas of num_cpus 2 (default 8-CPU, 8-core cluster), 10
  concurrent clients, deterministic ``gil`` 100 ms, async handler, pow2 (default),
  with the platform costs of the committed calibration file.
* MEM S1 with keep_requests=False for 1e6 and 1e7 requests (2e4 and 2e5 with
  ``--quick``), in the event-driven engine: the ratio of peak RSS, and of peak RSS above
  the post-import baseline (flat memory: both ~1.0; the target is a ratio within 1.1).
  Both runs are long enough for the timeline to reach its row cap and merge rows.

``--json`` prints one object ``{"scenarios": {"S1": {"simserve_rps": ..., "ciw_rps":
..., "simpy_rps": ..., "peak_rss_mb": ...}, ...}, "memory": {...}, "meta": {...}}``.
Ciw is an optional, bench-only dependency (extra ``bench``): when it is missing,
``ciw_rps`` is null. The default run takes ~2 minutes on a slow shared machine, over
half of it the 1e7-request memory run (``--no-memory`` skips it); ``--quick`` ~20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

SCENARIOS = ("S1", "S2", "S3", "S4")

# Simulated sizes: (default, quick).
S1_HORIZON_S = (1000.0, 200.0)  # ~32k / ~6.4k requests
S2_HORIZON_S = (500.0, 100.0)  # ~32k / ~6.4k requests
S3_HORIZON_S = (2.0, 0.25)  # --full: 10 s
# S3's load per replica on fewer replicas, for the same order of requests as 512 replicas in
# S3_HORIZON_S: (replicas, default horizon, quick horizon).
S3_SCALE = ((8, 10.0, 1.2), (64, 1.4, 0.2))
S4_HORIZON_S = (600.0, 120.0)
MEM_REQUESTS = ((1_000_000, 10_000_000), (20_000, 200_000))


def _rss_mb() -> float:
    """Peak RSS of this process so far, in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


# -- configurations ----------------------------------------------------------------------------
def _config(replicas, handler, work, dist, mean_s, *, max_ongoing=5, cores=8.0, router="pow2", overheads=None,
            seed=1, **workload):
    """One benchmark configuration (simserve imported here, after the memory baseline)."""
    from simserve import (
        ClusterConfig,
        DeploymentConfig,
        Distribution,
        Overheads,
        RouterConfig,
        SimConfig,
        WorkloadConfig,
        WorkModel,
    )

    return SimConfig(
        deployment=DeploymentConfig(
            num_replicas=replicas,
            num_cpus=1.0,
            max_ongoing_requests=max_ongoing,
            handler=handler,
            work=WorkModel.single(work, Distribution(dist, mean_s, 1.0)),
        ),
        cluster=ClusterConfig(num_cpus=max(8.0, float(replicas)), physical_cores=cores),
        router=RouterConfig(policy=router),
        overheads=overheads or Overheads(),
        workload=WorkloadConfig(**workload),
        seed=seed,
        keep_requests=False,
    )


def s1_config(*, duration_s=None, requests=None, seed=1):
    return _config(4, "async", "io", "exponential", 0.1, max_ongoing=1, router="ideal", seed=seed, rps=32.0,
                   duration_s=duration_s, requests=requests)


def s2_config(duration_s, seed=1):
    return _config(8, "sync", "gil", "lognormal", 0.05, cores=4.0, seed=seed, rps=64.0, duration_s=duration_s)


def s3_config(duration_s, seed=1, replicas=512):
    """S3: five closed-loop clients per five-slot replica, 10 ms exponential io."""
    return _config(replicas, "async", "io", "exponential", 0.01, cores=float(replicas), seed=seed,
                   concurrent=5 * replicas, duration_s=duration_s)


def s4_config(duration_s, seed=1):
    """The seed example as the command line runs it: 4 replicas of num_cpus 2, 10 clients,
    100 ms of GIL work, async handler, the committed calibration's platform costs."""
    from dataclasses import replace

    from simserve import Overheads, calibration

    path = calibration.default_path()
    cfg = _config(4, "async", "gil", "deterministic", 0.1, seed=seed, concurrent=10, duration_s=duration_s,
                  overheads=Overheads(**calibration.load(path)) if path else None)
    return replace(cfg, deployment=replace(cfg.deployment, num_cpus=2.0))


# -- the three engines on S1 -------------------------------------------------------------------------
def time_simserve(cfg, events: bool = False) -> tuple[int, float]:
    """(completed, wall seconds) of one ``simulate`` call, construction and summary
    included; ``events`` forces the event-driven engine where the FCFS path would run."""
    from simserve import simulate
    from simserve.simulation import Simulation

    t0 = time.perf_counter()
    res = Simulation(cfg).run() if events else simulate(cfg)
    wall = time.perf_counter() - t0
    return int(res.summary["completed"]), wall


def time_ciw(horizon_s: float, seed: int):
    """(completed, wall seconds) of Ciw's M/M/4, or None if Ciw is not installed."""
    try:
        import ciw
    except ImportError:
        return None
    t0 = time.perf_counter()
    ciw.seed(seed)
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(32.0)],
        service_distributions=[ciw.dists.Exponential(10.0)],
        number_of_servers=[4],
    )
    q = ciw.Simulation(network)
    q.simulate_until_max_time(horizon_s)
    done = len(q.get_all_records())
    return done, time.perf_counter() - t0


def simpy_mm4(horizon_s: float, seed: int) -> int:
    """M/M/4 in plain SimPy: a process per customer, one Resource(capacity=4) (shared FIFO)."""
    import simpy

    env = simpy.Environment()
    rng = random.Random(seed)
    servers = simpy.Resource(env, capacity=4)
    done = [0]

    def customer():
        with servers.request() as req:
            yield req
            yield env.timeout(rng.expovariate(10.0))
        done[0] += 1

    def source():
        while True:
            yield env.timeout(rng.expovariate(32.0))
            env.process(customer())

    env.process(source())
    env.run(until=horizon_s)
    return done[0]


def time_simpy(horizon_s: float, seed: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    done = simpy_mm4(horizon_s, seed)
    return done, time.perf_counter() - t0


# -- one scenario, in this process (the --child side) ---------------------------------------------
def _median_rps(runs: list[tuple[int, float]]) -> float:
    return statistics.median(n / w for n, w in runs)


def run_scenario(name: str, *, repeats: int, quick: bool, full: bool, simserve_only: bool = False,
                 requests: int | None = None) -> dict:
    """Run one scenario here and return its measurements (used by the child process)."""
    import simserve  # noqa: F401  (imports counted in the baseline)

    q = 1 if quick else 0
    out: dict = {"scenario": name, "baseline_rss_mb": _rss_mb()}
    if name == "MEM":
        # The event engine at both sizes: its statistics stream (the FCFS path holds every
        # request's times and hands long runs without a table to the event engine anyway).
        cfg = s1_config(requests=requests)
        n, w = time_simserve(cfg, events=True)
        out.update(requests=requests, completed=n, simserve_rps=n / w, peak_rss_mb=_rss_mb())
        return out
    if name == "S1":
        horizon = S1_HORIZON_S[q]
        ss, ev, cw, sp = [], [], [], []
        peak = None
        for i in range(repeats):  # interleaved, so machine noise hits all alike
            seed = i + 1
            ss.append(time_simserve(s1_config(duration_s=horizon, seed=seed)))
            ev.append(time_simserve(s1_config(duration_s=horizon, seed=seed), events=True))
            if peak is None:
                peak = _rss_mb()  # simserve's own peak, before Ciw is even imported
            if simserve_only:
                continue
            c = time_ciw(horizon, seed)
            if c is not None:
                cw.append(c)
            sp.append(time_simpy(horizon, seed))
        out.update(
            sim_horizon_s=horizon,
            simserve_rps=_median_rps(ss),
            simserve_events_rps=_median_rps(ev),
            ciw_rps=_median_rps(cw) if cw else None,
            simpy_rps=_median_rps(sp) if sp else None,
            completed={"simserve": ss[0][0], "ciw": cw[0][0] if cw else None, "simpy": sp[0][0] if sp else None},
            runs_rps={
                "simserve": [n / w for n, w in ss],
                "simserve_events": [n / w for n, w in ev],
                "ciw": [n / w for n, w in cw],
                "simpy": [n / w for n, w in sp],
            },
            peak_rss_mb=peak,
            peak_rss_mb_incl_baselines=_rss_mb(),
        )
        return out
    if name == "S2":
        horizon = S2_HORIZON_S[q]
        make = s2_config
    elif name == "S3":
        horizon = 10.0 if full else S3_HORIZON_S[q]
        make = s3_config
    elif name == "S4":
        horizon = S4_HORIZON_S[q]
        make = s4_config
    else:
        raise ValueError(f"unknown scenario {name!r}")
    ss, s1 = [], []
    fewer: dict = {n: [] for n, _, _ in S3_SCALE}
    for i in range(repeats):
        ss.append(time_simserve(make(horizon, seed=i + 1)))
        if name == "S3":
            # S1 in the event-driven engine right after, so that the cost ratio is taken
            # side by side (runs in separate processes minutes apart differed by up to 40 %).
            s1.append(time_simserve(s1_config(duration_s=S1_HORIZON_S[q], seed=i + 1), events=True))
            # And S3's load per replica on fewer replicas: whether routing grows with them.
            for n, *horizons in S3_SCALE:
                fewer[n].append(time_simserve(s3_config(horizons[q], seed=i + 1, replicas=n)))
    out.update(
        sim_horizon_s=horizon,
        simserve_rps=_median_rps(ss),
        ciw_rps=None,
        simpy_rps=None,
        completed=ss[0][0],
        runs_rps={"simserve": [n / w for n, w in ss]},
        peak_rss_mb=_rss_mb(),
    )
    if s1:
        # microseconds per request in S3 over those of S1 in the same engine, per repeat
        out["s1_events_rps"] = _median_rps(s1)
        out["cost_per_request_vs_S1"] = statistics.median((n1 / w1) / (n3 / w3) for (n3, w3), (n1, w1) in zip(ss, s1))
        out["us_per_request_by_replicas"] = {**{n: 1e6 / _median_rps(runs) for n, runs in fewer.items()},
                                             512: 1e6 / _median_rps(ss)}
    return out


# -- the parent: one child per scenario ------------------------------------------------------------
def _child(name: str, args, requests: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "simserve.bench", "--child", "--scenario", name, "--repeats", str(args.repeats)]
    if args.quick:
        cmd.append("--quick")
    if args.full:
        cmd.append("--full")
    if requests is not None:
        cmd += ["--requests", str(requests)]
    p = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if p.returncode != 0:
        return {"scenario": name, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _ratio(a, b):
    return a / b if a and b else None


def collect(args) -> dict:
    """Run every requested scenario in its own child and assemble the report."""
    names = [args.scenario] if args.scenario and args.scenario != "MEM" else list(SCENARIOS)
    t0 = time.perf_counter()
    raw = {n: _child(n, args) for n in names}
    scen = {}
    for n, r in raw.items():
        if "error" in r:
            scen[n] = {"simserve_rps": None, "ciw_rps": None, "simpy_rps": None, "peak_rss_mb": None, "error": r["error"]}
            continue
        row = {
            "simserve_rps": r["simserve_rps"],
            "ciw_rps": r["ciw_rps"],
            "simpy_rps": r["simpy_rps"],
            "peak_rss_mb": r["peak_rss_mb"],
            "baseline_rss_mb": r["baseline_rss_mb"],
            "sim_horizon_s": r["sim_horizon_s"],
            "completed_per_run": r["completed"],
            "runs_rps": r["runs_rps"],
        }
        if n == "S1":
            row["simserve_events_rps"] = r["simserve_events_rps"]
            row["simserve_over_ciw"] = _ratio(r["simserve_rps"], r["ciw_rps"])
            row["simserve_over_simpy"] = _ratio(r["simserve_rps"], r["simpy_rps"])
            row["simpy_model"] = "one simpy.Resource(capacity=4), shared FIFO (= router ideal)"
        if n == "S2":
            row["projected_wall_s_per_1M_requests"] = 1e6 / r["simserve_rps"]
        scen[n] = row
        if n == "S3":
            row["s1_events_rps"] = r["s1_events_rps"]
            row["cost_per_request_vs_S1"] = r["cost_per_request_vs_S1"]
            row["us_per_request"] = 1e6 / r["simserve_rps"]
            row["us_per_request_by_replicas"] = r["us_per_request_by_replicas"]
    report: dict = {"scenarios": scen}
    if not args.no_memory and (not args.scenario or args.scenario == "MEM"):
        small, large = MEM_REQUESTS[1 if args.quick else 0]
        a, b = _child("MEM", args, small), _child("MEM", args, large)
        if "error" in a or "error" in b:
            report["memory"] = {"error": a.get("error") or b.get("error")}
        else:
            report["memory"] = {
                "requests": [small, large],
                "peak_rss_mb": [a["peak_rss_mb"], b["peak_rss_mb"]],
                "peak_rss_ratio": b["peak_rss_mb"] / a["peak_rss_mb"],
                "above_baseline_mb": [a["peak_rss_mb"] - a["baseline_rss_mb"], b["peak_rss_mb"] - b["baseline_rss_mb"]],
                "above_baseline_ratio": _ratio(b["peak_rss_mb"] - b["baseline_rss_mb"], a["peak_rss_mb"] - a["baseline_rss_mb"]),
                "simserve_rps": [a["simserve_rps"], b["simserve_rps"]],
            }
    report["meta"] = {
        "repeats": args.repeats,
        "statistic": "median",
        "quick": args.quick,
        "full": args.full,
        "process": "each scenario in a fresh single-threaded child process: one core",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "bench_wall_s": time.perf_counter() - t0,
    }
    return report


def _fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)


def table(report: dict) -> str:
    head = ("scenario", "simserve req/s", "ciw req/s", "simpy req/s", "ss/ciw", "ss/simpy", "peak RSS MB", "notes")
    rows = [head]
    for n, r in report["scenarios"].items():
        notes = []
        if "error" in r:
            notes.append("ERROR: " + r["error"])
        if "projected_wall_s_per_1M_requests" in r:
            notes.append(f"1M requests ~{r['projected_wall_s_per_1M_requests']:.0f} s wall")
        if "cost_per_request_vs_S1" in r:
            notes.append(f"{r['us_per_request']:.1f} us/req = {r['cost_per_request_vs_S1']:.2f}x S1's event engine")
            by = r["us_per_request_by_replicas"]
            notes.append("us/req at " + "/".join(by) + " replicas: " + "/".join(f"{v:.1f}" for v in by.values()))
        if r.get("simserve_events_rps"):
            notes.append(f"FCFS fast path; event engine {r['simserve_events_rps']:,.0f} req/s")
        rows.append((
            n,
            _fmt(r.get("simserve_rps")),
            _fmt(r.get("ciw_rps")),
            _fmt(r.get("simpy_rps")),
            _fmt(r.get("simserve_over_ciw"), ".2f"),
            _fmt(r.get("simserve_over_simpy"), ".2f"),
            _fmt(r.get("peak_rss_mb"), ".0f"),
            "; ".join(notes),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i in (0, 7) else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    m = report.get("memory")
    if m:
        if "error" in m:
            lines.append(f"memory check: ERROR {m['error']}")
        else:
            lines.append(
                f"memory check (S1, keep_requests=False): {m['requests'][0]:,} vs {m['requests'][1]:,} requests: "
                f"peak RSS {m['peak_rss_mb'][0]:.0f} vs {m['peak_rss_mb'][1]:.0f} MB (ratio {m['peak_rss_ratio']:.2f}); "
                f"above import baseline {m['above_baseline_mb'][0]:.1f} vs {m['above_baseline_mb'][1]:.1f} MB"
            )
    meta = report["meta"]
    lines.append(f"median of {meta['repeats']} repeats; one process per scenario, single-threaded (one core); "
                 f"bench wall {meta['bench_wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m simserve.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="repetitions per scenario, median reported (default 5; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes (~20 s in all)")
    p.add_argument("--full", action="store_true", help="S3 simulates 10 s instead of 2 s")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--scenario", choices=SCENARIOS + ("MEM",), help="only this scenario")
    p.add_argument("--no-memory", action="store_true", help="skip the 1e6 vs 1e7 memory check (2e4 vs 2e5 with --quick)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--simserve-only", action="store_true", help="(with --child) skip Ciw and SimPy, e.g. for profiling")
    p.add_argument("--requests", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.child:
        if not args.scenario:
            p.error("--child needs --scenario")
        if args.scenario == "MEM" and not args.requests:
            p.error("--scenario MEM needs --requests")
        r = run_scenario(args.scenario, repeats=args.repeats, quick=args.quick, full=args.full,
                         simserve_only=args.simserve_only, requests=args.requests)
        print(json.dumps(r))
        return 0
    report = collect(args)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
