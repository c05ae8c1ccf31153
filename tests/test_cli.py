"""The command line: the seed example runs, --json parses, bad input exits 2 in one line."""

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simserve.run", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_seed_example_prints_a_report_with_the_bottleneck():
    """`--replicas 4 --cpus 2 --concurrent 10` works alone and names replicas, pending and the bottleneck."""
    p = run("--replicas", "4", "--cpus", "2", "--concurrent", "10")
    assert p.returncode == 0, p.stderr
    assert "4 running, 0 pending" in p.stdout
    assert "bottleneck" in p.stdout


def test_json_summary_parses_and_has_the_documented_keys():
    """`--json` prints one JSON object with the schema the README documents."""
    p = run("--replicas", "10", "--cpus", "1", "--concurrent", "10", "--duration-s", "10", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["replicas"] == {"requested": 10, "running": 8, "pending": 2}
    assert set(s["latency_ms"]) == {"mean", "p50", "p90", "p99", "max"}
    for key in ("throughput_rps", "completed", "rejected", "nodes", "sim_time_s", "wall_time_s", "seed", "config", "bottleneck"):
        assert key in s


def test_default_costs_come_from_the_calibration_and_no_overheads_zeroes_them():
    """Without flags the committed calibration prices Ray's machinery; --no-overheads makes it free."""
    calibrated = json.loads(run("--duration-s", "3", "--json").stdout)["config"]["overheads"]
    assert calibrated["replica_cpu_s"] > 0 and calibrated["hop_s"] > 0
    p = run("--duration-s", "3", "--no-overheads", "--json")
    assert p.returncode == 0, p.stderr
    free = json.loads(p.stdout)["config"]["overheads"]
    assert all(v in (0, []) for k, v in free.items() if k.endswith("_s") or k.endswith("_cores"))  # a table: []


def test_a_start_up_time_given_alone_keeps_the_measured_cpu_share():
    """`--replica-startup-s` alone scales the calibration's CPU part of a start-up with it (no
    error that the measured CPU exceeds the new time); both given are taken as given."""
    measured = json.loads(run("--duration-s", "1", "--json").stdout)["config"]["overheads"]
    share = measured["replica_startup_cpu_s"] / measured["replica_startup_s"]
    p = run("--duration-s", "1", "--json", "--replica-startup-s", "0.5")
    assert p.returncode == 0, p.stderr
    oh = json.loads(p.stdout)["config"]["overheads"]
    assert oh["replica_startup_s"] == 0.5 and oh["replica_startup_cpu_s"] == pytest.approx(0.5 * share)
    both = run("--duration-s", "1", "--json", "--replica-startup-s", "0.5", "--replica-startup-cpu-s", "0.1")
    assert json.loads(both.stdout)["config"]["overheads"]["replica_startup_cpu_s"] == 0.1


def test_the_committed_calibration_is_found_from_any_working_directory(tmp_path):
    """Run from outside the repository (where an editable install makes `validate` a namespace
    package), the command line still prices Ray's machinery with the committed calibration."""
    p = run("--duration-s", "3", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["config"]["overheads"]["replica_cpu_s"] > 0


def test_csv_writes_the_request_table(tmp_path):
    """`--csv` writes one row per request with unit-suffixed columns."""
    out = tmp_path / "r.csv"
    p = run("--concurrent", "2", "--duration-s", "3", "--csv", str(out))
    assert p.returncode == 0, p.stderr
    header = out.read_text().splitlines()[0].split(",")
    assert {"request_id", "arrival_s", "dispatch_s", "end_s", "latency_s", "status"} <= set(header)


def test_serve_config_yaml_loads_and_flags_override(tmp_path):
    """A `serve build` YAML loads; unmodelled keys are named once on stderr; flags win over the file."""
    f = tmp_path / "serve.yaml"
    f.write_text(
        "proxy_location: EveryNode\n"
        "applications:\n- name: app\n  route_prefix: /\n  import_path: m:app\n  deployments:\n"
        "  - name: Model\n    num_replicas: 3\n    max_ongoing_requests: 2\n    user_config: {a: 1}\n"
        "    ray_actor_options: {num_cpus: 2, memory: 100}\n"
    )
    p = run("--serve-config", str(f), "--concurrent", "2", "--duration-s", "2", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)["config"]["deployment"]
    assert (d["num_replicas"], d["num_cpus"], d["max_ongoing_requests"]) == (3, 2, 2)
    assert p.stderr.count("\n") == 1 and "Model.user_config" in p.stderr and "ray_actor_options.memory" in p.stderr
    p = run("--serve-config", str(f), "--replicas", "1", "--concurrent", "2", "--duration-s", "2", "--json")
    assert json.loads(p.stdout)["config"]["deployment"]["num_replicas"] == 1


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--replicas", "-1"], "--replicas -1"),
        (["--max-ongoing-requests", "0"], "--max-ongoing-requests 0"),
        (["--service-ms", "-5"], "--service-ms -5.0"),
        (["--service-ms", "nan"], "--service-ms nan"),
        (["--think-time-s", "nan"], "--think-time-s nan"),
        (["--service-dist", "weibull"], "--service-dist"),
        (["--work", "gpu"], "--work 'gpu'"),
        (["--cpus", "-1"], "--cpus -1.0"),
        (["--rps", "0"], "--rps 0.0"),
        (["--trace", "TRACE_BAD"], "line 3"),
        (["--trace", "/no/such/file.csv"], "--trace"),
        (["--serve-config", "YAML_BAD"], "not valid YAML"),
        (["--serve-config", "YAML_AUTO"], "Manually setting num_replicas"),
        (["--replicas", "two"], "--replicas"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_flag(tmp_path, args, needle):
    """Each kind of bad input gives exit status 2 and a single line naming the flag and value, no traceback."""
    bad_trace = tmp_path / "trace.csv"
    bad_trace.write_text("arrival_s\n0.1\nsoon\n")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("applications: [\n")
    auto_yaml = tmp_path / "auto.yaml"
    auto_yaml.write_text("applications:\n- deployments:\n  - name: M\n    num_replicas: 2\n    autoscaling_config: {max_replicas: 4}\n")
    subst = {"TRACE_BAD": str(bad_trace), "YAML_BAD": str(bad_yaml), "YAML_AUTO": str(auto_yaml)}
    p = run(*[subst.get(a, a) for a in args])
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert needle in lines[0]
