"""ConsumerOptions, RetryPolicy and create_exponential_retry_options: defaults, checks, rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dotmac.events import (
    ConfigurationError,
    ConsumerOptions,
    DLQEntry,
    Event,
    FailurePolicy,
    HandlerTimeout,
    Reject,
    RetryPolicy,
    create_dlq_consumer,
    create_exponential_retry_options,
    create_memory_bus,
    run_consumer,
)
from dotmac.events.testing import wait_until


class Boom(Exception):
    pass


class Fatal(Exception):
    pass


def test_defaults() -> None:
    options = ConsumerOptions()
    assert options.max_retries == 3
    assert options.backoff_base_ms == 100.0
    assert options.backoff_multiplier == 2.0
    assert options.backoff_max_delay_ms == 30_000.0
    assert options.jitter is True
    assert options.dlq_topic is None
    assert options.retry_on_exceptions == (Exception,)
    assert options.retry_policy is None
    assert options.handler_timeout is None
    assert options.dlq_topic_for("orders") == "orders.DLQ"
    assert isinstance(options, FailurePolicy)
    assert RetryPolicy() == RetryPolicy(max_retries=3, retry_on_exceptions=(Exception,))


def test_seed_readme_options() -> None:
    options = ConsumerOptions(max_retries=5, backoff_base_ms=1000, dlq_topic="failed.events")
    assert options.dlq_topic_for("orders") == "failed.events"
    assert options.policy.max_retries == 5
    retry = create_exponential_retry_options(max_retries=3, base_delay_ms=100, max_delay_ms=30000)
    assert (retry.max_retries, retry.backoff_base_ms, retry.backoff_max_delay_ms) == (3, 100, 30000)


def test_max_retries_n_allows_n_plus_one_calls() -> None:
    options = ConsumerOptions(max_retries=2, jitter=False, backoff_base_ms=100)
    error = Boom("x")
    assert options.retry_delay(error, 1) == 0.1
    assert options.retry_delay(error, 2) == 0.2
    assert options.retry_delay(error, 3) is None  # third call failed: no fourth


def test_zero_retries_dead_letters_the_first_failure() -> None:
    assert ConsumerOptions(max_retries=0).retry_delay(Boom(), 1) is None


def test_reject_is_never_retried() -> None:
    options = ConsumerOptions(max_retries=10, retry_on_exceptions=(BaseException,))
    assert options.retry_delay(Reject("bad input"), 1) is None
    assert RetryPolicy(max_retries=10).should_retry(Reject("x"), 1) is False


def test_exceptions_outside_retry_on_exceptions_go_to_dlq_at_once() -> None:
    options = ConsumerOptions(max_retries=5, retry_on_exceptions=(Boom, TimeoutError), jitter=False)
    assert options.retry_delay(Boom(), 1) == 0.1
    assert options.retry_delay(HandlerTimeout("slow"), 1) == 0.1  # a TimeoutError
    assert options.retry_delay(Fatal(), 1) is None
    assert options.retry_delay(KeyError("k"), 1) is None


def test_retry_policy_takes_precedence() -> None:
    options = ConsumerOptions(
        max_retries=10,
        retry_on_exceptions=(Exception,),
        retry_policy=RetryPolicy(max_retries=1, retry_on_exceptions=(Boom,)),
        jitter=False,
    )
    assert options.policy is options.retry_policy
    assert options.retry_delay(Boom(), 1) == 0.1
    assert options.retry_delay(Boom(), 2) is None
    assert options.retry_delay(ValueError(), 1) is None


def test_backoff_follows_the_options() -> None:
    options = ConsumerOptions(
        backoff_base_ms=10, backoff_multiplier=3, backoff_max_delay_ms=200, jitter=False
    )
    assert [options.retry_delay(Boom(), n) for n in (1, 2, 3)] == [0.01, 0.03, 0.09]
    options = ConsumerOptions(
        max_retries=50,
        backoff_base_ms=10,
        backoff_multiplier=3,
        backoff_max_delay_ms=200,
        jitter=False,
    )
    assert options.retry_delay(Boom(), 4) == 0.2
    assert options.backoff_delay(40) == 0.2


def test_jittered_delay_is_in_the_upper_half() -> None:
    options = ConsumerOptions(max_retries=100, backoff_base_ms=100, jitter=True)
    for attempt in (1, 3, 6):
        exact = 0.1 * 2 ** (attempt - 1)
        for _ in range(50):
            delay = options.retry_delay(Boom(), attempt)
            assert delay is not None and exact / 2 <= delay <= exact


def test_create_exponential_retry_options() -> None:
    options = create_exponential_retry_options(
        max_retries=4, base_delay_ms=50, max_delay_ms=300, dlq_topic="dead", jitter=False
    )
    assert isinstance(options, ConsumerOptions)
    assert options.max_retries == 4
    assert options.dlq_topic_for("x") == "dead"
    assert [options.retry_delay(Boom(), n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.3, None]
    assert create_exponential_retry_options().jitter is True
    assert create_exponential_retry_options(multiplier=4, jitter=False).backoff_delay(2) == 0.4


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"retry_on_exceptions": [Exception]}, "retry_on_exceptions"),
        ({"retry_on_exceptions": (Exception, "ValueError")}, "retry_on_exceptions"),
        ({"retry_on_exceptions": (int,)}, "retry_on_exceptions"),
        ({"backoff_base_ms": -5}, "backoff_base_ms"),
        ({"backoff_base_ms": "100"}, "backoff_base_ms"),
        ({"backoff_base_ms": float("nan")}, "backoff_base_ms"),
        ({"backoff_multiplier": 0.9}, "backoff_multiplier"),
        ({"backoff_max_delay_ms": 10, "backoff_base_ms": 20}, "backoff_max_delay_ms"),
        ({"backoff_max_delay_ms": float("inf")}, "backoff_max_delay_ms"),
        ({"dlq_topic": ""}, "dlq_topic"),
        ({"dlq_topic": 5}, "dlq_topic"),
        ({"handler_timeout": 0}, "handler_timeout"),
        ({"handler_timeout": -1.0}, "handler_timeout"),
        ({"handler_timeout": "5"}, "handler_timeout"),
        ({"handler_timeout": float("nan")}, "handler_timeout"),
    ],
)
def test_invalid_options_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConsumerOptions(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "3"}, "max_retries"),
        ({"retry_on_exceptions": ValueError}, "retry_on_exceptions"),
    ],
)
def test_invalid_retry_policy_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{field}: "):
        RetryPolicy(**kwargs)


def test_bad_options_fail_through_the_factory_too() -> None:
    with pytest.raises(ConfigurationError, match="backoff_max_delay_ms"):
        create_exponential_retry_options(base_delay_ms=500, max_delay_ms=100)


# --- the same semantics through run_consumer on the memory bus ---------------------------------


async def _run(options: ConsumerOptions, error: BaseException) -> tuple[list[int], DLQEntry]:
    bus = create_memory_bus()
    calls: list[int] = []
    dead: asyncio.Queue[Event] = asyncio.Queue()

    async def handler(event: Event) -> None:
        calls.append(event.delivery_count)
        raise error

    async def on_dead(event: Event) -> None:
        await dead.put(event)

    try:
        await bus.subscribe("jobs.DLQ", on_dead, group="dlq")
        await run_consumer(bus, "jobs", handler, options, group="workers")
        await bus.publish(Event("jobs", {"n": 1}))
        entry = DLQEntry.from_event(await asyncio.wait_for(dead.get(), 5))
        await asyncio.sleep(0.05)  # nothing more may arrive
        assert dead.empty()
        return calls, entry
    finally:
        await bus.close()


async def test_run_consumer_calls_the_handler_max_retries_plus_one_times() -> None:
    options = ConsumerOptions(max_retries=3, backoff_base_ms=1, backoff_max_delay_ms=5)
    calls, entry = await _run(options, Boom("still broken"))
    assert calls == [1, 2, 3, 4]
    assert entry.attempts == 4
    assert entry.retry_count == 3
    assert entry.error_type == "Boom"
    assert entry.error == "still broken"
    assert entry.group == "workers"


async def test_run_consumer_reject_goes_to_dlq_after_one_call() -> None:
    options = ConsumerOptions(max_retries=5, backoff_base_ms=1, backoff_max_delay_ms=5)
    calls, entry = await _run(options, Reject("malformed order"))
    assert calls == [1]
    assert entry.error_type == "Reject"


async def test_run_consumer_non_retryable_goes_to_dlq_after_one_call() -> None:
    options = ConsumerOptions(
        max_retries=5, backoff_base_ms=1, backoff_max_delay_ms=5, retry_on_exceptions=(Boom,)
    )
    calls, entry = await _run(options, Fatal("no point retrying"))
    assert calls == [1]
    assert entry.error_type == "Fatal"


async def test_run_consumer_handler_timeout_counts_as_a_failure() -> None:
    bus = create_memory_bus()
    calls: list[int] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        calls.append(event.delivery_count)
        if event.delivery_count == 1:
            await asyncio.sleep(5)
        done.set()

    options = ConsumerOptions(handler_timeout=0.05, backoff_base_ms=1, backoff_max_delay_ms=5)
    try:
        await run_consumer(bus, "slow", handler, options, group="g")
        await bus.publish(Event("slow", None))
        await asyncio.wait_for(done.wait(), 5)
        assert calls == [1, 2]
    finally:
        await bus.close()


async def test_budget_spent_by_earlier_deliveries_dead_letters_without_calling_the_handler() -> (
    None
):
    """Deliveries that never finished (their consumer died) count as attempts: once they used
    the budget, the next consumer dead-letters the message instead of calling the handler."""
    bus = create_memory_bus()
    started = asyncio.Event()

    async def never_finishes(event: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    calls: list[int] = []

    async def handler(event: Event) -> None:
        calls.append(event.delivery_count)

    dead: list[DLQEntry] = []

    async def keep(entry: DLQEntry) -> None:
        dead.append(entry)

    try:
        await create_dlq_consumer(bus, "jobs.DLQ", keep, group="ops")
        await bus.publish(Event("jobs", {"id": 1}))
        for _ in range(2):  # two consumers die holding it: deliveries 1 and 2
            started.clear()
            dying = await bus.subscribe("jobs", never_finishes, group="workers")
            await asyncio.wait_for(started.wait(), 5)
            await dying.close(timeout=0.05)
        options = ConsumerOptions(max_retries=1, backoff_base_ms=1, jitter=False)
        await run_consumer(bus, "jobs", handler, options, group="workers")
        await wait_until(lambda: len(dead) == 1, 5, "the dead letter")
        assert calls == []
        assert dead[0].error_type == "RetriesExhausted"
        assert dead[0].attempts == 2
    finally:
        await bus.close()
