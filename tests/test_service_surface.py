"""The service surface on every transport: routers with decorators, one handler on several
topics, middleware and publish hooks, plain-function handlers, and failures logged by default."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dotmac.events import (
    CallNext,
    ConfigurationError,
    ConsumerOptions,
    DLQEntry,
    Event,
    EventBus,
    EventRouter,
    PublishError,
    RedisConfig,
    SubscriptionSet,
    create_memory_bus,
    create_redis_bus,
    event_handler,
)
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.testing import wait_until
from tests.support.kafka_helpers import kafka_test_config

FAST = ConsumerOptions(max_retries=2, backoff_base_ms=10, jitter=False)


@pytest.fixture(params=["memory", "redis", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        made: EventBus = create_memory_bus()
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        made = create_redis_bus(
            RedisConfig(url=url, key_prefix=f"svc{uuid.uuid4().hex[:6]}:", block_ms=100)
        )
    else:
        made = create_kafka_bus(kafka_test_config(request.getfixturevalue("kafka_bootstrap")))
    yield made
    await made.close()


def topic(name: str) -> str:
    return f"svc.{name}.{uuid.uuid4().hex[:8]}"


async def test_router_subscribes_its_handlers_and_drains_on_stop(bus: EventBus) -> None:
    router = EventRouter()
    created, either = topic("created"), [topic("login"), topic("logout")]
    seen: list[tuple[str, Any]] = []
    lifecycle: list[str] = []

    @router.handler(created, group="billing", options=FAST, concurrency=2)
    async def bill(event: Event) -> None:
        seen.append((event.topic, event.payload))

    @router.handler(either, group="audit")
    async def audit(event: Event) -> None:
        seen.append((event.topic, event.payload))

    @router.on_startup
    async def opened() -> None:
        lifecycle.append("startup")

    @router.on_shutdown
    def closed() -> None:
        lifecycle.append("shutdown")

    await router.start(bus)
    assert lifecycle == ["startup"] and len(router.subscriptions) == 2
    assert isinstance(router.subscriptions[1], SubscriptionSet)
    await bus.publish(Event(created, 1))
    await bus.publish(Event(either[0], 2))
    await bus.publish(Event(either[1], 3))
    await wait_until(lambda: len(seen) == 3, 30, "three events handled")
    assert sorted(seen) == sorted([(created, 1), (either[0], 2), (either[1], 3)])
    await router.stop()
    assert lifecycle == ["startup", "shutdown"] and router.subscriptions == []
    await router.stop()  # idempotent


async def test_plain_function_handler_runs_in_a_thread_once_per_delivery(bus: EventBus) -> None:
    name = topic("sync")
    calls: list[tuple[Any, str]] = []

    def handle(event: Event) -> None:  # a plain def: never awaited on the loop
        calls.append((event.payload, threading.current_thread().name))
        if event.payload == "fail" and event.delivery_count == 1:
            raise RuntimeError("once")

    await bus.subscribe(name, handle, group="g", policy=FAST)
    await bus.publish(Event(name, "ok"))
    await bus.publish(Event(name, "fail"))
    await wait_until(lambda: len(calls) == 3, 30, "ok once, fail twice")
    await asyncio.sleep(0.2)
    assert sorted(p for p, _ in calls) == ["fail", "fail", "ok"]
    assert all(thread.startswith("dotmac-") for _, thread in calls)


async def test_middleware_and_publish_hooks_run_in_order(bus: EventBus) -> None:
    name = topic("mw")
    order: list[str] = []
    dead: list[DLQEntry] = []

    async def outer(event: Event, call_next: CallNext) -> Any:
        order.append("bus")
        return await call_next(event)

    async def refuse_blocked(event: Event, call_next: CallNext) -> Any:
        order.append("router")
        if event.headers.get("tenant") == "blocked":
            raise PermissionError("tenant blocked")
        return await call_next(event)

    def stamp(event: Event) -> Event:
        return event.with_headers({"tenant": event.payload["tenant"]})

    def refuse_empty(event: Event) -> Event:
        if not event.payload["tenant"]:
            raise PublishError("no tenant")
        return event

    bus.add_middleware(outer)  # type: ignore[attr-defined]
    bus.add_publish_hook(stamp)  # type: ignore[attr-defined]
    bus.add_publish_hook(refuse_empty)  # type: ignore[attr-defined]
    router = EventRouter(middleware=[refuse_blocked])

    @router.handler(name, group="g", options=ConsumerOptions(max_retries=0))
    async def handle(event: Event) -> None:
        order.append(f"handler {event.headers['tenant']}")

    async def keep(event: Event) -> None:
        dead.append(DLQEntry.from_event(event))

    await router.start(bus)
    await bus.subscribe(f"{name}.DLQ", keep, group="dlq")
    with pytest.raises(PublishError, match="no tenant"):
        await bus.publish(Event(name, {"tenant": ""}))
    await bus.publish(Event(name, {"tenant": "acme"}, key="order"))  # one partition: in order
    await bus.publish(Event(name, {"tenant": "blocked"}, key="order"))
    await wait_until(
        lambda: len(dead) == 1 and "handler acme" in order, 30, "one handled, one dead"
    )
    assert order[:3] == ["bus", "router", "handler acme"]
    assert dead[0].error_type == "PermissionError"
    await router.stop()


async def test_register_handler_subscribes_what_the_decorator_declared(bus: EventBus) -> None:
    name = topic("earnorm")
    seen: list[Any] = []

    @event_handler(name, group="g")
    async def handle_user_created(event: Event) -> None:
        seen.append(event.payload)

    subscriptions = await bus.register_handler(handle_user_created)
    await bus.publish(Event(name, {"user_id": 1}))
    await wait_until(lambda: seen == [{"user_id": 1}], 30, "the registered handler")
    assert len(subscriptions) == 1

    async def undeclared(event: Event) -> None: ...

    with pytest.raises(ConfigurationError, match="undeclared was not declared"):
        await bus.register_handler(undeclared)


async def test_failures_are_logged_without_any_observer_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = create_memory_bus()
    name = topic("logged")

    async def always_fails(event: Event) -> None:
        raise ValueError(f"bad order {event.payload}")

    caplog.set_level(logging.WARNING, logger="dotmac.events")
    await bus.subscribe(name, always_fails, group="g", policy=FAST)
    for n in range(30):
        await bus.publish(Event(name, n))
    await wait_until(lambda: _dead(caplog) >= 1, 10, "a dead letter")
    await asyncio.sleep(0.5)
    await bus.close()
    failures = [r for r in caplog.records if r.name == "dotmac.events"]
    assert any(r.levelno == logging.WARNING and "retrying" in r.getMessage() for r in failures)
    assert any(r.levelno == logging.ERROR and "dead-lettered" in r.getMessage() for r in failures)
    # 60 retries and 30 dead letters: at most 10 lines of each kind in a 10 s window
    assert sum(r.levelno == logging.WARNING for r in failures) <= 10
    assert sum(r.levelno == logging.ERROR for r in failures) <= 10
    assert name in failures[0].getMessage() and "bad order" in failures[0].getMessage()


def _dead(caplog: pytest.LogCaptureFixture) -> int:
    return sum("dead-lettered" in r.getMessage() for r in caplog.records)


async def test_bad_registrations_fail_at_declaration() -> None:
    router = EventRouter()
    with pytest.raises(ConfigurationError, match="topic"):
        router.handler("")
    with pytest.raises(ConfigurationError, match="concurrency"):
        router.handler("t", concurrency=0)(lambda event: None)
    with pytest.raises(ConfigurationError, match="routes"):
        await router.start(create_memory_bus())


async def test_every_shutdown_hook_runs_even_when_one_fails() -> None:
    router = EventRouter()
    ran: list[str] = []

    @router.handler(topic("hooks"), group="g")
    async def handle(event: Event) -> None: ...

    @router.on_shutdown
    def first() -> None:
        ran.append("first")
        raise RuntimeError("first hook failed")

    @router.on_shutdown
    async def second() -> None:
        ran.append("second")

    bus = create_memory_bus()
    await router.start(bus)
    with pytest.raises(RuntimeError, match="first hook failed"):
        await router.stop()
    assert ran == ["first", "second"] and router.subscriptions == []
    await bus.close()
