"""A validation scenario is a ``simserve.SimConfig``: one object that both the real
harness (``validate.harness.run_real``) and the simulator (``simserve.simulate``)
consume. The helpers below build the few configurations the smoke test and the grid
need, and attach measured ``Overheads`` (from ``validate/calibration/*.json``).
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os

from simserve.calibration import COST_FIELDS, costs
from simserve import (
    ClusterConfig,
    DeploymentConfig,
    Distribution,
    Overheads,
    Segment,
    SimConfig,
    WorkloadConfig,
    WorkModel,
)

HERE = os.path.dirname(os.path.abspath(__file__))
CALIBRATION_DIR = os.path.join(HERE, "calibration")
OUT_DIR = os.path.join(HERE, "out")  # raw results of every real run (not committed)
# Every measured ``Overheads`` field; ``validate.calibrate`` writes each as a top-level key.
# ``replica_post_cpu_s`` (the slot held after the response) has no microbenchmark.
OVERHEAD_FIELDS = tuple(f for f in COST_FIELDS if f != "replica_post_cpu_s")


def physical_cores() -> int:
    return os.cpu_count() or 1


def scenario(
    *,
    name: str = "Model",
    work: list[tuple[str, float]] | WorkModel = (("io", 0.05),),
    handler: str = "async",
    num_replicas: int = 1,
    num_cpus: float = 1.0,
    max_ongoing_requests: int = 5,
    max_queued_requests: int = -1,
    cluster_cpus: float = 2,
    cores: float | None = None,
    ingress: str = "handle",
    concurrent: int | None = None,
    rps: float | None = None,
    duration_s: float = 15.0,
    warmup_s: float = 3.0,
    seed: int = 0,
) -> SimConfig:
    """One scenario; ``work`` is a list of (kind, deterministic seconds) or a WorkModel."""
    if not isinstance(work, WorkModel):
        work = WorkModel(tuple(Segment(k, Distribution("deterministic", s)) for k, s in work))
    return SimConfig(
        deployment=DeploymentConfig(
            name=name,
            num_replicas=num_replicas,
            num_cpus=num_cpus,
            max_ongoing_requests=max_ongoing_requests,
            max_queued_requests=max_queued_requests,
            handler=handler,
            work=work,
        ),
        cluster=ClusterConfig(nodes=1, num_cpus=cluster_cpus, physical_cores=cores or physical_cores()),
        overheads=Overheads(ingress=ingress),
        workload=WorkloadConfig(concurrent=concurrent, rps=rps, duration_s=duration_s, warmup_s=warmup_s),
        seed=seed,
        keep_requests=False,
    )


def smoke_scenarios() -> list[SimConfig]:
    """Small configurations that finish in ~20 s each on a 2-core machine.

    The smoke guards what REPORT.md shows simserve gets right today, so that CI catches a
    regression in it: the router's back-off polling with one-slot replicas and more
    clients than slots, a replica that cannot be placed, and the HTTP path. The rows
    where simserve is still off by more than 25% (CPU-bound handlers, many requests
    waiting in the router) are in the grid and REPORT.md, not here: a smoke check that
    fails on a known gap would only block every change."""
    return [
        scenario(name="io50", work=[("io", 0.05)], num_replicas=2, max_ongoing_requests=1,
                 concurrent=4, cluster_cpus=2, ingress="handle"),
        scenario(name="pending-3of2", work=[("io", 0.05)], num_replicas=3, max_ongoing_requests=1,
                 concurrent=4, cluster_cpus=2, ingress="handle"),
        scenario(name="io50http", work=[("io", 0.05)], num_replicas=2, max_ongoing_requests=1,
                 concurrent=4, cluster_cpus=2, ingress="http"),
    ]


def grid_scenarios() -> list[SimConfig]:
    """The grid for ``python -m validate`` (REPORT.md): io, gil and native work; async and
    sync handlers; 1 to 8 replicas; num_cpus 0.5 to 2; logical CPUs below, equal to and
    above the physical cores (this machine's 2); max_ongoing_requests 1 and 5; 1 to 20
    closed-loop clients; handle and HTTP; Poisson load at 50 % and 90 % of the nominal
    capacity (slots over service time, or cores over CPU time)."""
    out = []
    for ingress in ("handle", "http"):
        for mo, conc in ((1, 4), (5, 16)):
            out.append(scenario(name=f"io50-{ingress}-m{mo}-c{conc}", work=[("io", 0.05)], num_replicas=2,
                                max_ongoing_requests=mo, concurrent=conc, ingress=ingress))
        out.append(scenario(name=f"io1-{ingress}-c8", work=[("io", 0.001)], num_replicas=2,
                            concurrent=8, ingress=ingress))
    io50, gil20, native20 = [("io", 0.05)], [("gil", 0.02)], [("native", 0.02)]
    out += [
        # io: clients from 1 to 20 against one-slot replicas (the router's back-off polling),
        # sync handlers, and replica sizes from 0.5 to 2 logical CPUs, 8 replicas on 8.
        scenario(name="io50-1rep-m1-c1", work=io50, num_replicas=1, max_ongoing_requests=1, concurrent=1),
        scenario(name="io50-m1-c20", work=io50, num_replicas=2, max_ongoing_requests=1, concurrent=20),
        # 4 clients per slot: steps that fill a replica from a stale cache, and rejections.
        scenario(name="io50-m5-c40", work=io50, num_replicas=2, concurrent=40),
        # One replica, 8 clients on its 5 slots: the autoscaling step's load before it scales
        # (validate/autoscale.py), where a handle runs only two routing tasks.
        scenario(name="io50-1rep-m5-c8", work=io50, num_replicas=1, concurrent=8),
        scenario(name="io50-sync-m5-c8", work=io50, handler="sync", num_replicas=2, concurrent=8),
        scenario(name="io50-4rep-cpu05-L2", work=io50, num_replicas=4, num_cpus=0.5, max_ongoing_requests=1,
                 concurrent=8, cluster_cpus=2),
        scenario(name="io50-2rep-cpu2-L4", work=io50, num_replicas=2, num_cpus=2, max_ongoing_requests=1,
                 concurrent=4, cluster_cpus=4),
        scenario(name="io50-8rep-m1-c8-L8", work=io50, num_replicas=8, max_ongoing_requests=1, concurrent=8,
                 cluster_cpus=8),
        # gil: async handlers run one request's CPU at a time, sync ones share the GIL.
        scenario(name="gil20-async-1rep-c1", work=gil20, num_replicas=1, concurrent=1),
        scenario(name="gil20-async-c8", work=gil20, handler="async", num_replicas=2, concurrent=8),
        scenario(name="gil20-async-m1-c4", work=gil20, num_replicas=2, max_ongoing_requests=1, concurrent=4),
        scenario(name="gil20-http-async-c8", work=gil20, num_replicas=2, concurrent=8, ingress="http"),
        scenario(name="gil20-sync-c8", work=gil20, handler="sync", num_replicas=2, concurrent=8),
        scenario(name="gil20-sync-m1-c4", work=gil20, handler="sync", num_replicas=2, max_ongoing_requests=1,
                 concurrent=4),
        scenario(name="gil20-sync-1rep-L1-c4", work=gil20, handler="sync", num_replicas=1, concurrent=4,
                 cluster_cpus=1),
        scenario(name="gil20-sync-4rep-L4", work=gil20, handler="sync", num_replicas=4, cluster_cpus=4,
                 concurrent=8),
        scenario(name="gil20-async-8rep-L8-c16", work=gil20, num_replicas=8, cluster_cpus=8, concurrent=16),
        scenario(name="pending-gil-3of2", work=gil20, num_replicas=3, concurrent=6, cluster_cpus=2),
        # native work releases the GIL: sync replicas overlap it on the cores.
        scenario(name="native20-sync-c4", work=native20, handler="sync", num_replicas=1, concurrent=4),
        scenario(name="native20-async-2rep-c4", work=native20, num_replicas=2, concurrent=4),
        scenario(name="native20-sync-2rep-c8", work=native20, handler="sync", num_replicas=2, concurrent=8),
        scenario(name="mixed-io-gil", work=[("io", 0.03), ("gil", 0.01)], handler="async",
                 num_replicas=2, concurrent=8),
        scenario(name="pending-3of2", work=io50, num_replicas=3, max_ongoing_requests=1,
                 concurrent=4, cluster_cpus=2),
        scenario(name="queued-limit", work=io50, num_replicas=1, max_ongoing_requests=1,
                 max_queued_requests=2, concurrent=8),
        # Poisson: 2 one-slot io replicas serve 40 rps; 2 gil replicas 100 rps on 2 cores.
        scenario(name="poisson-io50-40rps", work=io50, num_replicas=2, rps=40.0),
        scenario(name="poisson-io50-m1-50pct", work=io50, num_replicas=2, max_ongoing_requests=1, rps=20.0),
        scenario(name="poisson-io50-m1-90pct", work=io50, num_replicas=2, max_ongoing_requests=1, rps=36.0),
        scenario(name="poisson-gil20-50pct", work=gil20, num_replicas=2, rps=50.0),
        scenario(name="poisson-gil20-http-50pct", work=gil20, num_replicas=2, rps=50.0, ingress="http"),
    ]
    return out


# -- calibration files -----------------------------------------------------------------
def save_raw(raw: dict, kind: str) -> str:
    """A measuring tool's rows, dated now, to ``out/<kind>-<stamp>.json``; the path."""
    raw["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    path = os.path.join(OUT_DIR, f"{kind}-{utc_stamp()}.json")
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(path, "w") as f:
        json.dump(raw, f, indent=1)
    print(f"wrote {path}")
    return path


def add_to_calibration(cal: dict, path: str, field: str, value: float, raw_key: str, raw: dict, tool: str,
                       argv: list[str], section: str | None = None) -> None:
    """Write ``field`` = ``value`` into the calibration file ``path`` (``cal``, as loaded; into
    its ``section``, e.g. ``http``, if given), its measurements under ``raw[raw_key]`` with the
    command ``python -m validate.<tool> ARGV`` that made them, and that command into the
    file's ``command``."""
    doc = {k: v for k, v in cal.items() if k != "_path"}
    if section is None:
        doc[field] = value
    else:
        doc[section] = {**doc.get(section, {}), field: value}
    command = f"python -m validate.{tool} " + " ".join(argv)
    doc["raw"][raw_key] = {**raw, "command": command}
    doc["command"] = add_command(doc["command"], command)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


def add_command(chain: str, command: str) -> str:
    """A calibration file's ``command`` (the commands that regenerate it, "; "-separated)
    with ``command`` last; an earlier run of the same tool in the same mode (``--http`` or
    not) is dropped, not kept twice."""
    def tool(c: str) -> tuple:
        words = c.split()
        return (*words[:3], "--http" in words)  # python -m validate.<tool>, and its mode

    return "; ".join([c for c in chain.split("; ") if tool(c) != tool(command)] + [command])


def utc_stamp() -> str:
    """Now, as the raw results' file names carry it (``grid-20261126T180815Z.json``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def calibration_path(host: str | None = None) -> str:
    """validate/calibration/ray-2.60.0-<host>.json; <host> defaults to 'project-machine'
    (this VM's hostname is a generic 'vm'); set VALIDATE_HOST to keep several machines."""
    host = host or os.environ.get("VALIDATE_HOST") or "project-machine"
    return os.path.join(CALIBRATION_DIR, f"ray-2.60.0-{host}.json")


def load_calibration(path: str | None = None) -> dict:
    """This host's calibration file, else the newest one in validate/calibration/."""
    if path is None:
        path = calibration_path()
        if not os.path.exists(path):
            files = sorted(glob.glob(os.path.join(CALIBRATION_DIR, "ray-*.json")), key=os.path.getmtime)
            if not files:
                raise FileNotFoundError("no calibration file: run `python -m validate.calibrate` first")
            path = files[-1]
    with open(path) as f:
        cal = json.load(f)
    cal["_path"] = path
    return cal


def with_overheads(cfg: SimConfig, cal: dict, host_ns_per_loop: float | None = None,
                   physical_cores: float | None = None, sized_ns_per_loop: float | None = None,
                   native_stretch: float | None = None, gil_stretch: float | None = None,
                   core_speed_trace: tuple = ()) -> SimConfig:
    """``cfg`` with the calibration's Overheads, Ray's costs as measured (``cpu_speed`` 1),
    and its work at the speed this run's host gave it.

    Ray's costs are not scaled by the spin probe. Across the eleven calibration runs of
    2026-11-26 the probe read 36-63 ns per iteration around their no-op phase while Ray's
    CPU per request (driver and replica, Python and C++) did not follow it (log-log slope
    -0.13, r = -0.20; validate/README.md item 30), so the probe's ratio, which scaled them up
    to 2026-11-27, moved them by up to 30 % for nothing. (Within one session the two moved
    together over a narrower range: slope 1.04, r = 0.65 over ±8 %.)

    The harness sizes ``gil`` / ``native`` work with a host speed, ``sized_ns_per_loop``
    (the calibration file's ``host_ns_per_loop`` when the run was made; by default
    ``cal``'s), so on a host running at ``host_ns_per_loop`` they take ``duration x
    host_ns_per_loop / sized_ns_per_loop``: the simulated segments are scaled so. Runs
    made with an older calibration are simulated with today's costs and their own sizing.
    ``native_stretch``, when given, replaces that factor for ``native`` segments: the run's
    own matmul time over the one the work was sized with (runs measured before 2026-11-26
    11:16 lack it); ``gil_stretch`` for ``gil`` segments: the thread CPU per iteration the
    replicas' work itself took over the one it was sized with (runs measured before
    2026-11-27 lack it; it ran a median 4 % slower than the probe read, 0.92-1.14 times).
    ``physical_cores`` overrides the cluster's cores (e.g. the cores left free by other
    users' processes during the real run); ``core_speed_trace`` sets the host's speed over
    the run (``host_speed.speed_trace``).

    Every field in ``OVERHEAD_FIELDS`` is passed as measured (the calibration file must
    have them all: an older file raises, rerun ``python -m validate.calibrate``); simserve
    itself picks ``client_cpu_s`` (handle ingress) or ``http_client_cpu_s`` (the HTTP
    load generator) by the scenario's ingress.
    """
    missing = [k for k in OVERHEAD_FIELDS if k not in cal]
    if missing:
        raise KeyError(f"calibration {cal.get('_path', '?')} lacks {missing}: rerun `python -m validate.calibrate`")
    oh = Overheads(ingress=cfg.overheads.ingress, **costs(cal, cfg.overheads.ingress))
    d = cfg.deployment
    stretch = 1.0
    if host_ns_per_loop and (sized_ns_per_loop or cal.get("host_ns_per_loop")):
        stretch = float(host_ns_per_loop) / float(sized_ns_per_loop or cal["host_ns_per_loop"])
    factor = {"io": 1.0, "gil": stretch if gil_stretch is None else gil_stretch,
              "native": stretch if native_stretch is None else native_stretch}
    if any(factor[s.kind] != 1.0 for s in d.work.segments):
        segs = tuple(Segment(s.kind, _scale(s.duration, factor[s.kind])) if factor[s.kind] != 1.0 else s
                     for s in d.work.segments)
        d = dataclasses.replace(d, work=WorkModel(segs))
    cl = cfg.cluster
    if physical_cores is not None:
        cl = dataclasses.replace(cl, physical_cores=physical_cores)
    if core_speed_trace:
        cl = dataclasses.replace(cl, core_speed_trace=core_speed_trace)
    return dataclasses.replace(cfg, overheads=oh, deployment=d, cluster=cl)


def _scale(dist: Distribution, f: float) -> Distribution:
    if dist.kind == "empirical":
        return Distribution.empirical([x * f for x in dist.samples_s])
    return dataclasses.replace(dist, mean_s=dist.mean_s * f)


def describe(cfg: SimConfig) -> str:
    d, w = cfg.deployment, cfg.workload
    work = "+".join(f"{s.kind}{s.duration.mean_s * 1e3:g}ms" for s in d.work.segments)
    load = f"c={w.concurrent}" if w.concurrent is not None else f"rps={w.rps:g}"
    return (f"{d.name}: {work} {d.handler} r={d.num_replicas} cpus={d.num_cpus:g} mo={d.max_ongoing_requests}"
            f" L={cfg.cluster.num_cpus:g} {cfg.overheads.ingress} {load}")
