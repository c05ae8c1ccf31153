"""The simulation's internal events: a callback at a later time, lighter than a ``Timeout``.

SimPy's ``Environment.step()`` pops ``(time, priority, id, event)`` off the calendar,
swaps the event's ``callbacks`` for None, calls each callback with the event, and then
reads ``event._ok`` (and ``_defused`` only when that is false). That is everything it
asks of an event. So an object with those attributes, put on the calendar with the
public ``env.schedule(event, NORMAL, delay)``, is driven by SimPy's own loop exactly as
``env.timeout(delay, value)`` with one callback appended would be: same calendar, same
order (time, then priority, then insertion), at about two thirds of the cost, with no
callback list and no validation of the delay (the callers never pass a negative one).

``Wake(callback, value)``: ``callback(event)`` reads ``event._value``, as with a Timeout.
``Call(fn, arg)``: calls ``fn(arg)``. To cancel one that has not fired, set its
``callbacks`` to ``()``: it stays on the calendar (so ``env.peek()`` and the end of a run
are as before), and SimPy pops it doing nothing.

Elsewhere, the hot paths read the clock as ``env._now``, which is what the ``env.now``
property returns, without the property call.
"""

from __future__ import annotations

from simpy.events import NORMAL

__all__ = ["NORMAL", "Wake", "Call"]


class Wake:
    __slots__ = ("callbacks", "_value")
    _ok = True  # read by Environment.step() after the callbacks

    def __init__(self, callback, value=None):
        self.callbacks = (callback,)
        self._value = value


def _run(ev: "Call") -> None:
    ev.fn(ev.arg)


_RUN = (_run,)


class Call:
    __slots__ = ("callbacks", "fn", "arg")
    _ok = True

    def __init__(self, fn, arg):
        self.callbacks = _RUN  # step() replaces the attribute, never mutates the tuple
        self.fn = fn
        self.arg = arg

