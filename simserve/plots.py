"""Pictures of sweeps and plans, each returned as a matplotlib ``Figure``.

Figures are built without ``pyplot`` (no global figure state, no GUI backend): save
one with ``fig.savefig(path)``; Jupyter displays them as they are. Each function takes
a sweep table (one row per run, aggregated here) or ``aggregate``'s output, and draws
means with their 95% confidence intervals as error bars.

Left out: styling beyond matplotlib's defaults, and interactive plots.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from simserve.sweep import aggregate


def _means(df: pd.DataFrame) -> pd.DataFrame:
    return aggregate(df) if "replication" in df else df


def _series(df: pd.DataFrame, hue: str | None):
    if hue is None:
        yield None, df
    else:
        for value, g in df.groupby(hue, sort=True):
            yield f"{hue.rsplit('.', 1)[-1]}={value}", g


def latency_vs_load(
    df: pd.DataFrame, x: str = "workload.rps", hue: str | None = None, percentiles=("p50", "p99")
) -> Figure:
    """Latency percentiles (log scale) against offered load, one line per percentile
    and ``hue`` value."""
    df = _means(df)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, g in _series(df, hue):
        g = g.sort_values(x)
        for p in percentiles:
            col = f"latency_{p}_ms"
            name = p if label is None else f"{label} {p}"
            ax.errorbar(g[x], g[col], yerr=g.get(f"{col}_ci"), marker="o", capsize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def throughput_vs_replicas(df: pd.DataFrame, x: str = "deployment.num_replicas", hue: str | None = None) -> Figure:
    """Throughput against replica count (or any other ``x``), one line per ``hue``."""
    df = _means(df)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, g in _series(df, hue):
        g = g.sort_values(x)
        ax.errorbar(g[x], g["throughput_rps"], yerr=g.get("throughput_rps_ci"), marker="o", capsize=3, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel("throughput (requests/s)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if hue is not None:
        ax.legend(fontsize="small")
    return fig


def pareto_front(candidates: pd.DataFrame, slo_ms: float | None = None, latency: str = "latency_p99_ms") -> Figure:
    """The planner's candidates: reserved CPUs against latency; the Pareto front joined,
    SLO failures hollow, the SLO as a dashed line."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    met = candidates["meets_slo"].astype(bool)
    ax.scatter(candidates.loc[met, "reserved_cpus"], candidates.loc[met, latency], label="meets SLO")
    ax.scatter(
        candidates.loc[~met, "reserved_cpus"], candidates.loc[~met, latency], facecolors="none", edgecolors="C3", label="misses SLO"
    )
    front = candidates[candidates["pareto"].astype(bool)].sort_values("reserved_cpus")
    ax.step(front["reserved_cpus"], front[latency], where="post", color="k", lw=1, label="Pareto front")
    if slo_ms is not None:
        ax.axhline(slo_ms, ls="--", color="C2", label=f"SLO {slo_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("reserved CPUs (num_replicas x num_cpus)")
    ax.set_ylabel(latency.replace("_ms", " (ms)").replace("_", " "))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def replicas_over_time(timeline: pd.DataFrame) -> Figure:
    """Replica counts (target, running, starting, stopping) above latency and throughput,
    against simulated time, from ``SimResult.timeline``."""
    fig = Figure(figsize=(8, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    t = timeline["time_s"]
    ax1.step(t, timeline["target_replicas"], where="post", label="target", linestyle="--")
    for col, label in (("running_replicas", "running"), ("starting_replicas", "starting"), ("stopping_replicas", "stopping")):
        ax1.step(t, timeline[col], where="post", label=label)
    ax1.set_ylabel("replicas")
    ax1.legend(loc="upper left")
    ax2.plot(t, timeline["latency_p50_ms"], label="p50 latency")
    ax2.plot(t, timeline["latency_p99_ms"], label="p99 latency")
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("time (s)")
    twin = ax2.twinx()
    twin.plot(t, timeline["throughput_rps"], color="grey", alpha=0.5, label="throughput")
    twin.set_ylabel("throughput (req/s)")
    ax2.legend(loc="upper left")
    return fig
