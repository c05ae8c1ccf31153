"""How the load changes over time: steps, a ramp, a sine (diurnal), or bursts.

A shape gives the *level* at time t: the number of closed-loop clients, or the
open-loop arrival rate in requests per second. Bursts are a two-state
Markov-modulated Poisson process: the rate is ``low`` for an exponential time of mean
``mean_low_s``, then ``high`` for a time of mean ``mean_high_s``, and so on; it has no
deterministic level, so the arrival source keeps its state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("steps", "ramp", "sine", "bursts")


@dataclass(frozen=True)
class LoadShape:
    kind: str
    steps: tuple[tuple[float, float], ...] = ()  # (duration_s, level) pieces, then the last level holds
    start: float = 0.0  # ramp: level at t=0 ...
    end: float = 0.0  # ... rising (or falling) linearly to this at ramp_s, then flat
    ramp_s: float = 0.0
    mean: float = 0.0  # sine: mean + amplitude * sin(2 pi t / period_s)
    amplitude: float = 0.0
    period_s: float = 0.0
    low: float = 0.0  # bursts (rates)
    high: float = 0.0
    mean_low_s: float = 0.0
    mean_high_s: float = 0.0

    def __post_init__(self):
        from simserve.config import ConfigError, _choice, _number

        _choice("shape", self.kind, SHAPES)
        if self.kind == "steps":
            if not self.steps:
                raise ConfigError("steps", (), "need at least one duration_s:level pair")
            for duration, level in self.steps:
                _number("steps.duration_s", duration, low=0, low_open=True)
                _number("steps.level", level, low=0)
        elif self.kind == "ramp":
            _number("ramp.start", self.start, low=0)
            _number("ramp.end", self.end, low=0)
            _number("ramp.ramp_s", self.ramp_s, low=0, low_open=True)
        elif self.kind == "sine":
            _number("sine.mean", self.mean, low=0)
            _number("sine.amplitude", self.amplitude, low=0)
            _number("sine.period_s", self.period_s, low=0, low_open=True)
            if self.amplitude > self.mean:
                raise ConfigError("sine.amplitude", self.amplitude, f"must not exceed the mean ({self.mean})")
        else:
            for name in ("low", "high"):
                _number(f"bursts.{name}", getattr(self, name), low=0)
            for name in ("mean_low_s", "mean_high_s"):
                _number(f"bursts.{name}", getattr(self, name), low=0, low_open=True)

    def level(self, t: float) -> float:
        """The level at time t (bursts: the long-run mean rate)."""
        if self.kind == "steps":
            elapsed = 0.0
            for duration, level in self.steps:
                elapsed += duration
                if t < elapsed:
                    return level
            return self.steps[-1][1]
        if self.kind == "ramp":
            return self.start + (self.end - self.start) * min(t / self.ramp_s, 1.0)
        if self.kind == "sine":
            return self.mean + self.amplitude * math.sin(2 * math.pi * t / self.period_s)
        return (self.low * self.mean_low_s + self.high * self.mean_high_s) / (self.mean_low_s + self.mean_high_s)

    @property
    def peak(self) -> float:
        if self.kind == "steps":
            return max(level for _, level in self.steps)
        if self.kind == "ramp":
            return max(self.start, self.end)
        if self.kind == "sine":
            return self.mean + self.amplitude
        return max(self.low, self.high)

    @property
    def length_s(self) -> float | None:
        """The natural length of the shape, if it has one (steps, ramp)."""
        if self.kind == "steps":
            return sum(d for d, _ in self.steps)
        return None

    def change_times(self, horizon_s: float) -> list[float]:
        """When a piecewise-constant level changes (steps only)."""
        out, t = [], 0.0
        for duration, _ in self.steps[:-1]:
            t += duration
            if t < horizon_s:
                out.append(t)
        return out


def parse_pairs(text: str, field: str) -> tuple[tuple[float, float], ...]:
    """'15:1,30:8' -> ((15.0, 1.0), (30.0, 8.0)); ValueError names the bad item."""
    out = []
    for item in text.split(","):
        a, sep, b = item.strip().partition(":")
        try:
            if not sep:
                raise ValueError
            out.append((float(a), float(b)))
        except ValueError:
            raise ValueError(f"{field}: {item.strip()!r} is not duration_s:level") from None
    return tuple(out)
