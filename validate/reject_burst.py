"""What a rejection costs when the router sends several at once (a diagnosis, not a
calibration).

    python -m validate.reject_burst [--in-flight 1,8] [--rounds 3]

The calibration's rejection phase (``calibrate._reject_phase``: a one-slot ``Holder``
replica whose slot a long request holds, the driver's queue-length cache made to read 0, so
each rejected request is sent again at once) with 1 and with 8 such requests in flight, in
turn, ``--rounds`` times, on one cluster. With several in flight one routing step hands the
replica to all of them and their sends leave in a burst, as they do to a replica the cache
shows room in (validate/README.md, item 57). Printed per row and then as the medians per
count in flight: rejections per second and each role's CPU per rejection (``calibrate.
derive_reject``: the replica's Python and C++ threads, the driver's C++ threads, the router
thread beyond a routing attempt's ``router_cpu_s``, the background processes), and the
ratio of each to the first count's (one in flight's by default). simserve charges a rejection ``replica_reject_cpu_s`` and
the rest as measured one in flight, times ``batched_cpu_factor`` where a cost meets work
already running in its process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from validate.scenario import load_calibration

FIELDS = ("replica_reject_cpu_s", "replica_reject_native_cpu_s", "reject_native_cpu_s", "reject_cpu_s",
          "ray_background_cpu_per_reject_s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validate.reject_burst", description=__doc__.split("\n\n")[0])
    ap.add_argument("--in-flight", default="1,8", help="requests rejected at once, per row in turn (default 1,8)")
    ap.add_argument("--rounds", type=int, default=3, help="rows of each count (default 3)")
    args = ap.parse_args(argv)
    try:
        counts = [int(c) for c in args.in_flight.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        print(f"in-flight: a comma-separated list of counts of at least 1, got {args.in_flight!r}", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print(f"rounds: must be at least 1, got {args.rounds}", file=sys.stderr)
        return 2
    from validate.calibrate import ProcessCPU, _reject_phase, calibrated_cluster, derive_reject

    cal = load_calibration(None)
    rows = []
    with calibrated_cluster(cal) as cl:
        pc = ProcessCPU()
        for _ in range(args.rounds):
            for k in counts:
                raw = _reject_phase(cl, pc, k)
                warnings: list = []
                row = {"in_flight": k, "per_s": round(raw["n"] / raw["load_wall_s"], 1),
                       **{f: round(1e3 * v, 3) for f, v in derive_reject(raw, cal["router_cpu_s"], warnings).items()
                          if f in FIELDS}}
                rows.append(row)
                print(json.dumps(row), flush=True)
                for w in warnings:  # a cost that came out negative, clamped to 0
                    print(f"warning: {w}", file=sys.stderr)
    base = {f: statistics.median(r[f] for r in rows if r["in_flight"] == counts[0]) for f in FIELDS}
    for k in counts:
        med = {f: statistics.median(r[f] for r in rows if r["in_flight"] == k) for f in ("per_s", *FIELDS)}
        print(f"{k} in flight: {med['per_s']:.0f} rejections/s; ms per rejection " + ", ".join(
            f"{f} {med[f]:.3f} (x{med[f] / base[f]:.2f})" if base[f] > 0 else f"{f} {med[f]:.3f}" for f in FIELDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
