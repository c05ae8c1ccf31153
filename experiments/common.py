"""What every experiment shares: its flags, its output folder, and how it reports.

Each experiment answers one question with a sweep, prints the key table, and writes
``results/<name>.csv`` (one row per configuration, means and 95% CIs) and
``results/<name>.png``. ``--quick`` shortens runs and replications to smoke-test size.
"""

from __future__ import annotations

import argparse
import pathlib

import pandas as pd

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def arguments(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="short runs, two replications")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS, help="output folder (default experiments/results)")
    p.add_argument("--backend", choices=("process", "serial", "ray"), default="process")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.duration_s = 15.0 if args.quick else 60.0
    args.warmup_s = 3.0 if args.quick else 10.0
    args.replications = 2 if args.quick else 5
    return args


def save(args, name: str, table: pd.DataFrame, fig=None) -> None:
    """Write the table (and figure) under ``args.out`` and say where."""
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / f"{name}.csv", index=False)
    written = [f"{name}.csv"]
    if fig is not None:
        fig.savefig(args.out / f"{name}.png", dpi=110)
        written.append(f"{name}.png")
    print(f"wrote {', '.join(str(args.out / w) for w in written)}")


def show(table: pd.DataFrame, columns) -> None:
    print(table[[c for c in columns if c in table]].to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
