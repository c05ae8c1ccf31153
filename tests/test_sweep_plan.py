"""Sweeps give the same rows whatever runs them; the planner's answer holds up."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from simserve import ClusterConfig, ConfigError, DeploymentConfig, Distribution, SimConfig, WorkloadConfig, WorkModel, simulate
from simserve import plan as plan_cli
from simserve import sweep as sweep_cli
from simserve.plan import SLO, nodes_for, plan, replica_capacity_rps
from simserve.sweep import aggregate, configure, seeds, sweep, with_value

BASE = SimConfig(
    DeploymentConfig(num_cpus=1, work=WorkModel.single("gil", Distribution("exponential", 0.05))),
    workload=WorkloadConfig(rps=1, duration_s=8, warmup_s=1),
)
GRID = {"deployment.num_replicas": [1, 3], "workload.rps": [10, 30], "router.policy": ["pow2", "ideal"]}


def _stable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_time_s"])


@pytest.fixture(scope="module")
def serial_rows():
    return sweep(BASE, GRID, replications=2, rng=7, backend="serial")


def test_rows_are_one_per_cell_and_replication(serial_rows):
    """A grid of 8 cells and 2 replications gives 16 rows with the grid as columns."""
    assert len(serial_rows) == 16
    assert list(serial_rows[["cell", "replication"]].itertuples(index=False, name=None)) == [(c, r) for c in range(8) for r in range(2)]
    assert set(GRID) <= set(serial_rows.columns)
    assert serial_rows["seed"].nunique() == 16


def test_process_backend_gives_the_serial_rows(serial_rows):
    """The process pool's rows equal the serial rows, whatever the number of workers."""
    for workers in (1, 2):
        rows = sweep(BASE, GRID, replications=2, rng=7, backend="process", workers=workers)
        pd.testing.assert_frame_equal(_stable(rows), _stable(serial_rows))


def test_ray_backend_gives_the_serial_rows(serial_rows):
    """Ray tasks on a tiny local cluster give the serial rows."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = sweep(BASE, GRID, replications=2, rng=7, backend="ray")
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(_stable(rows), _stable(serial_rows))


def test_seeds_come_from_one_seed_sequence():
    """Seeds are SeedSequence children, the same for an int and its SeedSequence."""
    assert seeds(3, 4) == seeds(np.random.SeedSequence(3), 4)
    assert len(set(seeds(3, 100))) == 100


def test_aggregate_gives_t_confidence_intervals(serial_rows):
    """The CI half-width is t(0.975, n-1) * s / sqrt(n) over replications."""
    agg = aggregate(serial_rows)
    assert len(agg) == 8 and (agg["replications"] == 2).all()
    first = serial_rows[serial_rows["cell"] == 0]["throughput_rps"]
    half = stats.t.ppf(0.975, 1) * first.std(ddof=1) / math.sqrt(2)
    assert agg.loc[0, "throughput_rps"] == pytest.approx(first.mean())
    assert agg.loc[0, "throughput_rps_ci"] == pytest.approx(half)


def test_setting_a_load_clears_the_other():
    """A grid over workload.rps on a closed-loop base makes it open-loop."""
    closed = replace(BASE, workload=WorkloadConfig(concurrent=4))
    assert with_value(closed, "workload.rps", 5.0).workload.concurrent is None
    with pytest.raises(ConfigError, match="deployment.num_cpus"):
        configure(BASE, {"deployment.num_cpus": -1})


def test_a_start_up_time_swept_alone_keeps_the_cpu_share():
    """Sweeping ``overheads.replica_startup_s`` below a calibrated CPU part scales that part with it
    (no error that the CPU exceeds the time); set together, both are taken as given."""
    base = replace(BASE, overheads=replace(BASE.overheads, replica_startup_s=2.0, replica_startup_cpu_s=1.5))
    oh = configure(base, {"overheads.replica_startup_s": 0.5}).overheads
    assert (oh.replica_startup_s, oh.replica_startup_cpu_s) == (0.5, 0.375)
    both = configure(base, {"overheads.replica_startup_s": 0.5, "overheads.replica_startup_cpu_s": 0.1}).overheads
    assert (both.replica_startup_s, both.replica_startup_cpu_s) == (0.5, 0.1)
    with pytest.raises(ConfigError, match="overheads.replica_startup_s=-1"):
        configure(base, {"overheads.replica_startup_s": -1})


def test_sweep_cli_writes_a_csv(tmp_path, capsys):
    """python -m simserve.sweep takes run's flags plus --grid and writes one row per run."""
    out = tmp_path / "rows.csv"
    argv = ["--work", "io", "--service-ms", "20", "--duration-s", "5", "--warmup-s", "1", "--grid", "deployment.num_replicas=1,2",
            "--grid", "workload.rps=10", "--replications", "2", "--backend", "serial", "--csv", str(out)]
    assert sweep_cli.main(argv) == 0
    df = pd.read_csv(out)
    assert len(df) == 4 and list(df["deployment.num_replicas"]) == [1, 1, 2, 2]
    assert "deployment.num_replicas" in capsys.readouterr().out


# -- the planner ----------------------------------------------------------------------------
WORK = WorkModel.single("gil", Distribution("deterministic", 0.05))
CPUS, SLOTS, RPS, SLO_MS = (0.5, 1, 2), (1, 5), 30, 500


def _meets(config: SimConfig, rng) -> bool:
    """Every replication, with fresh seeds, meets the p99 SLO at the offered load."""
    for seed in seeds(rng, 2):
        s = simulate(replace(config, seed=seed, keep_requests=False)).summary
        if not (s["latency_ms"]["p99"] <= SLO_MS and s["throughput_rps"] >= 0.95 * RPS and s["replicas"]["pending"] == 0):
            return False
    return True


def _config(n, c, m) -> SimConfig:
    return SimConfig(
        DeploymentConfig(num_replicas=n, num_cpus=c, max_ongoing_requests=m, work=WORK),
        ClusterConfig(nodes=nodes_for(n, c, 8.0)),
        workload=WorkloadConfig(rps=RPS, duration_s=20, warmup_s=3),
    )


@pytest.fixture(scope="module")
def answer():
    return plan(WORK, RPS, SLO_MS, num_cpus=CPUS, max_ongoing_requests=SLOTS, duration_s=20, warmup_s=3, backend="serial")


def test_planner_answer_meets_the_slo_with_fresh_seeds(answer):
    """The best configuration, re-simulated with other seeds, still meets the SLO."""
    b = answer.best
    assert b is not None and b["meets_slo"]
    assert _meets(_config(b["num_replicas"], b["num_cpus"], b["max_ongoing_requests"]), rng=12345)


def test_no_cheaper_configuration_in_the_grid_meets_the_slo(answer):
    """Every configuration of the grid with fewer reserved CPUs misses the SLO."""
    best_cost = answer.best["reserved_cpus"]
    for c in CPUS:
        for m in SLOTS:
            n = 1
            while n * c < best_cost:
                assert not _meets(_config(n, c, m), rng=999), (n, c, m)
                n += 1


def test_planner_reports_its_work(answer):
    """The plan counts its configurations and marks a Pareto front with the best on it."""
    cands = answer.candidates
    assert answer.simulated_configs == len(cands) and answer.simulations == 2 * len(cands)
    assert cands.loc[0, "pareto"] and answer.best["num_replicas"] == cands.loc[0, "num_replicas"]


def test_replica_capacity_bounds():
    """A replica is bounded by its slots, its GIL, and with async by its event loop."""
    io = WorkModel.single("io", Distribution("deterministic", 0.1))
    native = WorkModel.single("native", Distribution("deterministic", 0.1))
    assert replica_capacity_rps(io, "async", 5) == pytest.approx(50)
    assert replica_capacity_rps(WORK, "sync", 5) == pytest.approx(20)
    assert replica_capacity_rps(native, "sync", 5) == pytest.approx(50)
    assert replica_capacity_rps(native, "async", 5) == pytest.approx(10)
    assert nodes_for(17, 0.5, 8) == 2 and nodes_for(1, 16, 8) is None


def test_plan_cli_json(capsys):
    """python -m simserve.plan --json prints one object with best, candidates and a count."""
    argv = ["--rps", "30", "--slo-p99-ms", "500", "--work", "gil", "--service-ms", "50", "--duration-s", "15",
            "--cpus-options", "0.5,1", "--max-ongoing-options", "5", "--backend", "serial", "--json"]
    assert plan_cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"num_replicas", "num_cpus", "max_ongoing_requests", "reserved_cpus", "latency_ms"} <= set(doc["best"])
    assert doc["simulated_configs"] == len(doc["candidates"]) > 0
    assert doc["best"]["latency_ms"]["p99"] <= 500


def test_slo_is_checked():
    """An SLO percentile the sweep does not report is refused, naming the field."""
    with pytest.raises(ConfigError, match="slo.percentile"):
        SLO(100, percentile="p95")
