"""Where Ray places replicas: by logical CPUs only, and never beyond them.

A replica reserves ``ray_actor_options.num_cpus`` logical CPUs. Ray admits an actor
onto a node only if that many are still unreserved there; an actor that fits nowhere
stays ``PENDING_ALLOCATION`` for ever, receives no traffic, and ``serve.run`` waits on
it indefinitely (``serve/_private/deployment_state.py``). Physical cores play no part:
``ray.init(num_cpus=8)`` on a 2-core machine places 8 one-CPU replicas.

SPREAD (Serve's default) takes nodes in turn, skipping those without room, as Ray's
spread policy walks nodes round robin; PACK fills the most reserved node that still
fits first. Ray accounts resources in units of 1/10000, so we compare in those units.

Left out: custom resources, ``max_replicas_per_node``, placement groups, GPUs.
"""

from __future__ import annotations

_UNIT = 10_000


def _units(cpus: float) -> int:
    return round(cpus * _UNIT)


def place(num_replicas: int, num_cpus: float, nodes: list, strategy: str = "spread") -> list:
    """Return each replica's node (or None when it stays pending); reserves on the nodes."""
    need = _units(num_cpus)
    free = [_units(n.num_cpus) - _units(n.reserved_cpus) for n in nodes]
    out = []
    turn = 0
    for _ in range(num_replicas):
        chosen = None
        if strategy == "pack":
            fitting = [i for i in range(len(nodes)) if free[i] >= need]
            if fitting:
                chosen = min(fitting, key=lambda i: (free[i], i))
        else:
            for step in range(len(nodes)):
                i = (turn + step) % len(nodes)
                if free[i] >= need:
                    chosen = i
                    turn = i + 1
                    break
        if chosen is None:
            out.append(None)
            continue
        free[chosen] -= need
        nodes[chosen].reserved_cpus += num_cpus
        out.append(nodes[chosen])
    return out
