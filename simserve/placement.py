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


class Placer:
    """Ray's scheduler as far as replicas care: reserve on a node, release on exit."""

    def __init__(self, nodes: list, strategy: str = "spread"):
        self.nodes = nodes
        self.strategy = strategy
        self._turn = 0

    def place(self, num_cpus: float):
        """The node that now hosts a replica of ``num_cpus``, or None if none has room."""
        need = _units(num_cpus)
        free = [_units(n.num_cpus) - _units(n.reserved_cpus) for n in self.nodes]
        chosen = None
        if self.strategy == "pack":
            fitting = [i for i in range(len(self.nodes)) if free[i] >= need]
            if fitting:
                chosen = min(fitting, key=lambda i: (free[i], i))
        else:
            for step in range(len(self.nodes)):
                i = (self._turn + step) % len(self.nodes)
                if free[i] >= need:
                    chosen = i
                    self._turn = i + 1
                    break
        if chosen is None:
            return None
        node = self.nodes[chosen]
        node.reserved_cpus += num_cpus
        return node

    @staticmethod
    def release(node, num_cpus: float) -> None:
        node.reserved_cpus = (_units(node.reserved_cpus) - _units(num_cpus)) / _UNIT


def place(num_replicas: int, num_cpus: float, nodes: list, strategy: str = "spread") -> list:
    """Each of ``num_replicas`` replicas' node (None when it stays pending)."""
    placer = Placer(nodes, strategy)
    return [placer.place(num_cpus) for _ in range(num_replicas)]
