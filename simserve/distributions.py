"""Service-time distributions, each given by its mean and coefficient of variation.

Users know their handler's mean latency and, at best, how variable it is; so every
distribution here is parameterised by ``mean_s`` and ``cv`` (standard deviation over
mean), the way Ciw's distribution objects carry ``.mean`` and ``.variance``.
``empirical`` resamples measured durations uniformly with replacement.

Draws come in blocks from a ``numpy.random.Generator`` because one NumPy call per
request would dominate the simulation's cost; the block size does not change the
sequence of values, so results stay identical whatever the block size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = ("deterministic", "exponential", "lognormal", "gamma", "empirical")

BLOCK = 4096


@dataclass(frozen=True)
class Distribution:
    """A non-negative duration in seconds.

    ``kind`` is one of ``KINDS``; ``mean_s`` is the mean and ``cv`` the coefficient of
    variation (ignored by ``deterministic`` (0) and ``exponential`` (1)); ``samples_s``
    holds the measured durations of an ``empirical`` distribution.
    """

    kind: str = "deterministic"
    mean_s: float = 0.0
    cv: float = 0.0
    samples_s: tuple[float, ...] = ()

    @classmethod
    def empirical(cls, samples_s) -> "Distribution":
        samples = tuple(float(s) for s in samples_s)
        mean = sum(samples) / len(samples) if samples else 0.0
        return cls("empirical", mean, 0.0, samples)

    @property
    def effective_cv(self) -> float:
        if self.kind == "deterministic":
            return 0.0
        if self.kind == "exponential":
            return 1.0
        if self.kind == "empirical":
            s = np.asarray(self.samples_s)
            return float(s.std() / s.mean()) if s.size and s.mean() > 0 else 0.0
        return self.cv

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Return ``n`` independent durations."""
        m, cv = self.mean_s, self.cv
        if self.kind == "deterministic" or m == 0.0:
            return np.full(n, m)
        if self.kind == "exponential":
            return rng.exponential(m, n)
        if self.kind == "lognormal":
            if cv == 0.0:
                return np.full(n, m)
            sigma2 = math.log1p(cv * cv)
            return rng.lognormal(math.log(m) - sigma2 / 2.0, math.sqrt(sigma2), n)
        if self.kind == "gamma":
            if cv == 0.0:
                return np.full(n, m)
            shape = 1.0 / (cv * cv)
            return rng.gamma(shape, m / shape, n)
        if self.kind == "empirical":
            return rng.choice(np.asarray(self.samples_s, dtype=float), n)
        raise ValueError(f"unknown distribution kind {self.kind!r}")

    def sampler(self, rng: np.random.Generator):
        """A zero-argument callable returning the next duration, drawn in blocks."""
        if self.kind == "deterministic" or self.mean_s == 0.0:
            value = float(self.mean_s)
            return lambda: value
        block: list[float] = []

        def next_value() -> float:
            if not block:
                block.extend(self.draw(rng, BLOCK)[::-1].tolist())
            return block.pop()

        return next_value


def draw_in_blocks(dists, rng: np.random.Generator, blocks: int) -> list[np.ndarray]:
    """What one ``sampler(rng)`` per distribution returns over ``blocks * 4096`` calls
    each, the samplers called in turn (as the simulation calls a request's segments)."""
    out = []
    drawn: list[list] = [[] for _ in dists]
    for _ in range(blocks):
        for j, d in enumerate(dists):
            if d.kind != "deterministic" and d.mean_s != 0.0:
                drawn[j].append(d.draw(rng, BLOCK))
    for d, parts in zip(dists, drawn):
        out.append(np.concatenate(parts) if parts else np.full(blocks * BLOCK, float(d.mean_s)))
    return out


