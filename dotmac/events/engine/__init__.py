"""The engine: the bus contract run once over any transport.

``bus.py`` (TransportBus: publish path, subscribe, request-reply, close) uses
``subscription.py`` (the consumer loop: fetch, lanes, acks, redelivery, close), which uses
``handling.py`` (one message: decode, middleware, handler, dead letters, replies). Imports run
that way only; adapters import :mod:`dotmac.events.transport` and :class:`TransportBus`.
"""

from dotmac.events.engine.bus import TransportBus

__all__ = ["TransportBus"]
