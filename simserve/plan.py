"""Capacity planning: the fewest reserved CPUs that meet a latency SLO at a given load.

For every pair of ``num_cpus`` and ``max_ongoing_requests`` the planner looks for the
smallest ``num_replicas`` that meets the SLO, on the smallest cluster of the base
config's node shape that places them all (``cluster.nodes`` follows from the replica
count). Throughput bounds give each pair a starting replica count below which it
cannot keep up: a replica serves at most ``max_ongoing_requests / mean service time``
requests per second, at most ``1 / GIL time`` (its GIL), and with an ``async`` handler
at most ``1 / CPU time`` (its event loop); the cluster's physical cores must exceed the
load's CPU demand. From there the count doubles until the SLO holds, then bisects.
All pairs advance together, one round of simulations at a time, and a pair stops as
soon as it cannot beat the cheapest answer found so far.

Every candidate runs with the same ``replications`` seeds (common random numbers), so
candidates differ by configuration, not by noise; a candidate meets the SLO only if
every replication does. Cost is reserved logical CPUs (``num_replicas * num_cpus``);
with a price per CPU-hour also per hour and per million requests.

Left out: autoscaling (the answer is a fixed ``num_replicas``), GPUs and custom
resources, node prices (an idle part of the last node is free here), and any guarantee
when latency is not monotone in the replica count (bisection assumes it is).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, replace
from typing import Sequence

import pandas as pd

from simserve.config import ConfigError, SimConfig, WorkloadConfig, WorkModel
from simserve.sweep import BACKENDS, aggregate, run_cells, seeds

# Below this share of the offered load a candidate is overloaded, whatever its latency.
MIN_THROUGHPUT_SHARE = 0.95
KEYS = ("num_replicas", "num_cpus", "max_ongoing_requests")


@dataclass(frozen=True)
class SLO:
    """A latency target: ``percentile`` (p50, p90 or p99) of latency at most
    ``latency_ms``, with at most ``max_rejected_fraction`` of requests rejected."""

    latency_ms: float
    percentile: str = "p99"
    max_rejected_fraction: float = 0.0

    def __post_init__(self):
        if self.percentile not in ("p50", "p90", "p99"):
            raise ConfigError("slo.percentile", self.percentile, "must be one of p50, p90, p99")
        if not (self.latency_ms > 0 and math.isfinite(self.latency_ms)):
            raise ConfigError("slo.latency_ms", self.latency_ms, "must be a finite number > 0")

    @property
    def column(self) -> str:
        return f"latency_{self.percentile}_ms"


@dataclass
class Plan:
    """The planner's answer: ``best`` (None when nothing in the grid meets the SLO),
    ``runners_up`` (the cheapest passing candidate of other num_cpus/max_ongoing pairs),
    ``candidates`` (every simulated configuration, with ``meets_slo`` and ``pareto``),
    and how many configurations and runs it took."""

    best: dict | None
    runners_up: pd.DataFrame
    candidates: pd.DataFrame
    simulated_configs: int
    simulations: int
    slo: SLO
    rps: float
    pareto: pd.DataFrame = field(init=False)

    def __post_init__(self):
        self.pareto = self.candidates[self.candidates["pareto"]]

    def to_dict(self) -> dict:
        def records(df):
            return [_clean(r) for r in df.to_dict(orient="records")]

        best = None
        if self.best is not None:
            best = _clean(self.best)
            best["latency_ms"] = {p: best.pop(f"latency_{p}_ms") for p in ("mean", "p50", "p90", "p99")}
        return {
            "rps": self.rps,
            "slo": {"percentile": self.slo.percentile, "latency_ms": self.slo.latency_ms},
            "best": best,
            "runners_up": records(self.runners_up),
            "pareto": records(self.pareto),
            "candidates": records(self.candidates),
            "simulated_configs": self.simulated_configs,
            "simulations": self.simulations,
        }

    def table(self) -> str:
        cols = [c for c in TABLE_COLUMNS if c in self.candidates]
        lines = []
        if self.best is None:
            lines.append(f"no configuration in the grid meets {self.slo.percentile} <= {self.slo.latency_ms:g} ms at {self.rps:g} rps")
        else:
            b = self.best
            lines.append(
                f"best: {b['num_replicas']} replicas x num_cpus={b['num_cpus']:g}, max_ongoing_requests="
                f"{b['max_ongoing_requests']} on {b['nodes']} node(s): {b['reserved_cpus']:g} reserved CPUs, "
                f"{self.slo.percentile} {b[self.slo.column]:,.1f} ms (SLO {self.slo.latency_ms:g} ms)"
            )
            if "cost_per_hour" in b:
                lines.append(f"cost: {b['cost_per_hour']:,.3f}/hour, {b['cost_per_million_requests']:,.3f} per million requests")
        shown = pd.concat([self.candidates[self.candidates["meets_slo"]].head(8), self.pareto]).drop_duplicates(list(KEYS))
        lines.append(shown[cols].sort_values(["reserved_cpus", self.slo.column]).to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
        lines.append(f"{self.simulated_configs} configurations simulated ({self.simulations} runs)")
        return "\n".join(lines)


TABLE_COLUMNS = (*KEYS, "nodes", "reserved_cpus", "throughput_rps", "latency_p50_ms", "latency_p99_ms", "meets_slo", "pareto", "cost_per_hour")


def _clean(rec: dict) -> dict:
    out = {}
    for k, v in rec.items():
        if hasattr(v, "item"):
            v = v.item()
        out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    return out


def replica_capacity_rps(work: WorkModel, handler: str, max_ongoing_requests: int) -> float:
    """An upper bound on one replica's throughput (requests per second)."""
    bounds = [max_ongoing_requests / work.mean_s] if work.mean_s > 0 else [math.inf]
    serial = work.mean_of("gil") + (work.mean_of("native") if handler == "async" else 0.0)
    if serial > 0:
        bounds.append(1.0 / serial)
    return min(bounds)


def nodes_for(num_replicas: int, num_cpus: float, node_cpus: float) -> int | None:
    """The fewest nodes of ``node_cpus`` logical CPUs that place every replica."""
    if num_cpus == 0:
        return 1
    per_node = math.floor(round(node_cpus / num_cpus, 9))
    return math.ceil(num_replicas / per_node) if per_node else None


class _Search:
    """Doubling then bisection on num_replicas for one (num_cpus, max_ongoing) pair."""

    def __init__(self, num_cpus, max_ongoing, low: int, high: int):
        self.num_cpus, self.max_ongoing = num_cpus, max_ongoing
        self.fail = low - 1  # the largest count known (or bounded) to miss the SLO
        self.ok: int | None = None  # the smallest count known to meet it
        self.high = high  # the most replicas the largest cluster places
        self.probe = low if low <= high else None

    def next(self, best_cost: float) -> int | None:
        if self.probe is None or (self.fail + 1) * self.num_cpus > best_cost:
            return None
        return self.probe

    def update(self, n: int, met: bool) -> None:
        if met:
            self.ok = n
        else:
            self.fail = n
        if self.ok is not None:
            self.probe = (self.fail + self.ok) // 2 if self.ok - self.fail > 1 else None
        elif n >= self.high:
            self.probe = None
        else:
            self.probe = min(2 * n, self.high)


def plan(
    work: WorkModel,
    load: float | WorkloadConfig,
    slo: SLO | float,
    *,
    base: SimConfig | None = None,
    num_cpus: Sequence[float] = (0.5, 1, 2, 4),
    max_ongoing_requests: Sequence[int] = (1, 5, 20),
    max_nodes: int = 16,
    price_per_cpu_hour: float | None = None,
    duration_s: float = 60.0,
    warmup_s: float = 10.0,
    replications: int = 2,
    rng=0,
    backend: str = "process",
    workers: int | None = None,
) -> Plan:
    """Find the cheapest ``(num_replicas, num_cpus, max_ongoing_requests)`` meeting ``slo``.

    ``load`` is an open-loop rate in requests per second (simulated for ``duration_s``
    after ``warmup_s``) or a ``WorkloadConfig`` with ``rps``; ``slo`` an ``SLO`` or a p99
    in ms. ``base`` supplies everything else: handler, node shape (``cluster.num_cpus``,
    ``physical_cores``, placement), router and overheads.
    """
    slo = slo if isinstance(slo, SLO) else SLO(float(slo))
    base = base or SimConfig()
    if not isinstance(load, WorkloadConfig):
        load = WorkloadConfig(rps=float(load), duration_s=duration_s, warmup_s=warmup_s)
    if load.rps is None:
        raise ConfigError("load", load, "the planner needs an open-loop load (rps)")
    base = replace(base, workload=load, deployment=replace(base.deployment, work=work), keep_requests=False)
    rps = load.rps
    node = base.cluster
    cpu_demand = rps * (work.mean_of("gil") + work.mean_of("native"))
    searches = []
    for c in num_cpus:
        if nodes_for(1, c, node.num_cpus) is None:  # one replica does not fit on a node
            continue
        high = max_nodes * math.floor(round(node.num_cpus / c, 9)) if c else max_nodes * 64
        for m in max_ongoing_requests:
            low = math.floor(rps / replica_capacity_rps(work, base.deployment.handler, m)) + 1
            while low <= high and nodes_for(low, c, node.num_cpus) * node.physical_cores <= cpu_demand:
                low += 1
            searches.append(_Search(c, m, low, high))
    shared_seeds = seeds(rng, replications)
    results: dict[tuple, dict] = {}
    best_cost = math.inf
    simulations = 0
    while True:
        probes = {}
        for s in searches:
            n = s.next(best_cost)
            if n is not None:
                probes.setdefault((n, s.num_cpus, s.max_ongoing), []).append(s)
        if not probes:
            break
        todo = [k for k in probes if k not in results]
        if todo:
            cells = [
                {"deployment.num_replicas": n, "deployment.num_cpus": c, "deployment.max_ongoing_requests": m,
                 "cluster.nodes": nodes_for(n, c, node.num_cpus)}
                for n, c, m in todo
            ]
            rows = run_cells(base, cells, [shared_seeds] * len(cells), backend=backend, workers=workers, progress=False)
            simulations += len(rows)
            for key, cell, (_, g) in zip(todo, cells, rows.groupby("cell", sort=True)):
                results[key] = {**_judge(g, slo, rps), "nodes": cell["cluster.nodes"]}
        for key, ss in probes.items():
            met = results[key]["meets_slo"]
            for s in ss:
                s.update(key[0], met)
            if met:
                best_cost = min(best_cost, key[0] * key[1])
    return _answer(results, slo, rps, price_per_cpu_hour, simulations)


def _judge(runs: pd.DataFrame, slo: SLO, rps: float) -> dict:
    """One candidate's aggregated figures and whether every replication met the SLO."""
    answered = runs["completed"] + runs["rejected"]
    ok = (
        (runs[slo.column] <= slo.latency_ms)
        & (runs["throughput_rps"] >= MIN_THROUGHPUT_SHARE * rps)
        & (runs["rejected"] <= slo.max_rejected_fraction * answered)
        & (runs["replicas_pending"] == 0)
    )
    agg = aggregate(runs.drop(columns=["cell"]), by=[])
    rec = agg.iloc[0].to_dict()
    rec[f"{slo.column}_worst"] = runs[slo.column].max()
    rec["meets_slo"] = bool(ok.all())
    return rec


def _answer(results: dict, slo: SLO, rps: float, price: float | None, simulations: int) -> Plan:
    rows = []
    for (n, c, m), rec in results.items():
        rows.append({"num_replicas": n, "num_cpus": c, "max_ongoing_requests": m, **rec})
    df = pd.DataFrame(rows)
    df["reserved_cpus"] = df["num_replicas"] * df["num_cpus"]
    if price is not None:
        df["cost_per_hour"] = df["reserved_cpus"] * price
        df["cost_per_million_requests"] = df["cost_per_hour"] / (rps * 3600) * 1e6
    df = df.sort_values(["reserved_cpus", slo.column, "num_replicas"], kind="stable").reset_index(drop=True)
    lowest = math.inf
    front = []
    for v in df[slo.column]:
        front.append(bool(v < lowest))
        lowest = min(lowest, v)
    df["pareto"] = front
    # Run bookkeeping (wall time, simulated time) says nothing about a candidate.
    skip = {*KEYS, "nodes", "reserved_cpus", "reserved_cpus_ci", "replications", "wall_time_s", "wall_time_s_ci", "sim_time_s", "sim_time_s_ci"}
    keep = [*KEYS, "nodes", "reserved_cpus"] + [c for c in df if c not in skip]
    df = df[keep]
    feasible = df[df["meets_slo"]]
    best = feasible.iloc[0].to_dict() if len(feasible) else None
    runners = feasible.iloc[1:].drop_duplicates(["num_cpus", "max_ongoing_requests"]).head(5)
    return Plan(best, runners.reset_index(drop=True), df, len(df), simulations, slo, rps)


# -- the command line ------------------------------------------------------------------------
def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parser() -> argparse.ArgumentParser:
    """``simserve.run``'s flags describe the work, node shape and router; these add the
    SLO and the search space. ``--cpus`` or ``--max-ongoing-requests`` pin one value."""
    from simserve import run

    p = run.parser("python -m simserve.plan", "Find the fewest reserved CPUs that meet a latency SLO at a given load.", outputs=False)
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.add_argument("--csv", metavar="PATH", help="write every simulated candidate as CSV")
    g = p.add_argument_group("plan")
    g.add_argument("--slo-p99-ms", type=float, required=True, help="p99 latency target, ms")
    g.add_argument("--cpus-options", type=_floats, default=[0.5, 1, 2, 4], help="num_cpus values to try (default 0.5,1,2,4)")
    g.add_argument("--max-ongoing-options", type=_ints, default=[1, 5, 20], help="max_ongoing_requests values (default 1,5,20)")
    g.add_argument("--max-nodes", type=int, default=16, help="largest cluster to consider (default 16)")
    g.add_argument("--price-per-cpu-hour", type=float, help="adds cost per hour and per million requests")
    g.add_argument("--replications", type=int, default=2, help="runs per candidate (default 2)")
    g.add_argument("--backend", choices=BACKENDS, default="process", help="where runs execute (default process)")
    g.add_argument("--workers", type=int, help="parallel workers (default: all cores)")
    g.add_argument("--plot", metavar="PNG", help="save the cost vs latency Pareto plot")
    return p


def main(argv=None) -> int:
    from simserve import run

    p = parser()
    args = p.parse_args(argv)
    if args.num_replicas is not None:
        p.exit(2, f"{p.prog}: error: --replicas: the planner chooses num_replicas\n")
    if args.rps is None:
        p.exit(2, f"{p.prog}: error: --rps: the planner needs an open-loop load\n")
    try:
        base = run.build_config(args, warn=lambda m: print(f"{p.prog}: {m}", file=sys.stderr))
        result = plan(
            base.deployment.work,
            base.workload,
            SLO(args.slo_p99_ms),
            base=base,
            num_cpus=[args.num_cpus] if args.num_cpus is not None else args.cpus_options,
            max_ongoing_requests=[args.max_ongoing_requests] if args.max_ongoing_requests is not None else args.max_ongoing_options,
            max_nodes=args.max_nodes,
            price_per_cpu_hour=args.price_per_cpu_hour,
            replications=args.replications,
            rng=args.seed,
            backend=args.backend,
            workers=args.workers,
        )
    except ConfigError as e:
        p.exit(2, f"{p.prog}: error: {e.field} {e.value!r}: {e.message}\n")
    if args.csv:
        result.candidates.to_csv(args.csv, index=False)
    if args.plot:
        from simserve.plots import pareto_front

        pareto_front(result.candidates, slo_ms=args.slo_p99_ms).savefig(args.plot, dpi=120)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
