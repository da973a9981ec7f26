"""MessageHandling on its own: the outcome of one message, and the middleware chain's place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dotmac.events import ConsumerOptions, DLQEntry, Event, JsonCodec, NoopObserver
from dotmac.events.engine.handling import MessageHandling
from dotmac.events.transport import Delivery

CODEC = JsonCodec()


class Outcomes:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.retried: list[tuple[str, float]] = []
        self.published: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    def handling(self, handler: Any, middleware: Any = (), **options: Any) -> MessageHandling:
        return MessageHandling(
            topic="orders",
            group="g",
            adapter="test",
            handler=handler,
            codec=CODEC,
            observer=NoopObserver(),
            policy=ConsumerOptions(jitter=False, **options),
            publish=self.publish,
            ack=lambda d: self.acked.append(d.message_id),
            retry_later=lambda d, delay: self.retried.append((d.message_id, delay)),
            report=lambda where, error: None,
            middleware=middleware,
        )


def delivery(payload: Any, count: int = 1) -> Delivery:
    return Delivery(CODEC.encode(Event("orders", payload)), count, "m-1")


async def test_middleware_runs_in_order_around_the_handler() -> None:
    seen: list[str] = []
    Next = Callable[[Event], Awaitable[Any]]

    def step(name: str) -> Any:
        async def middleware(event: Event, call_next: Next) -> Any:
            seen.append(f"{name} in")
            result = await call_next(event)
            seen.append(f"{name} out")
            return result

        return middleware

    async def handler(event: Event) -> None:
        seen.append(f"handler {event.payload}")

    outcomes = Outcomes()
    await outcomes.handling(handler, [step("a"), step("b")]).process(delivery(7))
    assert seen == ["a in", "b in", "handler 7", "b out", "a out"]
    assert outcomes.acked == ["m-1"]


async def test_a_middleware_that_raises_is_a_handler_failure_never_a_silent_drop() -> None:
    async def refuse(event: Event, call_next: Any) -> None:
        raise PermissionError("tenant suspended")

    async def handler(event: Event) -> None:
        raise AssertionError("not reached")

    outcomes = Outcomes()
    handling = outcomes.handling(handler, [refuse], max_retries=1, backoff_base_ms=100)
    await handling.process(delivery(1))
    assert outcomes.retried == [("m-1", 0.1)] and outcomes.acked == []
    await handling.process(delivery(1, count=2))  # the last attempt: dead-lettered, then acked
    assert outcomes.acked == ["m-1"]
    entry = DLQEntry.from_event(outcomes.published[0])
    assert entry.error_type == "PermissionError" and entry.attempts == 2


async def test_an_unreadable_delivery_is_dead_lettered_without_decoding() -> None:
    async def handler(event: Event) -> None:
        raise AssertionError("not reached")

    outcomes = Outcomes()
    foreign = Delivery(b"\xff", 1, "m-1", unreadable="entry field 'key' is not UTF-8")
    await outcomes.handling(handler).process(foreign)
    entry = DLQEntry.from_event(outcomes.published[0])
    assert (entry.error_type, entry.original_data) == ("DecodeError", b"\xff")
    assert "not UTF-8" in entry.error and outcomes.acked == ["m-1"]
