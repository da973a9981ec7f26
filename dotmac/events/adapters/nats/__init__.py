"""NATS JetStream transport (needs the ``nats`` extra): ``create_nats_bus(NatsConfig(...))``."""

from dotmac.events.adapters.nats.bus import NatsJetStreamBus, create_nats_bus
from dotmac.events.adapters.nats_config import NatsConfig

__all__ = ["NatsConfig", "NatsJetStreamBus", "create_nats_bus"]
