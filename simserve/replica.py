"""One Serve replica: an actor process with ``max_ongoing_requests`` slots.

Ray 2.60 admits a request only while its semaphore of ``max_ongoing_requests`` slots
is not locked, and rejects it otherwise (``handle_request_with_rejection`` in
``serve/_private/replica.py``); the slot is held until the response is complete.

What runs where:
* Ray's own per-request work (admission, (de)serialisation, the reply, the release)
  runs on the replica's main loop thread and holds the GIL (``Overheads.replica_cpu_s``),
  in ``replica_gil_acquisitions`` separate takes of the GIL before the handler (the
  acceptance's answer leaves after the first ``replica_accept_gil_acquisitions`` of them),
  ``replica_response_gil_acquisitions`` between it and the response and
  ``replica_release_gil_acquisitions`` after the response, the slot still held until
  they end; its answer to a queue-length probe in ``replica_probe_gil_acquisitions``:
  behind a handler that holds the GIL, each take waits its switch interval and, when it
  wakes the main loop's thread, costs ``replica_gil_handoff_cpu_s`` more CPU, so a
  CPU-bound handler slows every request's way in and out of its replica, holds its slots
  after the answers, and slows its answers to the router's probes.
  A handler's thread that waits for the GIL pays the same, and a ``def`` handler's
  thread that runs beside another's pays it again for each switch interval of its work
  (CPython hands the GIL between them every interval; ``Process.run_handler_gil``).
  Left out: what being pre-empted by Ray's takes costs the thread that gives the GIL up
  (the calibration's spinner pays it in its own CPU, which is subtracted).
* The main loop answers its calls in turn: each call's work up to its answer (a probe's,
  a rejection's, an acceptance's) waits for the call ahead of it; a call whose turn comes
  as that one ends goes on with the GIL the loop holds, without takes of its own
  (``_in_order``). Left out: Ray's queued calls still waited about two switch intervals
  each beside a spinning thread (validate/README.md item 42), and the capacity check runs
  on arrival, not at the call's turn.
* An ``async def`` handler runs on the user-code event loop: its CPU segments (``gil``
  and ``native`` alike, since a blocking call blocks the loop) run one at a time in
  arrival order, while ``io`` segments (awaits) interleave freely.
* A plain ``def`` handler runs in a thread pool of ``max_ongoing_requests`` threads
  (``RAY_SERVE_RUN_SYNC_IN_THREADPOOL=1``): every admitted request has a thread, its
  ``gil`` segments share the process's GIL, ``native`` segments run in parallel. The
  call through the pool (anyio's ``to_thread.run_sync``) costs ``replica_sync_cpu_s``
  of Python (and ``replica_sync_native_cpu_s`` of C++ threads, beside the path) more
  than an async call: the Python charged as GIL work on the handler's thread before
  its first segment, in the same take as a first ``gil`` segment (the pool's thread
  picks the call up and runs the handler without letting the GIL go). Left out: that
  part of it runs on the event loop's threads, before and after.
* ``native`` work uses ``OMP_NUM_THREADS = max(floor(num_cpus), 1)`` threads.

The lifecycle (``controller.py`` drives it): ``PENDING_ALLOCATION`` until a node has
the logical CPUs, ``STARTING`` while Ray creates the actor and runs ``__init__``,
``RUNNING`` (routable), ``STOPPING`` while it drains, ``STOPPED`` once it exits and
frees its CPUs. Only a ``RUNNING`` replica admits requests; any other rejects them,
and the router sends them elsewhere.

Left out: health checks and failures, ``@serve.batch``, and outbound calls to other
deployments.
"""

from __future__ import annotations

from collections import deque

from simserve.cpu import Node
from simserve.request import FAILED

PENDING = "PENDING_ALLOCATION"
STARTING = "STARTING"
RUNNING = "RUNNING"
STOPPING = "STOPPING"
STOPPED = "STOPPED"


class Replica:
    def __init__(self, sim, index: int, deployment, overheads):
        self.sim = sim
        self.env = sim.env
        self.index = index
        self.node: Node | None = None
        self.process = None
        self.state = PENDING
        self.created_s = sim.env.now
        self.running_since_s = float("nan")
        self.idle_load = None  # the node's load for its periodic tasks while it runs (Node.occupy)
        self.max_ongoing_requests = deployment.max_ongoing_requests
        self.is_async = deployment.handler == "async"
        self.omp_num_threads = deployment.omp_num_threads
        self.kinds = tuple(s.kind for s in deployment.work.segments)
        self._segments = len(self.kinds)  # read twice per request
        self.replica_cpu_s = overheads.cpu("replica_cpu_s")
        self.gil_acquisitions = overheads.replica_gil_acquisitions
        # The takes before the acceptance leaves (none without replica_cpu_s: it leaves on
        # admission, Simulation._deliver).
        self.accept_takes = overheads.replica_accept_gil_acquisitions if self.replica_cpu_s > 0.0 else 0
        self._takes_after_accept = self.gil_acquisitions - self.accept_takes
        response = overheads.replica_response_gil_acquisitions
        release = overheads.replica_release_gil_acquisitions
        # One take's share of replica_cpu_s, the takes after the handler counted too.
        self._take_cpu_s = self.replica_cpu_s / (self.gil_acquisitions + response + release)
        # The takes after the handler there are (none without replica_cpu_s).
        self._response_takes = response if self.replica_cpu_s > 0.0 else 0
        self._release_takes = release if self.replica_cpu_s > 0.0 else 0
        self.probe_gil_acquisitions = overheads.replica_probe_gil_acquisitions
        self.post_cpu_s = overheads.cpu("replica_post_cpu_s")
        # Ray's work after the response holds the slot (its takes, replica_post_cpu_s).
        self._holds_after_response = bool(self._release_takes) or self.post_cpu_s > 0.0
        self.replica_native_cpu_s = overheads.cpu("replica_native_cpu_s")
        self.sync_cpu_s, self.sync_native_cpu_s = overheads.pool_cpu(deployment.handler)
        self.probe_cpu_s = overheads.cpu("replica_probe_cpu_s")
        self.probe_native_cpu_s = overheads.cpu("replica_probe_native_cpu_s")
        self.reject_cpu_s = overheads.cpu("replica_reject_cpu_s")
        self.reject_native_cpu_s = overheads.cpu("replica_reject_native_cpu_s")
        self.wake = overheads.wake_cpu("replica")
        self.gil_handoff_cpu_s = overheads.cpu("replica_gil_handoff_cpu_s")
        self._ray_takes = 0  # Ray's takes of the GIL submitted and not yet done
        # Calls whose work up to their answer waits for the one under way (_in_order).
        self._answering = False
        self._answer_queue: deque = deque()
        self.ongoing = 0
        self.completed = 0
        self.rejected = 0
        # The async user loop: busy while a CPU segment runs; FIFO of those waiting.
        self._loop_busy = False
        self._loop_waiting: deque = deque()
        self.loop_busy_s = 0.0
        self._loop_since = 0.0
        # Time integrals for utilisation and mean ongoing requests.
        self._last = 0.0
        self.ongoing_area = 0.0
        self.busy_s = 0.0

    # -- lifecycle (driven by the controller) -------------------------------------
    def allocate(self, node: Node) -> None:
        self.node = node
        self.process = node.process(f"replica-{self.index}")
        self.process.wake = self.wake
        if node.batched_cpu_factor != 1.0:
            self.process.others = self._holds_others
        self.state = STARTING
        self._last = self.env.now

    def _holds_others(self) -> bool:
        """More than one request admitted and not yet answered (``Process.others``)."""
        return self.ongoing > 1

    # -- admission --------------------------------------------------------------
    def _account(self) -> None:
        now = self.env._now  # env.now without the property call
        dt = now - self._last
        if dt > 0.0 and self.ongoing:
            self.ongoing_area += dt * self.ongoing
            self.busy_s += dt
        self._last = now

    def admit(self, req) -> bool:
        """Take a slot for ``req`` if running with one free (Ray: ``not semaphore.locked()``);
        ``begin`` then runs it, once the acceptance is on its way."""
        if self.state != RUNNING or self.ongoing >= self.max_ongoing_requests:
            self.rejected += 1
            return False
        self._account()
        self.ongoing += 1
        req.replica = self.index
        req.dispatch_s = self._last  # now, as of _account()
        req.segment = 0
        return True

    def begin(self, req) -> None:
        if self.replica_native_cpu_s > 0.0:
            self.process.burn(self.replica_native_cpu_s)
        if self.accept_takes:
            self._in_order((self._take_cpu_s, self.accept_takes, self._accept, (req, self.ongoing)))
        elif self.replica_cpu_s > 0.0:
            self._gil_takes((self._take_cpu_s, self.gil_acquisitions, self._start, req))
        else:
            self._start(req)

    def _accept(self, pair) -> None:
        """The acceptance leaves, with the queue length at admission (Ray reads it in the
        step that checks the capacity, and yields it at once); the rest of the takes before
        the handler follow. Left out: Ray checks the capacity only when the call's turn on
        its main loop comes, simserve on arrival."""
        req, qlen = pair
        self.sim.answer_accepted(req, self, qlen)
        if self._takes_after_accept:
            self._gil_takes((self._take_cpu_s, self._takes_after_accept, self._start, req))
        else:
            self._start(req)

    def _gil_takes(self, state) -> None:
        """Ray's Python work for one call, ``burst`` seconds in each of ``left`` separate
        takes of the GIL, then ``callback(arg)``.

        Ray's takes all run on the main loop's thread, one after another. A take that must
        wait for the GIL while another of Ray's is under way waits on a thread already
        awake: no hand-over. With none under way the holder is a handler's thread, and the
        main loop's is woken to take it: ``replica_gil_handoff_cpu_s``."""
        handoff_s = 0.0 if self._ray_takes else self.gil_handoff_cpu_s
        self._ray_takes += 1
        self.process.run_overhead(state[0], self._take_done, state, handoff_s)

    def _take_done(self, state) -> None:
        self._ray_takes -= 1
        burst, left, callback, arg = state
        if left > 1:
            self._gil_takes((burst, left - 1, callback, arg))
        else:
            callback(arg)

    # -- the handler --------------------------------------------------------------
    def answer_probe(self, callback, arg) -> None:
        """``get_num_ongoing_requests``: the main loop's CPU, then ``callback(arg)``."""
        self._short_call(self.probe_native_cpu_s, self.probe_cpu_s, callback, arg)

    def answer_reject(self, callback, arg) -> None:
        """A rejection (``handle_request_with_rejection`` finding the slots full): the main
        loop's CPU, warning log line included, then ``callback(arg)``."""
        self._short_call(self.reject_native_cpu_s, self.reject_cpu_s, callback, arg)

    def _short_call(self, native_s: float, cpu_s: float, callback, arg) -> None:
        """One short actor call on the main loop: ``native_s`` in the C++ threads beside
        it, ``cpu_s`` of Python in ``replica_probe_gil_acquisitions`` takes of the GIL (a
        rejection's takes are not measured apart from a probe's), then ``callback(arg)``."""
        if self.process is None:
            callback(arg)
            return
        if native_s > 0.0:
            self.process.burn(native_s)
        if cpu_s > 0.0:
            n = self.probe_gil_acquisitions
            self._in_order((cpu_s / n, n, callback, arg))
        else:
            callback(arg)

    def _in_order(self, state) -> None:
        """A call's work up to its answer (a probe's, a rejection's, an acceptance's), one
        call after another in arrival order: Ray's main loop runs each call up to its answer
        in one go, so a burst of calls is answered in turn, not all at the end of the burst.
        A call that finds the loop idle takes the GIL its measured number of times; one whose
        turn comes as the call ahead of it ends runs on the loop's thread, which holds the GIL
        already: its whole work in one go, without a take of its own (beside a spinning
        thread Ray answered 50 probes fired at once within 493 ms, where 4 takes each
        would have cost a second: validate/README.md item 42). The rest of Ray's takes, and
        the handlers, share the GIL with them."""
        if self._answering:
            self._answer_queue.append(state)
        else:
            self._answering = True
            self._gil_takes((state[0], state[1], self._answered, state))

    def _answered(self, state) -> None:
        if self._answer_queue:
            nxt = self._answer_queue.popleft()
            self._ray_takes += 1
            self.process.continue_overhead(nxt[0] * nxt[1], self._continued, nxt)
        else:
            self._answering = False
        state[2](state[3])

    def _continued(self, state) -> None:
        self._ray_takes -= 1
        self._answered(state)

    def _start(self, req) -> None:
        req.start_s = self.env._now
        if self.sync_cpu_s > 0.0 or self.sync_native_cpu_s > 0.0:
            self._through_pool(req)
        else:
            self._next_segment(req)

    def _through_pool(self, req) -> None:
        """A ``def`` handler's call reaches its pool thread: ``replica_sync_cpu_s`` of GIL
        work on that thread, in one take with the handler's first ``gil`` segment."""
        if self.sync_native_cpu_s > 0.0:
            self.process.burn(self.sync_native_cpu_s)
        work_s = self.process.overhead_cpu(self.sync_cpu_s, bool(self.process.gil.jobs))
        if self.kinds[0] == "gil":
            req.segment = 1
            work_s += req.demand[0]
        self._run_cpu(req, "gil", work_s, self._next_segment)

    def _next_segment(self, req) -> None:
        i = req.segment
        if i == self._segments:
            self._finish(req)
            return
        req.segment = i + 1
        kind = self.kinds[i]
        duration = req.demand[i]
        if kind == "io":
            self.sim.later(duration, self._next_segment, req)
        elif self.is_async:
            if self._loop_busy:
                self._loop_waiting.append(req)
            else:
                self._loop_busy = True
                self._loop_since = self.env.now
                self._run_cpu(req, kind, duration, self._after_loop_cpu)
        elif kind == "gil":
            # _run_cpu(req, kind, duration, self._next_segment), written out (once per segment):
            # the handler's thread, found waiting behind any other, pays its hand-over.
            self.process.run_handler_gil(duration, self._next_segment, req, self.gil_handoff_cpu_s)
        else:
            self.process.run_handler_native(self.omp_num_threads, duration, self._next_segment, req)

    def _run_cpu(self, req, kind: str, duration: float, callback) -> None:
        if kind == "gil":
            # The handler's thread, found waiting behind any other, pays its hand-over.
            self.process.run_handler_gil(duration, callback, req, self.gil_handoff_cpu_s)
        else:
            self.process.run_handler_native(self.omp_num_threads, duration, callback, req)

    def _after_loop_cpu(self, req) -> None:
        if self._loop_waiting:
            nxt = self._loop_waiting.popleft()
            i = nxt.segment - 1
            self._run_cpu(nxt, self.kinds[i], nxt.demand[i], self._after_loop_cpu)
        else:
            self._loop_busy = False
            self.loop_busy_s += self.env.now - self._loop_since
        self._next_segment(req)

    def _finish(self, req) -> None:
        """The handler is done: Ray's main loop takes the result
        (``replica_response_gil_acquisitions`` takes of the GIL) and the response leaves;
        then its bookkeeping (``replica_release_gil_acquisitions`` takes, and
        ``replica_post_cpu_s``) still holds the slot. The task's end, which the router's
        done callbacks wait for, leaves with the response when nothing holds the slot after
        it, else once the slot is free (``Simulation.on_released``)."""
        req.done_s = self.env._now
        if self.state == STOPPED:
            req.status = FAILED  # the controller force-stopped us mid-request
            self._respond(req)
        elif self._response_takes:
            self._gil_takes((self._take_cpu_s, self._response_takes, self._respond, req))
        else:
            self._respond(req)

    def _respond(self, req) -> None:
        holds = self._holds_after_response and self.state != STOPPED
        self.sim.on_response_sent(self, req, not holds)
        if not holds:
            self._release(req)
        elif self._release_takes:
            self._gil_takes((self._take_cpu_s, self._release_takes, self._post, req))
        else:
            self._post(req)

    def _post(self, req) -> None:
        if self.post_cpu_s > 0.0:
            self._gil_takes((self.post_cpu_s, 1, self._released, req))
        else:
            self._released(req)

    def _released(self, req) -> None:
        """The slot frees after the response, and the task's end leaves for the caller."""
        self._release(req)
        self.sim.on_released(self, req)

    def _release(self, req) -> None:
        self._account()
        req.released_s = self._last  # now
        self.ongoing -= 1
        self.completed += 1
        self.sim.router.on_slot_freed(self)

    # -- statistics ----------------------------------------------------------------
    def stats_now(self) -> dict:
        """Cumulative integrals up to now (differences of two snapshots give a window)."""
        if self.node is None:
            return {k: 0 for k in ("completed", "rejected", "busy_s", "ongoing_area", "loop_busy_s", "gil_busy_s")}
        self._account()
        loop = self.loop_busy_s + (self.env.now - self._loop_since if self._loop_busy else 0.0)
        gil = self.node.busy_s(self.process.gil)
        return {
            "completed": self.completed,
            "rejected": self.rejected,
            "busy_s": self.busy_s,
            "ongoing_area": self.ongoing_area,
            "loop_busy_s": loop,
            "gil_busy_s": gil,
        }
