"""Run an EventRouter inside a web app's lifespan (FastAPI, Starlette or any ASGI server).

``lifespan`` is what ``FastAPI(lifespan=lifespan)`` and ``Starlette(lifespan=lifespan)`` take:
the router starts with the app (every handler joined its group before the first request is
served) and drains when the server shuts down. ``app`` is the same thing as a bare ASGI app, so
this file runs with no web framework installed; ``python examples/asgi_lifespan.py`` drives its
lifespan the way uvicorn does and serves one request in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from dotmac.events import Event, EventBus, EventRouter, create_bus

router = EventRouter()
welcomed: list[str] = []
mail_sent = asyncio.Event()


@router.handler("user.created", group="welcome-mail")
async def send_welcome(event: Event) -> None:
    welcomed.append(event.payload["email"])
    mail_sent.set()


@contextlib.asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[dict[str, EventBus]]:
    bus = create_bus(os.environ.get("DOTMAC_EVENTS_URL", "memory://"))
    await router.start(bus)
    try:
        yield {"bus": bus}  # FastAPI and Starlette put this in request.state
    finally:
        await router.stop(timeout=10)
        await bus.close()


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app: the lifespan above, and POST /users publishing user.created."""
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with lifespan(app) as state:
            scope.setdefault("state", {}).update(state)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    bus: EventBus = scope["state"]["bus"]
    await bus.publish(Event("user.created", {"email": scope["query_string"].decode()}))
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"accepted"})


async def serve_once() -> None:
    """What an ASGI server does: lifespan startup, one request, lifespan shutdown."""
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    sent: list[MutableMapping[str, Any]] = []
    state: dict[str, Any] = {}
    started = asyncio.Event()

    async def server_send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan_task = asyncio.create_task(
        app({"type": "lifespan", "state": state}, events.get, server_send)
    )
    await events.put({"type": "lifespan.startup"})
    await asyncio.wait_for(started.wait(), 10)
    request = {"type": "http", "method": "POST", "path": "/users", "state": state}
    await app({**request, "query_string": b"ada@example.com"}, events.get, server_send)
    await asyncio.wait_for(mail_sent.wait(), 10)
    await events.put({"type": "lifespan.shutdown"})
    await lifespan_task
    print("statuses:", [m.get("status") for m in sent if m["type"] == "http.response.start"])
    print("welcomed:", welcomed)


if __name__ == "__main__":
    asyncio.run(serve_once())
