"""The router's polling cycle, event by event, on real Ray and in simserve (a diagnosis).

    python -m validate.trace_cycle NAME

Runs the grid scenario NAME (through a handle) on real Ray with an event log of the
driver's router (``trace_router.Calls``: requests queued and queued again after a
rejection, routing tasks started, cancelled and ended, candidate sets tried and whether
they found a replica, the replica given to the task's own request, another task's or one
no task held, back-off sleeps, sends, done callbacks), then simulates that run as
``python -m validate`` would and logs the same events from simserve's ``RayRouter``. Both
logs are summed up the same way (``cycle_lines``): the events per request, how long a new
and a re-queued request waited for its replica, how long routing tasks lived, how soon
after a done callback (a slot known free) the next candidate set came and what its task
had been doing, and whether the done callback came before or after the client's next
request. This is how the polling rows' gap was located (validate/README.md, item 52).

Left out: HTTP (the proxy's router lives in another process); timing each task's own
request across a cancellation (the event names the fulfilled request, not the chain).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import statistics
import sys

from validate.scenario import load_calibration
from validate.trace_router import Calls, handle_scenario, patched, quantiles, rate_and_p50

FULFIL = ("fulfil_own", "fulfil_cancel", "fulfil_free")


def cycle_lines(events: list, label: str) -> list[str]:
    """A log of (seconds, kind, task or request, detail) summed up; times in ms, p10/p50/p90."""
    ev = sorted(events, key=lambda e: e[0])
    counts = collections.Counter(e[1] for e in ev)
    n = counts["done"] or 1
    out = [f"{label}: per done callback " + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items()))]
    queued, waits = {}, {False: [], True: []}
    started, lives = {}, []
    opened, found, empty = {}, [], []
    for t, kind, who, detail in ev:
        if kind == "enqueue":
            queued[who] = (t, bool(detail))
        elif kind in FULFIL and detail in queued:
            t0, retry = queued.pop(detail)
            waits[retry].append(1e3 * (t - t0))
        elif kind == "task start":
            started[who] = t
        elif kind == "task end" and who in started:
            lives.append(1e3 * (t - started.pop(who)))
        elif kind == "select":
            opened[who] = t
        elif kind == "selected" and who in opened:
            (found if detail else empty).append(1e3 * (t - opened.pop(who)))
    out.append(f"  waited for a replica: new {quantiles(waits[False])} ({len(waits[False])}), queued again "
               f"{quantiles(waits[True])} ({len(waits[True])}); routing tasks lived {quantiles(lives)}")
    out.append(f"  a candidate set took {quantiles(found)} where it found a replica ({len(found)}), "
               f"{quantiles(empty)} where it found none ({len(empty)})")
    # After each done callback: the next candidate set, and what its task had done before it.
    selects = [(e[0], e[2]) for e in ev if e[1] == "select"]
    times = [t for t, _ in selects]
    last: dict = {}
    before: dict = {}
    for t, kind, who, _ in ev:
        if kind == "select":
            before[(t, who)] = last.get(who, "nothing")
        if who is not None and kind not in ("enqueue", "done"):
            last[who] = kind
    gaps, follows = [], collections.Counter()
    for t in (e[0] for e in ev if e[1] == "done"):
        i = bisect.bisect_right(times, t)
        if i < len(selects):
            gaps.append(1e3 * (selects[i][0] - t))
            follows[before[selects[i]]] += 1
    total = sum(follows.values()) or 1
    out.append(f"  done callback -> next candidate set {quantiles(gaps)}; its task had last: "
               + ", ".join(f"{k} {v / total:.0%}" for k, v in follows.most_common(4)))
    dones = [e[0] for e in ev if e[1] == "done"]
    signed = []
    for t in (e[0] for e in ev if e[1] == "enqueue" and not e[3]):
        i = bisect.bisect_left(dones, t)
        near = [dones[j] - t for j in (i - 1, i) if 0 <= j < len(dones)]
        if near:
            signed.append(1e3 * min(near, key=abs))
    if signed:
        after = sum(1 for x in signed if x > 0) / len(signed)
        out.append(f"  the done callback nearest a new request came after it in {after:.0%} "
                   f"(done - request: median {statistics.median(signed):.1f} ms)")
    return out


def sim_events(sim_cfg) -> tuple[dict, list]:
    """(the summary, the event log) of ``sim_cfg`` in simserve, logged by wrapping
    ``RayRouter``'s methods for this one run."""
    from simserve import simulate
    from simserve.router import RayRouter

    log: list = []
    names = ("_enqueue", "_choose", "_fulfill", "_probed", "_attempt", "_exit", "_maybe_start_tasks", "_sent",
             "on_response", "_decrement")
    originals = {name: getattr(RayRouter, name) for name in names}  # what the wrappers call

    def enqueue(self, req, retry):
        log.append((self.env._now, "enqueue", req.id, retry))
        originals["_enqueue"](self, req, retry)

    def choose(self, task):
        if task.alive and not task.own.fulfilled and self.replicas:
            log.append((self.env._now, "select", id(task), task.failures))
        originals["_choose"](self, task)

    def fulfill(self, task, replica):
        req = next(r for r in self.to_fulfill if not r.fulfilled)  # the oldest, which _fulfill serves
        owner = req.task
        cancelled = owner is not None and owner is not task and owner.alive
        kind = "fulfil_own" if owner is task else "fulfil_cancel" if cancelled else "fulfil_free"
        log.append((self.env._now, "selected", id(task), True))
        log.append((self.env._now, kind, id(task), req.id))
        if cancelled:
            log.append((self.env._now, "task cancelled", id(owner), None))
        originals["_fulfill"](self, task, replica)

    def probed(self, probe):
        task = probe.task
        if task is not None and task.alive and not task.own.fulfilled and not any(
                q < r.max_ongoing_requests for r, q in probe.answers if r.state == "RUNNING"):
            log.append((self.env._now, "selected", id(task), False))
        originals["_probed"](self, probe)

    def attempt(self, task):
        k = task.yields + 1 - task.local
        if self.replicas and k >= 3:
            log.append((self.env._now, "sleep", id(task), k - 3))
        originals["_attempt"](self, task)

    def exit_(self, task):
        log.append((self.env._now, "task end", id(task), None))
        originals["_exit"](self, task)

    def maybe_start(self):
        before = set(self.tasks)
        originals["_maybe_start_tasks"](self)
        log.extend((self.env._now, "task start", id(t), None) for t in self.tasks - before)

    def sent(self, pair):
        log.append((self.env._now, "send", None, None))
        originals["_sent"](self, pair)

    def on_response(self, req, replica):
        if not (self._running or self._busy):  # else it queues _decrement, logged when it runs
            log.append((self.env._now, "done", None, None))
        originals["on_response"](self, req, replica)

    def decrement(self, replica):
        log.append((self.env._now, "done", None, None))
        originals["_decrement"](self, replica)

    wrappers = (enqueue, choose, fulfill, probed, attempt, exit_, maybe_start, sent, on_response, decrement)
    with patched({(RayRouter, name): fn for name, fn in zip(names, wrappers)}):
        summary = simulate(sim_cfg).summary
    return summary, log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.trace_cycle", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="a grid scenario's name")
    args = ap.parse_args(argv)
    cfg = handle_scenario(args.name)
    if cfg is None:
        return 2
    from validate.__main__ import sim_config
    from validate.harness import RealCluster

    cal = load_calibration()
    with RealCluster(cfg.cluster.num_cpus) as cl:
        Calls.install()
        real = cl.run(cfg)
    sim, log = sim_events(sim_config(cfg, real, cal))
    lines = []
    for label, summary, events in (("Ray", real, Calls.events), ("simserve", sim, log)):
        lines.append(f"{label}: {rate_and_p50(summary)}")
        lines.extend(cycle_lines(events, label))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
