"""A consumer process for the crash test: handles a group's events and records each handled id.

Run as ``python -m tests.faults.kafka_crash_consumer BOOTSTRAP TOPIC GROUP OUTFILE``. Each
handler appends ``start ID`` when it begins and ``ID`` (fsynced) when it finishes, before the
ack, so after a SIGKILL the file holds every message this process finished and those it was in
the middle of.
"""

from __future__ import annotations

import asyncio
import os
import sys

from dotmac.events import Event
from dotmac.events.adapters.kafka import create_kafka_bus
from tests.support.kafka_helpers import kafka_test_config


async def main(bootstrap: str, topic: str, group: str, out_path: str) -> None:
    bus = create_kafka_bus(kafka_test_config(bootstrap))
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    finished = 0

    async def handler(event: Event) -> None:
        nonlocal finished
        os.write(fd, f"start {event.payload['id']}\n".encode())
        # "work"; after 100 finished, handlers hang so the kill surely lands mid-handler
        await asyncio.sleep(0.02 if finished < 100 else 60)
        os.write(fd, f"{event.payload['id']}\n".encode())
        os.fsync(fd)
        finished += 1

    await bus.subscribe(topic, handler, group=group, concurrency=4)
    os.write(fd, b"ready\n")
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
