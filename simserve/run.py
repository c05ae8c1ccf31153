"""The command line: ``python -m simserve.run --replicas 4 --cpus 2 --concurrent 10``.

Flags use Ray's names in kebab case; ``--replicas`` and ``--cpus`` are short for
``--num-replicas`` and ``--num-cpus`` (``ray_actor_options.num_cpus``). Every bad value
ends with one line on stderr naming the flag and the value, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import fields

from simserve import calibration, serve_yaml
from simserve.autoscaling import AutoscalingConfig
from simserve.config import (
    HANDLERS,
    INGRESSES,
    PLACEMENTS,
    ROUTERS,
    SEGMENT_KINDS,
    WAKE_TABLE,
    ClusterConfig,
    ConfigError,
    DeploymentConfig,
    Overheads,
    RouterConfig,
    Segment,
    SimConfig,
    WorkloadConfig,
    WorkModel,
)
from simserve.distributions import KINDS, Distribution
from simserve.load_shape import LoadShape, parse_pairs
from simserve.simulation import simulate
from simserve.workload import read_trace

# ConfigError fields whose flag is not simply --field-name.
FLAG_OF = {
    "num_replicas": "--replicas",
    "num_cpus": "--cpus",
    "cluster_cpus": "--cluster-cpus",
    "router": "--router",
    "workload": "--concurrent/--rps/--trace",
    "trace": "--trace",
    "trace.arrival_s": "--trace",
    "serve_config": "--serve-config",
    "calibration": "--calibration",
    "steps.duration_s": "--load-steps/--rps-steps",
    "steps.level": "--load-steps/--rps-steps",
}


AUTOSCALING_FLAGS = tuple(f.name for f in fields(AutoscalingConfig))
ROUTER_FLAGS = tuple(f.name for f in fields(RouterConfig) if f.name not in ("policy", "max_num_routing_tasks_cap"))


def _replicas(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number or "auto"') from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flag(field: str) -> str:
    if field in FLAG_OF:
        return FLAG_OF[field]
    if field.startswith("work"):
        if field.endswith(".cv"):
            return "--service-cv"
        if field.endswith(".mean_s"):
            return "--service-ms"
        return "--work"
    return "--" + field.replace("_", "-")


def parser(prog: str = "python -m simserve.run", description: str = "Simulate one Ray Serve 2.60 deployment under a load.", outputs: bool = True) -> argparse.ArgumentParser:
    """The flags that describe a configuration; ``outputs=False`` leaves out this
    command's output flags, for commands (sweep, plan) that have their own."""
    p = _Parser(prog=prog, description=description)
    g = p.add_argument_group("deployment (Ray's @serve.deployment arguments)")
    g.add_argument("--replicas", "--num-replicas", dest="num_replicas", type=_replicas, help='num_replicas: a count, or "auto" (default 1)')
    g.add_argument("--cpus", "--num-cpus", dest="num_cpus", type=float, help="ray_actor_options.num_cpus per replica (default 1)")
    g.add_argument("--max-ongoing-requests", type=int, help="slots per replica (Ray's default 5)")
    g.add_argument("--max-queued-requests", type=int, help="caller-side queue limit, -1 for none (default -1)")
    g.add_argument("--handler", choices=HANDLERS, default="async", help="async def or plain def (default async)")
    g.add_argument("--init-s", type=float, help="the user's __init__ time per new replica, seconds (default 0)")
    g.add_argument("--graceful-shutdown-wait-loop-s", type=float, help="drain check period of a stopping replica (default 2)")
    g.add_argument("--graceful-shutdown-timeout-s", type=float, help="force-stop a draining replica after this (default 20)")
    g.add_argument("--serve-config", metavar="FILE", help="a Serve config YAML (applications[].deployments[]); flags override it")
    g.add_argument("--deployment", metavar="NAME", help="which deployment of --serve-config")
    g = p.add_argument_group("autoscaling_config (any of these turns autoscaling on)")
    for name in AUTOSCALING_FLAGS:
        kind = str if name == "aggregation_function" else float
        g.add_argument("--" + name.replace("_", "-"), type=kind, help=f"default {getattr(AutoscalingConfig, name)}")
    g = p.add_argument_group("work per request")
    g.add_argument("--work", default="gil", help="gil | native | io, or a mix of fractions such as io=0.3,gil=0.7 (default gil)")
    g.add_argument("--service-ms", type=float, default=100.0, help="mean work per request, ms (default 100)")
    g.add_argument("--service-dist", choices=KINDS, default="deterministic", help="distribution of each segment (default deterministic)")
    g.add_argument("--service-cv", type=float, default=1.0, help="coefficient of variation for lognormal and gamma (default 1)")
    g.add_argument("--service-samples", metavar="FILE", help="measured durations in ms, one per line, for --service-dist empirical")
    g = p.add_argument_group("cluster")
    g.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    g.add_argument("--cluster-cpus", type=float, default=8.0, help="logical CPUs per node, ray.init(num_cpus=) (default 8)")
    g.add_argument("--physical-cores", type=float, help="physical cores per node (default: --cluster-cpus)")
    g.add_argument("--placement", choices=PLACEMENTS, default="spread", help="replica placement (default spread)")
    g = p.add_argument_group("load")
    g.add_argument("--concurrent", type=int, help="closed-loop clients, each with one request outstanding (default 1 when no other load is given)")
    g.add_argument("--think-time-s", type=float, default=0.0, help="mean (exponential) pause between a client's requests")
    g.add_argument("--rps", type=float, help="open-loop Poisson arrivals per second")
    g.add_argument("--trace", metavar="CSV", help="replay arrival times (column arrival_s, seconds)")
    g.add_argument("--load-steps", metavar="D:N,...", help="closed loop in steps of duration_s:clients, e.g. 15:1,30:8,30:1")
    g.add_argument("--rps-steps", metavar="D:R,...", help="open loop in steps of duration_s:rate")
    g.add_argument("--rps-ramp", metavar="START:END:RAMP_S", help="open loop rate rising linearly, then flat")
    g.add_argument("--rps-sine", metavar="MEAN:AMPLITUDE:PERIOD_S", help="open loop rate following a sine (diurnal)")
    g.add_argument("--rps-bursts", metavar="LOW:HIGH:MEAN_LOW_S:MEAN_HIGH_S", help="open loop bursts (two-state MMPP)")
    g.add_argument("--duration-s", type=float, help="simulated seconds (default 60; with --requests or --trace: until done)")
    g.add_argument("--requests", type=int, help="stop after this many requests are sent and answered")
    g.add_argument("--warmup-s", type=float, default=None, help="left out of the statistics (default 5, or a tenth of a shorter --duration-s; 0 when the run has no duration)")
    g = p.add_argument_group("router and ingress")
    g.add_argument("--router", choices=ROUTERS, default="pow2", help="pow2 (Ray's default), round_robin, or ideal")
    g.add_argument("--ingress", choices=INGRESSES, default="handle", help="DeploymentHandle or HTTP through the proxy")
    for name in ROUTER_FLAGS:
        g.add_argument("--" + name.replace("_", "-"), type=float, help=f"Ray's {name} (default {getattr(RouterConfig, name)})")
    g = p.add_argument_group("platform costs (what Ray itself costs per request)")
    g.add_argument(
        "--calibration", metavar="FILE", help="costs measured by python -m validate.calibrate (default: the committed measurement)"
    )
    for name in calibration.COST_FIELDS:
        if name in WAKE_TABLE:  # a table: from the calibration file only
            continue
        default = getattr(Overheads, name)
        g.add_argument("--" + name.replace("_", "-"), type=type(default),
                       help=f"{calibration.unit(name)} (default {default})")
    g.add_argument("--cpu-speed", type=float, default=1.0, help="this host's speed relative to the calibration's")
    g.add_argument("--no-overheads", action="store_true", help="all platform costs zero: the pure queueing model")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--timeline-interval-s", type=float, default=1.0, help="timeline row spacing (default 1)")
    if not outputs:
        return p
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    g.add_argument("--csv", metavar="PATH", help="write the per-request table")
    g.add_argument("--no-requests", action="store_true", help="keep no per-request table (flat memory)")
    g.add_argument("--timeline", metavar="PATH", help="write the timeline CSV (replica counts, throughput, latency per interval)")
    g.add_argument("--plot", metavar="PATH", help="write a PNG of replicas and latency over time")
    return p


def _work(args) -> WorkModel:
    parts = []
    for item in args.work.split(","):
        kind, _, frac = item.strip().partition("=")
        if kind not in SEGMENT_KINDS:
            raise ConfigError("work", args.work, f"segment kind {kind!r} is not one of {', '.join(SEGMENT_KINDS)}")
        try:
            share = float(frac) if frac else 1.0
        except ValueError:
            raise ConfigError("work", args.work, f"{frac!r} is not a fraction") from None
        if not (math.isfinite(share) and share > 0):
            raise ConfigError("work", args.work, f"fraction {frac!r} must be > 0")
        parts.append((kind, share))
    total = sum(s for _, s in parts)
    if not math.isfinite(args.service_ms) or args.service_ms < 0:
        raise ConfigError("service_ms", args.service_ms, "must be a finite number >= 0")
    mean_s = args.service_ms / 1e3
    if args.service_dist == "empirical":
        if not args.service_samples:
            raise ConfigError("service_samples", None, "--service-dist empirical needs --service-samples FILE")
        samples = _read_samples(args.service_samples)
    segments = []
    for kind, share in parts:
        f = share / total
        if args.service_dist == "empirical":
            dist = Distribution.empirical(s * f for s in samples)
        else:
            dist = Distribution(args.service_dist, mean_s * f, args.service_cv)
        segments.append(Segment(kind, dist))
    return WorkModel(tuple(segments))


def _read_samples(path: str) -> list[float]:
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError as e:
        raise ConfigError("service_samples", path, f"cannot be read ({e.strerror})") from None
    if lines and lines[0] == "service_ms":
        lines = lines[1:]
    out = []
    for i, ln in enumerate(lines, 1):
        try:
            out.append(float(ln) / 1e3)
        except ValueError:
            raise ConfigError("service_samples", path, f"line {i}: {ln!r} is not a number") from None
    if not out:
        raise ConfigError("service_samples", path, "has no samples")
    return out


def _autoscaling(args, from_file: dict):
    """The autoscaling_config from the Serve YAML, overridden field by field by flags."""
    fields_given = dict(from_file.get("autoscaling_config") or {})
    for name in AUTOSCALING_FLAGS:
        v = getattr(args, name)
        if v is not None:
            if name in ("min_replicas", "max_replicas", "initial_replicas"):
                if v != int(v):
                    raise ConfigError(name, v, "must be a whole number")
                v = int(v)
            fields_given[name] = v
    if not fields_given:
        return None
    num_replicas = _pick(args.num_replicas, from_file.get("num_replicas"))
    cfg, _ = AutoscalingConfig.from_dict(fields_given, auto=num_replicas == "auto")
    return cfg


def _pick(*values):
    return next((v for v in values if v is not None), None)


def build_config(args, warn=lambda msg: None) -> SimConfig:
    """A validated SimConfig from parsed flags (raises ConfigError)."""
    from_file = {}
    if args.serve_config:
        from_file, ignored = serve_yaml.load_deployment(args.serve_config, args.deployment)
        if ignored:
            warn(f"not modelled, ignored: {', '.join(ignored)}")
    autoscaling = _autoscaling(args, from_file)
    num_replicas = _pick(args.num_replicas, from_file.get("num_replicas"), None if autoscaling else 1)
    deployment = DeploymentConfig(
        name=from_file.get("name", "Model"),
        num_replicas=num_replicas,
        autoscaling_config=autoscaling,
        init_s=_pick(args.init_s, 0.0),
        graceful_shutdown_wait_loop_s=_pick(args.graceful_shutdown_wait_loop_s, from_file.get("graceful_shutdown_wait_loop_s"), 2.0),
        graceful_shutdown_timeout_s=_pick(args.graceful_shutdown_timeout_s, from_file.get("graceful_shutdown_timeout_s"), 20.0),
        num_cpus=_pick(args.num_cpus, from_file.get("num_cpus"), 1.0),
        max_ongoing_requests=_pick(args.max_ongoing_requests, from_file.get("max_ongoing_requests"), 5),
        max_queued_requests=_pick(args.max_queued_requests, from_file.get("max_queued_requests"), -1),
        handler=args.handler,
        work=_work(args),
    )
    cluster = ClusterConfig(
        nodes=args.nodes,
        num_cpus=args.cluster_cpus,
        physical_cores=_pick(args.physical_cores, args.cluster_cpus),
        placement=args.placement,
    )
    router_kw = {
        k: getattr(args, k)
        for k in ROUTER_FLAGS
        if getattr(args, k) is not None
    }
    router = RouterConfig(policy=args.router, **router_kw)
    cal_file = None if args.no_overheads else (args.calibration or calibration.default_path())
    costs = calibration.load(cal_file, args.ingress) if cal_file else {}
    # A start-up time given alone keeps the measured share of it that is CPU work.
    startup_alone = args.replica_startup_s is not None and args.replica_startup_cpu_s is None
    for name in calibration.COST_FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            if args.no_overheads:
                raise ConfigError(name, v, "cannot be combined with --no-overheads")
            if not (startup_alone and name == "replica_startup_s"):
                costs[name] = v
    overheads = Overheads(ingress=args.ingress, cpu_speed=args.cpu_speed, **costs)
    if startup_alone:
        overheads = overheads.with_startup_s(args.replica_startup_s)
    trace = None
    if args.trace:
        try:
            trace = read_trace(args.trace)
        except OSError as e:
            raise ConfigError("trace", args.trace, f"cannot be read ({e.strerror})") from None
        except ValueError as e:
            raise ConfigError("trace", args.trace, str(e)) from None
    concurrent, rps = args.concurrent, args.rps
    shape = _shape(args)
    if shape is not None:
        if args.load_steps:
            concurrent, rps = int(shape.peak), None
        else:
            concurrent, rps = None, shape.peak
    if concurrent is None and rps is None and trace is None:
        concurrent = 1  # no load given: one client sending requests back to back
    bounded = args.requests is not None or trace is not None
    natural = shape.length_s if shape is not None else None
    duration = _pick(args.duration_s, None if bounded else _pick(natural, 60.0))
    requests = args.requests
    if trace is not None and requests is None and duration is None:
        requests = len(trace)
    workload = WorkloadConfig(
        concurrent=concurrent,
        think_time_s=args.think_time_s,
        rps=rps,
        trace_arrivals_s=trace,
        duration_s=duration,
        requests=requests,
        warmup_s=_pick(args.warmup_s, 0.0 if duration is None or shape is not None else min(5.0, duration / 10)),
        shape=shape,
    )
    return SimConfig(
        deployment=deployment,
        cluster=cluster,
        router=router,
        overheads=overheads,
        workload=workload,
        seed=args.seed,
        keep_requests=not getattr(args, "no_requests", True) and (args.csv is not None or not args.json),
        timeline_interval_s=args.timeline_interval_s,
    )


SHAPE_FLAGS = {
    "load_steps": ("--load-steps", None),
    "rps_steps": ("--rps-steps", None),
    "rps_ramp": ("--rps-ramp", ("start", "end", "ramp_s")),
    "rps_sine": ("--rps-sine", ("mean", "amplitude", "period_s")),
    "rps_bursts": ("--rps-bursts", ("low", "high", "mean_low_s", "mean_high_s")),
}


def _shape(args) -> LoadShape | None:
    given = [k for k in SHAPE_FLAGS if getattr(args, k)]
    if not given:
        return None
    if len(given) > 1 or args.concurrent is not None or args.rps is not None or args.trace:
        flags = [SHAPE_FLAGS[k][0] for k in given]
        raise ConfigError("load_steps", None, f"give one load: {', '.join(flags)} cannot be combined with other loads")
    key = given[0]
    flag, names = SHAPE_FLAGS[key]
    text = getattr(args, key)
    if names is None:
        try:
            steps = parse_pairs(text, flag)
        except ValueError as e:
            raise ConfigError(key, text, str(e)) from None
        return LoadShape("steps", steps=steps)
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != len(names):
        raise ConfigError(key, text, f"expected {':'.join(n.upper() for n in names)}")
    return LoadShape(key.removeprefix("rps_"), **dict(zip(names, values)))


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def report(summary: dict) -> str:
    cfg = summary["config"]
    d, c, w = cfg["deployment"], cfg["cluster"], cfg["workload"]
    reps = summary["replicas"]
    work = ", ".join(f"{s['kind']} {1e3 * s['mean_s']:g} ms {s['dist']}" for s in d["work"])
    shape = w.get("shape")
    if shape is not None:
        unit = "clients" if w["concurrent"] is not None else "req/s"
        load = {
            "steps": lambda: "steps " + ",".join(f"{d:g}s:{v:g}" for d, v in shape["steps"]) + f" {unit}",
            "ramp": lambda: f"ramp {shape['start']:g} to {shape['end']:g} req/s over {shape['ramp_s']:g} s",
            "sine": lambda: f"sine {shape['mean']:g} +/- {shape['amplitude']:g} req/s, period {shape['period_s']:g} s",
            "bursts": lambda: f"bursts {shape['low']:g}/{shape['high']:g} req/s "
            f"(mean {shape['mean_low_s']:g} s / {shape['mean_high_s']:g} s)",
        }[shape["kind"]]()
    elif w["concurrent"] is not None:
        load = f"{w['concurrent']} concurrent clients"
    elif w["rps"] is not None:
        load = f"Poisson {w['rps']:g} req/s"
    else:
        load = "trace replay"
    lat = summary["latency_ms"]
    lines = [
        f"deployment   {reps['requested']} replicas x num_cpus={d['num_cpus']:g}: {reps['running']} running, "
        f"{reps['pending']} pending; {d['handler']} handler, max_ongoing_requests={d['max_ongoing_requests']}",
        f"cluster      {c['nodes']} node(s) x {c['num_cpus']:g} logical CPUs, {c['physical_cores']:g} physical cores",
        f"load         {load}, {_fmt(summary['window_s'])} s measured; work: {work}",
        f"throughput   {_fmt(summary['throughput_rps'], 2)} req/s  (completed {summary['completed']}, "
        f"rejected {summary['rejected']}, in flight {summary['in_flight']})",
        f"latency ms   mean {_fmt(lat['mean'])}  p50 {_fmt(lat['p50'])}  p90 {_fmt(lat['p90'])}  "
        f"p99 {_fmt(lat['p99'])}  max {_fmt(lat['max'])}",
        f"queue wait   mean {_fmt(summary['queue_wait_ms']['mean'])} ms before a replica accepted the request",
    ]
    auto = summary.get("autoscaling")
    if auto is not None:
        a = d["autoscaling_config"]
        lines.append(
            f"autoscaling  {a['min_replicas']}..{a['max_replicas']} replicas, target_ongoing_requests="
            f"{a['target_ongoing_requests']:g}: peak {auto['peak_running_replicas']} running, "
            f"final target {auto['final_target']} (see --timeline/--plot)"
        )
    for n in summary["nodes"]:
        lines.append(
            f"node {n['node']}       logical {n['logical_reserved_cpus']:g}/{n['logical_cpus']:g} CPUs reserved, "
            f"physical cores {_fmt(100 * n['physical_busy'], 0)}% busy"
        )
    r = summary["router"]
    lines.append(
        f"router       {r['policy']}: {_fmt(r['mean_queued'])} requests queued on average, "
        f"{_fmt(r['attempts_per_request'], 2)} routing attempts, {_fmt(r['probes_per_request'], 2)} probes and "
        f"{_fmt(r['rejections_per_request'], 2)} rejected sends per request"
    )
    oh = cfg["overheads"]
    handle = oh["ingress"] == "handle"
    py_keys = ("client_cpu_s",) if handle else ("http_client_cpu_s", "proxy_cpu_s")
    py = sum(oh[k] for k in (*py_keys, "replica_cpu_s", "replica_post_cpu_s"))
    native = sum(oh[k] for k in ("client_native_cpu_s" if handle else "proxy_native_cpu_s", "replica_native_cpu_s"))
    if d["handler"] == "sync":  # the call through the replica's thread pool
        py += oh["replica_sync_cpu_s"]
        native += oh["replica_sync_native_cpu_s"]
    if py + native + oh["hop_s"] + oh["router_cpu_s"] == 0:
        lines.append("costs        none: Ray's own machinery is free (--no-overheads or no calibration)")
    else:
        lines.append(
            f"costs        Ray's machinery per request: {1e3 * py:.2f} ms Python CPU, {1e3 * native:.2f} ms C++ CPU, "
            f"{1e3 * oh['hop_s']:.2f} ms per hop, {1e3 * oh['router_cpu_s']:.2f} ms to route it (calibration)"
        )
        extra = sum(summary["oversubscribed_cpu_ms_per_request"].values())
        if extra > 0:
            lines.append(f"             cores oversubscribed: {extra:.2f} ms more CPU per request "
                         f"(x{oh['oversubscribed_cpu_factor']:.2f} on the costs that started then)")
        saved = sum(summary["batched_cpu_saved_ms_per_request"].values())
        if saved > 0:
            lines.append(f"             requests batched: {saved:.2f} ms less CPU per request "
                         f"(x{oh['batched_cpu_factor']:.2f} on the costs that started beside another request's work)")
    lines.append(f"bottleneck   {summary['bottleneck']}")
    lines.append(f"simulated {_fmt(summary['sim_time_s'])} s in {_fmt(summary['wall_time_s'], 2)} s (seed {summary['seed']})")
    return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _write_timeline(result, path: str) -> None:
    result.timeline.to_csv(path, index=False)


def _write_plot(result, path: str) -> None:
    from simserve.plots import replicas_over_time

    replicas_over_time(result.timeline).savefig(path, dpi=100)


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        cfg = build_config(args, warn=lambda m: print(f"{p.prog}: {m}", file=sys.stderr))
    except ConfigError as e:
        value = "" if e.value is None else f" {e.value!r}"
        p.exit(2, f"{p.prog}: error: {_flag(e.field)}{value}: {e.message}\n")
    result = simulate(cfg)
    if args.csv:
        try:
            result.requests.to_csv(args.csv, index=False)
        except OSError as e:
            p.exit(2, f"{p.prog}: error: --csv {args.csv!r}: cannot be written ({e.strerror})\n")
    for path, write in ((args.timeline, _write_timeline), (args.plot, _write_plot)):
        if path:
            try:
                write(result, path)
            except OSError as e:
                flag = "--timeline" if path == args.timeline else "--plot"
                p.exit(2, f"{p.prog}: error: {flag} {path!r}: cannot be written ({e.strerror})\n")
    if args.json:
        print(json.dumps(_jsonable(result.summary)))
    else:
        print(report(result.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
