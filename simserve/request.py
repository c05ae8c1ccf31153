"""One request's life: created by a client, routed, admitted by a replica, answered.

A plain record with ``__slots__``; the simulation moves it along with callbacks rather
than a generator per request, which is what keeps a million requests cheap.
"""

from __future__ import annotations

OK = "ok"
REJECTED = "rejected"  # max_queued_requests overflow: BackPressureError, HTTP 503
FAILED = "failed"  # held by a replica that was force-stopped: HTTP 500
IN_FLIGHT = "in_flight"
NAN = float("nan")  # one object: float("nan") per field would cost half the constructor


class Request:
    __slots__ = (
        "id",
        "client",
        "created_s",
        "dispatch_s",
        "start_s",
        "done_s",
        "released_s",
        "end_s",
        "replica",
        "status",
        "demand",
        "segment",
        "fulfilled",
        "task",
        "tried_same_node",
    )

    def __init__(self, rid: int, client: int, created_s: float, demand: list):
        self.id = rid
        self.client = client  # closed-loop client index, -1 for open-loop arrivals
        self.created_s = created_s  # sent by the client
        self.dispatch_s = NAN  # accepted by a replica
        self.start_s = NAN  # handler starts
        self.done_s = NAN  # handler done, the response leaves
        self.released_s = NAN  # the replica frees the slot
        self.end_s = NAN  # answer back at the client
        self.replica = -1
        self.status = IN_FLIGHT
        self.demand = demand  # per-segment durations, sampled at creation
        self.segment = 0
        self.fulfilled = False  # the router has picked a replica for it
        self.task = None  # the routing task that owns it
        self.tried_same_node = False  # had its local-node pass (an HTTP proxy's router)
