"""Exponential backoff as a pure function of the attempt number."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from dotmac.events.errors import ConfigurationError

__all__ = ["ExponentialBackoff"]


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExponentialBackoff:
    """``delay(n) = min(base * multiplier ** (n - 1), max)`` seconds, optionally jittered.

    ``attempt`` is the number of the attempt that just failed (1 for the first). With
    ``jitter=True`` the delay is drawn uniformly from ``[delay / 2, delay]`` ("equal jitter"),
    which spreads a burst of failures without ever waiting less than half the computed delay.
    """

    base_ms: float = 100.0
    multiplier: float = 2.0
    max_ms: float = 30_000.0
    jitter: bool = False

    def __post_init__(self) -> None:
        for name, value in (
            ("backoff_base_ms", self.base_ms),
            ("backoff_multiplier", self.multiplier),
            ("backoff_max_delay_ms", self.max_ms),
        ):
            if not _finite_number(value):
                raise ConfigurationError(name, f"must be a finite number, got {value!r}")
        if self.base_ms < 0:
            raise ConfigurationError("backoff_base_ms", f"must be >= 0, got {self.base_ms}")
        if self.multiplier < 1:
            raise ConfigurationError("backoff_multiplier", f"must be >= 1, got {self.multiplier}")
        if self.max_ms < self.base_ms:
            raise ConfigurationError(
                "backoff_max_delay_ms", f"must be >= backoff_base_ms, got {self.max_ms}"
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (>= 1)."""
        exponent = max(attempt, 1) - 1
        # Cap the exponent before computing so huge attempt numbers never overflow.
        ms = self.max_ms
        if exponent < 64:
            ms = min(self.base_ms * self.multiplier**exponent, self.max_ms)
        if self.jitter:
            ms = (rng or random).uniform(ms / 2, ms)
        return ms / 1000.0
