"""Run a ``simserve.SimConfig`` against real Ray Serve 2.60.0 on this machine.

``RealCluster`` owns one ``ray.init(num_cpus=L)`` + ``serve.start`` (loopback HTTP)
and always shuts both down (``finally``, also on Ctrl-C / SIGTERM). ``run(cfg)``
deploys one app for the scenario, drives it, deletes it, and returns a summary with
the same JSON keys as ``simulate(cfg).summary``.

The handler performs the scenario's work model (``Segment`` durations drawn from the
scenario's distributions inside the replica):

* ``io``     -- ``await asyncio.sleep(d)`` (async handler) or ``time.sleep(d)`` (sync).
* ``gil``    -- ``n = d / ns_per_loop`` iterations of ``for i in range(n): x += i``, run as
  ``spin(PROBE_N)`` chunks (and one shorter chunk), exactly the probe that measured
  ``ns_per_loop``: the calibration file's ``host_ns_per_loop`` (measured once per
  machine, the median of the calibration's probes: ``validate/calibrate.py``;
  ``RealCluster`` measures it at start-up when not given), so the work takes ``d`` alone
  on an idle core. The chunks
  matter because an iteration's cost depends on the loop's length: ``x`` grows past
  CPython's one-digit integers, so 570k iterations in one loop cost 7 % more each than
  100k do (37.9 against 35.4 ns here, 2026-11-26); sized with one probe length and run
  as another, 20 ms of work took 20.4-21.0 ms. The median, not the fastest probe,
  because work runs at the typical speed.
* ``native`` -- repeated ``numpy`` 192x192 float64 matmuls (BLAS, GIL released, on
  ``OMP_NUM_THREADS`` threads as Ray sets them), ``n = d / native_unit_s``: the
  single-thread time of one matmul, median of 7 (calibration file, else measured at
  start-up in a subprocess with ``OMP_NUM_THREADS=1``). A run with native work measures
  it again just before and after (``host_probe.run_native_unit_s``): BLAS drifts apart
  from the spin probe (2026-11-26: the same native rows lost 17 % of their throughput
  from 08:17 to about 11:05 while the spin probe held its speed).

Placement never hangs: ``serve.run(..., _blocking=False)`` then ``serve.status()`` is
polled until the replicas that can be placed (``floor(L / num_cpus)``) are RUNNING or
a timeout passes; pending replicas are reported, running ones receive traffic.

Clients run on an asyncio loop in the driver: ``concurrent`` closed-loop clients (with a
``steps`` load shape, as many as the current step says), or Poisson arrivals at ``rps``;
through the app's ``DeploymentHandle`` or aiohttp against the Serve proxy on 127.0.0.1.
A deployment with an ``autoscaling_config`` gets it as Ray's mapping of the fields set.
Statistics follow simserve's ``Recorder``: throughput counts answers received in
``[warmup_s, duration_s]``; latency percentiles cover requests sent at or after
``warmup_s`` and answered by ``duration_s``; ``rejected`` counts back-pressure
rejections (``BackPressureError`` / HTTP 503) sent after warm-up.

Host speed (``validate.host_speed``): the fixed probe (``spin``, ns per iteration, median
of 5 x 100k) runs just before and just after the run, and a process of its own takes one
probe every 0.25 s during it (``HostSpeedSampler``, timed with ``thread_time``);
``host_ns_per_loop`` is the time average of those during (``run_ns_per_loop``).
``driver_gc``: the driver's garbage-collector pauses during the drive (collections per
second and mean pause per generation, the longest pause, the fraction of the time paused).
``nodes[0]``'s ``window_*`` keys: the host's idle cores, the cores the hypervisor took
(steal) and its context switches per second over the measurement window (``_window_host``).
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time

import numpy as np

from simserve import Distribution, SimConfig
from simserve.simulation import streams
from validate.host_speed import PROBE_N, HostSpeedSampler, probe_ns_per_loop, run_ns_per_loop, spin
from validate.router_counters import RouterCounters

OK, REJECTED, ERROR = 0, 1, 2
NATIVE_N = 192


# -- gil work ----------------------------------------------------------------------------------
def spin_work(n: int) -> None:
    """``n`` spin iterations as probe-length chunks, so each costs what the probe measured."""
    for _ in range(n // PROBE_N):
        spin(PROBE_N)
    spin(n % PROBE_N)


def native_unit_s() -> float:
    """Single-thread seconds of one NATIVE_N matmul, measured in a clean subprocess."""
    code = (
        "import time, numpy as np\n"
        f"a = np.random.default_rng(0).random(({NATIVE_N}, {NATIVE_N}))\n"
        "for _ in range(20): a @ a\n"
        "times = []\n"
        "for _ in range(7):\n"
        "    t0 = time.perf_counter()\n"
        "    for _ in range(50): a @ a\n"
        "    times.append((time.perf_counter() - t0) / 50)\n"
        "print(sorted(times)[3])\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return float(out.stdout.strip().splitlines()[-1])


class GcPauses:
    """The driver's garbage-collector pauses while installed (``gc.callbacks``): a
    collection stops every Python thread of the process, the client loop and the
    handle's router alike."""

    def __init__(self):
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t0))

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)
        return False

    def summary(self, wall_s: float) -> dict:
        by_gen = {g: [d for gen, d in self.pauses if gen == g] for g in (0, 1, 2)}
        return {"per_s": {g: len(x) / wall_s for g, x in by_gen.items()},
                "mean_ms": {g: 1e3 * statistics.fmean(x) if x else 0.0 for g, x in by_gen.items()},
                "max_ms": 1e3 * max((d for _, d in self.pauses), default=0.0),
                "paused_fraction": sum(d for _, d in self.pauses) / wall_s}


# -- the replica side ----------------------------------------------------------------------------
class _Work:
    """The scenario's work model, executed inside a replica."""

    def __init__(self, segments, ns_per_loop: float, native_unit: float, seed: int):
        self.kinds = [k for k, _ in segments]
        rng = np.random.default_rng(seed)
        self.samplers = [d.sampler(rng) for _, d in segments]
        self.ns_per_loop = ns_per_loop
        self.native_unit = native_unit
        self.a = np.random.default_rng(seed).random((NATIVE_N, NATIVE_N))

    def draws(self):
        return [(k, s()) for k, s in zip(self.kinds, self.samplers)]

    def cpu(self, kind: str, d: float, gil: list) -> None:
        """``d`` seconds of ``kind`` work; ``gil`` (this request's own: requests overlap in
        a replica) sums its gil work's thread CPU ns, wall ns and iterations."""
        if d <= 0:
            return
        if kind == "gil":
            n = int(round(d * 1e9 / self.ns_per_loop))
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            spin_work(n)
            gil[0] += time.thread_time_ns() - c0
            gil[1] += time.perf_counter_ns() - w0
            gil[2] += n
        else:
            a = self.a
            for _ in range(max(1, int(round(d / self.native_unit)))):
                a @ a

    @staticmethod
    def cpu_times() -> dict:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"pid": os.getpid(), "process_time": time.process_time(), "utime": ru.ru_utime,
                "stime": ru.ru_stime, "wall": time.time()}


def _answer(gil: list) -> str:
    """The response body: ``ok`` and the request's gil work (thread CPU ns, wall ns,
    iterations), so the driver can tell how fast the work itself ran in the replica."""
    return "ok {} {} {}".format(*gil)


class AsyncModel:
    def __init__(self, segments, ns_per_loop, native_unit, seed=0):
        self.w = _Work(segments, ns_per_loop, native_unit, seed + os.getpid())

    async def __call__(self, request=None):
        w, gil = self.w, [0, 0, 0]
        for kind, d in w.draws():
            if kind == "io":
                if d > 0:
                    await asyncio.sleep(d)
            else:
                w.cpu(kind, d, gil)
        return _answer(gil)

    def cpu_times(self):
        return _Work.cpu_times()


class SyncModel:
    def __init__(self, segments, ns_per_loop, native_unit, seed=0):
        self.w = _Work(segments, ns_per_loop, native_unit, seed + os.getpid())

    def __call__(self, request=None):
        w, gil = self.w, [0, 0, 0]
        for kind, d in w.draws():
            if kind == "io":
                if d > 0:
                    time.sleep(d)
            else:
                w.cpu(kind, d, gil)
        return _answer(gil)

    def cpu_times(self):
        return _Work.cpu_times()


# -- the cluster ----------------------------------------------------------------------------------
def poisson_arrivals_s(cfg: SimConfig):
    """The open loop's arrival times in ``[0, duration_s)``, from simserve's own arrival
    stream for ``cfg.seed``: the real run and the simulation get the same arrivals."""
    gap = Distribution("exponential", 1.0 / cfg.workload.rps).sampler(streams(cfg.seed)["arrivals"])
    t = gap()
    while t < cfg.workload.duration_s:
        yield t
        t += gap()


class RealCluster:
    """One Ray + Serve instance with ``num_cpus`` logical CPUs; use as a context manager."""

    def __init__(self, num_cpus: float, http_port: int | None = None, quiet: bool = True,
                 ns_per_loop: float | None = None, native_unit: float | None = None,
                 serve_log_level: str = "WARNING"):
        """``ns_per_loop`` / ``native_unit``: size the gil / native work from these
        (normally the calibration file's); measured now if not given. ``http_port``:
        a free loopback port if not given (the machine may run other Serve instances).
        ``serve_log_level``: Serve's (the controller's log has its scaling decisions at INFO)."""
        self.num_cpus = num_cpus
        self.serve_log_level = serve_log_level
        self.http_port = http_port or _free_port()
        self.quiet = quiet
        self.ns_per_loop = ns_per_loop
        self.native_unit = native_unit
        self._old_sigterm = None

    def __enter__(self):
        self._old_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        # Work-model calibration (once per machine, from the calibration file; else now,
        # before Ray takes any CPU).
        self.session_ns_per_loop = probe_ns_per_loop(reps=7)
        if self.ns_per_loop is None:
            self.ns_per_loop = self.session_ns_per_loop
        if self.native_unit is None:
            self.native_unit = native_unit_s()
        import ray
        from ray import serve

        # Replicas must unpickle the deployment classes without importing `validate`.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        for attempt in range(3):
            try:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=not self.quiet,
                         logging_level="ERROR" if self.quiet else "INFO", configure_logging=not self.quiet)
                break
            except Exception:  # noqa: BLE001 - a previous cluster still shutting down; try again
                ray.shutdown()
                if attempt == 2:
                    raise
                time.sleep(10.0)
        serve.start(http_options={"host": "127.0.0.1", "port": self.http_port},
                    logging_config={"log_level": self.serve_log_level, "enable_access_log": False})
        RouterCounters.install()

    def stop(self):
        try:
            from ray import serve

            serve.shutdown()
        except BaseException as e:  # noqa: BLE001 - shutdown must go on
            print(f"serve.shutdown: {e!r}", file=sys.stderr)
        try:
            import ray

            ray.shutdown()
        except BaseException as e:  # noqa: BLE001
            print(f"ray.shutdown: {e!r}", file=sys.stderr)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)

    # -- deploying ---------------------------------------------------------------------------
    def deploy(self, cfg: SimConfig, app_name: str, start_timeout_s: float = 90.0):
        """Deploy without blocking; wait for the placeable replicas. Returns (handle, states)."""
        from ray import serve

        d = cfg.deployment
        cls = AsyncModel if d.handler == "async" else SyncModel
        extra = {}
        if d.autoscaling_config is not None:
            extra["autoscaling_config"] = ray_autoscaling_config(d.autoscaling_config)
        dep = serve.deployment(cls).options(
            name=d.name,
            num_replicas=d.num_replicas,
            ray_actor_options={"num_cpus": d.num_cpus},
            max_ongoing_requests=d.max_ongoing_requests,
            max_queued_requests=d.max_queued_requests,
            **extra,
        )
        segments = [(s.kind, s.duration) for s in d.work.segments]
        app = dep.bind(segments, self.ns_per_loop, self.native_unit, cfg.seed)
        # serve.run() blocks until every replica is RUNNING, forever if one cannot be
        # placed; its non-blocking form is the private serve.api._run(_blocking=False).
        from ray.serve.api import _run

        handle = _run(app, name=app_name, route_prefix=f"/{app_name}", _blocking=False)
        wanted = d.initial_replicas  # num_replicas, or the autoscaler's first target
        placeable = wanted if d.num_cpus <= 0 else min(
            wanted, int(math.floor(cfg.cluster.num_cpus * cfg.cluster.nodes / d.num_cpus + 1e-9)))
        deadline = time.monotonic() + start_timeout_s
        states = {}
        while time.monotonic() < deadline:
            states = self.replica_states(app_name, d.name)
            if states.get("RUNNING", 0) >= max(placeable, 1 if wanted else 0):
                break
            time.sleep(0.25)
        if states.get("RUNNING", 0) < wanted:
            time.sleep(1.0)  # let a straggler show up; pending ones stay pending
            states = self.replica_states(app_name, d.name)
        return handle, states

    @staticmethod
    def replica_states(app_name: str, dep_name: str) -> dict:
        from ray import serve

        try:
            app = serve.status().applications.get(app_name)
            if app is None or dep_name not in app.deployments:
                return {}
            rs = app.deployments[dep_name].replica_states
            return {str(getattr(k, "value", k)): int(v) for k, v in rs.items()}
        except Exception:  # noqa: BLE001 - status is best effort while deploying
            return {}

    def delete(self, app_name: str):
        from ray import serve

        try:
            serve.delete(app_name, _blocking=True)
        except Exception as e:  # noqa: BLE001
            print(f"serve.delete({app_name}): {e!r}", file=sys.stderr)

    # -- running ------------------------------------------------------------------------------
    def run(self, cfg: SimConfig, app_name: str | None = None, keep_app: bool = False) -> dict:
        """Deploy, drive and measure ``cfg``; returns a simserve-shaped summary."""
        import psutil

        app_name = app_name or f"{cfg.deployment.name}".lower()
        wall0 = time.perf_counter()
        try:
            handle, states0 = self.deploy(cfg, app_name)
            running = states0.get("RUNNING", 0)
            if running == 0:
                raise RuntimeError(f"{app_name}: no replica RUNNING ({states0})")
            before = probe_ns_per_loop()
            # BLAS speed drifts apart from the spin probe's: time it too when the work has it.
            native = any(s.kind == "native" for s in cfg.deployment.work.segments)
            native_before = native_unit_s() if native else None
            probe = HostSpeedSampler()
            cpu0 = psutil.cpu_times()
            ours0 = _tree_cpu()
            roles0 = role_cpu()
            pt0 = time.process_time()
            routed0 = RouterCounters.snapshot()
            probe.start()
            drive0 = time.perf_counter()
            window_host = []  # the host's CPU times and context switches at the window's ends

            def on_start(t0: float):
                loop = asyncio.get_running_loop()
                for at in (cfg.workload.warmup_s, cfg.workload.duration_s):
                    loop.call_later(at, lambda: window_host.append((psutil.cpu_times(), _context_switches())))

            try:
                with GcPauses() as gc_pauses:
                    records, window, works = asyncio.run(self._drive(cfg, handle, app_name, on_start=on_start))
            finally:
                during = probe.stop()
            drive_wall = time.perf_counter() - drive0
            routed1 = RouterCounters.snapshot()
            pt1 = time.process_time()
            roles1 = role_cpu()
            ours1 = _tree_cpu()
            cpu1 = psutil.cpu_times()
            after = probe_ns_per_loop()
            native_after = native_unit_s() if native else None
            states1 = self.replica_states(app_name, cfg.deployment.name)
        finally:
            if not keep_app:
                self.delete(app_name)
        summary = summarize(cfg, records, window)
        span = _span_s(cpu0, cpu1)
        duration_wall = max(1e-9, span)
        busy = _busy_fraction(cpu0, cpu1)
        elapsed = _busy_seconds(cpu0, cpu1)
        ours = sum(v - ours0.get(k, 0.0) for k, v in ours1.items())
        host_probe = {"before_ns_per_loop": before, "after_ns_per_loop": after, "sampler_ns": during,
                      "work_ns_per_loop": self.ns_per_loop, "session_ns_per_loop": self.session_ns_per_loop,
                      "native_unit_s": self.native_unit,
                      "run_native_unit_s": [native_before, native_after] if native else None}
        foreign = max(0.0, (elapsed - ours) / span) if span > 0 else float("nan")
        summary.update(
            replicas={"requested": cfg.deployment.num_replicas, "running": running,
                      "pending": cfg.deployment.num_replicas - running, "states_start": states0,
                      "states_end": states1},
            nodes=[{"node": 0, "logical_cpus": cfg.cluster.num_cpus, "physical_cores": os.cpu_count(),
                    "physical_busy": busy, "foreign_busy_cores": foreign,
                    "ours_busy_cores": ours / span if span > 0 else float("nan"),
                    **_window_host(*window_host)}],
            router=_router_counts(cfg, routed0, routed1, summary["completed_total"]),
            bottleneck=None,
            wall_time_s=time.perf_counter() - wall0,
            seed=cfg.seed,
            config=cfg.to_dict(),
            host_ns_per_loop=run_ns_per_loop(host_probe),
            host_probe=host_probe,
            gil_work=_gil_work(works, cfg.workload.warmup_s, window),
            driver_cpu_s_per_request=(pt1 - pt0) / max(1, summary["completed_total"]),
            driver_gc=gc_pauses.summary(drive_wall),
            # Diagnosis: CPU by process role over the whole drive (warm-up included), in
            # cores and per completed request; Python (GIL) vs C++ threads.
            cpu_by_role={r: {"python_cores": x["python_s"] / duration_wall,
                             "native_cores": x["native_s"] / duration_wall,
                             "python_ms_per_request": 1e3 * x["python_s"] / max(1, summary["completed_total"]),
                             "native_ms_per_request": 1e3 * x["native_s"] / max(1, summary["completed_total"])}
                         for r, x in role_cpu_diff(roles0, roles1).items()},
            background_cores_by_process={k: v / duration_wall
                                         for k, v in background_cpu_diff(roles0, roles1).items()},
            real=True,
        )
        return summary

    async def _drive(self, cfg: SimConfig, handle, app_name: str, on_start=None):
        """Drive the load; ``on_start(t0)`` is called with the ``perf_counter`` time the
        records' times count from."""
        w = cfg.workload
        duration = w.duration_s
        if w.trace_arrivals_s is not None:
            raise NotImplementedError("trace workloads are not driven by the harness yet")
        shape = w.shape
        if shape is not None and (w.concurrent is None or shape.kind != "steps"):
            raise NotImplementedError("of the load shapes, the harness drives closed-loop steps only")
        records: list[tuple[float, float, int]] = []
        works: list[tuple[float, str]] = []  # (answered_s, body) of each OK answer
        session = None
        if cfg.overheads.ingress == "http":
            import aiohttp

            url = f"http://127.0.0.1:{self.http_port}/{app_name}"
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                            timeout=aiohttp.ClientTimeout(total=None))

            async def call() -> tuple[int, str | None]:
                try:
                    async with session.get(url) as r:
                        body = await r.read()
                        return (OK, body.decode()) if r.status == 200 else \
                            (REJECTED if r.status in (503, 429) else ERROR, None)
                except aiohttp.ClientError:
                    return ERROR, None
        else:
            from ray.serve.exceptions import BackPressureError

            async def call() -> tuple[int, str | None]:
                try:
                    return OK, await handle.remote()
                except BackPressureError:
                    return REJECTED, None
                except Exception:  # noqa: BLE001
                    return ERROR, None

        try:
            # Readiness: the first answer (route known to the proxy, replicas known to the router).
            deadline = time.monotonic() + 60
            while (await call())[0] != OK:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{app_name}: not answering")
                await asyncio.sleep(0.2)
            t0 = time.perf_counter()
            t_end = t0 + duration
            if on_start is not None:
                on_start(t0)
            tasks: set[asyncio.Task] = set()

            async def one(client: int):
                s = time.perf_counter()
                st, body = await call()
                e = time.perf_counter() - t0
                records.append((s - t0, e, st))
                if body is not None:
                    works.append((e, body))
                return st

            if w.concurrent is not None:
                changes = [t0 + c for c in shape.change_times(duration)] if shape is not None else []

                async def client(i: int):
                    while (now := time.perf_counter()) < t_end:
                        if shape is not None and i >= round(shape.level(now - t0)):
                            # Retired by the step (after its last answer, as simserve's
                            # ClosedLoop does): idle until the next step.
                            await asyncio.sleep(min([c for c in changes if c > now] + [t_end]) - now)
                            continue
                        st = await one(i)
                        if st != OK:
                            await asyncio.sleep(0.01)  # simserve's CLIENT_RETRY_PAUSE_S
                        elif w.think_time_s > 0:
                            await asyncio.sleep(w.think_time_s)

                tasks = {asyncio.create_task(client(i)) for i in range(w.concurrent)}
                await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
            else:
                for at in poisson_arrivals_s(cfg):
                    delay = t0 + at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    t = asyncio.create_task(one(-1))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
            # Drain in-flight requests (not counted past duration) briefly, then cancel.
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=5.0)
                for t in pending:
                    t.cancel()
            return records, duration, works
        finally:
            if session is not None:
                await session.close()


def _gil_work(works, warmup_s: float, duration_s: float) -> dict | None:
    """How fast the replicas' ``gil`` work ran, from the answers received in the
    measurement window: ns per spin iteration of the work's own thread CPU time (the
    host's speed as the replica saw it, to set beside the sampler's probe) and of its
    wall time (also the time the thread waited for the GIL or a core)."""
    cpu = wall = loops = answers = 0
    for e, body in works:
        if warmup_s <= e <= duration_s:
            _, c, w, n = body.split()
            cpu, wall, loops, answers = cpu + int(c), wall + int(w), loops + int(n), answers + 1
    if not loops:
        return None
    return {"cpu_ns_per_loop": cpu / loops, "wall_ns_per_loop": wall / loops, "loops": loops, "answers": answers}


def summarize(cfg: SimConfig, records, duration: float) -> dict:
    """simserve's Recorder statistics from (sent_s, answered_s, status) records."""
    warm = cfg.workload.warmup_s
    window = duration - warm
    in_window = sum(1 for s, e, st in records if st == OK and warm <= e <= duration)
    lats = np.array([e - s for s, e, st in records if st == OK and s >= warm and e <= duration])
    rejected = sum(1 for s, e, st in records if st == REJECTED and s >= warm)
    errors = sum(1 for s, e, st in records if st == ERROR)
    if lats.size:
        ps = np.percentile(lats, [50, 90, 99])
        lat = {"mean": 1e3 * float(lats.mean()), "p50": 1e3 * ps[0], "p90": 1e3 * ps[1], "p99": 1e3 * ps[2],
               "max": 1e3 * float(lats.max())}
    else:
        lat = {k: float("nan") for k in ("mean", "p50", "p90", "p99", "max")}
    return {
        "throughput_rps": in_window / window if window > 0 else float("nan"),
        "latency_ms": {k: float(v) for k, v in lat.items()},
        "completed": int(lats.size),
        "rejected": int(rejected),
        "errors": int(errors),
        "completed_total": sum(1 for r in records if r[2] == OK),
        "sim_time_s": duration,
        "window_s": window,
    }


def _router_counts(cfg: SimConfig, before, after, completed: int) -> dict:
    """Per completed request over the whole drive (warm-up included), handle path only."""
    out = {"policy": "pow2 (Ray 2.60 default)"}
    if cfg.overheads.ingress == "handle" and completed:
        attempts, probes, failures, retries = (b - a for a, b in zip(before, after))
        out.update(attempts_per_request=attempts / completed, probes_per_request=probes / completed,
                   probe_timeouts_per_request=failures / completed, rejections_per_request=retries / completed)
    return out


def _idle_seconds(a, b) -> float:
    """CPU-seconds the host's cores spent idle (or waiting on I/O) between two
    ``psutil.cpu_times()`` snapshots."""
    return (b.idle + getattr(b, "iowait", 0)) - (a.idle + getattr(a, "iowait", 0))


def _span_s(a, b) -> float:
    """Wall seconds between two ``psutil.cpu_times()`` snapshots (their ticks over the cores)."""
    return (sum(b) - sum(a)) / (os.cpu_count() or 1)


def _busy_fraction(a, b) -> float:
    ta, tb = sum(a), sum(b)
    return 1.0 - _idle_seconds(a, b) / (tb - ta) if tb > ta else float("nan")


def _busy_seconds(a, b) -> float:
    return (sum(b) - sum(a)) - _idle_seconds(a, b)


def _context_switches() -> int:
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("ctxt "))


def _window_host(a=None, b=None) -> dict:
    """Over the measurement window: cores idle, cores taken by the hypervisor (steal: time
    a virtual core wanted to run and the host ran someone else, which the spin probe cannot
    see, its clock being the thread's CPU time) and the host's context switches per second."""
    if b is None:
        return {}
    (ta, ca), (tb, cb) = a, b
    span = _span_s(ta, tb)
    if span <= 0:
        return {}
    steal = getattr(tb, "steal", 0.0) - getattr(ta, "steal", 0.0)
    return {"window_idle_cores": _idle_seconds(ta, tb) / span, "window_steal_cores": steal / span,
            "window_context_switches_per_s": (cb - ca) / span}


def _tree_cpu() -> dict:
    """CPU seconds of this process and all its descendants (our Ray processes)."""
    import psutil

    me = psutil.Process()
    out = {}
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict:
    """CPU seconds of a process's Python threads (``comm`` = the process title:
    ``python``, ``ray::...``) and of its other threads (Ray's C++ core-worker / gRPC
    threads, which run without the GIL), from ``/proc/<pid>/task/*/stat``; CPU of
    threads that already exited (in ``/proc/<pid>/stat`` only) counts as Python."""
    out = {"python": 0.0, "native": 0.0}
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        total = (int(fields[11]) + int(fields[12])) / _TICK  # includes threads that exited
    except (OSError, ValueError):
        return out
    for tid in tids:
        try:
            with open(f"{base}/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread exited
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        py = comm.startswith("ray::") or comm.startswith("python")
        out["python" if py else "native"] += cpu
    # Threads that exited (e.g. the short-lived threads a sync handler can run on) are
    # gone from task/ but still in the process's total: count them as Python threads.
    out["python"] = max(out["python"], total - out["native"])
    return out


def process_role(cmd: str) -> str:
    """driver's descendants by command line: proxy, replica, probe (the host-speed sampler,
    ours but not Ray's) or background (raylet, GCS, controller, agents, log monitor, idle
    workers...)."""
    if "validate.host_speed" in cmd:
        return "probe"
    if cmd.startswith("ray::ProxyActor"):
        return "proxy"
    if cmd.startswith("ray::ServeReplica"):
        return "replica"
    return "background"


def process_label(cmd: str) -> str:
    """A short name for a process: the ``ray::`` actor or task name, a daemon's, else the
    executable's."""
    if cmd.startswith("ray::"):
        return cmd.split()[0].split(".")[0]
    for key in ("raylet", "gcs_server", "dashboard_agent", "agent.py", "runtime_env", "log_monitor",
                "monitor.py", "dashboard.py", "client_server"):
        if key in cmd:
            return key
    return os.path.basename(cmd.split()[0])[:30] if cmd else "?"


def role_cpu() -> dict:
    """{pid: (role, python_s, native_s, label)} for this driver and every descendant."""
    import psutil

    me = psutil.Process()
    t = thread_cpu(me.pid)
    out = {me.pid: ("driver", t["python"], t["native"], "driver")}
    for p in me.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline() or [])
        except psutil.Error:
            continue
        role = process_role(cmd)
        if role == "probe":
            continue
        t = thread_cpu(p.pid)
        out[p.pid] = (role, t["python"], t["native"], process_label(cmd))
    return out


def role_cpu_diff(a: dict, b: dict) -> dict:
    """CPU seconds per role between two ``role_cpu`` snapshots (new processes from 0)."""
    out: dict = {}
    for pid, (role, py, nat, _) in b.items():
        _, py0, nat0, _ = a.get(pid, (role, 0.0, 0.0, ""))
        r = out.setdefault(role, {"python_s": 0.0, "native_s": 0.0})
        r["python_s"] += py - py0
        r["native_s"] += nat - nat0
    return out


def background_cpu_diff(a: dict, b: dict) -> dict:
    """CPU seconds of the background processes between two ``role_cpu`` snapshots, per
    label; a process that started in between (e.g. a worker Ray starts to refill its
    pool) is counted from 0 under ``<label> (new)``."""
    out: dict = {}
    for pid, (role, py, nat, label) in b.items():
        if role != "background":
            continue
        key = label if pid in a else f"{label} (new)"
        _, py0, nat0, _ = a.get(pid, (role, 0.0, 0.0, label))
        out[key] = out.get(key, 0.0) + (py - py0) + (nat - nat0)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def controller_log_lines() -> list[str]:
    """Every line of this Ray session's Serve controller log (scaling decisions and
    replica start-ups are there at Serve's INFO level)."""
    import ray

    log_dir = os.path.join(ray._private.worker.global_worker.node.get_logs_dir_path(), "serve")
    lines: list[str] = []
    for name in sorted(os.listdir(log_dir)):
        if name.startswith("controller_") and name.endswith(".log"):
            with open(os.path.join(log_dir, name), errors="replace") as f:
                lines += f.readlines()
    return lines


def log_time(stamp: str) -> float:
    """A Serve log line's timestamp (``2026-11-25 20:33:01,804``, local time) on the
    ``time.time()`` scale."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def ray_autoscaling_config(a) -> dict:
    """Ray's ``autoscaling_config`` mapping for a simserve ``AutoscalingConfig``: the
    fields set away from the defaults (which are Ray 2.60's), so that Ray applies its own
    defaults to the rest, as it would for a user who set only these."""
    from dataclasses import fields

    default = type(a)()
    return {f.name: getattr(a, f.name) for f in fields(a) if getattr(a, f.name) != getattr(default, f.name)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_real(cfg: SimConfig) -> dict:
    """One scenario on its own Ray instance (use RealCluster to share one)."""
    with RealCluster(cfg.cluster.num_cpus) as cl:
        return cl.run(cfg)


if __name__ == "__main__":  # quick manual check: python -m validate.harness
    from validate.scenario import smoke_scenarios

    print(json.dumps(run_real(smoke_scenarios()[0]), indent=1, default=str))
