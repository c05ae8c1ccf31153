"""Platform costs measured on real Ray, loaded into ``Overheads``.

``python -m validate.calibrate`` measures what Ray Serve's own machinery costs per
request on the machine in front of you (hop latencies, the caller's, router's,
replica's and proxy's CPU) and writes a JSON file whose keys are ``Overheads`` field
names in seconds, plus ``host_ns_per_loop``, the speed of a fixed pure-Python loop
when it was made. ``--calibration FILE`` loads such a file; ``--cpu-speed`` says how
fast this run's host is relative to it. Without either flag the command line uses the
file committed for the project's machine kind (``default_path``); the library's
``Overheads()`` stays all zero, the pure queueing model.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields

from simserve.config import ConfigError, Overheads

COST_FIELDS = tuple(f.name for f in fields(Overheads) if f.name not in ("ingress", "cpu_speed"))


def unit(name: str) -> str:
    """An ``Overheads`` field's unit, from its name and type: "seconds" (``_s``, the
    wake-up tables too), "cores", "count" (an integer field) or "ratio" (the rest: spreads,
    speeds, factors)."""
    if name.endswith("_s"):
        return "seconds"
    if name.endswith("cores"):
        return "cores"
    return "count" if type(getattr(Overheads, name)) is int else "ratio"

# The costs measured on the project's machine kind, used by the command line unless
# --calibration or --no-overheads says otherwise. Regenerate: python -m validate.calibrate
DEFAULT_FILE = "ray-2.60.0-project-machine.json"


def default_path() -> str | None:
    """The committed calibration file, if this installation has it. Looked up on the
    package's search path rather than through ``importlib.resources``: an editable install
    run from outside the repository makes ``validate`` a namespace package there, which
    ``resources.files`` cannot read."""
    try:
        import validate
    except ModuleNotFoundError:
        return None
    for root in validate.__path__:
        path = os.path.join(root, "calibration", DEFAULT_FILE)
        if os.path.isfile(path):
            return path
    return None


def costs(doc: dict, ingress: str = "handle") -> dict:
    """Overheads keyword arguments from a calibration document: its top-level costs, and
    over HTTP the ``http`` section's values for what differs there (the replica's CPU per
    request is higher for an HTTP request than for a handle call)."""
    out = {k: doc[k] for k in COST_FIELDS if k in doc}
    if ingress == "http":
        out.update({k: v for k, v in (doc.get("http") or {}).items() if k in COST_FIELDS})
    return out


def load(path: str, ingress: str = "handle") -> dict:
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
    return costs(doc, ingress)
