"""A consumer process for the NATS crash tests: it gets killed with SIGKILL, so it records into
append-only files (each line one ``write``; the kernel keeps it when the process dies).

Usage: python nats_consumer_proc.py URL STREAM_PREFIX SUBJECT_PREFIX TOPIC GROUP MODE DIR

MODE ``work``: handle events (a short await mid-handler), append the payload to DIR/started
when a handler starts and to DIR/handled when it finishes; after 1,000 handlers finished, new
ones hang until the process is killed.
MODE ``fail``: append the delivery count to DIR/attempts, then raise (run_consumer with
max_retries=3 and a backoff far longer than the test, so the retry never happens here).
Prints ``ready`` once subscribed, then runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from dotmac.events import ConsumerOptions, Event, NatsConfig, create_nats_bus, run_consumer

ACK_WAIT = 2.0
"""Seconds the server waits for a dead consumer's acks; tests read it to bound their waits."""


def recorder(path: Path) -> Callable[[object], None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(value: object) -> None:
        os.write(fd, f"{value}\n".encode())

    return record


async def main(
    url: str, stream_prefix: str, subject_prefix: str, topic: str, group: str, mode: str, out: str
) -> None:
    config = NatsConfig(
        servers=url,
        stream_prefix=stream_prefix,
        subject_prefix=subject_prefix,
        ack_wait=ACK_WAIT,
        fetch_wait=0.5,
        prefetch_count=16,
    )
    bus = create_nats_bus(config)
    folder = Path(out)
    started, handled = recorder(folder / "started"), recorder(folder / "handled")
    attempts = recorder(folder / "attempts")
    finished = 0

    async def work(event: Event) -> None:
        nonlocal finished
        started(event.payload)
        # After 1,000 events handlers hang, so the kill surely lands mid-handler.
        await asyncio.sleep(0.005 if finished < 1_000 else 60)
        handled(event.payload)
        finished += 1

    async def fail(event: Event) -> None:
        attempts(event.delivery_count)
        raise RuntimeError(f"always fails (attempt {event.delivery_count})")

    if mode == "work":
        await run_consumer(
            bus, topic, work, ConsumerOptions(max_retries=3), group=group, concurrency=8
        )
    else:
        options = ConsumerOptions(
            max_retries=3, backoff_base_ms=60_000, backoff_max_delay_ms=60_000, jitter=False
        )
        await run_consumer(bus, topic, fail, options, group=group)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
