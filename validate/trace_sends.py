"""Each send of the driver's router and whether the replica rejected it, on real Ray and in
simserve (a diagnosis, not a validation).

    python -m validate.trace_sends [--clients C] [--runs N]

One no-op replica with five slots (``calibrate.noop_deployment``) and C closed-loop clients
through a handle (default 12: more than the slots, so the router polls), ``loaded_cpu``'s
10 s rows, N of them; then simserve on the same scenario with the committed calibration.
Every write to the router's queue-length cache is noted with what made it (a send's own
bump, or anything else: an answer, a probe, a done callback), and every send with its
outcome. A routing step that finds room in the cache hands the replica to every request
waiting, one after another, before any of their sends bumps the cache (Ray's
``_fulfill_pending_requests`` does not suspend between them; simserve's ``RayRouter._drain``
the same), so the sends leave in bursts; each send's place in its burst is the number of
sends to that replica since the cache last heard from anything else. On the replica's side
each call's capacity check (Ray: ``handle_request_with_rejection`` starts, timed by
``trace_answers``' wrapper; simserve: ``Replica.admit``) and how long an accepted call holds
its slot (Ray: to the call's end, the slot released just before; simserve: to its release).
Printed per side: throughput, sends and rejected sends per request, the gap between sends
within a burst and between the replica's checks, the slot's hold (p10/p50/p90, ms), and per
place in a burst the sends and the share the replica rejected. This is how the polling rows'
gap was located send by send (validate/README.md, item 57).

Left out: HTTP (the proxy's router lives in another process).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time

from validate.trace_router import patched, quantiles

PLACES = 8  # places in a burst shown apart; later ones together
SIM_DURATION_S = 30.0


class Sends:
    """Ray's side: the sends of the driver's router and their places in bursts, from wrappers of its
    2.60 methods installed before the deployment. Serve restores the router classes'
    attributes from a copy made at the deployment (validate/router_counters.py), so the
    wrappers go in before it, and keep their state here, looked up on the class at each
    call, never captured."""

    burst: collections.Counter = collections.Counter()  # replica id -> sends since its cache's last other write
    sends: list = []  # [perf_counter, place in its burst, rejected]
    by_task: dict = {}  # the request's own task -> its last send's index in sends

    @classmethod
    def install(cls) -> None:
        from ray.serve._private.request_router.common import ReplicaQueueLengthCache
        from ray.serve._private.request_router.request_router import RequestRouter

        update, send = ReplicaQueueLengthCache.update, RequestRouter.on_send_request
        choose = RequestRouter._choose_replica_for_request

        def logged_update(self, replica_id, queue_len):
            if sys._getframe(1).f_code.co_name != "on_send_request":  # not a send's own bump
                Sends.burst[replica_id] = 0
            return update(self, replica_id, queue_len)

        def on_send_request(self, replica_id):
            # Runs in the request's own task (assign_request), as does its retry.
            Sends.sends.append([time.perf_counter(), Sends.burst[replica_id], 0])
            Sends.burst[replica_id] += 1
            Sends.by_task[asyncio.current_task()] = len(Sends.sends) - 1
            return send(self, replica_id)

        async def choose_replica(self, pending_request, *, is_retry=False):
            if is_retry:  # the send before was rejected
                i = Sends.by_task.pop(asyncio.current_task(), None)
                if i is not None:
                    Sends.sends[i][2] = 1
            return await choose(self, pending_request, is_retry=is_retry)

        ReplicaQueueLengthCache.update = logged_update
        RequestRouter.on_send_request = on_send_request
        RequestRouter._choose_replica_for_request = choose_replica


def ray_sends(clients: int, runs: int) -> tuple[float, int, list, list]:
    """Ray's rows: (median requests per second, requests, sends as ``Sends.sends``, the
    replica's calls as (check, accepted, end) in perf_counter seconds)."""
    from validate.calibrate import _by_role, _window, noop_deployment
    from validate.loaded_cpu import IDLE_S, LOAD_S, WARMUP, _load
    from validate.trace_answers import timed_replicas

    Sends.install()
    with timed_replicas() as logged:
        with noop_deployment() as (handle, pc):
            d, wall, _ = asyncio.run(_window(pc, IDLE_S))
            first, t0 = len(Sends.sends), time.perf_counter()
            rows = [asyncio.run(_load(handle, pc, 0, (_by_role(d), wall), nice=19, concurrency=clients))
                    for _ in range(runs)]
    calls = sorted((started, accepted, ended) for _, accepted, started, _, ended in logged if started >= t0)
    # Each row's warm-up calls (one at a time) are among the sends, so among the requests too.
    return (statistics.median(r["requests"] / LOAD_S for r in rows), sum(r["requests"] + WARMUP for r in rows),
            Sends.sends[first:], calls)


def sim_sends(clients: int) -> tuple[float, int, list, list]:
    """simserve's run of the same scenario: (requests per second, requests, sends as
    ``Sends.sends``, the replica's calls as (admission check, accepted, release); in
    simulated seconds), logged by wrapping its router's cache and ``Simulation.send`` and
    ``Replica.admit`` for this one run."""
    from simserve.replica import Replica
    from simserve.router import RayRouter
    from simserve.simulation import Simulation, simulate
    from validate.scenario import load_calibration, scenario, with_overheads

    cfg = with_overheads(scenario(name="noop", work=[("io", 1e-6)], num_replicas=1, num_cpus=1,
                                  max_ongoing_requests=5, cluster_cpus=2, concurrent=clients,
                                  duration_s=SIM_DURATION_S), load_calibration(None))
    burst: collections.Counter = collections.Counter()
    sends: list = []
    by_request: dict = {}
    checks: list = []  # (simulated seconds, the request, accepted)
    send_writers = ("_sent", "_submit_soon")  # the send's bump, written out in both

    class Cache(dict):
        def __setitem__(self, key, value):
            if sys._getframe(1).f_code.co_name not in send_writers:
                burst[key] = 0
            dict.__setitem__(self, key, value)

    originals = {name: getattr(RayRouter, name) for name in ("__init__", "update_replicas")}
    send, admit = Simulation.send, Replica.admit

    def init(self, *args, **kwargs):
        originals["__init__"](self, *args, **kwargs)
        self.cache = Cache(self.cache)

    def update_replicas(self, replicas):
        originals["update_replicas"](self, replicas)
        self.cache = Cache(self.cache)  # it builds a new dict

    def logged_send(self, req, replica):
        by_request[req.id] = len(sends)
        sends.append([self.env._now, burst[replica.index], 0, req.created_s])
        burst[replica.index] += 1
        send(self, req, replica)

    def logged_admit(self, req):
        ok = admit(self, req)
        checks.append((self.env._now, req, ok))
        if not ok:
            sends[by_request[req.id]][2] = 1
        return ok

    with patched({(RayRouter, "__init__"): init, (RayRouter, "update_replicas"): update_replicas,
                  (Simulation, "send"): logged_send, (Replica, "admit"): logged_admit}):
        s = simulate(cfg).summary
    # The summary counts the requests made after the warm-up: their sends alone.
    warm = cfg.workload.warmup_s
    # A slot still held at the end has no release (NaN): None, as on Ray's side a call not ended.
    calls = [(t, ok, (None if req.released_s != req.released_s else req.released_s) if ok else t)
             for t, req, ok in checks if req.created_s >= warm]
    return s["throughput_rps"], s["completed"], [x[:3] for x in sends if x[3] >= warm], calls


def sends_lines(label: str, rps: float, requests: int, sends: list, calls: list) -> list[str]:
    """One side summed up: its rate, sends and rejections per request, the gaps between the
    sends of a burst and between the replica's checks, an accepted call's hold of its slot,
    and per place in a burst its sends and the share rejected."""
    rejected = sum(s[2] for s in sends)
    gaps = [1e3 * (b[0] - a[0]) for a, b in zip(sends, sends[1:]) if b[1] > 0]
    checks = [1e3 * (b[0] - a[0]) for a, b in zip(calls, calls[1:])]
    held = [1e3 * (end - t) for t, ok, end in calls if ok and end is not None]
    out = [f"{label}: {rps:.1f} rps, {len(sends) / requests:.2f} sends and {rejected / requests:.2f} rejected "
           f"per request; gap to the send before within a burst {quantiles(gaps)} ms ({len(gaps)})",
           f"  the replica's checks apart {quantiles(checks)} ms ({len(calls)}); an accepted call holds its slot "
           f"{quantiles(held)} ms"]
    by_place = collections.defaultdict(lambda: [0, 0])
    for _, place, rej in sends:
        row = by_place[min(place, PLACES)]
        row[0] += 1
        row[1] += rej
    out.append("  place in burst: " + ", ".join(
        f"{p}{'+' if p == PLACES else ''} {c / len(sends):.0%} sent {r / c:.0%} rejected"
        for p, (c, r) in sorted(by_place.items())))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.trace_sends", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=12, help="closed-loop clients (default 12)")
    ap.add_argument("--runs", type=int, default=2, help="10 s rows on Ray (default 2)")
    args = ap.parse_args(argv)
    for name, v in (("clients", args.clients), ("runs", args.runs)):
        if v < 1:
            print(f"{name}: must be at least 1, got {v}", file=sys.stderr)
            return 2
    lines = sends_lines("Ray", *ray_sends(args.clients, args.runs))
    lines += sends_lines("simserve", *sim_sends(args.clients))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
