"""Do this host's cores idle while more threads are runnable than cores, without Ray? (a diagnosis)

    python -m validate.idle_cores [--bursts 0.05,0.2,1,5] [--pairs 2,3,4] [--spinners 0]
                                  [--window-s 8] [--settle-s 1] [--repeats 1]

The CPU-saturated real Ray runs left a median ~0.1 of this VM's 2 cores idle although
``procs_running`` said more threads were runnable than cores, the more the higher the
context-switch rate (validate/README.md, items 29-30). This asks whether plain processes,
with Ray's pattern of short bursts of pure-Python work between blocking hand-overs, leave
cores idle the same way, i.e. whether it is the host's scheduler (Linux in a KVM guest: a
core whose own run queue empties may go idle while the other core has a backlog, if the
newly-idle balance does not pull a waiting task across in time).

Workload of one configuration, all separate processes (``spawn`` context, so no shared
GIL and no forked state):

* ``pairs`` ping-pong pairs. A spins ``burst`` of pure Python (a ``for i in range(n):
  x += i`` loop, ``n`` calibrated in the parent before the grid), writes one byte to a pipe
  and blocks reading the reply; B, woken by the byte, does the same in turn. A pair is one
  runnable thread at a time (plus the moment of the hand-over), and blocks/wakes once per
  burst, so ``pairs`` = 3 is about 3 runnable threads on 2 cores, each blocking every burst.
* ``spinners`` processes that spin in the same loop and never block.

After ``settle-s`` the parent samples, over ``window-s``: the aggregate (and per-core)
``cpu`` lines and ``ctxt`` of ``/proc/stat`` at the window's start and end, and
``procs_running`` every ~5 ms from a sampler thread (the only thing the parent does
meanwhile; it counts itself, so 1 is subtracted), with, at the same instants, how many
workers ``/proc/<pid>/stat`` shows in state R (a task that has gone to sleep but is still
on a run queue counts in ``procs_running`` and not here), and the workers' own CPU at both
ends (so the busy cores no worker and not the parent used -- the other session, daemons --
show as ``other_cores``: a row with much of it was not measured on a quiet host). The
workers count the hand-overs they make inside the window and report them through a pipe
at the end. Per configuration, one JSON line: idle cores (idle + iowait ticks / USER_HZ /
wall), steal cores (time the hypervisor ran something else while a virtual core wanted to
run; the kernel accounts it apart from idle), busy cores, context switches per second, the
runnable threads' median and the fraction of samples with >= 3 runnable (both counts),
hand-overs per second, idle cores per 1,000 context switches per second and idle
core-microseconds per hand-over. A table at the end; all rows to
``validate/out/idle-cores-<UTC stamp>.json``.

What it leaves out: Ray's threads (its C++ threads, gRPC polling, the GIL hand-over between
threads of one process, sockets rather than pipes, epoll), the several processes of a Ray
node with their own wake-up patterns, and everything that differs between the two
processes of a hand-over but their bursts. It says whether the host's scheduler idles a
core with a backlog under a block/wake load as such; a null result says the idle cores of
the Ray runs need Ray's own pattern of waits, not that the scheduler is blameless. The
``procs_running`` samples are instants 5 ms apart: a core can idle for less than that
between two of them unseen, which is exactly what is being asked about, so the idle column
(exact, from the kernel's idle accounting) is the answer and the samples only say that the
backlog existed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time

from validate.host_speed import probe_ns_per_loop, spin

USER_HZ = os.sysconf("SC_CLK_TCK")  # /proc/stat's unit
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
SAMPLE_S = 0.005  # procs_running sampling period
STOP_MARGIN_S = 0.3  # workers run this long past the window's end, so its last snapshot is under load


# --------------------------------------------------------------------------- workers
# Each worker gets its times from the parent after all workers have started, so that
# start-up (a spawned interpreter takes ~0.1 s of CPU) is not inside the settle or window.
# Times are time.monotonic(), CLOCK_MONOTONIC, one clock for every process on the host.


def _pair_worker(role: str, rfd_conn, wfd_conn, n: int, ctl) -> None:
    """One side of a ping-pong pair; ``role`` "A" serves first. Writes one byte per burst
    (b"p"), or b"x" once past the stop time, which ends the other side too."""
    rfd, wfd = rfd_conn.fileno(), wfd_conn.fileno()
    ctl.send("ready")
    win0, win1, stop = ctl.recv()
    handovers = 0
    if role == "B" and os.read(rfd, 1) != b"p":  # B waits for A's first burst
        ctl.send(handovers)
        return
    while True:
        spin(n)
        now = time.monotonic()
        if now >= stop:
            os.write(wfd, b"x")
            break
        os.write(wfd, b"p")
        if win0 <= now < win1:
            handovers += 1
        if os.read(rfd, 1) != b"p":  # b"x" (or b"" if the other side died): done
            break
    ctl.send(handovers)


def _spinner_worker(n: int, ctl) -> None:
    """Runnable all the time: spins in bursts of the same loop only to look at the clock."""
    ctl.send("ready")
    _, _, stop = ctl.recv()
    while time.monotonic() < stop:
        spin(n)
    ctl.send(0)


# --------------------------------------------------------------------------- /proc/stat


def read_stat() -> dict:
    """The aggregate and per-core ``cpu`` lines (ticks), ``ctxt`` and ``procs_running``."""
    out: dict = {"cores": {}}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            key = parts[0]
            if key.startswith("cpu"):
                ticks = dict(zip(CPU_FIELDS, map(int, parts[1:1 + len(CPU_FIELDS)])))
                if key == "cpu":
                    out["cpu"] = ticks
                else:
                    out["cores"][key] = ticks
            elif key == "ctxt":
                out["ctxt"] = int(parts[1])
            elif key == "procs_running":
                out["procs_running"] = int(parts[1])
    return out


def _proc_stat_fields(fd: int) -> list[bytes]:
    """``/proc/<pid>/stat`` from an open fd, the fields after the command name."""
    data = os.pread(fd, 1024, 0)
    return data[data.rindex(b")") + 2:].split()


def _sampler(stop: threading.Event, pids: list[int], samples: list[int], states: list[int]) -> None:
    """Every SAMPLE_S: ``procs_running`` minus this thread (running while it reads), and how
    many workers are in state R. The two differ by more than the other processes' few
    runnable tasks if the kernel keeps tasks that went to sleep on its run queues (EEVDF's
    delayed dequeue, Linux 6.12+, counts a sleeper with negative lag in ``nr_running``
    until it is picked or its lag recovers): then ``procs_running`` overstates the backlog."""
    fds = [os.open(f"/proc/{pid}/stat", os.O_RDONLY) for pid in pids]
    try:
        with open("/proc/stat", "rb") as f:
            nxt = time.monotonic()
            while not stop.is_set():
                f.seek(0)
                data = f.read()
                i = data.find(b"procs_running ")
                if i >= 0:
                    samples.append(int(data[i + 14:data.index(b"\n", i)]) - 1)
                states.append(sum(_proc_stat_fields(fd)[0] == b"R" for fd in fds))
                nxt += SAMPLE_S
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    nxt = time.monotonic()  # fell behind (parent starved): do not burst to catch up
    finally:
        for fd in fds:
            os.close(fd)


def _cpu_ticks(pids: list[int]) -> int:
    """utime + stime of these processes, ticks."""
    total = 0
    for pid in pids:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            fields = _proc_stat_fields(fd)
        finally:
            os.close(fd)
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total


def _idle_ticks(t: dict) -> int:
    return t["idle"] + t["iowait"]


# --------------------------------------------------------------------------- one configuration


def run_config(burst_ms: float, pairs: int, spinners: int, window_s: float, settle_s: float,
               ns_iter: float) -> dict:
    ctx = mp.get_context("spawn")
    n = max(1, round(burst_ms * 1e6 / ns_iter))
    procs, ctls = [], []
    try:
        for _ in range(pairs):
            a_r, b_w = ctx.Pipe(duplex=False)  # B -> A
            b_r, a_w = ctx.Pipe(duplex=False)  # A -> B
            for role, r, w in (("A", a_r, a_w), ("B", b_r, b_w)):
                mine, theirs = ctx.Pipe()
                p = ctx.Process(target=_pair_worker, args=(role, r, w, n, theirs), daemon=True)
                p.start()
                procs.append(p)
                ctls.append(mine)
            for c in (a_r, b_w, b_r, a_w):  # the children hold their own copies
                c.close()
        for _ in range(spinners):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_spinner_worker, args=(n, theirs), daemon=True)
            p.start()
            procs.append(p)
            ctls.append(mine)
        for c in ctls:
            if c.recv() != "ready":
                raise RuntimeError("a worker did not start")
        t_go = time.monotonic()
        win0 = t_go + settle_s
        win1 = win0 + window_s
        stop = win1 + STOP_MARGIN_S
        for c in ctls:
            c.send((win0, win1, stop))

        time.sleep(max(0.0, win0 - time.monotonic()))
        pids = [p.pid for p in procs]
        samples: list[int] = []
        states: list[int] = []
        halt = threading.Event()
        sampler = threading.Thread(target=_sampler, args=(halt, pids, samples, states), daemon=True)
        c0, p0 = _cpu_ticks(pids), os.times()
        s0, w0 = read_stat(), time.monotonic()
        sampler.start()
        time.sleep(max(0.0, win1 - time.monotonic()))
        s1, w1 = read_stat(), time.monotonic()
        c1, p1 = _cpu_ticks(pids), os.times()
        halt.set()
        sampler.join()
        handovers = sum(c.recv() for c in ctls)
        for p in procs:
            p.join(timeout=5)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    wall = w1 - w0
    d = {k: s1["cpu"][k] - s0["cpu"][k] for k in CPU_FIELDS}
    idle = _idle_ticks(d) / USER_HZ / wall
    steal = d["steal"] / USER_HZ / wall
    busy = (d["user"] + d["nice"] + d["system"] + d["irq"] + d["softirq"]) / USER_HZ / wall
    cs = (s1["ctxt"] - s0["ctxt"]) / wall
    ho = handovers / window_s  # counted by the workers over [win0, win1)
    per_core = {k: round((_idle_ticks(s1["cores"][k]) - _idle_ticks(s0["cores"][k])) / USER_HZ / wall, 4)
                for k in sorted(s0["cores"])}
    runnable = samples or [0]
    in_r = states or [0]
    workers = (c1 - c0) / USER_HZ / wall
    parent = (p1.user + p1.system - p0.user - p0.system) / wall
    return {
        "burst_ms": burst_ms, "pairs": pairs, "spinners": spinners, "loop_n": n,
        "window_s": round(wall, 3),
        "idle_cores": round(idle, 4), "steal_cores": round(steal, 4), "busy_cores": round(busy, 4),
        # the ticks' own span: cores x wall if every tick is accounted to some state
        "ticks_cores": round(sum(d.values()) / USER_HZ / wall, 4),
        "idle_cores_by_core": per_core,
        "cs_per_s": round(cs), "handovers_per_s": round(ho),
        "runnable_median": statistics.median(runnable),
        "runnable_ge3_frac": round(sum(r >= 3 for r in runnable) / len(runnable), 3),
        "runnable_le1_frac": round(sum(r <= 1 for r in runnable) / len(runnable), 3),
        "workers_R_median": statistics.median(in_r),
        "workers_R_ge3_frac": round(sum(r >= 3 for r in in_r) / len(in_r), 3),
        "samples": len(samples),
        "workers_cores": round(workers, 4), "parent_cores": round(parent, 4),
        # busy cores that were neither the workers nor this process: the other session, daemons
        "other_cores": round(busy - workers - parent, 4),
        "idle_per_kcs": round(1e3 * idle / cs, 5) if cs else None,
        # idle core-time per hand-over, microseconds
        "idle_us_per_handover": round(1e6 * idle / ho, 2) if ho else None,
    }


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: {message}\n")


def _list(kind, what: str, ok, rule: str):
    def parse(s: str):
        try:
            vals = [kind(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of {what}") from None
        if not vals or not all(ok(v) for v in vals):
            raise argparse.ArgumentTypeError(f"{s!r}: every value must be {rule}")
        return vals
    return parse


def _positive(kind, what: str):
    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a {what}") from None
        if not v > 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{s!r} is not a positive {what}")
        return v
    return parse


def _table(rows: list[dict]) -> str:
    head = (f"{'burst ms':>8} {'pairs':>5} {'spin':>4}  {'idle':>6} {'steal':>6} {'busy':>6} "
            f"{'cs/s':>7} {'ho/s':>7} {'run p50':>7} {'>=3':>5} {'R p50':>5} {'R>=3':>5} {'other':>6}  "
            f"{'idle/kcs':>8} {'us/ho':>6}")
    lines = [head]
    for r in rows:
        kcs = "-" if r["idle_per_kcs"] is None else f"{r['idle_per_kcs']:.4f}"
        us = "-" if r["idle_us_per_handover"] is None else f"{r['idle_us_per_handover']:.1f}"
        lines.append(f"{r['burst_ms']:>8g} {r['pairs']:>5} {r['spinners']:>4}  {r['idle_cores']:>6.3f} "
                     f"{r['steal_cores']:>6.3f} {r['busy_cores']:>6.3f} {r['cs_per_s']:>7} "
                     f"{r['handovers_per_s']:>7} {r['runnable_median']:>7g} {r['runnable_ge3_frac']:>5.2f} "
                     f"{r['workers_R_median']:>5g} {r['workers_R_ge3_frac']:>5.2f} {r['other_cores']:>6.3f}  "
                     f"{kcs:>8} {us:>6}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = _Parser(prog="python -m validate.idle_cores", description=__doc__.split("\n\n")[0])
    counts = _list(int, "whole numbers", lambda v: v >= 0, "a whole number >= 0")
    ms = _list(float, "numbers (ms)", lambda v: 0 < v < float("inf"), "a number of ms > 0")
    ap.add_argument("--bursts", type=ms, default=[0.05, 0.2, 1, 5],
                    help="ms of spin per burst, comma-separated (default 0.05,0.2,1,5)")
    ap.add_argument("--pairs", type=counts, default=[2, 3, 4],
                    help="ping-pong pairs, comma-separated (default 2,3,4)")
    ap.add_argument("--spinners", type=counts, default=[0],
                    help="processes that never block, comma-separated (default 0)")
    ap.add_argument("--window-s", type=_positive(float, "number of seconds"), default=8.0)
    ap.add_argument("--settle-s", type=_positive(float, "number of seconds"), default=1.0)
    ap.add_argument("--repeats", type=_positive(int, "whole number"), default=1)
    args = ap.parse_args(argv)
    combos = [(b, p, s) for b in args.bursts for p in args.pairs for s in args.spinners]
    empty = [(p, s) for _, p, s in combos if p + s == 0]
    if empty:
        print(f"{ap.prog}: --pairs 0 with --spinners 0 runs nothing", file=sys.stderr)
        return 2

    ns_iter = probe_ns_per_loop()  # the burst's loop, sized on this host now
    cal = {"ns_per_iteration": round(ns_iter, 3), "user_hz": USER_HZ, "cpus": os.cpu_count(),
           "kernel": os.uname().release}
    print(json.dumps({"calibration": cal}), flush=True)
    rows = []
    for rep in range(args.repeats):
        for b, p, s in combos:
            row = run_config(b, p, s, args.window_s, args.settle_s, ns_iter)
            row["repeat"] = rep
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(_table(rows))
    from validate.scenario import save_raw  # here: the spawned workers import this module, and need none of it

    save_raw({"argv": sys.argv[1:] if argv is None else argv, "calibration": cal, "rows": rows}, "idle-cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
