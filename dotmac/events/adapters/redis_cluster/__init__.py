"""Redis Cluster transport (needs the ``redis`` extra).

``create_redis_cluster_bus(RedisClusterConfig(url="redis+cluster://h1:7000,h2:7001"))``.

Each topic is split into partition streams spread over the cluster's masters; see
``adapters/redis/CLUSTER.md``.
"""

from dotmac.events.adapters.redis_cluster.bus import RedisClusterBus, create_redis_cluster_bus
from dotmac.events.adapters.redis_cluster.stats import PartitionStats
from dotmac.events.adapters.redis_cluster_config import RedisClusterConfig

__all__ = ["PartitionStats", "RedisClusterBus", "RedisClusterConfig", "create_redis_cluster_bus"]
