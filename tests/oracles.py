"""Closed forms from queueing theory, small and dependency-free, used as test oracles."""

from __future__ import annotations


def erlang_c(c: int, a: float) -> float:
    """P(wait) in M/M/c with offered load a = lambda/mu, via the Erlang-B recursion."""
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    rho = a / c
    return b / (1.0 - rho + rho * b)


def mmc_mean_wait(c: int, lam: float, mu: float) -> float:
    """Mean time in queue Wq of M/M/c."""
    return erlang_c(c, lam / mu) / (c * mu - lam)


def ps_mean_sojourn(mean_s: float, rho: float) -> float:
    """M/G/1 processor sharing: E[T] = E[S] / (1 - rho), whatever the distribution."""
    return mean_s / (1.0 - rho)


def mva_multiserver(n_clients: int, servers: int, service_s: float, think_s: float) -> tuple[float, float]:
    """Exact MVA for N clients, a delay station (think) and one c-server FCFS station
    with exponential service (load-dependent rate min(j, c) / S). Returns (X, R)."""
    p = [1.0]  # p[j]: probability of j clients at the station, given n-1 clients
    x = r = 0.0
    for n in range(1, n_clients + 1):
        r = sum(j * service_s / min(j, servers) * p[j - 1] for j in range(1, n + 1))
        x = n / (think_s + r)
        new = [0.0] * (n + 1)
        for j in range(1, n + 1):
            new[j] = x * service_s / min(j, servers) * p[j - 1]
        new[0] = 1.0 - sum(new[1:])
        p = new
    return x, r
