"""What happens when Ray is told there are more CPUs than the machine has cores?

One node with 4 physical cores, ``ray.init(num_cpus=N)`` for N = 2 to 16, and one
1-CPU replica per logical CPU running 50 ms of GIL-bound work under 64 clients. Ray
places all N replicas; the OS time-shares the 4 cores among them.

Run: python experiments/oversubscription.py [--quick]
"""

from __future__ import annotations

from common import arguments, save, show
from simserve import ClusterConfig, DeploymentConfig, Distribution, SimConfig, WorkloadConfig, WorkModel
from simserve.plots import throughput_vs_replicas
from simserve.sweep import aggregate, sweep

CORES = 4


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    base = SimConfig(
        DeploymentConfig(num_cpus=1, work=WorkModel.single("gil", Distribution("exponential", 0.05))),
        ClusterConfig(physical_cores=CORES),
        workload=WorkloadConfig(concurrent=64, duration_s=args.duration_s, warmup_s=args.warmup_s),
    )
    grid = [{"cluster.num_cpus": n, "deployment.num_replicas": n} for n in (2, 4, 8, 16)]
    table = aggregate(sweep(base, grid, args.replications, args.seed, backend=args.backend))
    show(table, ["cluster.num_cpus", "deployment.num_replicas", "throughput_rps", "latency_p50_ms", "latency_p99_ms",
                 "physical_busy", "bottleneck"])
    save(args, "oversubscription", table, throughput_vs_replicas(table, x="cluster.num_cpus"))


if __name__ == "__main__":
    main()
