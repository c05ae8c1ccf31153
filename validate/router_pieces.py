"""Where Ray's router thread spends its CPU, piece by piece (a diagnosis, not a validation).

    python -m validate.router_pieces [--clients K] [--hold-s S] [--max-ongoing M] [--seconds T] [--runs N]

``router_cpu_s`` is the router thread's CPU per request, one total, which simserve spends
before the request leaves (its routing attempt and its send). This says *when* Ray's thread
spends it: before the request leaves (it delays the request and holds the loop against
every other request), or after its first answer (it delays only what queues behind it). It
runs requests through a ``DeploymentHandle`` to one replica (``Holder``, holding its slot
``--hold-s``; 0: a no-op) from K closed-loop clients, and times every callback the router's
asyncio loop runs with the thread's own clock (``Handle._run`` wrapped in this process, for
the router thread only). Each callback is labelled by what it resumes: a task's step by its
coroutine and the innermost await it resumes from, anything else by its function. The
labels fall into the pieces of a request's life on the router:

* ``start``: ``assign_request``'s first step (the request arrives from the caller's
  thread, ``run_coroutine_threadsafe``);
* ``send``: the step resumed with the request's replica (``_choose_replica_for_request``
  returns): ``try_send_request``, ``on_send_request``, the completion callbacks registered;
* ``answer``: the step resumed by the replica's first answer (``get_rejection_response``):
  the cache updated, the done callback registered, ``assign_request``'s end and the
  caller's future resolved, and the finished task's callbacks;
* ``routing``: the routing tasks' steps (``_fulfill_pending_requests``: candidate sets,
  probes, back-off);
* ``probe``: queue-length probes (``get_queue_len``) and their waits;
* ``done``: the callbacks the finished call fires from Ray's C++ thread
  (``_process_finished_request``, ``decrement_queue_len_cache``);
* ``other``: the rest (metrics timers, long-poll updates).

Each turn of the loop costs beyond its callbacks (``select``, its bookkeeping, the self-pipe
read that a ``call_soon_threadsafe`` from another thread sets off): that is shared among the
pieces the turn ran, in proportion to their CPU.

Printed per window, per request in ms by piece and by label, then the shares of the pieces'
total spent on the arrival, the first answer and the done callbacks (medians over the
windows). simserve charging those shares where Ray spends them was tried and judged on a
fresh grid (validate/README.md, item 54): not kept.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.base_events
import asyncio.events
import collections
import json
import statistics
import sys
import threading
import time

SECONDS = 15.0
WARMUP = 50

PIECES = ("start", "send", "answer", "routing", "probe", "done", "other")


def _innermost(coro):
    """The innermost coroutine of an await chain (the one whose frame resumes first)."""
    while getattr(coro, "cr_await", None) is not None and getattr(coro.cr_await, "cr_frame", None) is not None:
        coro = coro.cr_await
    return coro


def label(callback) -> str:
    """A callback's label: ``task:OUTER@INNER:LINE`` for a task's step or wake-up (where it
    resumes), ``fn:QUALNAME`` otherwise."""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        inner = _innermost(coro)
        line = inner.cr_frame.f_lineno if inner.cr_frame is not None else 0
        return f"task:{coro.__qualname__}@{inner.__qualname__}:{line}"
    fn = getattr(callback, "func", callback)  # functools.partial
    return f"fn:{getattr(fn, '__qualname__', type(fn).__name__)}"


def piece(lbl: str) -> str:
    """The piece of a request's life a label belongs to (module docstring)."""
    if lbl.startswith("task:"):
        outer, inner = lbl[5:].split("@", 1)
        if "_fulfill_pending_requests" in outer:
            return "routing"
        if "get_queue_len" in outer or "probe" in outer:
            return "probe"  # RouterCounters' counted_probe wraps _probe_queue_lens
        if outer.endswith("assign_request"):
            if inner.startswith("AsyncioRouter.assign_request") or "_request_router_initialized" in inner:
                return "start"
            if "_choose_replica_for_request" in inner:
                return "send"
            # Past the choice only the replica's first answer is awaited: the rejection
            # response and the generator's next item (_suppress_exceptions).
            return "answer"
        return "other"
    if "_read_from_self" in lbl:
        return "wake"  # the self-pipe read of a call_soon_threadsafe: the loop's own cost
    if "create_task_and_setup" in lbl:
        return "start"  # run_coroutine_threadsafe's callback creating assign_request's task
    if "_wait.<locals>._on_completion" in lbl:
        return "probe"
    if "_set_result_unless_cancelled" in lbl:
        return "routing"  # a back-off sleep's end
    if "_process_finished_request" in lbl or "decrement" in lbl:
        return "done"  # RouterCounters' timed_decrement wraps decrement_queue_len_cache
    if "_chain_future" in lbl or "assign_request" in lbl:
        return "answer"  # assign_request's end resolving the caller's future
    return "other"


class LoopClock:
    """The router thread's CPU while ``on``: per callback label (``cpu``, ``count``), and per
    piece with each turn of the loop's own cost (its ``select``, its bookkeeping, the
    self-pipe reads) shared among the pieces that turn ran, in proportion to their CPU
    (``piece_cpu``; a turn that ran none goes to ``idle``)."""

    def __init__(self, thread_ident: int):
        self.ident = thread_ident
        self.cpu = collections.Counter()
        self.count = collections.Counter()
        self.piece_cpu = collections.Counter()
        self.on = False
        self._turn: collections.Counter | None = None
        self._orig = (asyncio.events.Handle._run, asyncio.base_events.BaseEventLoop._run_once)

    def install(self) -> None:
        run, run_once = self._orig
        me = self

        def _run(handle):
            if me._turn is None or threading.get_ident() != me.ident:
                return run(handle)
            lbl = label(handle._callback)
            t0 = time.thread_time()
            try:
                return run(handle)
            finally:
                dt = time.thread_time() - t0
                me.cpu[lbl] += dt
                me.count[lbl] += 1
                pc = piece(lbl)
                if pc != "wake":
                    me._turn[pc] += dt

        def _run_once(loop):
            if not me.on or threading.get_ident() != me.ident:
                return run_once(loop)
            me._turn = turn = collections.Counter()
            t0 = time.thread_time()
            try:
                return run_once(loop)
            finally:
                total = time.thread_time() - t0
                me._turn = None
                work = sum(turn.values())
                if work > 0.0:
                    for pc, dt in turn.items():
                        me.piece_cpu[pc] += total * dt / work
                else:
                    me.piece_cpu["idle"] += total

        asyncio.events.Handle._run = _run
        asyncio.base_events.BaseEventLoop._run_once = _run_once

    def uninstall(self) -> None:
        asyncio.events.Handle._run, asyncio.base_events.BaseEventLoop._run_once = self._orig


def measure(cl, clients: int, hold_s: float, max_ongoing: int, seconds: float, runs: int = 1) -> list[dict]:
    """``runs`` windows of ``seconds`` of load on one deployment: each with per label the
    router thread's CPU and count, the thread's whole CPU and the requests answered."""
    from validate.calibrate import Holder, _deploy_one, _router_thread_clock, router_thread
    from validate.host_speed import probe_ns_per_loop

    handle = _deploy_one(cl, Holder, "pieces", max_ongoing_requests=max_ongoing)

    async def window():
        clock, lc = _router_thread_clock(), LoopClock(router_thread().ident)
        lc.install()
        done = [0]
        stop = time.perf_counter() + seconds

        async def client():
            while time.perf_counter() < stop:
                await handle.remote(hold_s)
                done[0] += 1

        try:
            lc.on = True
            r0, w0 = clock(), time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            wall = time.perf_counter() - w0
            await asyncio.sleep(0.2)  # the last done callbacks, counted in the pieces and the total alike
            lc.on = False
            thread_cpu = clock() - r0
        finally:
            lc.uninstall()
        return {"requests": done[0], "wall_s": wall, "thread_cpu_s": thread_cpu,
                "cpu_s": dict(lc.cpu), "count": dict(lc.count), "piece_cpu_s": dict(lc.piece_cpu)}

    async def run():
        for _ in range(WARMUP):
            await handle.remote(0.0)
        out = []
        for _ in range(runs):
            before = probe_ns_per_loop()
            raw = await window()
            raw.update({"clients": clients, "hold_s": hold_s, "max_ongoing_requests": max_ongoing,
                        "ns_per_loop": [before, probe_ns_per_loop()]})
            out.append(raw)
        return out

    try:
        return asyncio.run(run())
    finally:
        cl.delete("pieces")


def by_piece(raw: dict) -> dict:
    """Router-thread CPU per request (seconds) per piece, each with its share of the loop's
    turns; ``idle``: turns that ran no piece; ``outside``: the thread's CPU outside every turn."""
    n = raw["requests"]
    out = {k: raw["piece_cpu_s"].get(k, 0.0) / n for k in (*PIECES, "idle")}
    out["outside"] = (raw["thread_cpu_s"] - sum(raw["piece_cpu_s"].values())) / n
    return out


SHARES = {"start_share": "start", "answer_share": "answer", "done_share": "done"}


def derive(raws: list[dict]) -> dict:
    """The shares of the router thread's per-request CPU (its turns with pieces in them)
    spent on the request's arrival, on its first answer and on the done callbacks: the
    median over the windows."""
    per = [by_piece(raw) for raw in raws]
    out = {}
    for field, name in SHARES.items():
        out[field] = statistics.median(p[name] / sum(p[k] for k in PIECES) for p in per)
    out["per_request_ms"] = [{k: round(1e3 * v, 4) for k, v in p.items()} for p in per]
    return out


def report(raw: dict) -> str:
    """One window: per piece and per label, per request."""
    n = raw["requests"]
    lines = [f"{raw['clients']} client(s), hold {raw['hold_s']} s, max_ongoing_requests "
             f"{raw['max_ongoing_requests']}: {n} requests in {raw['wall_s']:.1f} s ({n / raw['wall_s']:.1f} rps); "
             f"router thread {1e3 * raw['thread_cpu_s'] / n:.3f} ms per request",
             "  piece     ms/request"]
    for k, v in by_piece(raw).items():
        lines.append(f"  {k:<9} {1e3 * v:8.3f}")
    lines.append("  label (ms per request, calls per request)")
    for lbl, cpu in sorted(raw["cpu_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {1e3 * cpu / n:8.3f} {raw['count'][lbl] / n:6.2f}  [{piece(lbl)}] {lbl}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from validate.scenario import load_calibration, save_raw

    ap = argparse.ArgumentParser(prog="python -m validate.router_pieces", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--hold-s", type=float, default=0.0)
    ap.add_argument("--max-ongoing", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=SECONDS)
    ap.add_argument("--runs", type=int, default=1, help="windows of --seconds each (medians over them)")
    args = ap.parse_args(argv)
    for name, v, low in (("--clients", args.clients, 1), ("--max-ongoing", args.max_ongoing, 1),
                         ("--runs", args.runs, 1)):
        if v < low:
            print(f"{name}: {v} is below {low}", file=sys.stderr)
            return 2
    if not args.hold_s >= 0.0:
        print(f"--hold-s: {args.hold_s} must be zero or more", file=sys.stderr)
        return 2
    if not args.seconds > 0.0:
        print(f"--seconds: {args.seconds} must be positive", file=sys.stderr)
        return 2
    from validate.calibrate import calibrated_cluster

    with calibrated_cluster(load_calibration()) as cl:
        raws = measure(cl, args.clients, args.hold_s, args.max_ongoing, args.seconds, args.runs)
    save_raw({"runs": raws}, "pieces")
    for raw in raws:
        print(report(raw))
    print(json.dumps(derive(raws)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
