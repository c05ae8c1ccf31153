"""The simulator against closed forms: Erlang C, M/G/1 processor sharing, exact MVA.

Run lengths are chosen so that the statistical error of the estimate is well inside
the tolerance (for M/M/1 at rho=0.9 the mean wait's standard error after 1.2 million
customers is about 1.7%), so a failure means a modelling error, not bad luck.
"""

import pytest

from helpers import config
from oracles import mmc_mean_wait, mva_multiserver, ps_mean_sojourn
from simserve import simulate

MEAN_S = 0.1


@pytest.mark.parametrize("c", [1, 4, 8])
@pytest.mark.parametrize("rho", [0.5, 0.8, 0.9])
def test_mean_wait_matches_erlang_c(c, rho):
    """Ideal router, one slot per replica, Poisson arrivals, exponential io: mean wait is Erlang C's within 5%."""
    lam = rho * c / MEAN_S
    n = {0.5: 150_000, 0.8: 400_000, 0.9: 1_200_000 if c == 1 else 600_000}[rho]
    cfg = config(
        kind="io", dist="exponential", mean_s=MEAN_S, replicas=c, max_ongoing=1, router="ideal",
        rps=lam, requests=n, duration_s=None, warmup_s=50.0, keep=False, seed=11,
    )
    s = simulate(cfg).summary
    expected = mmc_mean_wait(c, lam, 1 / MEAN_S)
    assert s["queue_wait_ms"]["mean"] / 1e3 == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("dist,cv", [("exponential", 1.0), ("deterministic", 0.0), ("lognormal", 2.0)])
@pytest.mark.parametrize("rho", [0.5, 0.7])
def test_single_core_gil_sharing_is_processor_sharing(dist, cv, rho):
    """Sync gil handlers on one core give M/G/1-PS: E[T] = E[S] / (1 - rho) for any service distribution."""
    cfg = config(
        kind="gil", dist=dist, cv=cv, mean_s=MEAN_S, replicas=1, max_ongoing=100_000, handler="sync",
        router="ideal", cluster_cpus=1, cores=1, rps=rho / MEAN_S, requests=300_000, duration_s=None,
        warmup_s=50.0, keep=False, seed=5,
    )
    s = simulate(cfg).summary
    assert s["latency_ms"]["mean"] / 1e3 == pytest.approx(ps_mean_sojourn(MEAN_S, rho), rel=0.05)


@pytest.mark.parametrize("servers", [1, 2])
@pytest.mark.parametrize("clients", [1, 3, 6])
def test_closed_loop_matches_exact_mva(servers, clients):
    """N closed-loop clients with exponential think time against c one-slot replicas match exact MVA."""
    think = 0.2
    cfg = config(
        kind="io", dist="exponential", mean_s=MEAN_S, replicas=servers, max_ongoing=1, router="ideal",
        concurrent=clients, think_time_s=think, requests=120_000, duration_s=None, warmup_s=20.0,
        keep=False, seed=3,
    )
    s = simulate(cfg).summary
    x, r = mva_multiserver(clients, servers, MEAN_S, think)
    assert s["throughput_rps"] == pytest.approx(x, rel=0.03)
    assert s["latency_ms"]["mean"] / 1e3 == pytest.approx(r, rel=0.03)
