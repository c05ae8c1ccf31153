"""The simulation's internal events, and the loop that runs SimPy's calendar.

SimPy's calendar (``env._queue``) is a heap of ``(time, priority, id, event)``, ordered
by time, then priority, then insertion (``id`` from ``env._eid``). A callback of the
simulation's own (timers, routing tasks, hops) goes on the same heap as a bare entry
``(time, NORMAL, id, fn, arg)``: ``later(env)`` returns ``at(delay, fn, arg)``, which
pushes one, in the place ``env.schedule(event, NORMAL, delay)`` would put an event, at a
fraction of the cost of an event object. Comparisons never get past the unique ``id``,
so the two kinds of entry sort together, as events alone would.

A callback due at once (a request handed to the router's loop, a 503 on its way back)
skips the heap: ``soon(env)`` returns ``now(fn, arg)``, which appends the same bare
entry, at the current time, to the FIFO ``_ready`` of an ``Environment`` (SimPy's, with
that FIFO). Such entries sort after everything already due now (their ``id`` is newer)
and before anything later, and the clock cannot move while the FIFO holds any, so the
loop takes the FIFO's first entry unless the heap's first sorts before it: the order
``at(0.0, fn, arg)`` would give, without a push and pop on a heap that holds an entry
per pending timer (2,560 clients' in S3).

SimPy's own ``step()`` expects an event in the fourth place and knows no FIFO, so the
calendar is run by ``run(env, until)``: ``env.run(until)`` with ``step()`` written into
its loop, which calls ``fn(arg)`` for a bare entry and processes a SimPy event
(``Event``, ``Timeout``, ``AnyOf``) exactly as ``step()`` does. A bare entry is told
from an event's by unpacking it: the few events pay for the exception, the many bare
entries for nothing. An entry cannot be taken
back; a callback that may be superseded (a node's timer) checks when it runs whether it
still applies. It stays on the calendar until then, as a cancelled SimPy event would.

Elsewhere, the hot paths read the clock as ``env._now``, which is what the ``env.now``
property returns, without the property call.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, URGENT, Event

__all__ = ["NORMAL", "Environment", "later", "run", "soon"]


class Environment(simpy.Environment):
    """SimPy's environment, with the FIFO of bare entries due now that ``soon`` fills."""

    def __init__(self, initial_time: float = 0):
        super().__init__(initial_time)
        self._ready: deque = deque()

    def peek(self) -> float:
        return self._now if self._ready else super().peek()


def later(env):
    """``at(delay, fn, arg)``: call ``fn(arg)`` ``delay`` seconds from now."""
    queue = env._queue
    eid = env._eid

    def at(delay: float, fn, arg) -> None:
        heappush(queue, (env._now + delay, NORMAL, next(eid), fn, arg))

    return at


def soon(env: Environment):
    """``now(fn, arg)``: call ``fn(arg)`` at the current time, after what is due already."""
    ready = env._ready
    eid = env._eid

    def now(fn, arg) -> None:
        ready.append((env._now, NORMAL, next(eid), fn, arg))

    return now


def run(env, until=None):
    """``env.run(until)``: process events until ``until`` (an event, a time, or None for
    as long as there are any); the same exceptions when the calendar runs dry."""
    if until is not None:
        if not isinstance(until, Event):
            at = until if isinstance(until, int) else float(until)
            if at <= env._now:
                raise ValueError(f"until ({at}) must be greater than the current simulation time")
            until = Event(env)  # before all regular events at that time
            until._ok = True
            until._value = None
            env.schedule(until, URGENT, at - env._now)
        elif until.callbacks is None:
            return until.value
        until.callbacks.append(StopSimulation.callback)
    queue = env._queue
    ready = env._ready
    try:
        while True:
            if ready and (not queue or ready[0] < queue[0]):
                entry = ready.popleft()
            else:
                try:
                    entry = heappop(queue)
                except IndexError:
                    raise EmptySchedule from None
            try:
                now, _, _, fn, arg = entry  # a bare (time, NORMAL, id, fn, arg)
            except ValueError:
                pass  # a SimPy event's (time, priority, id, event): below
            else:
                env._now = now
                fn(arg)
                continue
            env._now = entry[0]
            ev = entry[3]  # a SimPy event: what step() does
            callbacks = ev.callbacks
            ev.callbacks = None
            for callback in callbacks:
                callback(ev)
            if not ev._ok and not hasattr(ev, "_defused"):
                # A failed event nobody defused crashes the run, as in step().
                exc = type(ev._value)(*ev._value.args)
                exc.__cause__ = ev._value
                raise exc
    except StopSimulation as exc:
        return exc.args[0]
    except EmptySchedule:
        if until is not None:
            assert not until.triggered
            raise RuntimeError(f"No scheduled events left but \"until\" event was not triggered: {until}") from None
    return None
