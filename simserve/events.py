"""The simulation's internal events, and the loop that runs SimPy's calendar.

SimPy's ``Environment.step()`` pops ``(time, priority, id, event)`` off the calendar,
swaps the event's ``callbacks`` for None, calls each callback with the event, and then
reads ``event._ok`` (and ``_defused`` only when that is false). That is everything it
asks of an event. So ``Call(fn, arg)``, an object with those attributes whose one
callback calls ``fn(arg)``, put on the calendar with ``NORMAL`` priority, is driven by
SimPy's own loop exactly as ``env.timeout(delay, arg)`` with one callback appended would
be: same calendar, same order (time, then priority, then insertion), at a fraction of
the cost, with no callback list and no validation of the delay (the callers never pass
a negative one). To cancel one that has not fired, set its ``callbacks`` to ``()``: it
stays on the calendar (so ``env.peek()`` and the end of a run are as before), and the
loop pops it doing nothing.

``later(env)`` returns ``at(delay, fn, arg)``, which schedules a ``Call`` and returns
it: what ``env.schedule(Call(fn, arg), NORMAL, delay)`` does (push
``(now + delay, NORMAL, next id, event)`` on ``env._queue``, ids from ``env._eid``),
without the method call.

``run(env, until)`` is ``env.run(until)`` with ``step()`` written into its loop, and a
``Call`` run as ``fn(arg)`` directly: the same events in the same order with the same
effects, without two Python calls per event. Any SimPy event (``Event``, ``Timeout``,
``AnyOf``) on the calendar is processed as ``step()`` would.

Elsewhere, the hot paths read the clock as ``env._now``, which is what the ``env.now``
property returns, without the property call.
"""

from __future__ import annotations

from heapq import heappop, heappush

from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, URGENT, Event

__all__ = ["NORMAL", "Call", "later", "run"]


def _run(ev: "Call") -> None:
    ev.fn(ev.arg)


_RUN = (_run,)


class Call:
    __slots__ = ("callbacks", "fn", "arg")
    _ok = True  # read by Environment.step() after the callbacks

    def __init__(self, fn, arg):
        self.callbacks = _RUN  # step() replaces the attribute, never mutates the tuple
        self.fn = fn
        self.arg = arg


def later(env):
    """``at(delay, fn, arg)``: call ``fn(arg)`` ``delay`` seconds from now; returns the
    scheduled ``Call`` (to cancel it)."""
    queue = env._queue
    eid = env._eid

    def at(delay: float, fn, arg) -> Call:
        ev = Call(fn, arg)
        heappush(queue, (env._now + delay, NORMAL, next(eid), ev))
        return ev

    return at


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
    try:
        while True:
            try:
                env._now, _, _, ev = heappop(queue)
            except IndexError:
                raise EmptySchedule from None
            callbacks = ev.callbacks
            ev.callbacks = None
            if callbacks is _RUN:
                ev.fn(ev.arg)
                continue
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
