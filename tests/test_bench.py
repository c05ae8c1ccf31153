"""``python -m simserve.bench --quick --json`` produces the documented schema.

Only shapes and signs are checked: wall-clock speeds depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_quick_json_schema():
    p = subprocess.run(
        [sys.executable, "-m", "simserve.bench", "--quick", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    scen = report["scenarios"]
    assert set(scen) == {"S1", "S2", "S3", "S4"}
    for name, row in scen.items():
        assert "error" not in row, (name, row)
        for key in ("simserve_rps", "ciw_rps", "simpy_rps", "peak_rss_mb"):
            assert key in row, (name, key)
        assert _positive(row["simserve_rps"]), (name, row)
        assert _positive(row["peak_rss_mb"]), (name, row)
    s1 = scen["S1"]
    assert _positive(s1["simpy_rps"]) and _positive(s1["simserve_over_simpy"])
    try:
        import ciw  # noqa: F401
    except ImportError:
        assert s1["ciw_rps"] is None
    else:
        assert _positive(s1["ciw_rps"]) and _positive(s1["simserve_over_ciw"])
    for name in ("S2", "S3", "S4"):
        assert scen[name]["ciw_rps"] is None and scen[name]["simpy_rps"] is None
    assert _positive(scen["S2"]["projected_wall_s_per_1M_requests"])
    assert _positive(scen["S3"]["cost_per_request_vs_S1"])
    by = scen["S3"]["us_per_request_by_replicas"]
    assert set(by) == {"8", "64", "512"} and all(_positive(v) for v in by.values())
    mem = report["memory"]
    assert mem["requests"][0] < mem["requests"][1]
    assert all(_positive(x) for x in mem["peak_rss_mb"]) and _positive(mem["peak_rss_ratio"])
