"""Platform costs measured on real Ray, loaded into ``Overheads``.

``python -m validate.calibrate`` measures what Ray Serve's own machinery costs per
request on the machine in front of you (hop latencies, the caller's, router's,
replica's and proxy's CPU) and writes a JSON file whose keys are ``Overheads`` field
names in seconds, plus ``host_ns_per_loop``, the speed of a fixed pure-Python loop
when it was made. ``--calibration FILE`` loads such a file; ``--cpu-speed`` says how
fast this run's host is relative to it.
"""

from __future__ import annotations

import json
from dataclasses import fields

from simserve.config import ConfigError, Overheads

COST_FIELDS = tuple(f.name for f in fields(Overheads) if f.name not in ("ingress", "cpu_speed"))


def load(path: str) -> dict:
    """Overheads keyword arguments from a calibration file (unknown keys ignored)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError("calibration", path, f"cannot be read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError("calibration", path, f"is not valid JSON (line {e.lineno})") from None
    if not isinstance(doc, dict):
        raise ConfigError("calibration", path, "is not a JSON object")
    costs = doc.get("overheads", doc)
    return {k: costs[k] for k in COST_FIELDS if k in costs}
