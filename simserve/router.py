"""The caller-side request router of Ray Serve 2.60, and an ideal one to compare with.

``RayRouter`` follows ``serve/_private/request_router/request_router.py`` and
``pow_2_router.py``:

* Requests wait in the caller's FIFO (two deques, ``to_route`` and ``to_fulfill``, as
  in Ray). Routing tasks run ``min(pending, min(50, 2 * replicas))`` at a time; each
  takes the oldest request it does not yet own and loops until that request has a
  replica, but every replica it finds goes to the *oldest* waiting request (FIFO), and
  a task whose request was served by another task is cancelled.
* Each attempt samples two distinct replicas (``pow2``) or the next in turn
  (``round_robin``), takes the lowest cached queue length below
  ``max_ongoing_requests`` (cache entries expire after 10 s), and otherwise probes the
  candidates (one round trip) and takes the lowest probed length below the limit. A
  probe not answered within ``queue_len_response_deadline_s`` (0.1 s, doubling with
  each back-off step up to ``max_queue_len_response_deadline_s``, 1 s) counts as no
  answer, and its late answer is neither used nor cached.
* When no candidate has room the task sleeps 0, then 0.025, 0.05, ... up to 0.5 s
  before the next attempt, each sleep from 0.025 s on ending ``backoff_sleep_late_s``
  late (measured on the host, like ``idle_wake_s``, and not scaled by ``cpu_speed``). A
  freed slot wakes nobody: under saturation dispatch is polling. The sleeps follow
  candidate sets, not failures: a set that served another request counts too. The probe
  deadline's doubling counts failures only.
* An HTTP proxy's router first samples the replicas on its own node, once per request
  and without a sleep after it (``LocalityMixin``; the proxy prefers its node by
  default, a ``DeploymentHandle`` does not).
* The cache is bumped on send, overwritten by the replica's answer (accepted or
  rejected, with its true queue length) and decremented by the request's done callback,
  which runs when the replica's task has ended (``done_callback_lag_s`` after the
  response reaches the caller): a request routed in between finds the slot taken and
  probes.
* All of it runs on one asyncio loop, one callback at a time (``_drain``): a routing
  task's step holds the loop until the task sleeps, probes or ends, and the requests
  it fulfils are sent (and the cache bumped) only after it. A step whose own request
  is served first goes on to the next, still reading the old cache, so with free
  slots in the cache it can give one replica many requests, which it rejects: under
  heavy queueing this is what collapses Ray's throughput (see validate/README.md).
* A rejected request goes back into both deques at its original position.
* ``max_queued_requests`` counts requests in their routing phase; an arrival that
  finds the count at the limit is rejected at once (``BackPressureError``, HTTP 503).

``IdealRouter`` is no Ray component: it knows every replica's exact occupancy and
hands the oldest waiting request to the least-loaded free slot the instant one frees,
so the difference between the two is what polling and probing cost.

Left out: same-AZ locality, multiplexed-model preferences, failed
probes (a dead replica), request timeouts and client disconnects.

Costs (``Overheads``): each routing attempt (candidate set) costs the caller
``router_attempt_cpu_s`` of GIL work and each send the rest of ``router_cpu_s`` (measured
one request at a time: one attempt and one send), spent before the request leaves; a
router polling full replicas spends little beyond its probes (``validate.attempt_cpu``).
Each probe costs ``probe_cpu_s`` there and ``replica_probe_cpu_s`` in the replica, each
rejected send ``replica_reject_cpu_s`` in the replica and ``reject_cpu_s`` in the caller
before the retry, and every message a hop. The loop's thread spends them one at a time;
the caller's other threads (the client's loop) share the process's GIL with it.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from operator import attrgetter


class _Task:
    __slots__ = ("own", "yields", "failures", "local", "alive")

    def __init__(self):
        self.own = None
        self.yields = 0  # candidate sets tried for ``own``
        self.failures = 0  # of them, the ones with no replica to take (Ray's backoff_index)
        self.local = 0  # 1: the first set was the local-node pass, which neither sleeps nor counts
        self.alive = True


class _Probe:
    """Queue-length probes sent together for one selection; answers as they come back."""

    __slots__ = ("task", "replicas", "answers", "deadline_s", "closed")

    def __init__(self, task, replicas: list, deadline_s: float):
        self.task = task
        self.replicas = replicas
        self.answers: list = []
        self.deadline_s = deadline_s
        self.closed = False  # all answered, or the deadline passed: later answers are dropped


_created_s = attrgetter("created_s")


def _insert_sorted(queue: deque, req) -> None:
    """Reinsert a retried request at its ``created_s`` position (Ray's retry path)."""
    if not queue or req.created_s >= queue[-1].created_s:
        queue.append(req)
        return
    # Bisected in place: a few lookups, where a list of every key cost a tenth of S3's time.
    queue.insert(bisect.bisect_right(queue, req.created_s, key=_created_s), req)


class RayRouter:
    """Power of two choices (or round robin) with cache, probes and back-off polling."""

    def __init__(self, sim, config, process, rng: random.Random, overheads, max_queued_requests: int,
                 local_node=None):
        self.sim = sim
        self.env = sim.env
        self.cfg = config
        self.round_robin = config.policy == "round_robin"
        # An HTTP proxy's router first tries the replicas on its own node, once per request
        # (RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING=1); a handle's does not (its option
        # _prefer_local_routing is False). Power of two choices only (LocalityMixin).
        self.local_node = None if self.round_robin else local_node
        self.process = process  # where the router's CPU is spent (driver or proxy)
        self.rng = rng
        self.hop_s = overheads.hop_s
        self.router_cpu_s = overheads.cpu("router_cpu_s")
        self.attempt_cpu_s = overheads.cpu("router_attempt_cpu_s")
        self.send_cpu_s = self.router_cpu_s - self.attempt_cpu_s  # Overheads checks it is not negative
        self.probe_cpu_s = overheads.cpu("probe_cpu_s")
        self.probe_native_cpu_s = overheads.cpu("probe_native_cpu_s")
        self.reject_cpu_s = overheads.cpu("reject_cpu_s")
        self.reject_native_cpu_s = overheads.cpu("reject_native_cpu_s")
        self.backoff_sleep_late_s = overheads.backoff_sleep_late_s
        # A probe is answered in the instant it is sent (see _send_probes).
        self._instant_probes = (self.hop_s == 0.0 and overheads.cpu("replica_probe_cpu_s") == 0.0
                                and overheads.cpu("replica_probe_native_cpu_s") == 0.0)
        self.max_queued_requests = max_queued_requests
        # What _submit_soon's shortcut needs of the configuration: no routing cost, no
        # local-node pass, no queue limit (tested once here rather than per request).
        self._shortcut = self.router_cpu_s <= 0.0 and self.local_node is None and max_queued_requests == -1
        self.replicas: list = []
        self.to_route: deque = deque()
        self.to_fulfill: deque = deque()
        self.unfulfilled = 0
        self.tasks: set = set()
        self.cache: dict = {}  # replica index -> (queue length, time of the entry)
        self.num_queued = 0  # requests in their routing phase (for max_queued_requests)
        self.queued_area = 0.0  # integral of num_queued dt
        self._queued_last = 0.0
        self._rr_next = 0
        self._waiting_for_replicas: list = []
        self._drawn = None  # candidates _submit_soon drew for a request it hands to the general path
        # The router's asyncio loop (see _run): the current step's continuations, the
        # callbacks queued behind it, whether it runs and whether it spends CPU now.
        self._step: deque = deque()
        self._queued: deque = deque()
        self._running = False
        self._busy = False
        self._tasks_cap = 0  # min(max_num_routing_tasks_cap, 2 * len(replicas))
        self._local: list = []  # the routable replicas on local_node
        self._local_bits = (0, 0)  # as _bits, for _local
        self._bits = (0, 0)  # bit lengths of len(replicas) and len(replicas) - 1
        self.probes = 0
        self.probe_timeouts = 0
        self.attempts = 0

    # -- the router's event loop ---------------------------------------------------------
    def _call_soon(self, fn, arg) -> None:
        """asyncio's ``call_soon`` on the router's loop: ``fn(arg)`` runs after the step
        under way and after every callback queued before it (at once on an idle loop,
        whose queue is then empty)."""
        if self._running or self._busy:
            self._queued.append((fn, arg))
            return
        self._running = True
        try:
            fn(arg)
            self._drain()
        finally:
            self._running = False

    def _call_later(self, pair) -> None:
        self._call_soon(*pair)

    def _soon(self, step, task: _Task) -> None:
        """The step under way goes on with ``step(task)`` once the current call returns
        (always inside ``_drain``): a loop, not a recursion (with zero costs one routing
        task can route thousands of queued requests in one step)."""
        self._step.append((step, task))

    def _cpu(self, cost_s: float, step, task) -> None:
        """The step under way spends ``cost_s`` of GIL work, then goes on: meanwhile the
        loop runs nothing else. A step spends its CPU one piece at a time."""
        assert not self._busy, "a second CPU piece while the loop is busy"
        self._busy = True
        self.process.run_overhead(cost_s, self._cpu_done, (step, task))

    def _cpu_done(self, pair) -> None:
        # The loop is idle now and the step's deque empty (_drain returns only once it is):
        # the step goes on first, then whatever waited behind it.
        self._busy = False
        self._call_soon(*pair)

    def _drain(self) -> None:
        """One thread runs the loop, one callback at a time, and a routing task's step
        holds it until the task suspends (a back-off sleep, a probe, no replicas, its
        end). So a request a step fulfils is sent, and the cache bumped, only after the
        step (``future.set_result`` queues the awaiting ``assign_request``): until then
        the step's own selections see the old queue lengths and can pick a replica again
        that it has just filled, which the replica then rejects."""
        step, queued = self._step, self._queued
        while True:
            if step:
                fn, arg = step.popleft()
            elif self._busy or not queued:
                return
            else:
                fn, arg = queued.popleft()
            fn(arg)

    # -- the replica set -------------------------------------------------------------
    def update_replicas(self, replicas: list) -> None:
        self.replicas = list(replicas)
        self._tasks_cap = min(self.cfg.max_num_routing_tasks_cap, 2 * len(self.replicas))
        self._bits = (len(self.replicas).bit_length(), (len(self.replicas) - 1).bit_length())
        self._local = [r for r in self.replicas if r.node is self.local_node] if self.local_node else []
        self._local_bits = (len(self._local).bit_length(), (len(self._local) - 1).bit_length())
        live = {r.index for r in self.replicas}
        self.cache = {k: v for k, v in self.cache.items() if k in live}
        waiting, self._waiting_for_replicas = self._waiting_for_replicas, []
        for task in waiting:
            if task.alive:
                self._call_soon(self._attempt, task)
        self._maybe_start_tasks()

    # -- queue accounting ----------------------------------------------------------------
    def _set_queued(self, delta: int) -> None:
        now = self.env._now  # env.now without the property call
        self.queued_area += self.num_queued * (now - self._queued_last)
        self._queued_last = now
        self.num_queued += delta

    def queued_area_now(self) -> float:
        self._set_queued(0)
        return self.queued_area

    # -- entry ----------------------------------------------------------------------------
    def submit(self, req) -> None:
        # assign_request runs on the router's loop, handed over by run_coroutine_threadsafe
        # from the caller's thread: in a later turn of the loop, after the caller's own work
        # (so also after the bookkeeping of a replica whose response set off this request).
        self.sim.soon(self._submit_soon, req)

    def _submit_soon(self, req) -> None:
        if self._running or self._busy or self.tasks or self.to_route or not self.replicas or not self._shortcut:
            self._call_soon(self._submit, req)
            return
        # An idle router without costs, as most requests below saturation find it: the
        # routing task the request starts would take it, choose once and, when the cache
        # has room in a candidate and no candidate needs a probe, send it and end, all in
        # this turn of the loop. Done here without the task and the loop's queues (S2 runs
        # 30-39 % faster so), with the same draws, cache and counts; any other outcome goes
        # the general way, with the candidates already drawn (``_drawn``).
        candidates, best, best_len, to_probe = self._select(self.replicas, self._bits)
        if best is None or to_probe:
            self._drawn = candidates
            # _call_soon(self._submit, req) on this idle loop, written out.
            self._running = True
            try:
                self._submit(req)
                self._drain()
            finally:
                self._running = False
            return
        # _enqueue, _submit's on_queued, _fulfill and _send, written out: the request is
        # queued and sent at this instant, so the queued area only moves its clock.
        now = self.env._now
        self.queued_area += self.num_queued * (now - self._queued_last)
        self._queued_last = now
        req.fulfilled = True
        req.task = None
        self.attempts += 1
        self.sim.on_queued()
        self.cache[best.index] = (best_len + 1, now)
        self._running = True
        try:
            self.sim.send(req, best)
            self._drain()
        finally:
            self._running = False

    def _submit(self, req) -> None:
        if self.max_queued_requests != -1 and self.num_queued >= self.max_queued_requests:
            self.sim.on_backpressure(req)
            return
        self._enqueue(req, retry=False)
        self.sim.on_queued()

    def _enqueue(self, req, retry: bool) -> None:
        now = self.env._now  # _set_queued(+1), written out (twice per request with _fulfill's)
        self.queued_area += self.num_queued * (now - self._queued_last)
        self._queued_last = now
        self.num_queued += 1
        req.fulfilled = False
        req.task = None
        self.unfulfilled += 1
        if retry:
            _insert_sorted(self.to_fulfill, req)
            _insert_sorted(self.to_route, req)
        else:
            self.to_fulfill.append(req)
            self.to_route.append(req)
        # _maybe_start_tasks(), its test written out: under saturation most requests find
        # the tasks they need running.
        n, cap = self.unfulfilled, self._tasks_cap
        if (n if n < cap else cap) > len(self.tasks):
            self._maybe_start_tasks()

    # -- routing tasks ----------------------------------------------------------------------
    # The target number of tasks, min(unfulfilled, max_num_routing_tasks_cap, 2 * replicas),
    # is written out where it is read: it is read twice per request.
    def _maybe_start_tasks(self) -> None:
        n, cap = self.unfulfilled, self._tasks_cap
        missing = (n if n < cap else cap) - len(self.tasks)
        if missing <= 0:
            return
        for _ in range(missing):
            task = _Task()
            self.tasks.add(task)
            # asyncio runs a new task after the current callback, not inside it.
            self._call_soon(self._next_own, task)

    def _next_own(self, task: _Task) -> None:
        """The outer loop of ``_fulfill_pending_requests``: pick the next request to own."""
        n, cap = self.unfulfilled, self._tasks_cap
        if task.alive and len(self.tasks) <= (n if n < cap else cap):
            while self.to_route:
                req = self.to_route.popleft()
                if not req.fulfilled:
                    task.own = req
                    task.yields = task.failures = task.local = 0
                    req.task = task
                    if self.local_node is not None and not req.tried_same_node and self._local:
                        # apply_locality_routing: once per request (a retry keeps the flag).
                        req.tried_same_node = True
                        task.local = 1
                    self._attempt(task)
                    return
        self._exit(task)

    def _exit(self, task: _Task) -> None:
        task.alive = False
        self.tasks.discard(task)
        if self.to_route:
            self._maybe_start_tasks()

    def _attempt(self, task: _Task) -> None:
        """One pass of ``_choose_replicas_with_backoff``, sleeping first if due."""
        if not self.replicas:
            self._waiting_for_replicas.append(task)
            return
        task.yields += 1
        k = task.yields - task.local
        # Sleep before candidate set k: none for the 1st and 2nd, then 0.025 * 2**(k-3);
        # the local-node pass before them (k = 0) none either. The sleep ends a little late
        # (asyncio's timer, the thread's wake-up: measured).
        if k >= 3:
            cfg = self.cfg
            delay = min(cfg.initial_backoff_s * cfg.backoff_multiplier ** (k - 3), cfg.max_backoff_s)
            self.sim.later(delay + self.backoff_sleep_late_s, self._call_later, (self._after_sleep, task))
            return
        # _charge_and_choose(task), written out: most requests get a replica on their
        # first attempt, without a sleep.
        self.attempts += 1
        if self.attempt_cpu_s > 0.0:
            self._cpu(self.attempt_cpu_s, self._choose, task)
        else:
            self._choose(task)

    def _after_sleep(self, task: _Task) -> None:
        if task.alive:
            self._charge_and_choose(task)

    def _charge_and_choose(self, task: _Task) -> None:
        self.attempts += 1
        if self.attempt_cpu_s > 0.0:
            self._cpu(self.attempt_cpu_s, self._choose, task)
        else:
            self._choose(task)

    def _select(self, reps: list, bits: tuple) -> tuple:
        """A candidate set and its ranking: (candidates, best, best_len, to_probe).

        The candidates are the next replica of ``reps`` in turn (round robin), or two
        distinct ones at random (its one if it has one); ``bits`` are the bit lengths of
        ``len(reps)`` and ``len(reps) - 1``. A set ``_submit_soon`` drew already is used
        first, so a request it hands on sees the same draw. ``best`` is the candidate whose
        cached queue length is lowest and below its ``max_ongoing_requests``, with that
        length (or None, None); ``to_probe`` the candidates with no entry, one older than
        ``queue_len_cache_timeout_s``, or a full one."""
        candidates = self._drawn
        if candidates is not None:
            self._drawn = None
        elif self.round_robin:
            candidates = [reps[self._rr_next % len(reps)]]
            self._rr_next += 1
        elif len(reps) == 1:
            candidates = [reps[0]]
        else:
            # rng.randrange(n) then rng.randrange(n - 1), inlined: CPython's
            # _randbelow_with_getrandbits, so the same draws as before, for a third of the cost.
            n = len(reps)
            getrandbits = self.rng.getrandbits
            k, km = bits
            i = getrandbits(k)
            while i >= n:
                i = getrandbits(k)
            m = n - 1
            j = getrandbits(km)
            while j >= m:
                j = getrandbits(km)
            if j >= i:
                j += 1
            candidates = [reps[i], reps[j]]
        now = self.env._now
        ttl = self.cfg.queue_len_cache_timeout_s
        cache = self.cache
        best = None
        best_len = None
        to_probe = []
        for r in candidates:
            entry = cache.get(r.index)
            if entry is None or now - entry[1] > ttl or entry[0] >= r.max_ongoing_requests:
                to_probe.append(r)
            elif best is None or entry[0] < best_len:
                best, best_len = r, entry[0]
        return candidates, best, best_len, to_probe

    def _choose(self, task: _Task) -> None:
        if not task.alive:
            return
        if task.own.fulfilled:
            self._next_own(task)
            return
        if not self.replicas:
            self._waiting_for_replicas.append(task)
            return
        if task.local and task.yields == 1 and len(self._local) < len(self.replicas):
            _, best, _, to_probe = self._select(self._local, self._local_bits)
        else:
            _, best, _, to_probe = self._select(self.replicas, self._bits)
        backoff_index = task.failures
        if best is not None:
            if to_probe:
                # A background refresh of the cache: Ray starts it as a task of its own
                # (create_task), which runs, and spends its CPU, after this step.
                self._call_soon(self._background_probe, (to_probe, backoff_index))
            self._fulfill(task, best)
        else:
            self._probe(to_probe, task, backoff_index)

    # -- probes -------------------------------------------------------------------------------
    def _background_probe(self, args) -> None:
        self._probe(args[0], None, args[1])

    def _probe(self, replicas: list, task: _Task | None, backoff_index: int) -> None:
        """``get_num_ongoing_requests`` RPCs to ``replicas``, awaited together: each costs
        the router ``probe_cpu_s`` to send, a hop, the replica's CPU to answer, a hop back.
        ``_probe_queue_lens`` waits at most ``queue_len_response_deadline_s * 2**backoff_index``
        (capped): a replica whose answer is later counts as no answer, so a replica too busy
        to answer in time (its GIL held by handlers) is skipped and the request backs off."""
        self.probes += len(replicas)
        cfg = self.cfg
        deadline_s = min(cfg.queue_len_response_deadline_s * 2.0 ** min(backoff_index, 64),
                         max(cfg.queue_len_response_deadline_s, cfg.max_queue_len_response_deadline_s))
        probe = _Probe(task, replicas, deadline_s)
        if self.probe_native_cpu_s > 0.0:
            self.process.burn(self.probe_native_cpu_s * len(replicas))
        cost = self.probe_cpu_s * len(replicas)
        if cost > 0.0:
            self._cpu(cost, self._send_probes, probe)
        else:
            self._send_probes(probe)

    def _send_probes(self, probe: "_Probe") -> None:
        if self._instant_probes:
            # No hop and no CPU in the replica: every answer is in at once, and the probe
            # done (_probe_arrives, answer_probe, _probe_read and _probe_back, written out).
            probe.answers = [(r, r.ongoing) for r in probe.replicas]
            probe.closed = True
            self._call_soon(self._probed, probe)
            return
        for r in probe.replicas:
            if self.hop_s > 0.0:
                self.sim.later(self.sim.to_replica_s(r), self._probe_arrives, (probe, r))
            else:
                self._probe_arrives((probe, r))
        # asyncio.wait(timeout=deadline) starts once the RPCs are sent; a probe answered
        # in full already (no hop, no replica CPU) has nothing left to wait for.
        if not probe.closed:
            self.sim.later(probe.deadline_s, self._probe_deadline, probe)

    def _probe_arrives(self, pair) -> None:
        pair[1].answer_probe(self._probe_read, pair)

    def _probe_read(self, pair) -> None:
        probe, r = pair
        answer = (probe, r, r.ongoing)
        if self.hop_s > 0.0:
            self.sim.later(self.sim.from_replica_s(r), self._probe_back, answer)
        else:
            self._probe_back(answer)

    def _probe_back(self, answer) -> None:
        probe, r, qlen = answer
        if probe.closed:
            return  # cancelled at the deadline: Ray neither uses nor caches it
        probe.answers.append((r, qlen))
        if len(probe.answers) == len(probe.replicas):
            probe.closed = True
            self._call_soon(self._probed, probe)

    def _probe_deadline(self, probe: "_Probe") -> None:
        if not probe.closed:
            probe.closed = True
            self.probe_timeouts += len(probe.replicas) - len(probe.answers)
            self._call_soon(self._probed, probe)

    def _probed(self, probe: _Probe) -> None:
        task = probe.task
        if task is not None and not task.alive:
            return  # a cancelled task never records its probe results
        now = self.env.now
        best = None
        best_len = None
        for r, qlen in probe.answers:
            if r.state != "RUNNING":
                continue
            self.cache[r.index] = (qlen, now)
            if qlen < r.max_ongoing_requests and (best is None or qlen < best_len):
                best, best_len = r, qlen
        if task is None:
            return
        if task.own.fulfilled:
            self._soon(self._next_own, task)
        elif best is not None:
            self._fulfill(task, best)
        else:
            task.failures += 1
            self._soon(self._attempt, task)

    # -- assignment ----------------------------------------------------------------------------
    def _fulfill(self, task: _Task, replica) -> None:
        """FIFOMixin: the chosen replica goes to the oldest unfulfilled request."""
        while True:
            req = self.to_fulfill.popleft()
            if not req.fulfilled:
                break
        req.fulfilled = True
        self.unfulfilled -= 1
        owner = req.task
        # Nothing reads it again in this routing phase; unlinked, the request and its task
        # (which points back at it) are freed by reference counting, not left as cycles
        # for the garbage collector (a tenth of a large run's time).
        req.task = None
        # A step runs inside _drain, so _call_soon(fn, arg) would queue, and _soon(step,
        # task) append to the step's deque: both written out as that.
        queued = self._queued
        if owner is not None and owner is not task and owner.alive:
            # _cancel_routing_task_for_pending_request: the owner never runs again, but it
            # leaves the task set (and starts its replacement) only when its cancellation
            # is delivered, after this step and before the send queued next.
            owner.alive = False
            queued.append((self._exit, owner))
        queued.append((self._send, (req, replica)))
        self._step.append((self._next_own if task.own.fulfilled else self._attempt, task))

    def _send(self, pair) -> None:
        """``assign_request`` resumes: ``try_send_request`` (the send's CPU), then
        ``on_send_request`` (``_sent``)."""
        if self.send_cpu_s > 0.0:
            self._cpu(self.send_cpu_s, self._sent, pair)
        else:
            self._sent(pair)

    def _sent(self, pair) -> None:
        """The request leaves; it stops counting as queued as the send leaves
        ``wrap_queued_request``, and the cache counts it."""
        req, replica = pair
        now = self.env._now  # _set_queued(-1), written out
        self.queued_area += self.num_queued * (now - self._queued_last)
        self._queued_last = now
        self.num_queued -= 1
        entry = self.cache.get(replica.index)
        self.cache[replica.index] = ((entry[0] if entry else 0) + 1, self.env._now)
        self.sim.send(req, replica)

    # -- answers from replicas (callbacks on the router's loop) ----------------------------------
    # A cache update queues nothing after it: on an idle loop it is a plain call, without
    # _call_soon's drain (S2 runs a few per cent faster so).
    def on_accepted(self, req, replica, qlen: int) -> None:
        if self._running or self._busy:
            self._queued.append((self._new_queue_len, (replica, qlen)))
        else:
            self.cache[replica.index] = (qlen, self.env._now)  # _new_queue_len, written out

    def _new_queue_len(self, pair) -> None:
        replica, qlen = pair
        self.cache[replica.index] = (qlen, self.env._now)

    def on_rejected(self, req, replica, qlen: int) -> None:
        self._call_soon(self._rejected, (req, replica, qlen))

    def _rejected(self, args) -> None:
        """``on_new_queue_len_info``, then the answer's handling and ``result.cancel()``
        (``reject_cpu_s``) before the retry queues the request again."""
        req, replica, qlen = args
        self.cache[replica.index] = (qlen, self.env._now)
        if self.reject_native_cpu_s > 0.0:
            self.process.burn(self.reject_native_cpu_s)
        if self.reject_cpu_s > 0.0:
            self._cpu(self.reject_cpu_s, self._retry, req)
        else:
            self._retry(req)

    def _retry(self, req) -> None:
        self._enqueue(req, retry=True)

    def on_response(self, req, replica) -> None:
        if self._running or self._busy:
            self._queued.append((self._decrement, replica))
            return
        # _decrement(replica), written out: once per request.
        entry = self.cache.get(replica.index)
        if entry is not None:
            self.cache[replica.index] = (entry[0] - 1 if entry[0] > 0 else 0, self.env._now)

    def _decrement(self, replica) -> None:
        """``decrement_queue_len_cache``: max(0, n - 1)."""
        entry = self.cache.get(replica.index)
        if entry is not None:
            self.cache[replica.index] = (entry[0] - 1 if entry[0] > 0 else 0, self.env._now)

    def on_slot_freed(self, replica) -> None:
        """Ray's router is not told when a slot frees: it finds out by polling."""

    def run_on_loop(self, fn, arg) -> None:
        """The caller's other work on this loop (the autoscaling metrics tasks): it waits
        for the step under way and the callbacks queued before it."""
        self._call_soon(fn, arg)


class IdealRouter:
    """Exact occupancy, instant hand-off of the oldest waiting request to a free slot."""

    def __init__(self, sim, max_queued_requests: int):
        self.sim = sim
        self.env = sim.env
        self.max_queued_requests = max_queued_requests
        self.replicas: list = []
        self.waiting: deque = deque()
        self.reserved: dict = {}  # replica index -> slots promised (sent, not finished)
        # free[k]: replicas with k reserved slots and room for more (dicts keep order).
        self.free: list = []
        self._routable: set = set()  # indices of the replicas in the routing set
        self.queued_area = 0.0
        self._queued_last = 0.0
        self.probes = 0
        self.probe_timeouts = 0
        self.attempts = 0

    def update_replicas(self, replicas: list) -> None:
        self.replicas = list(replicas)
        self._routable = {r.index for r in replicas}
        limit = max((r.max_ongoing_requests for r in replicas), default=0)
        self.free = [dict() for _ in range(limit + 1)]
        for r in replicas:
            k = self.reserved.setdefault(r.index, 0)
            if k < r.max_ongoing_requests:
                self.free[k][r] = None
        self._drain()

    def _area(self) -> None:
        now = self.env.now
        self.queued_area += len(self.waiting) * (now - self._queued_last)
        self._queued_last = now

    def queued_area_now(self) -> float:
        self._area()
        return self.queued_area

    @property
    def num_queued(self) -> int:
        return len(self.waiting)

    def _least_loaded_free(self):
        for bucket in self.free:
            if bucket:
                return next(iter(bucket))
        return None

    def submit(self, req) -> None:
        replica = self._least_loaded_free() if not self.waiting else None
        if replica is not None:
            self.sim.on_queued()
            self._send(req, replica)
            return
        if self.max_queued_requests != -1 and len(self.waiting) >= self.max_queued_requests:
            self.sim.on_backpressure(req)
            return
        self._area()
        self.waiting.append(req)
        self.sim.on_queued()

    def _send(self, req, replica) -> None:
        k = self.reserved[replica.index]
        del self.free[k][replica]
        k += 1
        self.reserved[replica.index] = k
        if k < replica.max_ongoing_requests:
            self.free[k][replica] = None
        self.sim.send(req, replica)

    def _drain(self) -> None:
        while self.waiting:
            replica = self._least_loaded_free()
            if replica is None:
                return
            self._area()
            self._send(self.waiting.popleft(), replica)

    def run_on_loop(self, fn, arg) -> None:
        """No loop here: the caller's other work runs at once."""
        fn(arg)

    def on_slot_freed(self, replica) -> None:
        k = self.reserved[replica.index]
        self.reserved[replica.index] = k - 1
        if replica.index not in self._routable:
            return  # taken out of the routing set (stopping): it only finishes its requests
        if k < replica.max_ongoing_requests:
            del self.free[k][replica]
        self.free[k - 1][replica] = None
        self._drain()

    def on_accepted(self, req, replica, qlen: int) -> None:
        pass

    def on_rejected(self, req, replica, qlen: int) -> None:
        raise AssertionError("the ideal router never over-sends")

    def on_response(self, req, replica) -> None:
        pass
