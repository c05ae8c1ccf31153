"""Do the claims we started from hold in the simulator, and where does the last one fail?

1. A 500 ms CPU-bound (GIL-holding) handler on 2 replicas of 1 CPU serves about 4 rps.
2. 10 replicas of 1 CPU on an 8-CPU cluster: 8 run, 2 stay pending.
3. 4 replicas x 2 CPUs, 10 concurrent clients, max_ongoing_requests=1: at most 4
   requests are in a handler at once.
4. For GIL-bound code, more 1-CPU replicas beat fewer multi-CPU ones at the same CPU
   budget; and where that fails: GIL-releasing (native) work, or I/O-bound work in an
   async handler, with enough slots (max_ongoing_requests=100). With
   max_ongoing_requests=5, 40 clients wait for 2 x 5 slots and Ray's router decides:
   its back-off polling, and the replicas it fills twice from a stale queue-length
   cache (which reject), leave slots idle, so more replicas win for every kind of work,
   for a reason the claim does not name. (Measured on real Ray Serve 2.60 with 50 ms
   of I/O, 2 replicas x 5 slots: 40 clients got 39.8 rps of the 200 the slots allow,
   24 clients 106.5; see validate/README.md.)

Run: python experiments/seed_claims.py [--quick]
"""

from __future__ import annotations

import pandas as pd

from common import arguments, save, show
from simserve import ClusterConfig, DeploymentConfig, Distribution, SimConfig, WorkloadConfig, WorkModel, simulate
from simserve.plots import throughput_vs_replicas
from simserve.sweep import aggregate, sweep


def max_in_handler(requests: pd.DataFrame) -> int:
    """The most requests between dispatch and answer at any instant (ends count first)."""
    done = requests.dropna(subset=["dispatch_s", "end_s"])
    events = sorted([(t, 1) for t in done["dispatch_s"]] + [(t, -1) for t in done["end_s"]])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    load = WorkloadConfig(concurrent=10, duration_s=args.duration_s, warmup_s=args.warmup_s)
    cpu_500ms = WorkModel.single("gil", Distribution("deterministic", 0.5))
    claims = []

    r = simulate(SimConfig(DeploymentConfig(num_replicas=2, num_cpus=1, work=cpu_500ms), workload=load, seed=args.seed))
    rps = r.summary["throughput_rps"]
    claims.append(("500 ms CPU-bound, 2 x 1 CPU", "about 4 rps", f"{rps:.2f} rps", abs(rps - 4) < 0.4))

    r = simulate(SimConfig(DeploymentConfig(num_replicas=10, num_cpus=1), ClusterConfig(num_cpus=8), workload=load, seed=args.seed))
    reps = r.summary["replicas"]
    claims.append(("10 x 1 CPU on 8 CPUs", "8 running, 2 pending", f"{reps['running']} running, {reps['pending']} pending",
                   (reps["running"], reps["pending"]) == (8, 2)))

    d = DeploymentConfig(num_replicas=4, num_cpus=2, max_ongoing_requests=1, work=WorkModel.single("gil", Distribution("exponential", 0.1)))
    r = simulate(SimConfig(d, workload=load, seed=args.seed))
    peak = max_in_handler(r.requests)
    claims.append(("4 x 2 CPUs, 10 clients, max_ongoing 1", "at most 4 at once", f"{peak} at once", peak <= 4))

    # Claim 4 and its limits: the same 8-CPU budget split three ways, for each kind of work.
    shapes = [{"deployment.num_replicas": n, "deployment.num_cpus": 8 / n} for n in (8, 4, 2)]
    frames = []
    for kind, slots in (("gil", 5), ("native", 5), ("io", 5), ("native", 100), ("io", 100)):
        base = SimConfig(
            DeploymentConfig(handler="async", max_ongoing_requests=slots, work=WorkModel.single(kind, Distribution("exponential", 0.05))),
            ClusterConfig(num_cpus=8, physical_cores=8),
            workload=WorkloadConfig(concurrent=40, duration_s=args.duration_s, warmup_s=args.warmup_s),
        )
        df = sweep(base, shapes, args.replications, [args.seed, len(frames)], backend=args.backend)
        frames.append(aggregate(df).assign(work=f"{kind}, max_ongoing {slots}"))
    budget = pd.concat(frames, ignore_index=True)
    for work, g in budget.groupby("work", sort=False):
        many, few = g["throughput_rps"].iloc[0], g["throughput_rps"].iloc[-1]
        wins = not work.endswith(" 100")
        claims.append((f"{work}: 8 x 1 CPU beats 2 x 4 CPUs", "yes" if wins else "fails: about equal",
                       f"{many:.0f} vs {few:.0f} rps", (many > 1.5 * few) == wins))

    table = pd.DataFrame(claims, columns=["claim", "expected", "simulated", "holds"])
    print(table.to_string(index=False))
    print()
    show(budget, ["work", "deployment.num_replicas", "deployment.num_cpus", "throughput_rps", "throughput_rps_ci", "latency_p50_ms", "latency_p99_ms"])
    save(args, "seed_claims", table)
    save(args, "seed_claims_budget", budget, throughput_vs_replicas(budget, hue="work"))


if __name__ == "__main__":
    main()
