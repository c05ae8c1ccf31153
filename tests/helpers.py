"""Small builders shared by the tests."""

from __future__ import annotations

from simserve import (
    ClusterConfig,
    DeploymentConfig,
    Distribution,
    RouterConfig,
    SimConfig,
    WorkloadConfig,
    WorkModel,
)


def config(
    *,
    kind="io",
    dist="deterministic",
    mean_s=0.1,
    cv=0.0,
    replicas=1,
    num_cpus=1.0,
    max_ongoing=5,
    handler="async",
    router="pow2",
    cluster_cpus=8.0,
    cores=8.0,
    nodes=1,
    seed=0,
    keep=True,
    **workload,
) -> SimConfig:
    """A SimConfig with no platform overheads: the pure queueing model."""
    return SimConfig(
        deployment=DeploymentConfig(
            num_replicas=replicas,
            num_cpus=num_cpus,
            max_ongoing_requests=max_ongoing,
            handler=handler,
            work=WorkModel.single(kind, Distribution(dist, mean_s, cv)),
        ),
        cluster=ClusterConfig(nodes=nodes, num_cpus=cluster_cpus, physical_cores=cores),
        router=RouterConfig(policy=router),
        workload=WorkloadConfig(**workload),
        seed=seed,
        keep_requests=keep,
    )
