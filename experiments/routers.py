"""How far is Ray's power-of-two-choices router from round robin and from an ideal queue?

4 replicas of 1 CPU, GIL-bound work of 50 ms mean (exponential), max_ongoing_requests=5,
Poisson load rising to 95% of the 80 rps capacity. ``ideal`` sends the oldest waiting
request to the first free slot at once: no probes, no back-off, no stale cache.

Run: python experiments/routers.py [--quick]
"""

from __future__ import annotations

from common import arguments, save, show
from simserve import DeploymentConfig, Distribution, SimConfig, WorkloadConfig, WorkModel
from simserve.plots import latency_vs_load
from simserve.sweep import aggregate, sweep


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    base = SimConfig(
        DeploymentConfig(num_replicas=4, num_cpus=1, work=WorkModel.single("gil", Distribution("exponential", 0.05))),
        workload=WorkloadConfig(rps=1, duration_s=args.duration_s, warmup_s=args.warmup_s),
    )
    loads = [20, 40, 60, 76] if args.quick else [20, 30, 40, 50, 60, 68, 72, 76]
    grid = {"router.policy": ["pow2", "round_robin", "ideal"], "workload.rps": loads}
    table = aggregate(sweep(base, grid, args.replications, args.seed, backend=args.backend))
    show(table, ["router.policy", "workload.rps", "throughput_rps", "latency_p50_ms", "latency_p99_ms", "latency_p99_ms_ci",
                 "router_probes_per_request"])
    save(args, "routers", table, latency_vs_load(table, hue="router.policy", percentiles=("p99",)))


if __name__ == "__main__":
    main()
