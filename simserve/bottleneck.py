"""Name the resource that limits a run, in one line a Ray Serve user can act on.

The checks go from the hardest limit to the softest: replicas that could not be
placed, saturated physical cores, an async handler's event loop blocked by CPU work
(which serialises even GIL-free work), a saturated GIL, replicas full at ``max_ongoing_requests`` with requests queued in
the router, and finally the clients (or an open-loop load below capacity). The
thresholds (90% busy, 80% of the slots) are judgement, not Ray constants.
"""

from __future__ import annotations

import math

BUSY = 0.9
FULL = 0.8


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def diagnose(cfg, summary: dict, replicas) -> str:
    d = cfg.deployment
    reps = summary["replicas"]
    pending_note = ""
    if reps["pending"]:
        free = sum(n["logical_cpus"] - n["logical_reserved_cpus"] for n in summary["nodes"])
        pending_note = (
            f"; logical CPUs exhausted: {reps['pending']} of {reps['requested']} replicas pending "
            f"(each needs num_cpus={d.num_cpus:g}, {free:g} free)"
        )
    if reps["running"] == 0:
        return "logical CPUs exhausted: no replica could be placed" + pending_note
    running = replicas[replicas["state"] == "RUNNING"]
    nodes = summary["nodes"]
    hot = max(nodes, key=lambda n: n["physical_busy"] if math.isfinite(n["physical_busy"]) else -1)
    if math.isfinite(hot["physical_busy"]) and hot["physical_busy"] >= BUSY:
        return (
            f"physical cores saturated: node {hot['node']}'s {hot['physical_cores']:g} cores are "
            f"{_pct(hot['physical_busy'])} busy" + pending_note
        )
    if d.handler == "async":
        loop = running["loop_busy"].max()
        if loop >= BUSY:
            return (
                f"async handler CPU-bound: the user event loop is busy {_pct(loop)} of the time, "
                "so requests run one at a time per replica" + pending_note
            )
    gil = running["gil_busy"].max()
    if gil >= BUSY:
        return (
            f"GIL-bound: each replica's Python work holds its GIL up to {_pct(gil)} of the time; "
            "more num_cpus per replica will not help, more replicas will" + pending_note
        )
    fill = running["mean_ongoing"].mean() / d.max_ongoing_requests
    queued = summary["router"]["mean_queued"]
    if queued >= 0.5 and fill >= FULL:
        return (
            f"replicas at max_ongoing_requests ({d.max_ongoing_requests}) with {queued:.1f} requests "
            "queued in the router on average" + pending_note
        )
    if queued >= 0.5:
        return (
            f"router: {queued:.1f} requests wait in the router on average while replicas hold only "
            f"{_pct(fill)} of their slots (back-off polling and probes)" + pending_note
        )
    util = running["utilisation"].mean()
    if cfg.workload.kind == "closed":
        return (
            f"clients: {cfg.workload.concurrent} concurrent clients keep replicas busy {_pct(util)} "
            "of the time; more clients would raise throughput" + pending_note
        )
    return f"none: the offered load keeps replicas busy {_pct(util)} of the time" + pending_note
