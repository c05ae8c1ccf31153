"""The Serve controller's side of one deployment: its replica count and lifecycle.

The controller reconciles the replicas with a target count (fixed ``num_replicas``, or
what the autoscaler decides, see ``autoscaling.py``):

* A new replica asks Ray for ``num_cpus`` logical CPUs and stays
  ``PENDING_ALLOCATION`` until a node has them (no timeout, as in Ray); replicas
  freed by a stop let pending ones in, in creation order.
* Allocated, it is ``STARTING`` for Ray's start-up time, then the user's ``__init__``
  (``init_s``), then ``RUNNING``; the long-poll push reaches every router at once.
  Ray's part, ``Overheads.replica_startup_s`` on the idle host ``validate`` measured it
  on, is first the new process's own CPU (``replica_startup_cpu_s``), run as one
  thread's work on its node, so that it takes longer when the node's cores are busy or
  the host is slow (``cpu_speed``), then the rest, a fixed wait. Both parts are scaled
  by one gamma draw per replica, of mean 1 and cv ``replica_startup_cv``.
* To scale down it picks victims as Ray does (``autoscaling.choose_downscale_victims``).
  A stopped replica leaves the routers at once, then checks every
  ``graceful_shutdown_wait_loop_s`` whether it is idle, and exits when it is or when
  ``graceful_shutdown_timeout_s`` has passed; requests it still holds then fail
  (HTTP 500). It keeps its CPUs until it exits.

At t=0 the initial replicas that fit are already ``RUNNING``: a run starts from a
deployed application, not from ``serve.run``.

Left out: constructor failures and retries, failed health checks (their CPU is in
``replica_idle_cores``), rolling updates; a replica
stopped while starting still burns the rest of its start-up CPU (Ray kills the process).
"""

from __future__ import annotations

from simserve.autoscaling import ReplicaRecord, choose_downscale_victims
from simserve.distributions import Distribution
from simserve.placement import Placer
from simserve.replica import PENDING, RUNNING, STARTING, STOPPED, STOPPING, Replica


class Controller:
    def __init__(self, sim, deployment, overheads, placer: Placer, rng):
        self.sim = sim
        self.env = sim.env
        self.d = deployment
        self.placer = placer
        self.overheads = overheads
        # Ray's part of a start-up varies from replica to replica (gamma, the measured
        # spread); the user's __init__ is as given.
        kind = "gamma" if overheads.replica_startup_cv > 0 else "deterministic"
        self._startup_factor = Distribution(kind, 1.0, overheads.replica_startup_cv).sampler(rng)
        self._startup_cpu_s = overheads.cpu("replica_startup_cpu_s")
        self._startup_wait_s = overheads.replica_startup_s - overheads.replica_startup_cpu_s
        self._idle_cores = overheads.cpu("replica_idle_cores")
        self.replicas: list[Replica] = []  # every replica ever created, by index
        self.target = 0
        self.routers: list = []

    # -- views ---------------------------------------------------------------------------
    def live(self) -> list[Replica]:
        """Replicas counted against the target (not stopping or stopped)."""
        return [r for r in self.replicas if r.state in (PENDING, STARTING, RUNNING)]

    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == RUNNING]

    def count(self, state: str) -> int:
        return sum(1 for r in self.replicas if r.state == state)

    # -- reconciliation ----------------------------------------------------------------------
    def start(self, n: int) -> None:
        """The deployed state at t=0: ``n`` replicas, running where they fit."""
        self.target = n
        for _ in range(n):
            r = self._new_replica()
            node = self.placer.place(self.d.num_cpus)
            if node is not None:
                r.allocate(node)
                self._run(r)
        self._publish()

    def _run(self, r: Replica) -> None:
        r.state = RUNNING
        r.running_since_s = self.env.now
        r.idle_load = r.node.occupy(self._idle_cores)  # its periodic tasks, until it exits

    def set_target(self, n: int) -> None:
        self.target = n
        live = self.live()
        if n > len(live):
            for _ in range(n - len(live)):
                self._new_replica()
            self._allocate_pending()
        elif n < len(live):
            records = [
                ReplicaRecord(
                    r.index,
                    r.state,
                    r.node.index if r.node is not None else -1,
                    r.node is not None and r.node.index == 0,
                    r.running_since_s if r.state == RUNNING else r.created_s,
                )
                for r in live
            ]
            for index in choose_downscale_victims(records, len(live) - n):
                self._stop(self.replicas[index])

    def _new_replica(self) -> Replica:
        r = Replica(self.sim, len(self.replicas), self.d, self.overheads)
        self.replicas.append(r)
        return r

    def _allocate_pending(self) -> None:
        for r in self.replicas:
            if r.state != PENDING:
                continue
            node = self.placer.place(self.d.num_cpus)
            if node is None:
                return  # all replicas ask for the same num_cpus: none later fits either
            r.allocate(node)
            factor = self._startup_factor()
            r.process.boot(factor * self._startup_cpu_s, self._booted, (r, factor))

    def _booted(self, args) -> None:
        r, factor = args
        self.sim.at(self.env.now + factor * self._startup_wait_s + self.d.init_s, self._started, r)

    def _started(self, r: Replica) -> None:
        if r.state != STARTING:
            return  # stopped while starting
        self._run(r)
        self._publish()

    def _publish(self) -> None:
        """The long-poll push: every router learns the running set at once."""
        running = self.running()
        for router in self.routers:
            router.update_replicas(running)

    # -- stopping ---------------------------------------------------------------------------------
    def _stop(self, r: Replica) -> None:
        if r.state == PENDING:
            r.state = STOPPED
            return
        if r.state == STARTING:
            self._exit(r)
            return
        r.state = STOPPING
        r.stopping_since = self.env.now
        self._publish()
        self.sim.at(self.env.now + self.d.graceful_shutdown_wait_loop_s, self._drain_check, r)

    def _drain_check(self, r: Replica) -> None:
        waited = self.env.now - r.stopping_since
        if r.ongoing == 0 or waited >= self.d.graceful_shutdown_timeout_s - 1e-9:
            self._exit(r)
            return
        delay = min(self.d.graceful_shutdown_wait_loop_s, self.d.graceful_shutdown_timeout_s - waited)
        self.sim.at(self.env.now + delay, self._drain_check, r)

    def _exit(self, r: Replica) -> None:
        r.state = STOPPED
        if r.idle_load is not None:
            r.node.vacate(r.idle_load)
            r.idle_load = None
        self.placer.release(r.node, self.d.num_cpus)
        self._allocate_pending()
