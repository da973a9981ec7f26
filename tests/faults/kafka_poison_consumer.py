"""A consumer process that a poison record kills: the retry budget tests' victim.

Run as ``python -m tests.faults.kafka_poison_consumer BOOTSTRAP TOPIC GROUP OUTFILE``. It
consumes with ``run_consumer(max_retries=2)``. For the poison record (payload
``{"poison": True}``) the handler appends ``attempt N`` (the event's delivery count, fsynced)
and then SIGKILLs its own process, so no attempt ever finishes; any other record is handled
and appended as ``handled <payload n> <delivery count>``. A process whose delivery is past
the budget dead-letters it without calling the handler and lives on until it is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from dotmac.events import ConsumerOptions, Event, run_consumer
from dotmac.events.adapters.kafka import create_kafka_bus
from tests.support.kafka_helpers import kafka_test_config

MAX_RETRIES = 2


async def main(bootstrap: str, topic: str, group: str, out_path: str) -> None:
    bus = create_kafka_bus(kafka_test_config(bootstrap))
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def handler(event: Event) -> None:
        if event.payload != {"poison": True}:
            os.write(fd, f"handled {event.payload['n']} {event.delivery_count}\n".encode())
            return
        os.write(fd, f"attempt {event.delivery_count}\n".encode())
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    options = ConsumerOptions(max_retries=MAX_RETRIES, backoff_base_ms=10)
    await run_consumer(bus, topic, handler, options, group=group)
    os.write(fd, b"ready\n")
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
