"""The engine: the bus contract run once over any transport.

``bus.py`` (TransportBus: topics, reading the log, request-reply, close) builds on
``subscribing.py`` (subscribe, patterns, retry topics, batches), which builds on
``publishing.py`` (publish paths, hooks, schemas, delays, record writes). A subscription's flow
is ``subscription.py`` (fetch, lanes, acks, redelivery, close), ``batching.py`` or
``patterns.py``; one message is ``handling.py`` (decode, middleware, handler, dead letters,
replies). Imports run that way only; adapters import :mod:`dotmac.events.transport`,
:class:`TransportBus` and ``health.py`` (the health report every transport makes the same way).
"""

from dotmac.events.engine.bus import TransportBus

__all__ = ["TransportBus"]
