"""ExponentialBackoff: a pure function of the attempt number, tested without sleeping."""

from __future__ import annotations

import random

import pytest

from dotmac.events import ConfigurationError, ExponentialBackoff


def test_exact_delays_without_jitter() -> None:
    backoff = ExponentialBackoff(base_ms=100, multiplier=2, max_ms=30_000)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]


def test_delay_is_pure() -> None:
    backoff = ExponentialBackoff(base_ms=50, multiplier=3, max_ms=10_000)
    first = [backoff.delay(n) for n in range(1, 10)]
    again = [backoff.delay(n) for n in reversed(range(1, 10))][::-1]
    assert first == again
    assert first[:4] == [0.05, 0.15, 0.45, 1.35]


def test_delay_is_capped_at_max() -> None:
    backoff = ExponentialBackoff(base_ms=100, multiplier=2, max_ms=1_000)
    assert backoff.delay(4) == 0.8
    assert backoff.delay(5) == 1.0
    assert backoff.delay(50) == 1.0


def test_attempts_below_one_count_as_the_first() -> None:
    backoff = ExponentialBackoff(base_ms=100)
    assert backoff.delay(0) == backoff.delay(-5) == backoff.delay(1) == 0.1


@pytest.mark.parametrize("attempt", [64, 65, 1_000, 10**6, 10**18])
def test_huge_attempt_numbers_give_the_cap_without_overflow(attempt: int) -> None:
    assert ExponentialBackoff(base_ms=100, multiplier=2, max_ms=5_000).delay(attempt) == 5.0
    assert ExponentialBackoff(base_ms=1, multiplier=10, max_ms=60_000).delay(attempt) == 60.0


def test_multiplier_one_is_constant() -> None:
    backoff = ExponentialBackoff(base_ms=250, multiplier=1, max_ms=250)
    assert {backoff.delay(n) for n in (1, 2, 10, 10**9)} == {0.25}


def test_zero_base_never_waits() -> None:
    assert ExponentialBackoff(base_ms=0, max_ms=0).delay(7) == 0.0


def test_jitter_stays_within_the_upper_half() -> None:
    backoff = ExponentialBackoff(base_ms=100, multiplier=2, max_ms=2_000, jitter=True)
    rng = random.Random(1234)
    for attempt in range(1, 12):
        exact = min(0.1 * 2 ** (attempt - 1), 2.0)
        samples = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(exact / 2 <= s <= exact for s in samples)
        assert len(set(samples)) > 150  # it really varies
        assert min(samples) < exact * 0.6 and max(samples) > exact * 0.9


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    backoff = ExponentialBackoff(jitter=True)
    a = [backoff.delay(n, random.Random(7)) for n in range(1, 6)]
    b = [backoff.delay(n, random.Random(7)) for n in range(1, 6)]
    assert a == b
    assert a != [ExponentialBackoff().delay(n) for n in range(1, 6)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_ms": -1}, "backoff_base_ms"),
        ({"multiplier": 0.5}, "backoff_multiplier"),
        ({"base_ms": 100, "max_ms": 50}, "backoff_max_delay_ms"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ExponentialBackoff(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: must be")
