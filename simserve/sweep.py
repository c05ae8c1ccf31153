"""Many runs at once: a grid of configurations, replicated, as one tidy table.

A *grid* maps dotted configuration paths (``deployment.num_replicas``,
``deployment.num_cpus``, ``workload.rps``, ``cluster.nodes``, ``router.policy``...) to
the values to try; every combination is a *cell*. Each cell runs ``replications``
times, each run with its own seed from ``SeedSequence(rng).spawn``, numbered by
(cell, replication) in grid order, so the rows do not depend on the backend, the
number of workers or the order in which runs finish. ``wall_time_s`` is the only
column that changes between two identical sweeps.

Backends: ``serial`` (this process), ``process`` (a ``ProcessPoolExecutor`` over all
cores, the default) and ``ray`` (batches of runs as Ray tasks on the cluster that
``ray.init(address=...)`` finds, or a local one; simserve must be importable on its
workers). Ray is imported only by that backend.

Left out: adaptive replication (run until the CI is narrow enough), and caching of
results between sweeps.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from dataclasses import fields, is_dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from simserve.config import ConfigError, SimConfig
from simserve.simulation import simulate

BACKENDS = ("process", "serial", "ray")
# Setting one of these in a grid clears the other two (a workload has exactly one).
LOAD_FIELDS = ("concurrent", "rps", "trace_arrivals_s")
# Columns that identify a run rather than describe a configuration or a result.
RUN_COLUMNS = ("cell", "replication", "seed")
# Result columns; everything else in a sweep table is configuration.
METRICS = (
    "throughput_rps",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "queue_wait_mean_ms",
    "completed",
    "rejected",
    "in_flight",
    "replicas_running",
    "replicas_pending",
    "reserved_cpus",
    "physical_busy",
    "router_mean_queued",
    "router_probes_per_request",
    "router_attempts_per_request",
    "router_rejections_per_request",
    "sim_time_s",
    "wall_time_s",
)
TEXT_METRICS = ("bottleneck",)


# -- configurations ------------------------------------------------------------------------
def with_value(config: SimConfig, path: str, value) -> SimConfig:
    """``config`` with the field at dotted ``path`` set to ``value`` (validated)."""
    head, _, rest = path.partition(".")
    names = {f.name for f in fields(config)}
    if head not in names:
        raise ConfigError(path, value, f"unknown field {head!r}; one of {', '.join(sorted(names))}")
    if not rest:
        return replace(config, **{head: value})
    inner = getattr(config, head)
    if not is_dataclass(inner):
        raise ConfigError(path, value, f"{head!r} has no fields")
    if head == "workload" and rest in LOAD_FIELDS:
        cleared = {f: None for f in LOAD_FIELDS if f != rest}
        return replace(config, workload=replace(inner, **cleared, **{rest: value}))
    return replace(config, **{head: with_value(inner, rest, value)})


def cells(grid: Mapping[str, Sequence] | Sequence[Mapping]) -> list[dict]:
    """The cells of ``grid``: every combination of a mapping's values, in key order, or
    an explicit list of cells as given."""
    if isinstance(grid, Mapping):
        keys = list(grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]
    return [dict(c) for c in grid]


STARTUP, STARTUP_CPU = "overheads.replica_startup_s", "overheads.replica_startup_cpu_s"


def configure(base: SimConfig, cell: Mapping) -> SimConfig:
    """``base`` with each of ``cell``'s paths set; errors name the path, not the field. A
    start-up time and its CPU part are set together (each bounds the other); a start-up
    time set alone keeps the share of it that is CPU work (``Overheads.with_startup_s``),
    as ``--replica-startup-s`` does."""
    config = base
    for path, value in cell.items():
        if path == STARTUP_CPU and STARTUP in cell:
            continue  # set with the start-up time
        if path == STARTUP:
            config = replace(config, overheads=_with_startup(config.overheads, value, cell.get(STARTUP_CPU)))
            continue
        try:
            config = with_value(config, path, value)
        except ConfigError as e:
            raise ConfigError(path, value, e.message) from None
    return config


def _with_startup(oh, startup_s, startup_cpu_s):
    """``oh`` with the start-up time and, when given, its CPU part; errors name the path."""
    try:
        oh = oh.with_startup_s(startup_s)
    except ConfigError as e:
        raise ConfigError(STARTUP, startup_s, e.message) from None
    if startup_cpu_s is None:
        return oh
    try:
        return replace(oh, replica_startup_cpu_s=startup_cpu_s)
    except ConfigError as e:
        raise ConfigError(STARTUP_CPU, startup_cpu_s, e.message) from None


def seeds(rng, n: int) -> list[int]:
    """``n`` independent seeds from one ``rng`` (int, SeedSequence, Generator or None)."""
    if isinstance(rng, np.random.Generator):
        rng = int(rng.integers(2**63))
    ss = rng if isinstance(rng, np.random.SeedSequence) else np.random.SeedSequence(rng)
    return [int(child.generate_state(1, np.uint64)[0]) for child in ss.spawn(n)]


# -- one run, one row -----------------------------------------------------------------------
def row(summary: dict) -> dict:
    """A run's summary flattened into the sweep's result columns."""
    lat = summary["latency_ms"]
    reps = summary["replicas"]
    router = summary["router"]
    nodes = summary["nodes"]
    return {
        "throughput_rps": summary["throughput_rps"],
        **{f"latency_{k}_ms": lat[k] for k in ("mean", "p50", "p90", "p99", "max")},
        "queue_wait_mean_ms": summary["queue_wait_ms"]["mean"],
        "completed": summary["completed"],
        "rejected": summary["rejected"],
        "in_flight": summary["in_flight"],
        "replicas_running": reps["running"],
        "replicas_pending": reps["pending"],
        "reserved_cpus": sum(n["logical_reserved_cpus"] for n in nodes),
        "physical_busy": max(n["physical_busy"] for n in nodes),
        "router_mean_queued": router["mean_queued"],
        "router_probes_per_request": router["probes_per_request"],
        "router_attempts_per_request": router["attempts_per_request"],
        "router_rejections_per_request": router["rejections_per_request"],
        "sim_time_s": summary["sim_time_s"],
        "wall_time_s": summary["wall_time_s"],
        "bottleneck": summary["bottleneck"],
    }


def _run_batch(base: SimConfig, tasks: list) -> list[dict]:
    """Run ``(cell index, replication, cell, seed)`` tasks; one row each."""
    out = []
    for index, rep, cell, seed in tasks:
        config = replace(configure(base, cell), seed=seed, keep_requests=False)
        out.append({"cell": index, "replication": rep, "seed": seed, **cell, **row(simulate(config).summary)})
    return out


# -- backends ---------------------------------------------------------------------------------
class _Progress:
    """tqdm when installed, else one rewritten stderr line; silent when off."""

    def __init__(self, total: int, on: bool):
        self.total, self.done, self.on, self._bar = total, 0, on, None
        if on:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="run", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.on:
            print(f"\rsweep: {self.done}/{self.total} runs", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.on:
            print(file=sys.stderr)


def _batches(tasks: list, workers: int) -> list[list]:
    # About four batches per worker: few enough to amortise pickling the base config,
    # enough to balance cells of very different cost.
    size = max(1, math.ceil(len(tasks) / (4 * workers)))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def _serial(base, tasks, progress, **_):
    rows = []
    for t in tasks:
        rows += _run_batch(base, [t])
        progress.update(1)
    return rows


def _process(base, tasks, progress, workers=None, **_):
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = workers or os.cpu_count() or 1
    rows = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_batch, base, b): len(b) for b in _batches(tasks, workers)}
        for f in as_completed(futures):
            rows += f.result()
            progress.update(futures[f])
    return rows


def _ray(base, tasks, progress, workers=None, address=None, **_):
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False)
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1)(_run_batch)
        base_ref = ray.put(base)
        pending = {remote.remote(base_ref, b): len(b) for b in _batches(tasks, workers)}
        rows = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            rows += ray.get(done[0])
            progress.update(pending.pop(done[0]))
        return rows
    finally:
        if started:
            ray.shutdown()


_BACKENDS = {"serial": _serial, "process": _process, "ray": _ray}


def run_cells(
    base: SimConfig,
    cell_list: Sequence[Mapping],
    seed_list: Sequence[Sequence[int]],
    *,
    backend: str = "process",
    workers: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run cell ``i`` once per seed in ``seed_list[i]``; rows sorted by (cell, replication).

    Every cell is configured (and so validated) here, before any run starts.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend={backend!r}: must be one of {', '.join(BACKENDS)}")
    for cell in cell_list:
        configure(base, cell)
    tasks = [(i, r, dict(c), s) for i, (c, ss) in enumerate(zip(cell_list, seed_list)) for r, s in enumerate(ss)]
    if progress is None:
        progress = len(tasks) >= 20 and sys.stderr.isatty()
    bar = _Progress(len(tasks), progress)
    try:
        rows = _BACKENDS[backend](base, tasks, bar, workers=workers, address=address)
    finally:
        bar.close()
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["cell", "replication"], kind="stable").reset_index(drop=True)
    return df


def sweep(
    base: SimConfig,
    grid: Mapping[str, Sequence] | Sequence[Mapping],
    replications: int = 1,
    rng=None,
    *,
    backend: str = "process",
    workers: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run every cell of ``grid`` ``replications`` times; one row per run.

    Columns: ``cell``, ``replication``, ``seed``, the grid's paths, then ``METRICS`` and
    ``bottleneck``. ``rng`` seeds the whole sweep (SPEC 7); the seed of cell ``i``,
    replication ``r`` is child ``i * replications + r`` of ``SeedSequence(rng)``.
    """
    cell_list = cells(grid)
    flat = seeds(rng, len(cell_list) * replications)
    per_cell = [flat[i * replications : (i + 1) * replications] for i in range(len(cell_list))]
    return run_cells(base, cell_list, per_cell, backend=backend, workers=workers, address=address, progress=progress)


# -- statistics -----------------------------------------------------------------------------
def config_columns(df: pd.DataFrame) -> list[str]:
    """The columns of a sweep table that describe configurations."""
    skip = set(RUN_COLUMNS) | set(METRICS) | set(TEXT_METRICS)
    return [c for c in df.columns if c not in skip and not c.endswith("_ci")]


def aggregate(df: pd.DataFrame, by: Iterable[str] | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Per configuration: the mean of each metric and ``<metric>_ci``, the half-width of
    its ``confidence`` interval (Student's t over replications; NaN with one),
    ``replications``, and the most frequent ``bottleneck``."""
    by = list(by) if by is not None else config_columns(df)
    metrics = [m for m in METRICS if m in df.columns]
    groups = df.groupby(by, sort=False, dropna=False) if by else [((), df)]
    out = []
    for key, g in groups:
        rec = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        n = len(g)
        rec["replications"] = n
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) / math.sqrt(n) if n > 1 else float("nan")
        for m in metrics:
            values = g[m].astype(float)
            rec[m] = values.mean()
            rec[f"{m}_ci"] = half * values.std(ddof=1) if n > 1 else float("nan")
        if "bottleneck" in g:
            rec["bottleneck"] = g["bottleneck"].mode().iloc[0]
        out.append(rec)
    return pd.DataFrame(out)


# -- the command line ------------------------------------------------------------------------
def _value(text: str):
    """A grid value from the command line: int, float, or the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(items: Sequence[str], path: str | None = None) -> dict:
    """``path=v1,v2`` flags, after a YAML file's mapping of path to list of values."""
    grid: dict = {}
    if path:
        import yaml

        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        if not isinstance(doc, dict):
            raise ConfigError("grid_file", path, "must map configuration paths to lists of values")
        doc = doc.get("grid", doc)
        grid.update({k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in doc.items()})
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError("grid", item, "must look like deployment.num_replicas=1,2,4")
        grid[key.strip()] = [_value(v.strip()) for v in values.split(",")]
    if not grid:
        raise ConfigError("grid", None, "give --grid PATH=V1,V2 or --grid-file FILE")
    return grid


def parser() -> argparse.ArgumentParser:
    """``simserve.run``'s flags give the base configuration; these add the sweep."""
    from simserve import run

    p = run.parser("python -m simserve.sweep", "Run a grid of Ray Serve configurations, replicated, into one table.", outputs=False)
    p.add_argument("--csv", metavar="PATH", help="write one row per run (or per configuration with --aggregate)")
    p.add_argument("--json", action="store_true", help="print the table as JSON records instead of text")
    g = p.add_argument_group("sweep")
    g.add_argument("--grid", action="append", default=[], metavar="PATH=V1,V2", help="values to try, e.g. deployment.num_replicas=1,2,4 (repeatable)")
    g.add_argument("--grid-file", metavar="YAML", help="a mapping of configuration path to list of values")
    g.add_argument("--replications", type=int, default=1, help="runs per configuration (default 1)")
    g.add_argument("--backend", choices=BACKENDS, default="process", help="where runs execute (default process)")
    g.add_argument("--workers", type=int, help="parallel workers (default: all cores)")
    g.add_argument("--address", help="Ray cluster address for --backend ray (default: start a local one)")
    g.add_argument("--parquet", metavar="PATH", help="write the table as Parquet (needs pyarrow)")
    g.add_argument("--aggregate", action="store_true", help="one row per configuration: means and 95%% CIs")
    return p


def main(argv=None) -> int:
    from simserve import run

    p = parser()
    args = p.parse_args(argv)
    try:
        grid = parse_grid(args.grid, args.grid_file)
        # A grid over the load stands in for the base's load flag.
        for f in ("concurrent", "rps"):
            if f"workload.{f}" in grid and args.concurrent is None and args.rps is None and not args.trace:
                setattr(args, f, grid[f"workload.{f}"][0])
        base = replace(run.build_config(args, warn=lambda m: print(f"{p.prog}: {m}", file=sys.stderr)), keep_requests=False)
        t0 = time.perf_counter()
        df = sweep(base, grid, args.replications, args.seed, backend=args.backend, workers=args.workers, address=args.address)
    except ConfigError as e:
        p.exit(2, f"{p.prog}: error: {e.field} {e.value!r}: {e.message}\n")
    elapsed = time.perf_counter() - t0
    table = aggregate(df) if args.aggregate else df
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.parquet:
        try:
            table.to_parquet(args.parquet, index=False)
        except ImportError:
            p.exit(2, f"{p.prog}: error: --parquet {args.parquet!r}: needs pyarrow (pip install 'simserve[parquet]')\n")
    if args.json:
        print(table.to_json(orient="records"))
    else:
        cols = config_columns(df) + ["throughput_rps", "latency_p50_ms", "latency_p99_ms", "bottleneck"]
        if not args.aggregate:
            cols.insert(len(cols) - 4, "replication")
        print(table[[c for c in cols if c in table]].to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
        print(f"{len(df)} runs in {elapsed:.1f} s ({args.backend})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
