"""Handlers declared with decorators, to be subscribed later on any bus.

``@event_handler("user.created")`` records a :class:`HandlerRoute` in the module-level
registry; ``await bus.register_handler(fn)`` subscribes what was recorded for ``fn``.
:class:`~dotmac.events.router.EventRouter` is a registry of its own with middleware and
lifecycle hooks, for services that run many handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dotmac.events.errors import ConfigurationError
from dotmac.events.event import Event
from dotmac.events.policy import FailurePolicy

__all__ = ["HandlerRegistry", "HandlerRoute", "default_registry", "event_handler", "topic_list"]

H = TypeVar("H", bound=Callable[[Event], Any])
B = TypeVar("B", bound=Callable[[list[Event]], Any])


def topic_list(topics: str | Sequence[str]) -> tuple[str, ...]:
    """``topics`` as a non-empty tuple of non-empty names.

    Raises:
        ConfigurationError: a name is empty or not a str, or there is none.
    """
    names = (topics,) if isinstance(topics, str) else tuple(topics)
    if not names or not all(isinstance(t, str) and t for t in names):
        raise ConfigurationError(
            "topic", f"must be a non-empty str or a list of them, got {topics!r}"
        )
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerRoute:
    """One handler and how to subscribe it."""

    topics: tuple[str, ...]
    handler: Callable[[Any], Any]  # an Event, or a list of them for a batch route
    group: str | None = None
    policy: FailurePolicy | None = None
    concurrency: int = 1
    batch: tuple[int, float] | None = None
    """(max_batch_size, max_wait_ms) for a batch handler, which receives lists of events."""

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise ConfigurationError("handler", f"must be callable, got {self.handler!r}")
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise ConfigurationError(
                "group", f"must be a non-empty str or None, got {self.group!r}"
            )
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigurationError(
                "concurrency", f"must be an int >= 1, got {self.concurrency!r}"
            )
        if self.policy is not None and not isinstance(self.policy, FailurePolicy):
            raise ConfigurationError(
                "options", f"must be ConsumerOptions (a FailurePolicy), got {self.policy!r}"
            )


class HandlerRegistry:
    """Routes recorded by decorators, in the order they were declared."""

    def __init__(self) -> None:
        self.routes: list[HandlerRoute] = []

    def handler(
        self,
        topics: str | Sequence[str],
        *,
        group: str | None = None,
        options: FailurePolicy | None = None,
        concurrency: int = 1,
    ) -> Callable[[H], H]:
        """Decorator: subscribe the function to ``topics`` when the registry is started.

        ``options`` is a :class:`~dotmac.events.ConsumerOptions` (retries, dead letters).

        Raises:
            ConfigurationError: a topic, the group or the concurrency is invalid.
        """
        names = topic_list(topics)

        def record(handler: H) -> H:
            self.add(names, handler, group=group, options=options, concurrency=concurrency)
            return handler

        return record

    def batch_handler(
        self,
        topics: str | Sequence[str],
        *,
        group: str | None = None,
        options: FailurePolicy | None = None,
        max_batch_size: int = 100,
        max_wait_ms: float = 100.0,
    ) -> Callable[[B], B]:
        """Decorator: subscribe the function with ``bus.subscribe_batch`` when the registry is
        started; it receives a list of events (see :meth:`EventBus.subscribe_batch`)."""
        names = topic_list(topics)

        def record(handler: B) -> B:
            route = HandlerRoute(
                topics=names,
                handler=handler,
                group=group,
                policy=options,
                batch=(max_batch_size, max_wait_ms),
            )
            self.routes.append(route)
            return handler

        return record

    def add(
        self,
        topics: str | Sequence[str],
        handler: Callable[[Event], Any],
        *,
        group: str | None = None,
        options: FailurePolicy | None = None,
        concurrency: int = 1,
    ) -> HandlerRoute:
        """Record a route without the decorator syntax."""
        route = HandlerRoute(
            topics=topic_list(topics),
            handler=handler,
            group=group,
            policy=options,
            concurrency=concurrency,
        )
        self.routes.append(route)
        return route

    def routes_for(self, handler: Callable[[Event], Any]) -> list[HandlerRoute]:
        return [route for route in self.routes if route.handler is handler]


default_registry = HandlerRegistry()
"""The module-level registry ``@event_handler`` records into."""


def event_handler(
    topics: str | Sequence[str],
    *,
    group: str | None = None,
    options: FailurePolicy | None = None,
    concurrency: int = 1,
) -> Callable[[H], H]:
    """``@event_handler("user.created")``: record a handler in the module-level registry;
    ``await bus.register_handler(fn)`` subscribes it."""
    return default_registry.handler(topics, group=group, options=options, concurrency=concurrency)
