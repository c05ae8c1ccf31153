"""The report's pure arithmetic in validate/__main__.py, and the harness's arrivals, on synthetic data (no Ray)."""

from validate.__main__ import SHAPES, _direction, shape_lines


def _pooled(values: dict) -> dict:
    return {name: {m: {"real": real, "sim": sim} for m in ("throughput_rps", "p50_ms", "p99_ms")}
            for name, (real, sim) in values.items()}


def test_a_change_under_five_percent_counts_as_none():
    """Ratios within 5% of 1 have no direction; beyond it, up or down."""
    assert [_direction(r) for r in (0.96, 1.0, 1.04, 1.06, 0.94)] == [0, 0, 0, 1, -1]


def test_shape_agrees_only_when_real_and_simulated_move_the_same_way():
    """Real throughput falling from 4 to 20 clients while simulated throughput rises is a 'no'; both flat is a 'yes'."""
    case, a, b, _ = SHAPES[0]
    pending = next(s for s in SHAPES if s[2] == "pending-3of2")
    lines = shape_lines(_pooled({a: (34.0, 37.0), b: (30.0, 39.0), "pending-3of2": (34.2, 37.0)}))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert rows[case].endswith("| no |")
    assert rows[pending[0]].endswith("| yes |")
    assert len(rows) == 2  # shapes whose rows are missing are left out


def test_the_harness_sends_the_arrivals_simserve_simulates():
    """The real open loop's arrival times are simserve's own for the same seed, one for one."""
    from dataclasses import replace

    import numpy as np

    from simserve import simulate
    from validate.harness import poisson_arrivals_s
    from validate.scenario import scenario

    cfg = replace(scenario(name="p", work=[("io", 0.05)], num_replicas=2, rps=40.0, duration_s=5.0, warmup_s=0.0),
                  keep_requests=True)
    simulated = np.sort(simulate(cfg).requests["arrival_s"].to_numpy())
    assert np.array_equal(simulated, np.asarray(list(poisson_arrivals_s(cfg))))


def test_a_rerun_subset_replaces_those_scenarios_runs_only(tmp_path):
    """Resimulating a grid file and then a rerun of one scenario keeps the other scenarios' real runs
    and takes the rerun's for that one."""
    import json
    import os

    from validate.__main__ import resimulate
    from validate.scenario import HERE, load_calibration

    with open(os.path.join(HERE, "REPORT.json")) as f:
        report = json.load(f)
    by_name: dict = {}
    for row in report["rows"]:
        by_name.setdefault(row["name"], row)
    a, b = (by_name[n] for n in ("queued-limit", "io50-1rep-m1-c1"))
    rerun_b = {**b, "real": {**b["real"], "throughput_rps": 1.0}}
    first, second = tmp_path / "grid.json", tmp_path / "rerun.json"
    first.write_text(json.dumps({"rows": [a, b], "wall_s": 10.0, "measured": "A"}))
    second.write_text(json.dumps({"rows": [rerun_b], "wall_s": 2.0, "measured": "B"}))
    rows, saved = resimulate([str(first), str(second)], load_calibration())
    assert [(r["name"], r["real"]["throughput_rps"]) for r in rows] == [
        ("queued-limit", a["real"]["throughput_rps"]), ("io50-1rep-m1-c1", 1.0)]
    assert saved == {"measured": "A; B for io50-1rep-m1-c1", "wall_s": 12.0}


def test_merging_a_file_whose_runs_are_already_there_changes_nothing(tmp_path):
    """A report's runs, then again a file merged into it before: the same runs, wall time and stamps."""
    import json
    import os

    from validate.__main__ import resimulate
    from validate.scenario import HERE, load_calibration

    with open(os.path.join(HERE, "REPORT.json")) as f:
        row = next(r for r in json.load(f)["rows"] if r["name"] == "queued-limit")
    report, rerun = tmp_path / "REPORT.json", tmp_path / "rerun.json"
    report.write_text(json.dumps({"rows": [row], "wall_s": 10.0, "measured": "A"}))
    rerun.write_text(json.dumps({"rows": [row], "wall_s": 2.0, "measured": "B"}))
    rows, saved = resimulate([str(report), str(rerun)], load_calibration())
    assert [r["name"] for r in rows] == ["queued-limit"]
    assert saved == {"measured": "A", "wall_s": 10.0}


def test_gil_work_is_simulated_at_the_speed_it_was_sized_with():
    """A gil segment sized at 30 ns per iteration and run on a host at 36 is simulated 1.2x as long, whatever
    the calibration's own host speed; io is untouched."""
    import pytest

    from validate.scenario import load_calibration, scenario, with_overheads

    cfg = scenario(name="s", work=[("io", 0.01), ("gil", 0.02)], rps=1.0)
    cal = {**load_calibration(), "host_ns_per_loop": 40.0}
    segs = with_overheads(cfg, cal, 36.0, sized_ns_per_loop=30.0).deployment.work.segments
    assert segs[0].duration.mean_s == 0.01
    assert segs[1].duration.mean_s == pytest.approx(0.024)
    assert with_overheads(cfg, cal, 36.0).deployment.work.segments[1].duration.mean_s == pytest.approx(0.018)


def test_rays_costs_are_simulated_as_calibrated_whatever_the_runs_probe_read():
    """A run whose spin probe read 36 ns against the calibration's 40 is simulated with cpu_speed 1: Ray's
    costs as the calibration measured them, only its work stretched."""
    from validate.scenario import load_calibration, scenario, with_overheads

    cfg = scenario(name="s", work=[("gil", 0.02)], rps=1.0)
    cal = {**load_calibration(), "host_ns_per_loop": 40.0}
    sim = with_overheads(cfg, cal, 36.0)
    assert sim.overheads.cpu_speed == 1.0
    assert sim.overheads.router_cpu_s == cal["router_cpu_s"]


def test_native_work_follows_the_runs_own_matmul_time_when_measured():
    """A native segment is stretched by the run's matmul time over the sizing one when the run has it (1.5x
    here), by the spin probe's ratio otherwise; gil work keeps the spin probe's ratio either way."""
    import pytest

    from validate.scenario import load_calibration, scenario, with_overheads

    cfg = scenario(name="s", work=[("gil", 0.02), ("native", 0.02)], rps=1.0)
    cal = load_calibration()
    segs = with_overheads(cfg, cal, 36.0, sized_ns_per_loop=30.0, native_stretch=1.5).deployment.work.segments
    assert [s.duration.mean_s for s in segs] == pytest.approx([0.024, 0.03])
    segs = with_overheads(cfg, cal, 36.0, sized_ns_per_loop=30.0).deployment.work.segments
    assert [s.duration.mean_s for s in segs] == pytest.approx([0.024, 0.024])


def test_gil_work_follows_the_replicas_own_cpu_per_iteration_when_measured(monkeypatch):
    """A run whose replicas' gil work took 33 ns of thread CPU per iteration, sized at 30, is simulated 1.1x as
    long (not the probe's 1.2x); native work keeps the probe's ratio; a run saved before, the probe's for both."""
    import pytest

    import validate.__main__ as vm
    from validate.scenario import load_calibration, scenario

    simulated = []
    real_with_overheads = vm.with_overheads
    monkeypatch.setattr(vm, "with_overheads", lambda *a, **k: simulated.append(real_with_overheads(*a, **k))
                        or simulated[-1])
    cfg = scenario(name="s", work=[("gil", 0.002), ("native", 0.002)], rps=5.0, duration_s=2.0, warmup_s=0.5,
                   cores=2)
    node = {"node": 0, "physical_cores": 2, "physical_busy": 0.1, "foreign_busy_cores": 0.0}
    probe = {"sampler_ns": [36.0], "work_ns_per_loop": 30.0}
    real = {"throughput_rps": 5.0, "latency_ms": {"p50": 10.0, "p99": 12.0}, "host_ns_per_loop": 36.0,
            "nodes": [node], "host_probe": probe,
            "gil_work": {"cpu_ns_per_loop": 33.0, "wall_ns_per_loop": 40.0, "loops": 10, "answers": 1}}
    vm.compare(cfg, real, load_calibration())
    assert [s.duration.mean_s for s in simulated[0].deployment.work.segments] == pytest.approx([0.0022, 0.0024])
    del real["gil_work"]
    vm.compare(cfg, real, load_calibration())
    assert [s.duration.mean_s for s in simulated[-1].deployment.work.segments] == pytest.approx([0.0024, 0.0024])


def test_each_answer_carries_its_own_requests_gil_work_when_requests_overlap():
    """Two requests in one async replica, each 1 ms of sleep then 20,000 iterations of gil work, overlap in
    their sleeps; each answer reports its own 20,000 iterations and a positive CPU and wall time."""
    import asyncio

    from simserve import Distribution
    from validate.harness import AsyncModel

    model = AsyncModel([("io", Distribution("deterministic", 0.001)), ("gil", Distribution("deterministic", 0.001))],
                       ns_per_loop=50.0, native_unit=1e-3)

    async def both():
        return await asyncio.gather(model(), model())

    for body in asyncio.run(both()):
        ok, cpu_ns, wall_ns, loops = body.split()
        assert (ok, int(loops)) == ("ok", 20_000)
        assert int(cpu_ns) > 0 and int(wall_ns) > 0


def test_the_gil_works_speed_sums_the_answers_received_in_the_window():
    """Thread CPU and wall ns are summed over the answers received between warm-up and the end and divided by
    their iterations; answers outside the window, and runs without gil work, give nothing."""
    from validate.harness import _gil_work

    works = [(0.5, "ok 100 300 10"), (1.0, "ok 200 300 10"), (2.0, "ok 400 500 10"), (3.5, "ok 999 999 1")]
    assert _gil_work(works, 1.0, 3.0) == {"cpu_ns_per_loop": 30.0, "wall_ns_per_loop": 40.0, "loops": 20,
                                          "answers": 2}
    assert _gil_work([(2.0, "ok 0 0 0")], 1.0, 3.0) is None
    assert _gil_work([], 1.0, 3.0) is None


def test_one_slow_probe_does_not_move_a_runs_host_speed():
    """A run saved before the sampler is at the median of its probes: a 55 ns probe before a run whose
    other probes read 34-36 leaves it at 35; a run saved with only the median of its probes during
    counts that median once."""
    from validate.host_speed import run_ns_per_loop

    probes = {"before_ns_per_loop": 55.0, "after_ns_per_loop": 34.0, "during_samples_ns": [35.0, 36.0, 34.5]}
    assert run_ns_per_loop(probes) == 35.0
    assert run_ns_per_loop({"before_ns_per_loop": 55.0, "after_ns_per_loop": 34.0, "during_ns_per_loop": 36.0}) == 36.0


def test_a_sampled_runs_host_speed_is_its_time_average():
    """A run whose sampler read 30 ns half the time and 60 ns the other half got through as many
    iterations as one at 40 ns throughout (the harmonic mean), whatever the probes before and after read."""
    import pytest

    from validate.host_speed import run_ns_per_loop

    probes = {"before_ns_per_loop": 90.0, "after_ns_per_loop": 90.0, "sampler_ns": [30.0, 60.0] * 20}
    assert run_ns_per_loop(probes) == pytest.approx(40.0)


def test_a_runs_speed_trace_follows_its_probes_about_the_windows_mean():
    """Probes alternating 30 and 60 ns (speeds 2 : 1) become a trace alternating 4/3 and 2/3 of the
    window's mean speed, starting at 0 and then halfway between probes, each probe taken 0.25 s after
    the one before it ended; a run without the sampler's probes has no trace."""
    import pytest

    from validate.host_speed import PROBE_N, speed_trace

    trace = speed_trace({"sampler_ns": [30.0, 60.0] * 4}, (0.0, 10.0))
    assert [s for _, s in trace] == pytest.approx([4 / 3, 2 / 3] * 4)
    first, second = 0.25, 0.25 + 30.0 * PROBE_N * 1e-9 + 0.25  # when the first two probes ran
    assert [t for t, _ in trace[:2]] == pytest.approx([0.0, (first + second) / 2])
    assert speed_trace({"before_ns_per_loop": 50.0}, (0.0, 10.0)) == ()


def test_the_host_speed_sampler_probes_from_its_own_process_until_stopped():
    """Started and stopped 0.7 s later, the sampler returns a probe for each 0.25 s that passed, each a
    plausible ns per loop, and its process has exited."""
    import time

    from validate.host_speed import HostSpeedSampler

    sampler = HostSpeedSampler()
    sampler.start()
    time.sleep(0.7)
    samples = sampler.stop()
    assert 1 <= len(samples) <= 3
    assert all(1.0 < x < 1000.0 for x in samples)
    assert sampler._proc.returncode == 0


def test_a_runs_speed_range_is_its_slowest_and_fastest_probe_against_the_calibration():
    """Probes of 30, 40 and 60 ns in a run whose probe speed is 0.75 (a 30 ns calibration over the 40 ns
    median) span 0.5 to 1.0 of the calibration's speed, and the report's failure line says so."""
    import pytest

    from validate.__main__ import _speed_note, speed_range

    row = {"probe_speed": 0.75,
           "real": {"host_probe": {"before_ns_per_loop": 30.0, "after_ns_per_loop": 60.0, "during_samples_ns": [40.0]}}}
    assert speed_range(row) == pytest.approx((0.5, 1.0))
    assert "0.50-1.00" in _speed_note(row)
    assert speed_range({"probe_speed": 1.0, "real": {}}) is None


def test_idle_wake_is_the_settled_excess_and_starts_where_half_of_it_is_reached():
    """Round trips of 3.0 ms back to back rising to 4.8 ms from 50 ms of idleness on give a 1.8 ms wake
    after 20 ms, the first gap with at least 0.9 ms of excess."""
    import pytest

    from validate.calibrate import idle_wake

    wake = {"gaps_s": [0.0, 0.005, 0.02, 0.05, 0.1, 0.2], "median_s": [0.0030, 0.0031, 0.0040, 0.0047, 0.0048, 0.0049]}
    cost, after = idle_wake(wake)
    assert cost == pytest.approx(0.0018)
    assert after == 0.02
    assert idle_wake({"gaps_s": [0.0, 0.05], "median_s": [0.003, 0.0029]}) == (0.0, 0.0)


def test_the_gil_phase_counts_takes_in_switch_intervals_and_spreads_the_extra_cpu_over_them():
    """Round trips 70 ms slower beside a spinning thread than beside a spinning process, at a 5 ms switch
    interval, are 14 takes; 2.8 ms more replica CPU per request is 0.2 ms per take; a probe 15 ms slower
    is 3 takes; a replica that spent less CPU beside the spinner gives 0 and a warning."""
    import pytest

    from validate.calibrate import derive_gil

    def lat(median_s):
        return {"median_s": median_s}

    g = {"control_spinning_process": lat(0.004), "gil_held_in_replica": lat(0.074),
         "probe_control_spinning_process": lat(0.002), "probe_gil_held_in_replica": lat(0.017),
         "control_replica_cpu": {"cpu_s_per_request": 0.0019}, "gil_held_replica_cpu": {"cpu_s_per_request": 0.0047}}
    warnings = []
    d = derive_gil(g, 0.005, warnings)
    assert (d["replica_gil_acquisitions"], d["replica_probe_gil_acquisitions"]) == (14, 3)
    assert d["replica_gil_handoff_cpu_s"] == pytest.approx(0.0002)
    assert warnings == []
    g["gil_held_replica_cpu"] = {"cpu_s_per_request": 0.0015}
    assert derive_gil(g, 0.005, warnings)["replica_gil_handoff_cpu_s"] == 0.0 and len(warnings) == 1


def test_the_router_trace_times_answers_accepted_and_rejected_apart():
    """Four answers, two accepted (1 and 3 ms) and two rejected (50 and 70 ms): one line each, with
    the count and the 10th, 50th and 90th percentiles (the nearest rank at or above)."""
    from validate.trace_router import answer_lines

    assert answer_lines([[True, 0.001], [False, 0.05], [True, 0.003], [False, 0.07]]) == [
        "send to answer, accepted: 2, p10/p50/p90 1.0/3.0/3.0 ms",
        "send to answer, rejected: 2, p10/p50/p90 50.0/70.0/70.0 ms"]


def test_the_burst_tool_takes_each_ranks_median_over_rounds():
    """Two rounds of four answers (in any order): the 1st answer's median time is that of the two
    fastest, the last's that of the two slowest, the 3rd (rank 50%) that of the two thirds."""
    import pytest

    from validate.burst_probe import rank_medians

    got = dict(rank_medians([[0.4, 0.1, 0.3, 0.2], [0.5, 0.3, 0.9, 0.7]], 4))
    assert got[1] == pytest.approx(0.2) and got[4] == pytest.approx(0.65) and got[3] == pytest.approx(0.5)


def test_simserve_answers_a_burst_of_probes_one_after_another_with_the_calibration():
    """The burst tool's simulated side with the committed calibration: of 50 probes fired at once,
    every one is answered, the first long before the last and the middle one before 75% of the
    last's time (when every call's takes shared the GIL to the end it came at 88%)."""
    from validate.burst_probe import rank_medians, sim_bursts

    got = dict(rank_medians(sim_bursts(50, 2), 50))
    assert got[1] < 0.2 * got[50] and got[26] < 0.75 * got[50]


def test_the_wake_tools_simulated_sleep_pays_the_wake_up_and_its_spin_does_not():
    """The wake tool's simulated side with a 3 ms wake-up: a 20 ms sleep in the handler leaves both
    cores quiet, so its response pays the 3 ms; a 20 ms spin keeps the replica busy from the moment
    the driver sent, so its response pays none (Ray paid 1.0-1.9 ms after either: validate/README.md
    item 45)."""
    import pytest

    from validate.scenario import load_calibration
    from validate.wake_probe import sim_overheads

    got = sim_overheads(0.02, {**load_calibration(), "idle_wake_s": 0.003})
    assert got["sleep"] - got["noop"] == pytest.approx(0.003, abs=5e-4)
    assert got["spin"] - got["noop"] < 1e-3


def test_the_timeline_counts_takes_leg_by_leg_and_the_done_lag_leaves_out_the_releases_share():
    """With the GIL held, 50 ms more from send to handler, 12 ms more to the response and 23 ms more to the
    done callback are 10, 2 and 5 takes (at least 1 before the handler), and 35 ms more to the acceptance
    are 7 of the 10 (never more than them); the 2.8 ms of extra replica CPU is spread over all 17; and of a
    1.8 ms done lag, the 5 release takes' share of 3.4 ms of replica CPU (1 ms) is simserve's own, leaving
    0.8 ms."""
    import pytest

    from validate.calibrate import derive_gil, done_lag

    def lat(median_s):
        return {"median_s": median_s}

    legs = ("send -> handler", "handler -> response", "response -> done callback", "send -> acceptance")
    timeline = {"plain": dict(zip(legs, (3.8, 1.4, 1.8, 4.5))), "held": dict(zip(legs, (53.8, 13.4, 24.8, 39.5)))}
    g = {"control_spinning_process": lat(0.004), "gil_held_in_replica": lat(0.074),
         "probe_control_spinning_process": lat(0.002), "probe_gil_held_in_replica": lat(0.017),
         "control_replica_cpu": {"cpu_s_per_request": 0.0019}, "gil_held_replica_cpu": {"cpu_s_per_request": 0.0053}}
    warnings = []
    d = derive_gil(g, 0.005, warnings, timeline)
    assert (d["replica_gil_acquisitions"], d["replica_accept_gil_acquisitions"], d["replica_response_gil_acquisitions"],
            d["replica_release_gil_acquisitions"]) == (10, 7, 2, 5)
    assert d["replica_gil_handoff_cpu_s"] == pytest.approx(0.0034 / 17)
    vals = {**d, "replica_cpu_s": 0.0034}
    assert done_lag({"done_callback_lag": lat(0.0018)}, vals, warnings) == pytest.approx(0.0008)
    assert warnings == []
    timeline["held"]["send -> handler"] = 3.0  # faster with the GIL held: still one take before the handler
    d = derive_gil(g, 0.005, warnings, timeline)
    assert (d["replica_gil_acquisitions"], d["replica_accept_gil_acquisitions"]) == (1, 1)


def test_a_def_handlers_extra_cost_is_the_mean_paired_difference_less_probe_answers():
    """Two pairs of no-op runs, the def replica 0.7 and 0.6 ms of Python per request above the async def
    one, of which 0.1 ms is probe answers (0.1 per request at 1 ms) the async def one had none of, give
    0.55 ms."""
    import pytest

    from validate.calibrate import derive_sync

    def run(python_s, probes, n=1000):
        return {"n": n, "probes": probes, "load_wall_s": 5.0, "idle_wall_s": 3.0,
                "load_replica": {"python_s": python_s * n, "native_s": 0.0},
                "idle_replica": {"python_s": 0.0, "native_s": 0.0}}

    rounds = [{"async": run(0.0015, 0), "sync": run(0.0022, 100)}, {"async": run(0.0016, 0), "sync": run(0.0022, 100)}]
    d = derive_sync(rounds, 0.001, 0.0, [])
    assert d["replica_sync_cpu_s"] == pytest.approx(0.00055)
    assert d["replica_sync_native_cpu_s"] == 0.0


def test_done_lags_pair_the_kth_done_callback_since_the_first_send_with_the_kth_answer():
    """Requests sent back to back from 0.5 s: callbacks before that (the warm-up's) are ignored, and
    each lag is measured from its request's answer (negative when the callback runs before it)."""
    from validate.calibrate import done_lags

    answered = [1.0, 2.0, 3.0]
    done = [0.2, 1.0015, 1.9995, 3.001]
    assert [round(x, 6) for x in done_lags(answered, done, since=0.5)] == [0.0015, -0.0005, 0.001]


def test_logged_startups_pair_each_adding_line_with_the_next_start_of_that_deployment():
    """A start is timed from the deployment's ``Adding`` line to the next ``started successfully``
    line of one of its replicas, and carries that line's time and process id; other
    deployments' lines are ignored."""
    import datetime

    from validate.calibrate import _logged_startups

    def line(t, text):
        return f"INFO 2026-01-01 12:00:{t} controller 1 -- {text}\n"

    lines = [
        line("01,000", "Adding 1 replica to Deployment(name='S', app='a')."),
        line("01,500", "Adding 1 replica to Deployment(name='T', app='a')."),
        line("02,250", "Replica(id='y', deployment='T', app='a') started successfully on node 'n' after 0.7s (PID: 8)."),
        line("02,600", "Replica(id='x', deployment='S', app='a') started successfully on node 'n' after 1.6s (PID: 7)."),
    ]
    ready = datetime.datetime(2026, 1, 1, 12, 0, 2, 600000).timestamp()
    [(seconds, at, pid)] = _logged_startups(lines, "a", "S")
    assert (round(seconds, 3), at, pid) == (1.6, ready, 7)


def test_charged_cpu_counts_each_cost_once_per_occasion():
    """The report's simulated CPU per request: the driver pays the client's costs plus an
    attempt's share of routing per attempt, the rest of it per send (one, and one per
    rejected send) and one probe's per probe; the replica the handler's CPU
    segments plus its per-request and per-probe costs; over HTTP the router's share moves to
    the proxy and the driver keeps the load generator's cost."""
    from dataclasses import replace

    import pytest

    from simserve import Overheads
    from validate.__main__ import charged_cpu_ms
    from validate.scenario import scenario

    oh = dict(client_cpu_s=0.001, client_native_cpu_s=0.002, router_cpu_s=0.004, router_attempt_cpu_s=0.001,
              probe_cpu_s=0.008,
              probe_native_cpu_s=0.016, replica_cpu_s=0.032, replica_probe_cpu_s=0.064,
              http_client_cpu_s=0.128, proxy_cpu_s=0.256)
    sim = {"throughput_rps": 10.0, "replicas": {"running": 2},
           "router": {"attempts_per_request": 2.0, "probes_per_request": 0.5, "rejections_per_request": 0.0}}
    cfg = scenario(name="c", work=[("io", 0.05), ("gil", 0.01)], num_replicas=2, concurrent=4)
    handle = charged_cpu_ms(replace(cfg, overheads=Overheads(**oh)), sim)
    assert handle["driver"] == pytest.approx(1 + 2 + 2 * 1 + 3 + 0.5 * (8 + 16))
    assert handle["replica"] == pytest.approx(10 + 32 + 0.5 * 64)
    assert handle["proxy"] == 0.0 and handle["background"] == 0.0
    http = charged_cpu_ms(replace(cfg, overheads=Overheads(ingress="http", **oh)), sim)
    assert http["driver"] == pytest.approx(128)
    assert http["proxy"] == pytest.approx(256 + 2 * 1 + 3 + 0.5 * (8 + 16))
    rejected = charged_cpu_ms(replace(cfg, overheads=Overheads(**oh)),
                              {**sim, "router": {**sim["router"], "rejections_per_request": 1.0}})
    assert rejected["driver"] == pytest.approx(handle["driver"] + 3)  # a second send
    woken = charged_cpu_ms(replace(cfg, overheads=Overheads(**oh)),
                           {**sim, "wake_cpu_ms_per_request": {"driver": 0.5, "replica": 0.25}})
    assert woken["driver"] == pytest.approx(handle["driver"] + 0.5)
    assert woken["replica"] == pytest.approx(handle["replica"] + 0.25)
    handed = charged_cpu_ms(replace(cfg, overheads=Overheads(**oh)), {**sim, "gil_handoff_cpu_ms_per_request": 0.75})
    assert handed["replica"] == pytest.approx(handle["replica"] + 0.75)
    # Idle rates spread over 10 requests per second: 1 ms, 2 ms, and 3 ms for each of 2 replicas.
    idle = charged_cpu_ms(replace(cfg, overheads=Overheads(driver_idle_cores=0.01, proxy_idle_cores=0.02,
                                                           replica_idle_cores=0.03, **oh)), sim)
    assert idle["driver"] == pytest.approx(handle["driver"] + 1)
    assert idle["proxy"] == pytest.approx(2)
    assert idle["replica"] == pytest.approx(handle["replica"] + 6)


def test_wake_cpu_is_each_processs_excess_over_back_to_back_at_the_sleep_plus_the_round_trip():
    """Per handler sleep, the driver's and replica's CPU per request (Python + C++) minus back
    to back's, placed at the sleep plus the back-to-back round trip; a negative excess is
    clamped to 0 with a warning."""
    import pytest

    from validate.calibrate import wake_cpu

    def point(sleep_s, driver_ms, replica_ms):
        return {"sleep_s": sleep_s, "median_s": sleep_s + 0.003,
                "driver_python_s": driver_ms / 2e3, "driver_native_s": driver_ms / 2e3,
                "replica_python_s": replica_ms / 1e3, "replica_native_s": 0.0}

    warnings = []
    out = wake_cpu({"points": [point(0.0, 2.0, 1.6), point(0.01, 2.6, 1.5), point(0.1, 3.0, 2.4)]}, warnings)
    assert out["wake_idle_s"] == pytest.approx([0.003, 0.013, 0.103])
    assert out["client_wake_cpu_s"] == pytest.approx([0.0, 0.0006, 0.001])
    assert out["replica_wake_cpu_s"] == pytest.approx([0.0, 0.0, 0.0008])
    assert len(warnings) == 1 and "replica_wake_cpu_s" in warnings[0]


def test_a_run_made_before_the_lag_spread_was_a_field_gets_it_from_its_own_lags_when_merged():
    """merge gives a calibration run without done_callback_lag_cv the std over mean of its own
    handle phase's done-callback lags, and takes the median with the runs that have it."""
    import pytest

    from validate.calibrate import FIELDS, merge

    def doc(**kw):
        d = dict.fromkeys(FIELDS, 0.0)
        d.update(replica_gil_acquisitions=1, replica_probe_gil_acquisitions=1, wake_idle_s=[0.01],
                 client_wake_cpu_s=[0.0], replica_wake_cpu_s=[0.0], http={"replica_cpu_s": 0.0},
                 host_ns_per_loop=50.0, native_unit_s=1e-4, ray_version="2.60.0", host={}, date="", raw={})
        d.update(kw)
        return d

    old = doc(raw={"handle_c1": {"done_callback_lag": {"mean_s": 0.002, "std_s": 0.0012}}})
    del old["done_callback_lag_cv"]
    m = merge([old, doc(done_callback_lag_cv=0.5), doc(done_callback_lag_cv=0.7)])
    assert m["done_callback_lag_cv"] == pytest.approx(0.6)

def test_merged_calibrations_are_each_fields_median_as_measured():
    """Three calibrations at 40, 50 and 60 ns per loop merge at 50 ns with every field the median of the
    runs' own values (1.0, 1.5, 1.2 ms give 1.2 ms; not brought to one probe speed first), wake-up tables
    element by element, counts rounded."""
    import pytest

    from validate.calibrate import FIELDS, merge

    def doc(ns, router_cpu_s, hop_s, acquisitions, wake_cpu, startup_cpu_s):
        d = dict.fromkeys(FIELDS, 0.0)
        d.update(host_ns_per_loop=ns, router_cpu_s=router_cpu_s, hop_s=hop_s, replica_gil_acquisitions=acquisitions,
                 replica_probe_gil_acquisitions=1, replica_startup_s=1.5, replica_startup_cpu_s=startup_cpu_s,
                 wake_idle_s=[0.01, 0.1], client_wake_cpu_s=wake_cpu, replica_wake_cpu_s=[0.0, 0.0],
                 http={"replica_cpu_s": router_cpu_s, "replica_native_cpu_s": 0.0},
                 native_unit_s=ns * 1e-5, ray_version="2.60.0", host={}, date="", raw={})
        return d

    m = merge([doc(40.0, 0.0010, 0.0001, 13, [0.001, 0.002], 1.0), doc(50.0, 0.0015, 0.0003, 14, [0.002, 0.001], 1.3),
               doc(60.0, 0.0012, 0.0002, 16, [0.0006, 0.0036], 1.2)])
    assert m["host_ns_per_loop"] == 50.0
    assert m["router_cpu_s"] == pytest.approx(0.0012)
    assert m["http"]["replica_cpu_s"] == pytest.approx(0.0012)
    assert m["hop_s"] == pytest.approx(0.0002)
    assert m["replica_startup_cpu_s"] == pytest.approx(1.2)
    assert m["replica_startup_s"] == pytest.approx(1.5)
    assert m["client_wake_cpu_s"] == pytest.approx([0.001, 0.002])
    assert m["wake_idle_s"] == [0.01, 0.1]
    assert m["replica_gil_acquisitions"] == 14
    assert m["native_unit_s"] == pytest.approx(50.0e-5)
    assert [r["host_ns_per_loop"] for r in m["raw"]["runs"]] == [40.0, 50.0, 60.0]


def test_the_oversubscribed_factor_is_the_driver_and_replica_cpu_loaded_over_alone():
    """Rows alone at 8, 7, 9 ms of driver and replica CPU per request and with the cores
    oversubscribed at 12, 11 ms give 11.5 / 8 = 1.4375; the background processes' figures
    (negative when starved) do not enter."""
    import pytest

    from validate.loaded_cpu import oversubscribed_cpu_factor

    def row(spinners, dri, rep, bac):
        return {"spinners": spinners, "dri.py": dri / 2, "dri.na": dri / 2, "rep.py": rep, "rep.na": 0.0,
                "bac.py": bac, "bac.na": 0.0}

    raw = {"rows": [row(0, 4, 4, 0.1), row(2, 6, 6, -2.0), row(0, 3, 4, 0.0), row(2, 5, 6, -3.0), row(0, 4, 5, 0.2)]}
    assert oversubscribed_cpu_factor(raw) == pytest.approx(11.5 / 8.0)


def test_the_oversubscribed_factor_leaves_out_the_wake_up_cpu_at_each_rows_latency():
    """With a wake-up table that costs the driver and the replica 1 ms each after 50 ms idle and
    nothing before 10 ms, rows alone (5 ms latency) keep their 8 ms, rows beside the spinners
    (90 ms latency) lose 2 ms of their 12: the factor is 10 / 8."""
    import pytest

    from simserve import Overheads
    from validate.loaded_cpu import oversubscribed_cpu_factor

    def row(spinners, ms, lat_ms):
        return {"spinners": spinners, "lat_ms": lat_ms, "dri.py": ms / 2, "dri.na": 0.0, "rep.py": ms / 2,
                "rep.na": 0.0}

    wake = Overheads(wake_idle_s=(0.01, 0.05), client_wake_cpu_s=(0.0, 0.001), replica_wake_cpu_s=(0.0, 0.001))
    raw = {"rows": [row(0, 8.0, 5.0), row(2, 12.0, 90.0), row(0, 8.0, 5.0)]}
    assert oversubscribed_cpu_factor(raw, wake) == pytest.approx(10.0 / 8.0)


def test_rays_batched_saving_counts_the_extra_attempts_and_probes_at_their_unit_costs():
    """Driver rows at 4 ms one at a time and 4 ms with 4 in flight, where 0.5 more attempts
    (2 ms each) and 0.25 more probes (1 ms each, Python and C++) were made: the saving is
    4 / (4 + 1 + 0.25); the replica, 3 ms and 2.4 ms with 0.25 more probes at 2 ms: 2.4 / 3.5."""
    import pytest

    from validate.batched_cpu import ray_saving

    def row(c, dri, rep, attempts, probes):
        return {"concurrency": c, "dri.py": dri / 2, "dri.na": dri / 2, "rep.py": rep, "rep.na": 0.0,
                "attempts": attempts, "probes": probes}

    raw = {"rows": [row(1, 4.0, 3.0, 1.0, 0.0), row(4, 4.0, 2.4, 1.5, 0.25), row(1, 4.0, 3.0, 1.0, 0.0)]}
    cal = {"router_attempt_cpu_s": 0.002, "probe_cpu_s": 0.0005, "probe_native_cpu_s": 0.0005,
           "replica_probe_cpu_s": 0.0015, "replica_probe_native_cpu_s": 0.0005}
    assert ray_saving(raw, cal, "driver") == pytest.approx(4.0 / 5.25)
    assert ray_saving(raw, cal, "replica") == pytest.approx(2.4 / 3.5)


def test_the_batched_fit_finds_the_factor_simserve_itself_was_run_with(monkeypatch):
    """Rows made by simserve with batched_cpu_factor 0.7 (its charged CPU per request and its own
    attempts and probes, at 1 and 4 in flight, committed calibration) fit back to 0.7 for the
    driver and the replica, within 0.01 (a run's events move with the factor, so its saving is
    not quite monotone in it)."""
    import pytest

    import validate.batched_cpu as b
    from validate.scenario import load_calibration

    monkeypatch.setattr(b, "SIM_DURATION_S", 8.0)
    cal = load_calibration(None)
    raw = {"rows": [b.simulated_row(cal, 1.0, 1), b.simulated_row(cal, 0.7, 4)]}
    assert b.fit_role(raw, cal, "driver") == pytest.approx(0.7, abs=0.01)
    assert b.fit_role(raw, cal, "replica") == pytest.approx(0.7, abs=0.01)


def test_the_batched_fit_over_http_finds_the_replicas_factor_simserve_was_run_with(monkeypatch):
    """Rows made by simserve over HTTP with batched_cpu_factor 0.6 (no attempts or probes
    counted, as on Ray's side behind the proxy) fit back to 0.6 for the replica, within 0.02."""
    import pytest

    import validate.batched_cpu as b
    from validate.scenario import load_calibration

    monkeypatch.setattr(b, "SIM_DURATION_S", 8.0)
    cal = load_calibration(None)
    raw = {"rows": [b.simulated_row(cal, 1.0, 1, http=True), b.simulated_row(cal, 0.6, 4, http=True)]}
    assert raw["rows"][1]["attempts"] is None
    assert b.fit_role(raw, cal, "replica", http=True) == pytest.approx(0.6, abs=0.02)


def test_an_http_factor_goes_into_the_http_section_and_its_command_beside_the_handles(tmp_path):
    """``add_to_calibration`` with ``section="http"`` writes the field there, leaving the top
    level's alone, and the chain keeps the handle's and the proxy's batched_cpu runs both."""
    import json

    from validate.scenario import add_to_calibration

    path = tmp_path / "cal.json"
    cal = {"batched_cpu_factor": 0.7, "http": {"replica_cpu_s": 0.003}, "raw": {},
           "command": "python -m validate.batched_cpu --from x --add-to c"}
    add_to_calibration(cal, str(path), "batched_cpu_factor", 0.5, "batched_http", {"rows": []}, "batched_cpu",
                       ["--http", "--from", "y", "--add-to", "c"], section="http")
    doc = json.loads(path.read_text())
    assert doc["batched_cpu_factor"] == 0.7
    assert doc["http"] == {"replica_cpu_s": 0.003, "batched_cpu_factor": 0.5}
    assert doc["command"].split("; ") == ["python -m validate.batched_cpu --from x --add-to c",
                                          "python -m validate.batched_cpu --http --from y --add-to c"]


def test_a_diagnosis_charges_each_role_its_cpu_per_request_less_its_idle_rate():
    """2 s of driver Python and 1 s of C++ over 10 s and 100 requests, with an idle rate of 0.1 s
    of Python per 5 s: 18 ms and 10 ms per request; a role with no CPU at all: 0."""
    from validate.calibrate import per_request_by_role

    load = {"driver": {"python_s": 2.0, "native_s": 1.0}}
    idle = ({"driver": {"python_s": 0.1, "native_s": 0.0}}, 5.0)
    out = per_request_by_role(load, 10.0, idle, 100, ("driver", "replica"))
    assert out == {"dri.py": 18.0, "dri.na": 10.0, "rep.py": 0.0, "rep.na": 0.0}


def test_the_windows_idle_steal_and_context_switches_are_per_second_of_the_window(monkeypatch):
    """Two snapshots 10 s apart on 2 cores (20 core-seconds of ticks in all, steal counted) give 4 s of idle
    and iowait as 0.4 cores, 2 s of steal as 0.2 cores, and 30,000 context switches as 3,000 per second."""
    import collections

    import pytest

    from validate import harness
    from validate.harness import _window_host

    monkeypatch.setattr(harness.os, "cpu_count", lambda: 2)

    times = collections.namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")
    a = times(100.0, 0.0, 50.0, 300.0, 10.0, 0.0, 0.0, 20.0, 0.0, 0.0)
    b = times(110.0, 0.0, 54.0, 303.0, 11.0, 0.0, 0.0, 22.0, 0.0, 0.0)
    out = _window_host((a, 1_000), (b, 31_000))
    assert out == pytest.approx({"window_idle_cores": 0.4, "window_steal_cores": 0.2,
                                 "window_context_switches_per_s": 3_000.0})
    assert _window_host((a, 0)) == {}  # the window's end never came (a failed drive)


def test_a_run_is_simulated_on_the_cores_the_hypervisor_and_other_users_left_it():
    """A real run that lost 0.3 cores to steal in its window is simulated on 1.7 of its 2 cores; one saved
    before steal was measured, on all of them; and less what other users' processes took, the node's
    busy cores not ours less the steal they include (never below none)."""
    import pytest

    from validate.__main__ import compare
    from validate.scenario import load_calibration, scenario

    cfg = scenario(name="s", work=[("io", 0.01)], rps=5.0, duration_s=2.0, warmup_s=0.5, cores=2)
    node = {"node": 0, "physical_cores": 2, "physical_busy": 0.1, "foreign_busy_cores": 0.0}
    real = {"throughput_rps": 5.0, "latency_ms": {"p50": 10.0, "p99": 12.0}, "host_ns_per_loop": 58.0,
            "nodes": [{**node, "window_idle_cores": 1.5, "window_steal_cores": 0.3}]}
    row = compare(cfg, real, load_calibration())
    assert row["sim"]["nodes"][0]["physical_cores"] == pytest.approx(1.7)
    row = compare(cfg, {**real, "nodes": [node]}, load_calibration())
    assert row["sim"]["nodes"][0]["physical_cores"] == 2
    # Other users' processes: the node's busy cores not ours (0.4) count the steal (0.3) too.
    row = compare(cfg, {**real, "nodes": [{**real["nodes"][0], "foreign_busy_cores": 0.4}]}, load_calibration())
    assert row["sim"]["nodes"][0]["physical_cores"] == pytest.approx(1.6)
    row = compare(cfg, {**real, "nodes": [{**real["nodes"][0], "foreign_busy_cores": 0.2}]}, load_calibration())
    assert row["sim"]["nodes"][0]["physical_cores"] == pytest.approx(1.7)
    row = compare(cfg, {**real, "nodes": [{**node, "foreign_busy_cores": 0.1}]}, load_calibration())
    assert row["sim"]["nodes"][0]["physical_cores"] == pytest.approx(1.9)


def test_each_configuration_runs_on_a_cluster_of_its_own_shared_by_its_repeats(monkeypatch):
    """Three configurations, two of them with the same logical CPUs, at two repeats each: three clusters
    started, each with its configuration's num_cpus, each running that configuration twice."""
    import validate.__main__ as main
    from validate import harness
    from validate.scenario import scenario

    clusters = []

    class FakeCluster:
        def __init__(self, num_cpus, **kwargs):
            self.num_cpus, self.runs = num_cpus, []
            clusters.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, cfg, app_name):
            self.runs.append(app_name)
            return {}

    monkeypatch.setattr(harness, "RealCluster", FakeCluster)
    monkeypatch.setattr(main, "compare", lambda cfg, real, cal: {"name": cfg.deployment.name})
    monkeypatch.setattr(main, "_line", lambda row: row["name"])
    cfgs = [scenario(name="a", cluster_cpus=2, rps=1.0), scenario(name="b", cluster_cpus=4, rps=1.0),
            scenario(name="c", cluster_cpus=2, rps=1.0)]
    rows = main.run_all(cfgs, {"host_ns_per_loop": 50.0}, repeats=2)
    assert [r["name"] for r in rows] == ["a", "a", "b", "b", "c", "c"]
    assert [(c.num_cpus, c.runs) for c in clusters] == [(2, ["a-0", "a-1"]), (4, ["b-0", "b-1"]), (2, ["c-0", "c-1"])]


def test_the_simulated_work_wall_is_read_as_the_replica_ran_it():
    """An async replica runs its clients' 10 ms of gil work one after another, each in 10 ms; a def replica
    shares its GIL between two at once, each in 20 ms (``trace_work.sim_walls``)."""
    import numpy as np

    from validate.scenario import scenario
    from validate.trace_work import sim_walls

    for handler, clients, wall_ms in (("async", 3, 10.0), ("sync", 2, 20.0)):
        cfg = scenario(name="w", work=[("gil", 0.01)], handler=handler, concurrent=clients, cores=4,
                       duration_s=2.0, warmup_s=0.5)
        latency, wall = sim_walls(cfg, 0.5)
        assert len(wall) > 50
        assert np.allclose(wall, wall_ms, atol=1e-6)
        assert np.allclose(latency, clients * 10.0, atol=1e-6)


def test_the_seed_spread_says_whether_rays_throughput_falls_inside_it():
    """A run's simulated throughput over several seeds is shown min-max, and the note on a run
    outside the threshold says whether Ray's throughput lies within that range; a run saved
    before the spread was kept shows none."""
    from validate.__main__ import _seeds_cell, _seeds_note

    row = {"real": {"throughput_rps": 20.5}, "sim_seeds_rps": [12.3, 10.7, 37.9, 9.6, 13.3]}
    assert _seeds_cell(row) == "9.6-37.9"
    assert _seeds_note(row).endswith("Ray's 20.5 within that range")
    row["real"]["throughput_rps"] = 44.4
    assert _seeds_note(row).endswith("Ray's 44.4 outside that range")
    assert _seeds_cell({"real": {}}) == "-" and _seeds_note({"real": {}}) == ""


def test_a_calibration_files_commands_keep_one_entry_per_tool_the_latest_last():
    """Adding a tool's command drops that tool's earlier one and puts the new one last, so the
    chain regenerates the file in the order the tools last ran."""
    from validate.scenario import add_command

    chain = "python -m validate.calibrate --merge a b; python -m validate.batched_cpu --from x --add-to c"
    chain = add_command(chain, "python -m validate.attempt_cpu --from p --add-to c")
    chain = add_command(chain, "python -m validate.batched_cpu --from y --add-to c")
    assert chain.split("; ") == ["python -m validate.calibrate --merge a b",
                                 "python -m validate.attempt_cpu --from p --add-to c",
                                 "python -m validate.batched_cpu --from y --add-to c"]


def test_an_attempts_cost_is_the_routers_cpu_per_attempt_less_its_probes_at_the_calibrations_speed():
    """A window of 1000 attempts with one probe each and 2 s of router CPU, on a host running at half
    the calibration's speed (120 ns per spin iteration against 60): 2 ms per attempt less the probe's
    0.8 ms at the calibration's speed (1.6 ms here) leaves 0.4 ms here, 0.2 ms at the calibration's;
    the field is the median over every window of every run given."""
    import pytest

    from validate.attempt_cpu import derive

    cal = {"host_ns_per_loop": 60.0, "probe_cpu_s": 0.0008}
    window = {"wall_s": 5.0, "router_cpu_s": 2.0, "attempts": 1000, "probes": 1000}
    run = {"rows": [window, {**window, "router_cpu_s": 3.0}, window], "ns_per_loop": [120.0, 120.0]}
    out = derive([run], cal)
    assert out["router_attempt_cpu_s"] == pytest.approx(0.0002)
    assert out["per_window_ms"] == pytest.approx([0.2, 0.7, 0.2])
    assert derive([run, {**run, "rows": [{**window, "router_cpu_s": 3.0}] * 4}], cal)["router_attempt_cpu_s"] == \
        pytest.approx(0.0007)


def test_the_answer_trace_times_each_simulated_send_in_legs_that_add_up_and_leaves_simserve_as_it_was():
    """The answer tool's simulated side, 8 clients on one five-slot replica with the committed
    calibration: sends are timed both accepted and rejected, each send's three legs add up to
    its total, and the methods it wraps are simserve's own again afterwards."""
    import dataclasses

    import pytest

    from simserve.router import RayRouter
    from simserve.simulation import Simulation
    from validate.scenario import grid_scenarios, load_calibration, with_overheads
    from validate.trace_answers import sim_legs

    before = (RayRouter._send, RayRouter.on_accepted, RayRouter._rejected, Simulation._deliver, Simulation._reply)
    cal = load_calibration()
    cfg = next(c for c in grid_scenarios() if c.deployment.name == "io50-1rep-m5-c8")
    cfg = with_overheads(dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, duration_s=5.0)), cal,
                         cal["host_ns_per_loop"])
    _, legs = sim_legs(cfg)
    for accepted in (True, False):
        leg = legs[accepted]
        assert len(leg["total"]) > 20
        for to, inside, back, total in zip(leg["to the replica"], leg["in the replica"], leg["back"], leg["total"]):
            assert to + inside + back == pytest.approx(total)
    assert before == (RayRouter._send, RayRouter.on_accepted, RayRouter._rejected, Simulation._deliver,
                      Simulation._reply)


def test_the_idle_core_tool_refuses_a_run_of_nothing_and_a_bad_list_with_status_2(capsys):
    """``--pairs 0 --spinners 0`` and ``--bursts x``: one line naming the flag, status 2, no run."""
    import pytest

    from validate.idle_cores import main

    assert main(["--pairs", "0", "--spinners", "0"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["--bursts", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--pairs 0 with --spinners 0" in err[0] and "--bursts" in err[1]


def test_the_cycle_summary_times_waits_lifetimes_and_what_follows_a_done_callback():
    """A hand-made log: r1 queued at 0 and served by its own task at 4 ms, r2 queued again
    (a retry) at 10 ms and served at 40 ms; task 1 lives 0-5 ms; the done callback at 20 ms
    is followed by task 2's candidate set at 25 ms, task 2 having slept last; both new requests
    came before their nearest done callback, r1 by 20 ms and r3 by 2 ms."""
    from validate.trace_cycle import cycle_lines

    ms = 1e-3
    log = [(0.0, "enqueue", "r1", False), (0.0, "task start", 1, None), (1 * ms, "select", 1, 0),
           (4 * ms, "selected", 1, True), (4 * ms, "fulfil_own", 1, "r1"), (5 * ms, "task end", 1, None),
           (10 * ms, "enqueue", "r2", True), (11 * ms, "select", 2, 0), (15 * ms, "selected", 2, False),
           (15 * ms, "sleep", 2, 0), (20 * ms, "done", None, None), (25 * ms, "select", 2, 1),
           (40 * ms, "selected", 2, True), (40 * ms, "fulfil_free", 2, "r2"), (46 * ms, "enqueue", "r3", False),
           (48 * ms, "done", None, None)]
    lines = cycle_lines(log, "x")
    assert "new 4.0/4.0/4.0 (1), queued again 30.0/30.0/30.0 (1)" in lines[1]
    assert "routing tasks lived 5.0/5.0/5.0" in lines[1]
    assert "3.0/15.0/15.0 where it found a replica (2), 4.0/4.0/4.0 where it found none (1)" in lines[2]
    assert "done callback -> next candidate set 5.0/5.0/5.0; its task had last: sleep 100%" in lines[3]
    assert "came after it in 100% (done - request: median 11.0 ms)" in lines[4]


def test_the_simulated_cycle_log_has_each_send_and_done_callback_once_and_leaves_simserve_as_it_was():
    """The cycle tool's simulated side, 8 clients on one five-slot replica with the committed
    calibration: every send follows a replica given to a request (at most the 8 clients'
    last ones unsent when the run ends), a done callback for every answered request, every
    candidate set by a task whose start was logged, and RayRouter's methods its own again
    afterwards."""
    import dataclasses

    from simserve.router import RayRouter
    from validate.scenario import grid_scenarios, load_calibration, with_overheads
    from validate.trace_cycle import sim_events

    names = ("_enqueue", "_choose", "_fulfill", "_probed", "_attempt", "_exit", "_maybe_start_tasks", "_sent",
             "on_response", "_decrement")
    before = [getattr(RayRouter, n) for n in names]
    cal = load_calibration()
    cfg = next(c for c in grid_scenarios() if c.deployment.name == "io50-1rep-m5-c8")
    cfg = with_overheads(dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, duration_s=5.0)), cal,
                         cal["host_ns_per_loop"])
    summary, log = sim_events(cfg)
    kinds = [e[1] for e in log]
    started = {e[2] for e in log if e[1] == "task start"}
    assert 0 <= sum(1 for k in kinds if k.startswith("fulfil")) - kinds.count("send") <= 8
    assert kinds.count("done") >= summary["completed"] > 20
    assert all(e[2] in started for e in log if e[1] == "select")
    assert [getattr(RayRouter, n) for n in names] == before


def test_the_router_pieces_sort_each_callback_of_rays_loop_into_the_piece_of_the_request_it_serves():
    """The labels Ray 2.60's router loop showed (2026-11-28) fall into their pieces: the
    request's arrival, the send step, the first answer and assign_request's end, the routing
    tasks, probes and the done callbacks; the self-pipe read is the loop's own cost."""
    from validate.router_pieces import piece

    seen = {
        "task:AsyncioRouter.assign_request@AsyncioRouter.assign_request:208": "start",
        "fn:SingletonThreadRouter._wrap_asyncio_call_in_future.<locals>.create_task_and_setup": "start",
        "task:AsyncioRouter.assign_request@RequestRouter._choose_replica_for_request:1408": "send",
        "task:AsyncioRouter.assign_request@ActorReplicaResult.get_rejection_response:180": "answer",
        "task:AsyncioRouter.assign_request@ObjectRefGenerator._suppress_exceptions:335": "answer",
        "fn:_chain_future.<locals>._set_state": "answer",
        "fn:AsyncioRouter.assign_request.<locals>.<lambda>": "answer",
        "task:RequestRouter._fulfill_pending_requests@_wait:535": "routing",
        "fn:_set_result_unless_cancelled": "routing",
        "task:RunningReplica.get_queue_len@RunningReplica.get_queue_len:321": "probe",
        "fn:_wait.<locals>._on_completion": "probe",
        "task:RouterCounters.install.<locals>.counted_probe@RouterCounters.install.<locals>.counted_probe:50": "probe",
        "fn:AsyncioRouter._process_finished_request": "done",
        "fn:RouterCounters.install.<locals>.timed_decrement": "done",
        "fn:BaseSelectorEventLoop._read_from_self": "wake",
        "task:RouterMetricsManager._report_cached_metrics_forever@sleep:649": "other",
    }
    assert {lbl: piece(lbl) for lbl in seen} == seen


def test_the_router_shares_are_each_pieces_part_of_the_loops_turns_the_median_over_the_windows():
    """Windows whose turns gave 1 ms per request to the arrival, 2 to the send and routing,
    1.5 (one window 4) and 0.5 to the answer and the done callbacks, and 9 ms to turns with
    no piece, which do not count: shares 0.2, 0.3 and 0.1, the medians of the windows."""
    import pytest

    from validate.router_pieces import derive

    def window(answer_s):
        cpu = {"start": 1.0, "send": 1.5, "routing": 0.5, "answer": answer_s, "done": 0.5, "idle": 9.0}
        return {"requests": 1000, "thread_cpu_s": sum(cpu.values()) + 0.1, "piece_cpu_s": cpu}

    out = derive([window(1.5), window(1.5), window(4.0)])
    assert out["start_share"] == pytest.approx(0.2)
    assert out["answer_share"] == pytest.approx(0.3)
    assert out["done_share"] == pytest.approx(0.1)


def test_the_send_log_has_each_simulated_send_once_with_its_rejection_and_leaves_simserve_as_it_was(monkeypatch):
    """simserve's side of trace_sends on 12 clients and one five-slot replica: every request
    has an accepted send (sends less rejections at least the requests), a burst's later places
    are rejected more often than its first, the replica checks each send once, and afterwards
    RayRouter, Simulation and Replica have their own methods again."""
    import validate.trace_sends as t
    from simserve.replica import Replica
    from simserve.router import RayRouter
    from simserve.simulation import Simulation

    before = (RayRouter.__init__, RayRouter.update_replicas, Simulation.send, Replica.admit)
    monkeypatch.setattr(t, "SIM_DURATION_S", 8.0)
    rps, requests, sends, calls = t.sim_sends(12)
    assert (RayRouter.__init__, RayRouter.update_replicas, Simulation.send, Replica.admit) == before
    assert rps > 0 and len(sends) >= requests
    rejected = sum(s[2] for s in sends)
    assert len(sends) - rejected >= requests  # each request accepted once, some rejected first
    first = [s[2] for s in sends if s[1] == 0]
    late = [s[2] for s in sends if s[1] >= 5]
    assert late and sum(late) / len(late) > sum(first) / len(first)
    # The replica's checks: one per send, the rejected ones as many as the sends marked so, and
    # every accepted call's slot released after its check.
    assert len(calls) == len(sends) and sum(not ok for _, ok, _ in calls) == rejected
    assert all(end is None or end > t for t, ok, end in calls if ok)
    lines = t.sends_lines("x", rps, requests, sends, calls)
    assert lines[0].startswith(f"x: {rps:.1f} rps") and "checks apart" in lines[1] and "place in burst: 0 " in lines[2]


def test_the_send_tracer_refuses_no_clients_with_status_2(capsys):
    """``--clients 0`` is a one-line error naming the field, before any cluster starts."""
    from validate.trace_sends import main

    assert main(["--clients", "0"]) == 2
    assert capsys.readouterr().err.strip() == "clients: must be at least 1, got 0"


def test_the_rejection_burst_tool_refuses_bad_counts_with_status_2(capsys):
    """``--in-flight`` must be a list of counts of at least 1 and ``--rounds`` at least 1: a
    one-line error naming the field, before any cluster starts."""
    from validate.reject_burst import main

    assert main(["--in-flight", "1,0"]) == 2
    assert main(["--in-flight", "x"]) == 2
    assert main(["--rounds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [e.split(":")[0] for e in err] == ["in-flight", "in-flight", "rounds"]
