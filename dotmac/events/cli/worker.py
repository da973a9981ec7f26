"""``dotmac-events worker``: run an app's handlers on a bus until SIGTERM/SIGINT, then drain.

Shutdown: the first signal stops fetching and gives running handlers ``drain_timeout`` seconds
(:meth:`EventRouter.stop`); what did not finish stays unacknowledged for another consumer of the
group. Exit codes: 0 drained and closed; 3 the drain timeout passed with handlers still running
(they were interrupted, their events left unacknowledged) or closing hung; 4 a second signal
forced the exit at once (nothing more is acknowledged); 1 the worker could not start or failed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from typing import Any

from dotmac.events.errors import EventBusError
from dotmac.events.event import Event
from dotmac.events.middleware import CallNext
from dotmac.events.registry import HandlerRegistry, default_registry
from dotmac.events.router import EventRouter
from dotmac.events.urls import create_bus, parse_bus_url, redact

__all__ = [
    "EXIT_DRAIN_TIMEOUT",
    "EXIT_FAILED",
    "EXIT_FORCED",
    "WorkerError",
    "configure_logging",
    "load_router",
    "run_worker",
]

EXIT_FAILED = 1
EXIT_DRAIN_TIMEOUT = 3
EXIT_FORCED = 4
CLOSE_GRACE = 15.0
"""Seconds allowed past the drain timeout for closing the bus before the exit is forced."""

logger = logging.getLogger("dotmac.events.worker")


class WorkerError(Exception):
    """A bad target or setting; the message is one line meant for the person at the terminal."""


def load_router(target: str) -> EventRouter:
    """``module:attribute`` as an EventRouter (a plain HandlerRegistry is wrapped in one);
    ``module`` alone: the routes ``@event_handler`` recorded in the default registry.

    Raises:
        WorkerError: the module cannot be imported, the attribute is missing or not a router.
    """
    module_name, sep, attribute = target.partition(":")
    if not module_name or (sep and not attribute):
        raise WorkerError(f"target must be 'module' or 'module:attribute', got {target!r}")
    if os.getcwd() not in sys.path:  # like uvicorn: the app's modules live where it is run
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise WorkerError(f"cannot import module {module_name!r}: {exc}") from None
        raise WorkerError(f"importing {module_name!r} failed: {exc!r}") from None
    except Exception as exc:
        raise WorkerError(f"importing {module_name!r} failed: {exc!r}") from None
    if not sep:
        registry: object = default_registry
    else:
        try:
            registry = getattr(module, attribute)
        except AttributeError:
            raise WorkerError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(registry, EventRouter):
        return registry
    if isinstance(registry, HandlerRegistry):
        router = EventRouter()
        router.routes.extend(registry.routes)
        return router
    raise WorkerError(f"{target!r} is a {type(registry).__name__}, not an EventRouter")


class _InFlight:
    """Middleware counting handler calls that are running, and those interrupted by close."""

    def __init__(self) -> None:
        self.running = 0
        self.interrupted = 0

    async def __call__(self, event: Event, call_next: CallNext) -> Any:
        self.running += 1
        try:
            return await call_next(event)
        except asyncio.CancelledError:
            self.interrupted += 1
            raise
        finally:
            self.running -= 1


def run_worker(
    target: str, url: str | None, drain_timeout: float, concurrency: int | None = None
) -> int:
    """Run ``target``'s handlers on the bus at ``url`` until a signal; returns the exit code.

    ``concurrency``, when given, replaces each handler's own (see :meth:`EventRouter.start`).

    Raises:
        WorkerError: bad arguments (checked before anything connects).
    """
    if drain_timeout <= 0:
        raise WorkerError(f"--drain-timeout must be > 0 seconds, got {drain_timeout}")
    if concurrency is not None and concurrency < 1:
        raise WorkerError(f"--concurrency must be >= 1, got {concurrency}")
    try:
        parse_bus_url(url)
    except EventBusError as exc:
        raise WorkerError(f"bad bus URL: {exc}") from None
    router = load_router(target)
    if not router.routes:
        raise WorkerError(f"{target!r} has no handlers")
    return asyncio.run(_serve(router, url, drain_timeout, concurrency))


def _force_exit(code: int, why: str) -> None:
    """Leave now: no handler finishes, nothing more is acknowledged."""
    logger.error("%s; exiting with %d, unfinished events stay unacknowledged", why, code)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve(
    router: EventRouter, url: str | None, drain_timeout: float, concurrency: int | None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if len(signals) > 1:
            _force_exit(EXIT_FORCED, f"second signal ({sig.name}) while draining")
        logger.info(
            "%s received: stopping, draining running handlers for up to %gs (again to force)",
            sig.name,
            drain_timeout,
        )
        stop.set()
        loop.call_later(
            drain_timeout + CLOSE_GRACE,
            _force_exit,
            EXIT_DRAIN_TIMEOUT,
            f"shutdown still not done {drain_timeout + CLOSE_GRACE:g}s after {sig.name}",
        )

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    in_flight = _InFlight()
    router.add_middleware(in_flight)
    try:
        bus = create_bus(url)
    except (EventBusError, ImportError) as exc:
        logger.error("cannot create the bus: %s", exc)
        return EXIT_FAILED
    where = redact(url or os.environ.get("DOTMAC_EVENTS_URL", ""))
    try:
        try:
            await router.start(bus, concurrency=concurrency)
        except Exception as exc:
            logger.error("cannot start on %s: %s", where, exc)
            return EXIT_FAILED
        topics = sorted({t for route in router.routes for t in route.topics})
        logger.info(
            "worker ready: %d handler(s) on %s, topics %s, concurrency %s (pid %d)",
            len(router.routes),
            where,
            ", ".join(topics),
            ", ".join(str(concurrency or route.concurrency) for route in router.routes),
            os.getpid(),
        )
        await stop.wait()
        await router.stop(drain_timeout)
    finally:
        await bus.close(timeout=0.1)
    if in_flight.interrupted or in_flight.running:
        logger.error(
            "drain timeout (%gs) passed: %d handler(s) interrupted, their events left "
            "unacknowledged",
            drain_timeout,
            in_flight.interrupted + in_flight.running,
        )
        return EXIT_DRAIN_TIMEOUT
    logger.info("drained and closed")
    return 0


def configure_logging(level: str) -> None:
    """One line per record on stderr."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
