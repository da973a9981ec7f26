"""KafkaConfig: the Kafka bus settings, checked at construction, mapped onto aiokafka.

This module imports no aiokafka, so ``KafkaConfig`` can be built (and validated) in a venv
without the ``kafka`` extra. The mapping onto aiokafka's real keyword arguments lives in
:meth:`KafkaConfig.producer_kwargs`, :meth:`~KafkaConfig.consumer_kwargs` and
:meth:`~KafkaConfig.admin_kwargs`; nothing else passes settings to aiokafka.
"""

from __future__ import annotations

import itertools
import math
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dotmac.events.errors import ConfigurationError

__all__ = ["KafkaConfig"]

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_COMPRESSIONS = ("gzip", "snappy", "lz4", "zstd")
_INT_MAX = 2_147_483_647
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_TIERS = 20
_MIN_TIER = 0.1  # seconds; a smaller tier would make the mover spin on its own records


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaConfig:
    """Settings of the Kafka bus (aiokafka underneath).

    The seed fields and where they go in aiokafka:

    ==========================  ===================================================================
    ``bootstrap_servers``       ``bootstrap_servers`` (a comma-separated str or a sequence)
    ``security_protocol``       ``security_protocol``; ``SSL``/``SASL_SSL`` without ``ssl_context``
                                get ``ssl.create_default_context()`` (aiokafka requires one)
    ``sasl_mechanism``          ``sasl_mechanism`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
    ``sasl_username/password``  ``sasl_plain_username`` / ``sasl_plain_password`` (also SCRAM)
    ``acks``                    ``acks`` (``"all"``, 1 or 0; -1 means ``"all"``)
    ``retries``                 not an aiokafka parameter. aiokafka retries a sent batch by itself
                                until ``request_timeout_ms``; the bus sends a record again only
                                if it never reached aiokafka's queue (refused locally, no
                                metadata in time), at most ``retries`` times; a publish fails by
                                ``delivery_timeout_ms`` from the first try whatever happens (Java's
                                ``retries`` + ``delivery.timeout.ms``). 0: no resend.
    ``compression_type``        ``compression_type`` (snappy, lz4, zstd: ``cramjam``)
    ``batch_size``              ``max_batch_size`` (bytes per partition batch, like Java's
                                ``batch.size``)
    ``linger_ms``               ``linger_ms``
    ==========================  ===================================================================

    ``enable_idempotence`` is off by default: delivery is at-least-once end to end anyway
    (consumers may see a message twice after a crash or rebalance and can dedupe on
    ``event.id``), and Kafka-protocol brokers without InitProducerId support (Tansu, used in
    our tests) refuse it. Turn it on with Apache Kafka to stop aiokafka's own retries of a
    sent batch from writing duplicates; it requires ``acks="all"``. Either way the bus never
    sends again a record that may have been written: the PublishError says so instead.

    Consumers: ``auto_offset_reset`` is where a named group with no committed offset starts;
    a private group (``subscribe(group=None)``) always starts at the end of the topic. A pattern
    subscription (``user.*``) reads the cluster's topic list every ``pattern_refresh`` seconds.
    ``revoke_timeout_ms`` bounds how long a consumer losing partitions in a rebalance waits
    for their running handlers before committing what finished. ``max_uncommitted`` bounds,
    per partition, handled-but-uncommitted offsets held behind one that is still running or
    failing: past it that partition is paused until the stuck message is done.

    ``group_id_format`` makes the Kafka group id from the bus's ``(group, topic)``. The bus's
    groups belong to one topic, Kafka's span topics: with the default ``"{group}.{topic}"``
    each subscription is its own Kafka group, so subscribing one service to 20 topics does not
    make 20 consumers rebalance one shared group (each join stops every member). Use
    ``"{group}"`` to keep plain group ids, for example to take over an existing group's offsets.

    Topics: with ``auto_create_topics`` the bus creates a topic with ``num_partitions`` and
    ``replication_factor`` (None: the broker's default) before it first produces to or
    consumes from it.

    Delayed delivery (``publish(event, delay=...)``, see ``adapters/kafka/delay.py``): events
    wait in internal tier topics ``{delay_topic_prefix}{seconds}``, one per ``delay_tiers``
    entry, and a mover forwards them when due. ``delay_tiers`` are seconds (>= 0.1, strictly
    increasing); the smallest bounds how late an event can be when a mover falls behind.
    ``delay_group`` is the movers' consumer group (one group across all tier topics).
    ``delay_mover`` runs a mover in this bus once it delays an event or subscribes; with False,
    other processes must run one or delayed events are never delivered.

    Delivery counts: a named group's consumers keep the delivery count of a record that may
    crash them in the internal compacted topic ``attempts_topic`` (see
    ``adapters/kafka/attempts.py``), so a retry budget carries over to the partition's next
    owner; one write per partition per assignment and one per redelivery. None keeps counts in
    memory only: after a crash or rebalance they start again at 1.

    Size: publishing an event whose encoded bytes exceed ``max_event_bytes`` raises
    EncodeError before anything is sent; None (the default) means ``max_request_size``, past
    which aiokafka could not send it anyway.

    Secrets (``sasl_password``) never appear in ``repr()``.
    """

    bootstrap_servers: str | Sequence[str] = "localhost:9092"
    client_id: str = "dotmac-events"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    # producer
    acks: Literal["all", 0, 1, -1] = "all"
    retries: int = _INT_MAX
    delivery_timeout_ms: int = 120_000
    retry_backoff_ms: int = 100
    compression_type: str | None = None
    batch_size: int = 16_384
    linger_ms: int = 5
    max_request_size: int = 1_048_576
    max_event_bytes: int | None = None
    enable_idempotence: bool = False
    request_timeout_ms: int = 30_000
    # consumer
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    revoke_timeout_ms: int = 10_000
    fetch_max_wait_ms: int = 500
    fetch_min_bytes: int = 1
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    max_poll_records: int = 500
    max_uncommitted: int = 10_000
    group_id_format: str = "{group}.{topic}"
    # topics
    auto_create_topics: bool = True
    num_partitions: int = 3
    replication_factor: int | None = None
    # bus
    pattern_refresh: float = 5.0
    close_timeout: float = 10.0
    # delayed delivery
    delay_tiers: Sequence[float] = (1, 5, 30, 300, 3600)
    delay_topic_prefix: str = "_dotmac.delay."
    delay_group: str = "dotmac-delay-mover"
    delay_mover: bool = True
    # delivery counts
    attempts_topic: str | None = "_dotmac.attempts"

    def __post_init__(self) -> None:
        servers = self.bootstrap_list()
        if not servers:
            raise ConfigurationError(
                "bootstrap_servers",
                f"must name at least one host:port, got {self.bootstrap_servers!r}",
            )
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigurationError("bootstrap_servers", f"{server!r} is not host:port")
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ConfigurationError("client_id", "must be a non-empty str")
        self._check_security()
        if self.acks not in ("all", 0, 1, -1) or isinstance(self.acks, bool):
            raise ConfigurationError("acks", f"must be 'all', 1, 0 or -1, got {self.acks!r}")
        if self.compression_type is not None and self.compression_type not in _COMPRESSIONS:
            raise ConfigurationError(
                "compression_type",
                f"must be one of {_COMPRESSIONS} or None, got {self.compression_type!r}",
            )
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ConfigurationError(
                "auto_offset_reset",
                f"must be 'earliest' or 'latest', got {self.auto_offset_reset!r}",
            )
        for name in ("enable_idempotence", "auto_create_topics", "delay_mover"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(name, f"must be a bool, got {getattr(self, name)!r}")
        if self.enable_idempotence and self.acks not in ("all", -1):
            raise ConfigurationError("enable_idempotence", "requires acks='all'")
        self._check_numbers()
        try:
            probe = self.group_id_format.format(group="g", topic="t")
        except (AttributeError, IndexError, KeyError, ValueError) as exc:
            raise ConfigurationError(
                "group_id_format", f"only {{group}} and {{topic}}: {exc!r}"
            ) from exc
        if "{group}" not in self.group_id_format or not probe:
            raise ConfigurationError("group_id_format", "must contain {group}")
        self._check_delays()
        self._check_attempts_topic()

    def _check_attempts_topic(self) -> None:
        name = self.attempts_topic
        if name is not None and (
            not isinstance(name, str)
            or not name.startswith("_")
            or not _NAME.match(name)
            or len(name) > 249
        ):
            raise ConfigurationError(
                "attempts_topic",
                "must be None or a topic name starting with '_' (internal: never matched by a "
                f"pattern subscription) of letters, digits, '.', '_', '-'; got {name!r}",
            )

    def _check_delays(self) -> None:
        tiers = self.delay_tiers
        if isinstance(tiers, str | bytes) or not isinstance(tiers, Sequence) or not tiers:
            raise ConfigurationError("delay_tiers", f"must be a non-empty sequence, got {tiers!r}")
        if len(tiers) > _MAX_TIERS:
            raise ConfigurationError("delay_tiers", f"at most {_MAX_TIERS} tiers, got {len(tiers)}")
        for tier in tiers:
            if (
                isinstance(tier, bool)
                or not isinstance(tier, int | float)
                or not math.isfinite(tier)
                or tier < _MIN_TIER
            ):
                raise ConfigurationError(
                    "delay_tiers", f"each must be seconds >= {_MIN_TIER}, got {tier!r}"
                )
        if any(later <= earlier for earlier, later in itertools.pairwise(tiers)):
            raise ConfigurationError("delay_tiers", f"must be strictly increasing, got {tiers!r}")
        object.__setattr__(self, "delay_tiers", tuple(tiers))  # frozen: a list would not be
        prefix = self.delay_topic_prefix
        if not isinstance(prefix, str) or not prefix.startswith("_") or not _NAME.match(prefix):
            raise ConfigurationError(
                "delay_topic_prefix",
                "must start with '_' (internal: never matched by a pattern subscription) and "
                f"use only letters, digits, '.', '_', '-'; got {prefix!r}",
            )
        if len(prefix) > 200:
            raise ConfigurationError("delay_topic_prefix", "must be at most 200 characters")
        if not isinstance(self.delay_group, str) or not _NAME.match(self.delay_group):
            raise ConfigurationError(
                "delay_group", f"must be letters, digits, '.', '_', '-'; got {self.delay_group!r}"
            )

    def delay_topics(self) -> list[str]:
        """The tier topics' names, smallest tier first."""
        return [self.delay_topic(tier) for tier in self.delay_tiers]

    def delay_topic(self, tier: float) -> str:
        """The tier topic holding events for ``tier`` seconds: ``_dotmac.delay.5``."""
        name = str(int(tier)) if float(tier).is_integer() else repr(float(tier))
        return f"{self.delay_topic_prefix}{name}"

    def _check_security(self) -> None:
        if self.security_protocol not in _SECURITY_PROTOCOLS:
            raise ConfigurationError(
                "security_protocol",
                f"must be one of {_SECURITY_PROTOCOLS}, got {self.security_protocol!r}",
            )
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise ConfigurationError("ssl_context", "must be an ssl.SSLContext or None")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in _SASL_MECHANISMS:
                raise ConfigurationError(
                    "sasl_mechanism",
                    f"must be one of {_SASL_MECHANISMS} with {self.security_protocol}, "
                    f"got {self.sasl_mechanism!r}",
                )
            if not self.sasl_username:
                raise ConfigurationError("sasl_username", f"is required for {self.sasl_mechanism}")
            if not self.sasl_password:
                # never echo the value
                raise ConfigurationError("sasl_password", f"is required for {self.sasl_mechanism}")
        elif self.sasl_mechanism is not None and self.sasl_mechanism not in _SASL_MECHANISMS:
            raise ConfigurationError(
                "sasl_mechanism", f"must be one of {_SASL_MECHANISMS}, got {self.sasl_mechanism!r}"
            )

    def _check_numbers(self) -> None:
        minimums = {
            "retries": 0,
            "delivery_timeout_ms": 1,
            "retry_backoff_ms": 0,
            "batch_size": 1,
            "linger_ms": 0,
            "max_request_size": 1,
            "request_timeout_ms": 1,
            "session_timeout_ms": 1,
            "heartbeat_interval_ms": 1,
            "max_poll_interval_ms": 1,
            "revoke_timeout_ms": 0,
            "fetch_max_wait_ms": 0,
            "fetch_min_bytes": 1,
            "fetch_max_bytes": 1,
            "max_partition_fetch_bytes": 1,
            "max_poll_records": 1,
            "max_uncommitted": 1,
            "num_partitions": 1,
        }
        for name, low in minimums.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigurationError(name, f"must be an int >= {low}, got {value!r}")
        if self.max_event_bytes is not None and (
            not isinstance(self.max_event_bytes, int)
            or isinstance(self.max_event_bytes, bool)
            or not 1 <= self.max_event_bytes <= self.max_request_size
        ):
            raise ConfigurationError(
                "max_event_bytes",
                f"must be None or an int in 1..max_request_size ({self.max_request_size}), "
                f"got {self.max_event_bytes!r}",
            )
        if self.replication_factor is not None and (
            not isinstance(self.replication_factor, int) or self.replication_factor < 1
        ):
            raise ConfigurationError(
                "replication_factor",
                f"must be an int >= 1 or None, got {self.replication_factor!r}",
            )
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigurationError(
                "heartbeat_interval_ms",
                f"must be below session_timeout_ms ({self.session_timeout_ms}), "
                f"got {self.heartbeat_interval_ms}",
            )
        if self.revoke_timeout_ms >= self.max_poll_interval_ms:
            raise ConfigurationError(
                "revoke_timeout_ms",
                f"must be below max_poll_interval_ms ({self.max_poll_interval_ms}), the time the "
                f"group waits for a member to rejoin; got {self.revoke_timeout_ms}",
            )
        if self.delivery_timeout_ms < self.linger_ms:
            raise ConfigurationError(
                "delivery_timeout_ms", f"must be >= linger_ms ({self.linger_ms})"
            )
        if (
            isinstance(self.pattern_refresh, bool)
            or not isinstance(self.pattern_refresh, int | float)
            or self.pattern_refresh <= 0
        ):
            raise ConfigurationError(
                "pattern_refresh", f"must be > 0 seconds, got {self.pattern_refresh!r}"
            )
        if (
            isinstance(self.close_timeout, bool)
            or not isinstance(self.close_timeout, int | float)
            or self.close_timeout <= 0
        ):
            raise ConfigurationError(
                "close_timeout", f"must be > 0 seconds, got {self.close_timeout!r}"
            )

    # --- the mapping onto aiokafka -------------------------------------------------------------

    def bootstrap_list(self) -> list[str]:
        """``bootstrap_servers`` as a list of ``host:port`` strings."""
        raw = self.bootstrap_servers
        parts = raw.split(",") if isinstance(raw, str) else list(raw)
        return [p.strip() for p in parts if isinstance(p, str) and p.strip()]

    def tls_context(self) -> ssl.SSLContext | None:
        """The context clients connect with: ``ssl_context``, or the system's CAs for an SSL
        protocol without one; None over plaintext."""
        if self.ssl_context is None and self.security_protocol in ("SSL", "SASL_SSL"):
            return ssl.create_default_context()
        return self.ssl_context

    def _common_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_list(),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "security_protocol": self.security_protocol,
        }
        context = self.tls_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs

    def producer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiokafka.AIOKafkaProducer``."""
        return {
            **self._common_kwargs(),
            "acks": "all" if self.acks == -1 else self.acks,
            "compression_type": self.compression_type,
            "max_batch_size": self.batch_size,
            "linger_ms": self.linger_ms,
            "max_request_size": self.max_request_size,
            "enable_idempotence": self.enable_idempotence,
        }

    def group_id(self, group: str, topic: str) -> str:
        """The Kafka consumer group id for the bus's ``group`` on ``topic``."""
        return self.group_id_format.format(group=group, topic=topic)

    def consumer_kwargs(self, *, group: str | None, private: bool) -> dict[str, Any]:
        """Keyword arguments for ``aiokafka.AIOKafkaConsumer`` (offsets are committed by hand)."""
        return {
            **self._common_kwargs(),
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "latest" if private else self.auto_offset_reset,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "fetch_min_bytes": self.fetch_min_bytes,
            "fetch_max_bytes": self.fetch_max_bytes,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "max_poll_records": self.max_poll_records,
        }

    def admin_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiokafka.admin.AIOKafkaAdminClient``."""
        return self._common_kwargs()
