"""At a fixed budget of 8 CPUs, how should they be split: many small replicas or few big ones?

The same 8 logical CPUs (on 8 physical cores) as 8x1, 4x2, 2x4 or 1x8, for GIL-bound,
GIL-releasing (native, OMP_NUM_THREADS = num_cpus) and I/O-bound work of 50 ms mean,
with a plain ``def`` handler (a thread pool of max_ongoing_requests=5 threads) under
40 closed-loop clients.

Run: python experiments/cpu_budget.py [--quick]
"""

from __future__ import annotations

import pandas as pd

from common import arguments, save, show
from simserve import ClusterConfig, DeploymentConfig, Distribution, SimConfig, WorkloadConfig, WorkModel
from simserve.plots import throughput_vs_replicas
from simserve.sweep import aggregate, sweep

BUDGET = 8


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    shapes = [{"deployment.num_replicas": n, "deployment.num_cpus": BUDGET / n} for n in (8, 4, 2, 1)]
    frames = []
    for i, kind in enumerate(("gil", "native", "io")):
        base = SimConfig(
            DeploymentConfig(handler="sync", max_ongoing_requests=5, work=WorkModel.single(kind, Distribution("exponential", 0.05))),
            ClusterConfig(num_cpus=BUDGET, physical_cores=BUDGET),
            workload=WorkloadConfig(concurrent=40, duration_s=args.duration_s, warmup_s=args.warmup_s),
        )
        df = sweep(base, shapes, args.replications, [args.seed, i], backend=args.backend)
        frames.append(aggregate(df).assign(work=kind))
    table = pd.concat(frames, ignore_index=True)
    show(table, ["work", "deployment.num_replicas", "deployment.num_cpus", "throughput_rps", "throughput_rps_ci",
                 "latency_p50_ms", "latency_p99_ms", "physical_busy"])
    save(args, "cpu_budget", table, throughput_vs_replicas(table, hue="work"))


if __name__ == "__main__":
    main()
