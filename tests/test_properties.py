"""Invariants that hold for every configuration, checked over generated ones."""

import json

import numpy as np
from hypothesis import assume, given

from simserve import simulate
from strategies import _runnable, sim_configs

TOL = 1e-9


def _max_overlap(starts, ends) -> int:
    """Largest number of [start, end) intervals open at once."""
    events = sorted([(e, -1) for e in ends] + [(s, 1) for s in starts])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def _floor_s(cfg) -> float:
    """The least time a request can take: its demand alone on idle cores."""
    threads = cfg.deployment.omp_num_threads
    return sum(s.duration.mean_s / (threads if s.kind == "native" else 1) for s in cfg.deployment.work.segments)


@given(sim_configs)
def test_invariants(cfg):
    """Conservation, slot limits, core limits, latency floors, Little's law and pending replicas hold."""
    res = simulate(cfg)
    s, req, reps = res.summary, res.requests, res.replicas
    d = cfg.deployment

    # Every request sent is answered, rejected or still in flight, exactly once.
    assert req["request_id"].is_unique
    assert set(req["status"]) <= {"ok", "rejected", "in_flight"}
    assert (req["status"] == "in_flight").sum() == s["in_flight"]

    # No replica ever holds more than max_ongoing_requests.
    served = req[req["replica"] >= 0]
    for _, g in served.groupby("replica"):
        ends = g["released_s"].fillna(np.inf)
        assert _max_overlap(g["dispatch_s"], ends) <= d.max_ongoing_requests

    # Pending replicas serve nothing.
    pending = set(reps.loc[reps["state"] != "RUNNING", "replica"])
    assert not pending & set(served["replica"])
    assert (reps.loc[reps["state"] != "RUNNING", "completed"] == 0).all()
    assert s["replicas"]["running"] + s["replicas"]["pending"] == d.num_replicas

    # Cores are never more than 100% busy; logical reservations never exceed the node.
    for n in s["nodes"]:
        assert n["physical_busy"] <= 1 + TOL
        assert n["logical_reserved_cpus"] <= n["logical_cpus"] + TOL

    ok = req[req["status"] == "ok"]
    # Deterministic work: no latency below the demand alone on an idle machine.
    if all(seg.duration.kind == "deterministic" for seg in d.work.segments):
        assert (ok["latency_s"] >= _floor_s(cfg) - TOL).all()
    assert (ok["dispatch_s"] >= ok["arrival_s"] - TOL).all()
    assert (ok["end_s"] >= ok["done_s"] - TOL).all()

    # Little's law per replica: mean ongoing (integrated by the replica) equals the
    # total time requests held its slots in the window (from the request table) / window.
    t0, t1 = s["sim_time_s"] - s["window_s"], s["sim_time_s"]
    if s["window_s"] > 0:
        for _, row in reps[reps["state"] == "RUNNING"].iterrows():
            g = served[served["replica"] == row["replica"]]
            held = (np.minimum(g["released_s"].fillna(t1), t1) - np.maximum(g["dispatch_s"], t0)).clip(lower=0).sum()
            assert row["mean_ongoing"] * s["window_s"] == np.float64(held) or abs(row["mean_ongoing"] * s["window_s"] - held) < 1e-6

    # Throughput stays under the slot bound and the physical-core bound.
    if s["window_s"] > 0 and s["replicas"]["running"]:
        slots = s["replicas"]["running"] * d.max_ongoing_requests
        floor = _floor_s(cfg)
        in_window = ((ok["end_s"] >= t0)).sum()
        if floor > 0 and all(seg.duration.kind == "deterministic" for seg in d.work.segments):
            assert in_window <= slots * (s["window_s"] / floor + 1)
        cpu_per_req = sum(seg.duration.mean_s for seg in d.work.segments if seg.kind != "io")
        if cpu_per_req > 0 and all(seg.duration.kind == "deterministic" for seg in d.work.segments):
            cores = cfg.cluster.physical_cores * cfg.cluster.nodes
            assert in_window <= cores * s["window_s"] / cpu_per_req + slots


def test_messages_between_the_router_and_a_replica_arrive_in_the_order_they_were_sent():
    """With very uneven hops (cv 3), calls and answers on one router-replica connection never
    overtake each other: each replica sees its requests in the order the router sent them."""
    from dataclasses import replace

    from simserve import ClusterConfig, DeploymentConfig, Distribution, Overheads, SimConfig, WorkloadConfig, WorkModel
    from simserve.simulation import Simulation

    cfg = SimConfig(
        DeploymentConfig(num_replicas=2, max_ongoing_requests=1, work=WorkModel.single("io", Distribution("exponential", 0.02))),
        ClusterConfig(num_cpus=2, physical_cores=2),
        overheads=Overheads(hop_s=0.002, hop_cv=3.0),
        workload=WorkloadConfig(concurrent=6, duration_s=5, warmup_s=0),
        seed=3,
    )
    sent, arrived = {}, {}

    class Traced(Simulation):
        def send(self, req, replica):
            sent.setdefault(replica.index, []).append(req.id)
            super().send(req, replica)

        def _deliver(self, req, replica):
            arrived.setdefault(replica.index, []).append(req.id)
            super()._deliver(req, replica)

    Traced(replace(cfg, keep_requests=True)).run()
    assert sum(map(len, sent.values())) > 200
    for index, ids in sent.items():
        assert arrived[index] == ids[: len(arrived[index])]


@given(sim_configs)
def test_a_queue_limit_that_is_never_reached_changes_nothing(cfg):
    """With no max_queued_requests and with one no run can reach, every request's times and outcome agree:
    the router routes an idle loop's request in place (``RayRouter._submit_soon``) exactly as its general
    path, which a limit forces, does. (Ray's routers only: with the ideal router, no limit sends an open
    loop to the FCFS recursion, whose queued-area sum differs from the event engine's in the last bits.)"""
    import dataclasses

    assume(cfg.router.policy != "ideal")
    if cfg.deployment.max_queued_requests != -1:
        cfg = dataclasses.replace(cfg, deployment=dataclasses.replace(cfg.deployment, max_queued_requests=-1))
    limited = dataclasses.replace(cfg, deployment=dataclasses.replace(cfg.deployment, max_queued_requests=10**9))
    a, b = simulate(cfg), simulate(limited)
    assert a.requests.equals(b.requests)

    def same(summary):  # as JSON, where NaN (no request completed) equals NaN
        return json.dumps({k: v for k, v in summary.items() if k not in ("wall_time_s", "config")},
                          sort_keys=True, default=str)
    assert same(a.summary) == same(b.summary)


@given(sim_configs)
def test_instant_probes_change_nothing(cfg):
    """Without hops or replica CPU for probes, answering a probe set in the instant it is sent
    (``RayRouter._instant_probes``) gives every request the times and outcome that sending each
    probe and taking each answer one by one gives."""
    import dataclasses
    from unittest import mock

    from simserve.router import RayRouter

    assume(cfg.router.policy != "ideal")
    overheads = dataclasses.replace(cfg.overheads, hop_s=0.0, replica_probe_cpu_s=0.0, replica_probe_native_cpu_s=0.0)
    # Without the hop, a closed loop of zero work may have nothing left to take time.
    assume(_runnable(dict(workload=cfg.workload, deployment=cfg.deployment, overheads=overheads, router=cfg.router)))
    cfg = dataclasses.replace(cfg, keep_requests=True, overheads=overheads)
    init = RayRouter.__init__

    def one_by_one(self, *args, **kwargs):
        init(self, *args, **kwargs)
        assert self._instant_probes
        self._instant_probes = False

    a = simulate(cfg)
    with mock.patch.object(RayRouter, "__init__", one_by_one):
        b = simulate(cfg)
    assert a.requests.equals(b.requests)
    assert a.summary["router"] == b.summary["router"]
