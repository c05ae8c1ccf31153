"""Hypothesis strategies: small but varied Ray Serve configurations."""

from hypothesis import strategies as st

from simserve import (
    ClusterConfig,
    DeploymentConfig,
    Distribution,
    Overheads,
    RouterConfig,
    Segment,
    SimConfig,
    WorkloadConfig,
    WorkModel,
)

segments = st.lists(
    st.builds(
        Segment,
        kind=st.sampled_from(["io", "gil", "native"]),
        duration=st.builds(
            Distribution,
            kind=st.sampled_from(
                ["deterministic", "exponential", "lognormal", "gamma"]
            ),
            mean_s=st.sampled_from([0.0, 0.005, 0.02, 0.05]),
            cv=st.sampled_from([0.0, 0.5, 1.5]),
        ),
    ),
    min_size=1,
    max_size=3,
).map(tuple)

overheads = st.one_of(
    st.just(Overheads()),
    st.builds(
        # router_cpu_s and the share of it each routing attempt costs (at most all of it).
        lambda router, **costs: Overheads(router_cpu_s=router[0], router_attempt_cpu_s=router[1], **costs),
        router=st.sampled_from([(0.0, 0.0), (0.0003, 0.0), (0.0003, 0.0001)]),
        ingress=st.sampled_from(["handle", "http"]),
        hop_s=st.sampled_from([0.0, 0.0005, 0.002]),
        http_hop_s=st.sampled_from([0.0, 0.0005]),
        client_cpu_s=st.sampled_from([0.0, 0.001]),
        replica_cpu_s=st.sampled_from([0.0, 0.0005]),
        replica_post_cpu_s=st.sampled_from([0.0, 0.0005]),
        hop_cv=st.sampled_from([0.0, 0.5]),
        probe_cpu_s=st.sampled_from([0.0, 0.0003]),
        replica_probe_cpu_s=st.sampled_from([0.0, 0.0003]),
        replica_native_cpu_s=st.sampled_from([0.0, 0.0003]),
        replica_sync_cpu_s=st.sampled_from([0.0, 0.0005]),
        replica_sync_native_cpu_s=st.sampled_from([0.0, 0.0003]),
        ray_background_cores=st.sampled_from([0.0, 0.1]),
        driver_idle_cores=st.sampled_from([0.0, 0.01]),
        proxy_idle_cores=st.sampled_from([0.0, 0.01]),
        replica_idle_cores=st.sampled_from([0.0, 0.02]),
        gil_switch_interval_s=st.sampled_from([0.0, 0.005]),
        contended_core_speed=st.sampled_from([1.0, 0.8]),
        proxy_cpu_s=st.sampled_from([0.0, 0.001]),
    ),
)


@st.composite
def workloads(draw):
    kind = draw(st.sampled_from(["closed", "poisson"]))
    duration = draw(st.sampled_from([2.0, 5.0]))
    if kind == "closed":
        return WorkloadConfig(
            concurrent=draw(st.integers(1, 12)),
            think_time_s=draw(st.sampled_from([0.0, 0.01])),
            duration_s=duration,
            warmup_s=draw(st.sampled_from([0.0, 0.5])),
        )
    return WorkloadConfig(
        rps=draw(st.sampled_from([5.0, 40.0, 150.0])), duration_s=duration, warmup_s=0.5
    )


def _runnable(cfg_kwargs) -> bool:
    w, d, o = cfg_kwargs["workload"], cfg_kwargs["deployment"], cfg_kwargs["overheads"]
    return not (
        w.kind == "closed" and w.think_time_s == 0 and d.work.mean_s == 0
        and not o.delay_every_request(d.handler, cfg_kwargs["router"].policy)
    )


sim_configs = (
    st.fixed_dictionaries(
        dict(
            deployment=st.builds(
                DeploymentConfig,
                num_replicas=st.integers(1, 5),
                num_cpus=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
                max_ongoing_requests=st.integers(1, 6),
                max_queued_requests=st.sampled_from([-1, -1, 1, 4]),
                handler=st.sampled_from(["async", "sync"]),
                work=st.builds(WorkModel, segments=segments),
            ),
            cluster=st.builds(
                ClusterConfig,
                nodes=st.integers(1, 2),
                num_cpus=st.sampled_from([1.0, 2.0, 4.0, 8.0]),
                physical_cores=st.sampled_from([1.0, 2.0, 4.0]),
                placement=st.sampled_from(["spread", "pack"]),
                # The host slowing mid-run, never above speed 1: the invariants' latency and
                # core bounds assume the work at full speed at best.
                core_speed_trace=st.sampled_from([(), (), ((0.5, 0.5), (1.5, 1.0)), ((0.0, 0.7),),
                                                  ((1.0, 0.25), (1.2, 0.9))]),
            ),
            router=st.builds(
                RouterConfig, policy=st.sampled_from(["pow2", "round_robin", "ideal"])
            ),
            overheads=overheads,
            workload=workloads(),
            seed=st.integers(0, 2**32 - 1),
        )
    )
    .filter(_runnable)
    .map(lambda kw: SimConfig(**kw))
)
