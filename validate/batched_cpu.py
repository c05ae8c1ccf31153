"""Ray's CPU per no-op request with several requests in flight against one at a time:
``Overheads.batched_cpu_factor``.

``python -m validate.batched_cpu [--http] [--rounds C,...] [--from RAW...] [--add-to CALIBRATION]``.
The calibration's phase (``batched_phase``) on a cluster of its own
(``calibrate.noop_deployment``): after an idle window, 10 s rows (``loaded_cpu.LOAD_S``) of
no-op requests through one handle from 1, 4 and 2 closed-loop clients in turn (``ROUNDS``),
each row with the driver's and the replica's CPU per request (Python and C++ threads, idle
rates subtracted) and the router's routing attempts and queue-length probes per request
(``loaded_cpu._load``). Its rows go to ``validate/out/batched-<stamp>.json``, then the fit
(``fit``) is printed. ``--from RAW...`` fits saved rows again instead of measuring, pooled
over the files (``out/batched-*.json``, or a calibration file's ``raw.batched``);
``--add-to`` writes the rows and the fitted factor into a calibration file made before the
phase existed (a full ``python -m validate.calibrate`` runs the phase itself).

``--http``: the same rows through Serve's proxy (aiohttp clients, as the harness's HTTP load
generator), to ``out/batched-http-<stamp>.json``; the fit is the replica's alone (simserve's
proxy never batches), and goes into the calibration's ``http`` section, which simserve uses
for HTTP runs. Ray's attempts and probes are not counted there (the proxy's router is not
instrumented), so neither side's saving is corrected for them.

The fit, per role (driver, replica): Ray's saving at ``CONCURRENCY`` in flight, its CPU per
request there over one at a time's plus the calibration's unit costs of the attempts and
probes it made beyond one at a time's (``router_attempt_cpu_s``, ``probe_cpu_s`` and their C++
and replica shares); then the factor with which simserve, on the same scenario with the
calibration, saves as much, reckoned the same way from its own charged CPU and counts
(bisection). The field is the mean of the driver's and the replica's (a warning where they
differ by ``AGREE`` or more). Two in flight (and any other count in the rows) is held out:
printed beside simserve's, not fitted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys

from validate.scenario import add_to_calibration, load_calibration, save_raw, scenario, with_overheads

# Rows scatter by up to 30% from one 10 s row to the next on these machines (2026-11-27
# 17:18-17:20), so each case needs many: pooled over runs where one is not enough.
ROUNDS = (1, 4, 2) * 6
CONCURRENCY = 4  # the fitted case; 2 is held out
AGREE = 0.15  # largest difference between the driver's and the replica's factors for one field
SIM_DURATION_S = 30.0
ROLES = {"driver": "dri", "replica": "rep"}
HTTP_ROLES = {"replica": "rep"}  # the roles simserve batches over HTTP
SHOWN = {"driver": "dri", "proxy": "pro", "replica": "rep"}  # Ray's savings printed


def batched_phase(handle, pc, rounds: tuple = ROUNDS) -> dict:
    """A row per entry of ``rounds`` (clients), after an idle window that gives the idle rates."""
    from validate.calibrate import _by_role, _window
    from validate.loaded_cpu import IDLE_S, _load

    d, wall, _ = asyncio.run(_window(pc, IDLE_S))
    idle = (_by_role(d), wall)
    return {"rows": [asyncio.run(_load(handle, pc, 0, idle, nice=19, concurrency=c)) for c in rounds]}


def _median(rows: list[dict], c: int, key) -> float:
    return statistics.median(key(r) for r in rows if r["concurrency"] == c)


def ray_saving(raw: dict, cal: dict, role: str, c: int = CONCURRENCY) -> float:
    """Ray's CPU per request of ``role`` at ``c`` in flight over one at a time's plus the unit
    costs of the extra attempts and probes (medians over the rows of each; none where the
    rows do not count them: through the proxy)."""
    rows, p = raw["rows"], SHOWN[role]
    cpu = {k: _median(rows, k, lambda r: r[f"{p}.py"] + r[f"{p}.na"]) for k in (1, c)}
    if any(r["attempts"] is None for r in rows):
        return cpu[c] / cpu[1]
    extra_attempts = _median(rows, c, lambda r: r["attempts"]) - _median(rows, 1, lambda r: r["attempts"])
    extra_probes = _median(rows, c, lambda r: r["probes"]) - _median(rows, 1, lambda r: r["probes"])
    if role == "driver":
        # The extra attempts send nothing (no rejections with fewer in flight than slots).
        unit = (extra_attempts * cal["router_attempt_cpu_s"]
                + extra_probes * (cal["probe_cpu_s"] + cal["probe_native_cpu_s"]))
    else:
        unit = extra_probes * (cal["replica_probe_cpu_s"] + cal["replica_probe_native_cpu_s"])
    return cpu[c] / (cpu[1] + 1e3 * unit)


def simulated_row(cal: dict, factor: float, c: int, http: bool = False) -> dict:
    """simserve's row for the phase's scenario, in the rows' format: its charged CPU per
    request by role (``charged_cpu_ms``, all as Python) and its router's attempts and probes
    per request (``None`` over ``http``, as Ray's rows there); one no-op replica (1 us of io:
    a closed loop needs some work), ``c`` clients."""
    from simserve.simulation import simulate
    from validate.__main__ import charged_cpu_ms

    cal = {**cal, "batched_cpu_factor": factor}
    if http:
        cal["http"] = {**cal.get("http", {}), "batched_cpu_factor": factor}
    cfg = with_overheads(scenario(name="noop", work=[("io", 1e-6)], num_replicas=1, num_cpus=1,
                                  max_ongoing_requests=5, cluster_cpus=2, concurrent=c,
                                  duration_s=SIM_DURATION_S, ingress="http" if http else "handle"), cal)
    s = simulate(cfg).summary
    ms = charged_cpu_ms(cfg, s)
    return {"concurrency": c, "dri.py": ms["driver"], "dri.na": 0.0, "pro.py": ms["proxy"], "pro.na": 0.0,
            "rep.py": ms["replica"], "rep.na": 0.0,
            "attempts": None if http else s["router"]["attempts_per_request"],
            "probes": None if http else s["router"]["probes_per_request"]}


def fit_role(raw: dict, cal: dict, role: str, alone: dict | None = None, http: bool = False) -> float:
    """The factor with which simserve's saving for ``role`` at ``CONCURRENCY``, reckoned as
    Ray's is (``ray_saving`` of its own rows), is Ray's. ``alone``: simserve's row one at a
    time (``simulated_row`` at 1 in flight, the same at any factor), if made already."""
    target = ray_saving(raw, cal, role)
    if target >= 1.0:
        return 1.0
    if alone is None:
        alone = simulated_row(cal, 1.0, 1, http)
    lo, hi = 0.01, 1.0
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        if ray_saving({"rows": [alone, simulated_row(cal, mid, CONCURRENCY, http)]}, cal, role) > target:
            hi = mid
        else:
            lo = mid
    return round(0.5 * (lo + hi), 3)


def fit(raw: dict, cal: dict, http: bool = False) -> dict:
    """``batched_cpu_factor`` and how it was reached: per role Ray's saving and the factor
    that gives it; the field (their mean; ``agree`` says whether they differ by less than
    ``AGREE``); and the held-out cases (the rows' other counts in flight), Ray's and
    simserve's CPU per request (the fitted roles') there over one at a time. Over ``http``
    the replica alone is fitted; every role's saving is shown."""
    roles = HTTP_ROLES if http else ROLES
    alone = simulated_row(cal, 1.0, 1, http)  # one at a time never batches: made once for all below
    per_role = {role: fit_role(raw, cal, role, alone, http) for role in roles}
    savings = {role: round(ray_saving(raw, cal, role), 4) for role in (SHOWN if http else ROLES)}
    factor = round(statistics.mean(per_role.values()), 3)
    both = lambda r: sum(r[f"{p}.{k}"] for p in roles.values() for k in ("py", "na"))  # noqa: E731
    held_out = sorted({r["concurrency"] for r in raw["rows"]} - {1, CONCURRENCY})
    sim = {1: both(alone), **{c: both(simulated_row(cal, factor, c, http)) for c in held_out}}
    return {"batched_cpu_factor": factor, "per_role": per_role, "ray_saving": savings,
            "agree": max(per_role.values()) - min(per_role.values()) < AGREE,
            "held_out": {f"c{c}": {"ray": round(_median(raw["rows"], c, both) / _median(raw["rows"], 1, both), 4),
                                   "sim": round(sim[c] / sim[1], 4)}
                         for c in held_out}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.batched_cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--http", action="store_true",
                    help="through Serve's proxy (aiohttp clients) instead of a handle; fits the http section's factor")
    ap.add_argument("--from", dest="sources", metavar="RAW", nargs="+",
                    help="fit saved rows again instead of measuring, pooled: out/batched-*.json files or a "
                         "calibration file (its raw.batched, or raw.batched_http with --http)")
    ap.add_argument("--rounds", default=",".join(map(str, ROUNDS)),
                    help="clients in flight per row, in turn (default: the calibration's)")
    ap.add_argument("--add-to", metavar="CALIBRATION",
                    help="write the rows and the fitted factor into this calibration file")
    args = ap.parse_args(argv)
    cal = load_calibration(args.add_to)
    kind = "batched_http" if args.http else "batched"
    if args.sources:
        raw = {"rows": [], "date": []}
        for path in args.sources:
            with open(path) as f:
                saved = json.load(f)
            saved = saved["raw"][kind] if "raw" in saved else saved
            raw["rows"] += saved["rows"]
            raw["date"] += saved["date"] if isinstance(saved["date"], list) else [saved["date"]]
    else:
        from validate.calibrate import noop_deployment

        with noop_deployment(http=args.http) as (target, pc):
            raw = batched_phase(target, pc, tuple(int(c) for c in args.rounds.split(",")))
        save_raw(raw, kind.replace("_", "-"))
    for row in raw["rows"]:
        print(json.dumps(row))
    if not any(r["concurrency"] == CONCURRENCY for r in raw["rows"]):
        print(f"no rows with {CONCURRENCY} in flight: nothing to fit")
        return 0
    result = fit(raw, cal, args.http)
    print(json.dumps(result))
    if not result["agree"]:
        print(f"warning: driver and replica factors differ by {AGREE} or more: {result['per_role']}", file=sys.stderr)
    if args.add_to:
        add_to_calibration(cal, args.add_to, "batched_cpu_factor", result["batched_cpu_factor"], kind,
                           {**raw, "fit": result}, "batched_cpu", argv or sys.argv[1:],
                           section="http" if args.http else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
