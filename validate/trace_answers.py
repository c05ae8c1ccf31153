"""Where a call's first answer spends its time, on real Ray and in simserve (a diagnosis).

    python -m validate.trace_answers NAME

Runs the grid scenario NAME (through a handle) on real Ray, then simulates that run as
``python -m validate`` would (``__main__.sim_config``), and prints for each the time from
a send (the router has its replica) to its answer (accepted or rejected) reaching the
router, in legs, p10/p50/p90 in ms, accepted and rejected apart:

* real: ``try_send_request`` (the actor call serialised and submitted, in the driver); on
  to the replica's Python (``Replica.handle_request_with_rejection`` starts: the call
  crossed to the replica, its C++ handed it to the main loop, the loop's turn came and
  ``ReplicaActor`` unpickled its metadata); in the replica (to its first ``yield``); back
  (to ``on_new_queue_len_info`` in the driver's router). ``time.perf_counter`` is
  ``CLOCK_MONOTONIC``, one clock for all the host's processes. The driver's side comes
  from ``trace_router.Calls``; the replica's from a wrapper its ``__init__`` installs
  (``_timed_init``), each process writing its instants to a file of its own.
* simserve: the send's turn on the router's loop (``RayRouter._send``, its CPU included)
  to the call reaching the replica (``Simulation._deliver``); to the answer leaving
  (``Simulation._reply``: the replica's takes before it); back (the router's cache
  updated).

The legs do not line up one to one: simserve charges the whole of ``router_cpu_s`` at the
send and the replica's Python work for the call before its answer leaves, where Ray spends
part of both later. The totals are comparable, and how each leg grows from one request at a
time to many is the point (validate/README.md, item 52).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from contextlib import contextmanager

from validate.scenario import load_calibration
from validate.trace_router import Calls, handle_scenario, patched, quantiles, rate_and_p50


def _timed_init(original, directory: str):
    """An ``__init__`` for the harness's model classes that first wraps Ray's
    ``Replica.handle_request_with_rejection`` in the replica's process: per call, its
    request id, whether it was accepted, when it started (the capacity check), when it
    yielded its answer and when the call ended (an accepted call's slot is released just
    before). Pickled by value with the model class (the replica cannot import ``validate``)."""

    def init(self, *args, **kwargs):
        import os
        import time

        from ray.serve._private import replica
        from ray.serve._private.common import ReplicaQueueLengthInfo

        handle = replica.Replica.handle_request_with_rejection
        out = open(os.path.join(directory, f"replica-{os.getpid()}.txt"), "a", buffering=1)

        async def timed(self_, request_metadata, *a, **k):
            started = time.perf_counter()
            first, accepted, answered = True, 0, started
            async for item in handle(self_, request_metadata, *a, **k):
                if first and isinstance(item, ReplicaQueueLengthInfo):
                    first, accepted, answered = False, int(item.accepted), time.perf_counter()
                yield item
            out.write(f"{request_metadata.request_id} {accepted} {started} {answered} {time.perf_counter()}\n")

        replica.Replica.handle_request_with_rejection = timed
        original(self, *args, **kwargs)

    return init


@contextmanager
def timed_replicas():
    """Inside the block, replicas deployed from the harness's model classes time each call
    (``_timed_init``); yields a list that, after the block, holds every call they logged as
    (request id, accepted, started, answered, ended), perf_counter seconds. The classes'
    own ``__init__`` again after it."""
    import ray.cloudpickle

    from validate import harness

    directory = tempfile.mkdtemp(prefix="trace-answers-")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replica cannot import validate
    models = (harness.AsyncModel, harness.SyncModel)
    inits = [m.__init__ for m in models]
    calls: list = []
    try:
        for model in models:
            model.__init__ = _timed_init(model.__init__, directory)
        yield calls
    finally:
        for model, init in zip(models, inits):
            model.__init__ = init
    for path in glob.glob(os.path.join(directory, "replica-*.txt")):
        with open(path) as f:
            for line in f:
                rid, accepted, started, answered, ended = line.split()
                calls.append((rid, accepted == "1", float(started), float(answered), float(ended)))


def real_legs(cfg) -> tuple[dict, dict]:
    """(the run's summary, legs in ms by accepted/rejected) of one real run of ``cfg``."""
    from validate import harness

    with timed_replicas() as logged:
        with harness.RealCluster(cfg.cluster.num_cpus) as cl:
            Calls.install()
            summary = cl.run(cfg)
    calls = collections.defaultdict(list)
    for rid, accepted, started, answered, _ in logged:
        calls[rid].append((started, answered, accepted))
    submitted = collections.defaultdict(list)
    for rid, at in Calls.submitted:
        submitted[rid].append(at)
    sends = collections.defaultdict(list)
    for _, seconds, rid, chosen in Calls.answers:
        sends[rid].append((chosen, chosen + seconds))
    legs = {True: collections.defaultdict(list), False: collections.defaultdict(list)}
    for rid, own in sends.items():
        # A request's sends, its calls in the replica and its submissions in time order.
        for (chosen, back), sub, (started, answered, accepted) in zip(sorted(own), sorted(submitted[rid]),
                                                                     sorted(calls[rid])):
            leg = legs[accepted]
            leg["submit"].append(1e3 * (sub - chosen))
            leg["to replica's Python"].append(1e3 * (started - sub))
            leg["in the replica"].append(1e3 * (answered - started))
            leg["back"].append(1e3 * (back - answered))
            leg["total"].append(1e3 * (back - chosen))
    return summary, legs


def sim_legs(sim_cfg) -> tuple[dict, dict]:
    """(the summary, legs in ms by accepted/rejected) of ``sim_cfg`` in simserve, timed by
    wrapping the router's and the simulation's methods for this one run."""
    from simserve import simulate
    from simserve.router import RayRouter
    from simserve.simulation import Simulation

    marks: dict = {}  # id(request) -> [send's turn, reaches the replica, answer leaves]
    legs = {True: collections.defaultdict(list), False: collections.defaultdict(list)}
    names = ((RayRouter, "_send"), (Simulation, "_deliver"), (Simulation, "_reply"), (RayRouter, "on_accepted"),
             (RayRouter, "_rejected"))
    originals = {name: getattr(cls, name) for cls, name in names}  # what the wrappers call

    def send(self, pair):
        marks[id(pair[0])] = [self.env._now]
        originals["_send"](self, pair)

    def deliver(self, req, replica):
        marks.get(id(req), []).append(self.env._now)
        originals["_deliver"](self, req, replica)

    def reply(self, args):
        marks.get(id(args[1]), []).append(self.env._now)
        originals["_reply"](self, args)

    def record(router, req, accepted: bool) -> None:
        m = marks.pop(id(req), None)
        if m is not None and len(m) == 3:  # sent on the general path, answered through _reply
            sent, arrived, left = m
            now = router.env._now
            leg = legs[accepted]
            leg["to the replica"].append(1e3 * (arrived - sent))
            leg["in the replica"].append(1e3 * (left - arrived))
            leg["back"].append(1e3 * (now - left))
            leg["total"].append(1e3 * (now - sent))

    def on_accepted(self, req, replica, qlen):
        busy = self._running or self._busy
        originals["on_accepted"](self, req, replica, qlen)
        if busy:  # the cache update waits on the router's loop: the answer is in when it runs
            fn, arg = self._queued.pop()
            self._queued.append((lambda a: (record(self, req, True), fn(a)), arg))
        else:
            record(self, req, True)

    def rejected(self, args):
        record(self, args[0], False)
        originals["_rejected"](self, args)

    with patched(dict(zip(names, (send, deliver, reply, on_accepted, rejected)))):
        summary = simulate(sim_cfg).summary
    return summary, legs


def _lines(label: str, summary: dict, legs: dict) -> list[str]:
    out = [f"{label}: {rate_and_p50(summary)}"]
    for accepted in (True, False):
        leg = legs[accepted]
        if leg["total"]:
            parts = ", ".join(f"{name} {quantiles(v)}" for name, v in leg.items())
            out.append(f"  {'accepted' if accepted else 'rejected'} ({len(leg['total'])}), p10/p50/p90 ms: {parts}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.trace_answers", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="a grid scenario's name")
    args = ap.parse_args(argv)
    cfg = handle_scenario(args.name)
    if cfg is None:
        return 2
    from validate.__main__ import sim_config

    cal = load_calibration()
    t0 = time.strftime("%H:%M:%S", time.gmtime())
    real, legs = real_legs(cfg)
    lines = [f"{args.name}, real run from {t0} UTC"] + _lines("Ray", real, legs)
    sim, legs = sim_legs(sim_config(cfg, real, cal))
    print("\n".join(lines + _lines("simserve", sim, legs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
