"""How a handler is called: coroutine functions directly, plain functions in worker threads.

A plain ``def`` handler would block the event loop (and every other subscription with it) if it
ran there, so it runs in a bounded pool of threads shared by the bus; what it returns is the
reply to ``request()``. A function that returns an awaitable (a lambda around a coroutine
function, say) has that awaitable awaited on the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dotmac.events.event import Event

__all__ = ["is_async_callable", "make_awaitable"]

Call = Callable[[Event], Awaitable[Any]]
T = TypeVar("T")  # what the handler takes: an Event, or a list of them for batch handlers


def is_async_callable(handler: object) -> bool:
    """True for coroutine functions, partials of them and objects with an ``async __call__``."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def make_awaitable(
    handler: Callable[[T], Any], threads: Callable[[], ThreadPoolExecutor]
) -> Callable[[T], Awaitable[Any]]:
    """``handler`` as a coroutine function; ``threads`` gives the pool for a plain function."""
    if is_async_callable(handler):
        return handler

    async def in_thread(event: T) -> Any:
        context = contextvars.copy_context()  # middleware and tracing context reach the thread
        result = await asyncio.get_running_loop().run_in_executor(
            threads(), context.run, handler, event
        )
        if inspect.isawaitable(result):
            result = await result
        return result

    return in_thread
