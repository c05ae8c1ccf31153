"""What does max_ongoing_requests (1, 5 or 100) do to throughput and tail latency?

4 replicas of 1 CPU with an ``async def`` handler at rising Poisson load, once for
I/O-bound work (100 ms of awaiting: slots are the capacity) and once for GIL-bound
work (25 ms of Python: the event loop is, and extra slots only move the queue from
the router into the replicas).

Run: python experiments/max_ongoing.py [--quick]
"""

from __future__ import annotations

import pandas as pd

from common import arguments, save, show
from simserve import DeploymentConfig, Distribution, SimConfig, WorkloadConfig, WorkModel
from simserve.plots import latency_vs_load
from simserve.sweep import aggregate, sweep

CASES = {
    # work, mean seconds, offered loads (requests/s) up to past the 4-replica capacity
    "io": ("io", 0.1, (20, 35, 100, 180)),
    "gil": ("gil", 0.025, (40, 80, 120, 150)),
}


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    frames = []
    for i, (name, (kind, mean_s, loads)) in enumerate(CASES.items()):
        base = SimConfig(
            DeploymentConfig(num_replicas=4, num_cpus=1, handler="async", work=WorkModel.single(kind, Distribution("exponential", mean_s))),
            workload=WorkloadConfig(rps=1, duration_s=args.duration_s, warmup_s=args.warmup_s),
        )
        grid = {"deployment.max_ongoing_requests": [1, 5, 100], "workload.rps": list(loads)}
        frames.append(aggregate(sweep(base, grid, args.replications, [args.seed, i], backend=args.backend)).assign(work=name))
    table = pd.concat(frames, ignore_index=True)
    show(table, ["work", "deployment.max_ongoing_requests", "workload.rps", "throughput_rps", "latency_p50_ms",
                 "latency_p99_ms", "router_mean_queued"])
    save(args, "max_ongoing", table, latency_vs_load(table[table["work"] == "io"], hue="deployment.max_ongoing_requests", percentiles=("p99",)))


if __name__ == "__main__":
    main()
