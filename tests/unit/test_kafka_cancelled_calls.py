"""An aiokafka call that raises CancelledError by itself (a cut connection cancels its internal
future) fails that call; it must not cancel the close() that made it. A real cancellation of
the caller still propagates."""

from __future__ import annotations

import asyncio

import pytest

from dotmac.events.adapters.kafka.errors import unless_cancelled


async def _cancelled_inside() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def test_a_call_cancelled_on_its_own_is_a_failure_not_a_cancellation() -> None:
    with pytest.raises(RuntimeError, match="lost connection"):
        await unless_cancelled(_cancelled_inside())


async def test_cancelling_the_caller_still_cancels() -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(unless_cancelled(slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
