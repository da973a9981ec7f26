"""Redis Streams transport (needs the ``redis`` extra): ``create_redis_bus(RedisConfig(...))``."""

from dotmac.events.adapters.redis.bus import RedisStreamsBus, create_redis_bus
from dotmac.events.adapters.redis_config import RedisConfig

__all__ = ["RedisConfig", "RedisStreamsBus", "create_redis_bus"]
