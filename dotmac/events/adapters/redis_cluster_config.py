"""RedisClusterConfig: settings of the Redis Cluster bus. Importable without the ``redis`` package.

Every :class:`~dotmac.events.adapters.redis_config.RedisConfig` setting means the same here, per
partition stream; this adds where the cluster is and how topics are partitioned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.errors import ConfigurationError

__all__ = ["CLUSTER_SCHEMES", "MAX_PARTITIONS", "RedisClusterConfig"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster", "redis", "rediss")
"""URL schemes a cluster config takes; ``rediss`` forms use TLS."""

MAX_PARTITIONS = 1024
"""The most partitions a topic may have: each costs its consumers a read per fetch round."""


def _partition_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PARTITIONS


def _nodes_of(url: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a URL's netloc (``h1:7000,h2:7001``; port 6379 when left out)."""
    netloc = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    hosts = netloc.rpartition("@")[2]
    found = []
    for part in hosts.split(","):
        host, colon, port = part.rpartition(":") if part.count(":") == 1 else (part, "", "")
        if not colon:
            host, port = part, "6379"
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigurationError("url", f"cluster node {part!r} is not host:port")
        found.append((host, int(port)))
    return found


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RedisClusterConfig(RedisConfig):
    """Settings of :class:`~dotmac.events.adapters.redis_cluster.RedisClusterBus`.

    Connection: ``url`` is ``redis+cluster://[user:password@]h1:7000,h2:7001`` (``rediss+``
    for TLS; plain ``redis://h1:7000`` names one node), or ``host``/``port`` of one node. Any
    reachable node will do: the client learns the others and the slot map from it. ``db`` must
    stay 0 (Redis Cluster has one database).

    Partitions: topic ``t`` is ``partitions`` streams (``topic_partitions`` overrides it per
    topic, e.g. ``{"orders": 32}``); an event's key picks its partition (CRC32 of the key), so
    one key's events stay in one stream, in order; events without a key go round-robin. Every
    process of an application must use the same counts (see ``adapters/redis/CLUSTER.md`` on
    resizing). 16 by default: enough to spread a topic over up to 16 masters, and a consumer's
    fetch round stays one pipeline of 16 small reads.

    Reading: a consumer reads all partitions of a topic with non-blocking XREADGROUPs, one
    pipeline per node per round; a round that finds nothing waits 1 ms, doubling up to
    ``idle_poll_ms``, before the next (the cost of not blocking: an idle consumer sends one
    round per ``idle_poll_ms`` and a new event waits up to that long).

    Consuming: ``prefetch_count`` (1,600 here, 200 on a single server) is the most entries one
    subscription holds unacked, shared by its topic's partitions: 100 per partition of the
    default 16, so a fetch round reads as much per partition as a single server's read does.

    Durability: ``publish_wait_replicas`` > 0 sends ``WAIT n publish_wait_timeout_ms`` to each
    master written after the XADDs, and raises PublishError (may_have_been_written=True) when
    fewer replicas confirmed; it narrows, but does not close, the window in which a failover
    loses acknowledged events (Redis replication stays asynchronous).
    """

    prefetch_count: int = 1_600
    partitions: int = 16
    topic_partitions: Mapping[str, int] = field(default_factory=dict)
    idle_poll_ms: int = 50
    publish_wait_replicas: int = 0
    publish_wait_timeout_ms: int = 1_000

    def __post_init__(self) -> None:
        RedisConfig.__post_init__(self)
        self._check_partitions()

    def _check_connection(self) -> None:
        url = self.url
        if url is not None:
            if not isinstance(url, str) or not url:
                raise ConfigurationError("url", "must be a non-empty str")
            scheme = url.partition("://")[0].lower()
            if scheme not in CLUSTER_SCHEMES or "://" not in url:
                raise ConfigurationError(
                    "url",
                    f"scheme must be one of {', '.join(CLUSTER_SCHEMES)}, got {scheme or 'none'!r}",
                )
            given = [n for n in ("host", "port", "db") if getattr(self, n) is not None]
            if given:
                raise ConfigurationError("url", f"give either url or {'/'.join(given)}, not both")
            _nodes_of(url)
            path = url.partition("://")[2].partition("?")[0].partition("/")[2]
            if path not in ("", "0"):
                raise ConfigurationError("url", f"Redis Cluster has only database 0, got {path!r}")
        if self.db not in (None, 0):
            raise ConfigurationError("db", f"Redis Cluster has only database 0, got {self.db!r}")
        # host, port, credentials, TLS files and timeouts: as for a single server
        RedisConfig._check_connection(self._without_url())

    def _without_url(self) -> RedisConfig:
        """The connection part as a plain RedisConfig, so its checks run on it."""
        names = (
            "host",
            "port",
            "username",
            "password",
            "ssl",
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
            "ssl_cert_reqs",
            "ssl_check_hostname",
            "connection_timeout",
            "max_connections",
        )
        return RedisConfig(**{n: getattr(self, n) for n in names})

    def _check_partitions(self) -> None:
        if not _partition_count(self.partitions):
            raise ConfigurationError(
                "partitions", f"must be an int in 1..{MAX_PARTITIONS}, got {self.partitions!r}"
            )
        if not isinstance(self.topic_partitions, Mapping):
            raise ConfigurationError("topic_partitions", "must be a mapping of topic -> int")
        for topic, count in self.topic_partitions.items():
            if not isinstance(topic, str) or not _partition_count(count):
                raise ConfigurationError(
                    "topic_partitions",
                    f"{topic!r}: must map a str to an int in 1..{MAX_PARTITIONS}, got {count!r}",
                )
        if not isinstance(self.key_prefix, str) or "{" in self.key_prefix or "}" in self.key_prefix:
            raise ConfigurationError(
                "key_prefix", "may not contain '{' or '}' on Redis Cluster (they pick hash slots)"
            )
        for name, low in (
            ("idle_poll_ms", 1),
            ("publish_wait_replicas", 0),
            ("publish_wait_timeout_ms", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(name, f"must be an int >= {low}, got {value!r}")

    def partitions_of(self, topic: str) -> int:
        """How many partition streams ``topic`` has."""
        return self.topic_partitions.get(topic, self.partitions)

    def startup_nodes(self) -> list[tuple[str, int]]:
        """The ``(host, port)`` pairs the client starts from."""
        if self.url is not None:
            return _nodes_of(self.url)
        return [(self.host or "localhost", self.port or 6379)]

    @property
    def tls(self) -> bool:
        """Whether connections use TLS (``ssl=True`` or a ``rediss`` scheme)."""
        return self.ssl or (self.url or "").lower().startswith("rediss")

    def describe_target(self) -> str:
        """Where this config connects, safe to log."""
        if self.url is not None:
            password = urlsplit(self.url).password
            return self.url.replace(f":{password}@", ":***@") if password else self.url
        return f"redis+cluster://{self.host or 'localhost'}:{self.port or 6379}"

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "password" and value is not None:
                shown = "'***'"
            elif f.name == "url" and value is not None:
                shown = repr(self.describe_target())
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"RedisClusterConfig({', '.join(parts)})"
