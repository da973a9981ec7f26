"""Middleware: code that wraps every handler call, and hooks that see every publish.

Consume side, ``async def mw(event, call_next)``: ``await call_next(event)`` runs the rest of
the chain and the handler and returns its result. Raising counts as a handler failure (retry,
then dead letter), never as a silent drop; returning without calling ``call_next`` counts as
handled. Publish side, ``def hook(event) -> Event``: return the event to send (for example
``event.with_headers({...})``), or raise to refuse the publish; hooks see the application's
events, not the dead letters and replies the bus sends itself. Both run in the order they were
added, are built once per subscription, and cost nothing when none is added.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from dotmac.events.event import Event

__all__ = ["CallNext", "ConsumeMiddleware", "PublishHook"]

CallNext = Callable[[Event], Awaitable[Any]]


class ConsumeMiddleware(Protocol):
    """Wraps handling of one event; see the module docstring."""

    def __call__(self, event: Event, call_next: CallNext) -> Awaitable[Any]: ...


PublishHook = Callable[[Event], Event]
"""Sees each event before it is encoded; returns the event to send, or raises to refuse it."""
