"""EventRouter: a service's handlers, declared with decorators and run on any bus.

    router = EventRouter()

    @router.handler("user.created", group="billing", options=ConsumerOptions(max_retries=3))
    async def bill(event: Event) -> None: ...

    await router.start(bus)   # every handler subscribed, each consumer joined its group
    ...
    await router.stop()       # drained per the close contract, then the shutdown hooks

Middleware given to the router wraps its handlers only, inside the bus's own middleware.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dotmac.events.bus import EventBus, Subscription
from dotmac.events.errors import BusClosedError, ConfigurationError
from dotmac.events.middleware import ConsumeMiddleware
from dotmac.events.registry import HandlerRegistry

__all__ = ["EventRouter"]

Hook = Callable[[], Any]
F = TypeVar("F", bound=Hook)


class EventRouter(HandlerRegistry):
    """Handlers, their middleware, and startup/shutdown hooks, started together on a bus."""

    def __init__(self, *, middleware: Sequence[ConsumeMiddleware] = ()) -> None:
        super().__init__()
        for step in middleware:
            if not callable(step):
                raise ConfigurationError("middleware", f"must be callable, got {step!r}")
        self.middleware: list[ConsumeMiddleware] = list(middleware)
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._subscriptions: list[Subscription] = []
        self.bus: EventBus | None = None

    def add_middleware(self, middleware: ConsumeMiddleware) -> None:
        """Wrap this router's handlers (added before start)."""
        if not callable(middleware):
            raise ConfigurationError("middleware", f"must be callable, got {middleware!r}")
        self.middleware.append(middleware)

    def on_startup(self, hook: F) -> F:
        """Decorator: run ``hook()`` (sync or async) in ``start`` before any handler subscribes."""
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Decorator: run ``hook()`` in ``stop`` after every handler has drained."""
        self._shutdown.append(hook)
        return hook

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    async def start(self, bus: EventBus, *, concurrency: int | None = None) -> None:
        """Run the startup hooks, then subscribe every handler; returns once all have joined.

        ``concurrency``, when given, replaces every route's own (a deployment's setting, such
        as ``dotmac-events worker --concurrency``, outranks the code's default). If one
        subscription fails, those already made are closed and the error is raised.

        Raises:
            BusClosedError: the router is already started.
            ConfigurationError: a route is invalid for this bus, or ``concurrency`` is below 1.
        """
        if self.bus is not None:
            raise BusClosedError("router is already started; stop() it first")
        if not self.routes:
            raise ConfigurationError("routes", "the router has no handlers to start")
        if concurrency is not None and (
            not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
        ):
            raise ConfigurationError(
                "concurrency", f"must be an int >= 1 or None, got {concurrency!r}"
            )
        for hook in self._startup:
            await _run(hook)
        self.bus = bus
        try:
            for route in self.routes:
                if route.batch is not None:
                    size, wait = route.batch
                    self._subscriptions.append(
                        await bus.subscribe_batch(
                            route.topics,
                            route.handler,
                            group=route.group,
                            max_batch_size=size,
                            max_wait_ms=wait,
                            policy=route.policy,
                        )
                    )
                    continue
                self._subscriptions.append(
                    await bus.subscribe(
                        route.topics,
                        route.handler,
                        group=route.group,
                        concurrency=concurrency or route.concurrency,
                        policy=route.policy,
                        middleware=self.middleware,
                    )
                )
        except BaseException:
            await self._close_subscriptions(None)
            self.bus = None
            raise

    async def stop(self, timeout: float | None = None) -> None:
        """Close every subscription (running handlers get ``timeout`` seconds to finish; what
        did not finish stays unacknowledged), then run the shutdown hooks. Idempotent."""
        if self.bus is None:
            return
        try:
            await self._close_subscriptions(timeout)
        finally:
            self.bus = None
            failures = []
            for hook in self._shutdown:  # every hook runs, even after one failed
                try:
                    await _run(hook)
                except Exception as exc:
                    failures.append(exc)
            if failures:
                raise failures[0]

    async def _close_subscriptions(self, timeout: float | None) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(*(s.close(timeout) for s in subscriptions))


async def _run(hook: Hook) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result
