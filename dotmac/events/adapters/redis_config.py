"""RedisConfig: settings of the Redis Streams bus. Importable without the ``redis`` package."""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass, fields
from typing import Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from dotmac.events.errors import ConfigurationError

__all__ = ["RedisConfig", "default_consumer_name", "redact_url"]

_SCHEMES = ("redis", "rediss", "unix")
_SECRET_FIELDS = frozenset({"password"})


def default_consumer_name() -> str:
    """``host-pid-random``: unique per process and per subscription."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _query_passwords(url: str) -> list[str]:
    """Passwords given as ``?password=...``, which redis-py also accepts."""
    return [v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == "password"]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if _query_passwords(url):
        parts = parts._replace(query=re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query))
        url = urlunsplit(parts)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _require(ok: bool, name: str, reason: str) -> None:
    if not ok:
        raise ConfigurationError(name, reason)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RedisConfig:
    """Settings of :class:`~dotmac.events.adapters.redis.RedisStreamsBus`.

    Connection: ``url`` (``redis://``, ``rediss://`` or ``unix://``) or ``host``/``port``/``db``,
    not both. ``username``/``password`` for ACLs (explicit values win over the URL's); the password
    never appears in ``repr()``, logs or errors. TLS with ``ssl=True`` (implied by ``rediss://``).

    Streams: topic ``t`` lives in the stream key ``key_prefix + t``. ``max_stream_length`` trims
    each stream on publish with ``XADD MAXLEN ~`` (None: never trim). Keep it well above the
    number of entries that can be pending, or pending entries get trimmed (reported, never silent).

    Consuming: ``prefetch_count`` is the most entries one subscription holds unacked (at least
    its concurrency). ``block_ms`` is how long one XREADGROUP waits. ``claim_idle_ms`` is how
    long an entry must sit untouched in a consumer's pending list before another consumer of the
    group may claim it; live consumers touch what they hold every ``claim_interval`` seconds,
    so only dead consumers lose their entries. ``claim_interval`` is also how often idle entries
    are looked for. Consumers with nothing pending and idle for ``idle_consumer_ms`` are removed
    from the group. ``new_group_start`` is where a named group that does not exist yet begins
    (private groups always start at the end). A pattern subscription (``user.*``) looks for new
    matching streams every ``pattern_refresh`` seconds (one SCAN of the keys under
    ``key_prefix``). Delayed events (``publish(event, delay=...)``) wait in Redis and are moved
    into their streams by every bus that consumes or delays; each checks at least every
    ``delay_poll_interval`` seconds, which bounds how late a delayed event can be.
    ``consumer_name`` defaults to host-pid-random
    per subscription; a fixed name makes a restarted process pick up its own pending entries
    first (further subscriptions of the same topic and group get ``-2``, ``-3``... appended).

    Failures: ``connection_timeout`` bounds connecting; ``consumer_timeout`` bounds any one
    command (it must exceed ``block_ms``). ``publish_timeout`` bounds a whole ``publish`` call:
    while the connection cannot be opened (a server restarting) its entries are sent again on a
    fresh connection, waiting ``reconnect_backoff_base_ms`` doubling up to
    ``reconnect_backoff_max_ms``, until ``publish_timeout`` or, when set, ``publish_retries``
    resends are spent; then PublishError(may_have_been_written=False). An entry written
    without a reply within ``consumer_timeout`` is not resent (that could write it twice):
    PublishError(may_have_been_written=True). Consumers reconnect with the same backoff, for
    as long as it takes.

    Size: publishing an event whose encoded bytes exceed ``max_event_bytes`` (1 MiB) raises
    EncodeError. Redis would store up to 512 MB, but one huge entry stalls every reader of
    its stream and every pipeline it rides in.
    """

    url: str | None = None
    host: str | None = None
    port: int | None = None
    db: int | None = None
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_check_hostname: bool = True
    key_prefix: str = ""
    max_stream_length: int | None = 100_000
    consumer_timeout: float = 5.0
    prefetch_count: int = 200
    connection_timeout: float = 5.0
    max_connections: int = 50
    consumer_name: str | None = None
    block_ms: int = 1_000
    claim_idle_ms: int = 30_000
    claim_interval: float = 5.0
    idle_consumer_ms: int = 3_600_000
    new_group_start: Literal["earliest", "latest"] = "earliest"
    pattern_refresh: float = 5.0
    delay_poll_interval: float = 0.5
    close_timeout: float = 10.0
    reconnect_backoff_base_ms: float = 100.0
    reconnect_backoff_max_ms: float = 5_000.0
    max_event_bytes: int = 1_048_576
    publish_timeout: float = 10.0
    publish_retries: int | None = None

    def __post_init__(self) -> None:
        self._check_connection()
        self._check_consuming()

    def _check_connection(self) -> None:
        if self.url is not None:
            _require(isinstance(self.url, str) and bool(self.url), "url", "must be a non-empty str")
            scheme = urlsplit(self.url).scheme
            _require(
                scheme in _SCHEMES,
                "url",
                f"scheme must be one of {', '.join(_SCHEMES)}, got {scheme or 'none'!r}",
            )
            given = [n for n in ("host", "port", "db") if getattr(self, n) is not None]
            _require(not given, "url", f"give either url or {'/'.join(given)}, not both")
            _require(
                not (self.ssl and scheme == "unix"),
                "ssl",
                "TLS is not available over a unix socket (use redis:// or rediss://)",
            )
        if self.host is not None:
            _require(
                isinstance(self.host, str) and bool(self.host), "host", "must be a non-empty str"
            )
        if self.port is not None:
            _require(
                _positive_int(self.port) and self.port <= 65535,
                "port",
                f"must be an int in 1..65535, got {self.port!r}",
            )
        if self.db is not None:
            _require(
                isinstance(self.db, int) and not isinstance(self.db, bool) and self.db >= 0,
                "db",
                f"must be an int >= 0, got {self.db!r}",
            )
        for name in ("username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            shown = "<hidden>" if name in _SECRET_FIELDS else repr(value)
            _require(
                value is None or isinstance(value, str), name, f"must be a str or None, got {shown}"
            )
        _require(
            self.ssl_cert_reqs in ("required", "optional", "none"),
            "ssl_cert_reqs",
            f"must be 'required', 'optional' or 'none', got {self.ssl_cert_reqs!r}",
        )
        _require(
            _positive_number(self.connection_timeout),
            "connection_timeout",
            f"must be > 0 seconds, got {self.connection_timeout!r}",
        )
        _require(
            _positive_int(self.max_connections),
            "max_connections",
            f"must be an int >= 1, got {self.max_connections!r}",
        )

    def _check_consuming(self) -> None:
        _require(
            _positive_int(self.max_event_bytes) and self.max_event_bytes <= 512 * 1024 * 1024,
            "max_event_bytes",
            f"must be an int in 1..536870912 (Redis's limit), got {self.max_event_bytes!r}",
        )
        _require(isinstance(self.key_prefix, str), "key_prefix", "must be a str")
        _require(
            self.max_stream_length is None or _positive_int(self.max_stream_length),
            "max_stream_length",
            f"must be an int >= 1 or None, got {self.max_stream_length!r}",
        )
        _require(
            _positive_int(self.prefetch_count),
            "prefetch_count",
            f"must be an int >= 1, got {self.prefetch_count!r}",
        )
        _require(
            _positive_int(self.block_ms), "block_ms", f"must be an int >= 1, got {self.block_ms!r}"
        )
        _require(
            _positive_number(self.consumer_timeout)
            and self.consumer_timeout > self.block_ms / 1000,
            "consumer_timeout",
            f"must be > block_ms / 1000 = {self.block_ms / 1000}s, got {self.consumer_timeout!r}",
        )
        _require(
            _positive_int(self.claim_idle_ms),
            "claim_idle_ms",
            f"must be an int >= 1, got {self.claim_idle_ms!r}",
        )
        _require(
            _positive_number(self.claim_interval)
            and self.claim_interval * 1000 <= self.claim_idle_ms / 2,
            "claim_interval",
            f"must be > 0 and at most claim_idle_ms / 2 = {self.claim_idle_ms / 2000}s "
            f"(live consumers must touch their entries before others may claim them), "
            f"got {self.claim_interval!r}",
        )
        _require(
            _positive_int(self.idle_consumer_ms),
            "idle_consumer_ms",
            f"must be an int >= 1, got {self.idle_consumer_ms!r}",
        )
        _require(
            self.new_group_start in ("earliest", "latest"),
            "new_group_start",
            f"must be 'earliest' or 'latest', got {self.new_group_start!r}",
        )
        _require(
            _positive_number(self.delay_poll_interval),
            "delay_poll_interval",
            f"must be > 0 seconds, got {self.delay_poll_interval!r}",
        )
        _require(
            _positive_number(self.pattern_refresh),
            "pattern_refresh",
            f"must be > 0 seconds, got {self.pattern_refresh!r}",
        )
        if self.consumer_name is not None:
            _require(
                isinstance(self.consumer_name, str) and bool(self.consumer_name),
                "consumer_name",
                "must be a non-empty str or None",
            )
        _require(
            _positive_number(self.close_timeout),
            "close_timeout",
            f"must be > 0 seconds, got {self.close_timeout!r}",
        )
        _require(
            isinstance(self.reconnect_backoff_base_ms, int | float)
            and self.reconnect_backoff_base_ms >= 0,
            "reconnect_backoff_base_ms",
            f"must be >= 0, got {self.reconnect_backoff_base_ms!r}",
        )
        _require(
            isinstance(self.reconnect_backoff_max_ms, int | float)
            and self.reconnect_backoff_max_ms >= self.reconnect_backoff_base_ms,
            "reconnect_backoff_max_ms",
            f"must be >= reconnect_backoff_base_ms, got {self.reconnect_backoff_max_ms!r}",
        )
        _require(
            self.publish_retries is None
            or (
                isinstance(self.publish_retries, int)
                and not isinstance(self.publish_retries, bool)
                and self.publish_retries >= 0
            ),
            "publish_retries",
            f"must be an int >= 0 or None, got {self.publish_retries!r}",
        )
        _require(
            _positive_number(self.publish_timeout),
            "publish_timeout",
            f"must be > 0 seconds, got {self.publish_timeout!r}",
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Secret strings to scrub from any message (the password, also the URL's)."""
        found = [self.password] if self.password else []
        if self.url:
            url_password = urlsplit(self.url).password
            if url_password:
                found.append(url_password)
            found += [p for p in _query_passwords(self.url) if p]
        return tuple(found)

    def describe_target(self) -> str:
        """Where this config connects, safe to log."""
        if self.url is not None:
            return redact_url(self.url)
        return f"redis://{self.host or 'localhost'}:{self.port or 6379}/{self.db or 0}"

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                shown = "'***'"
            elif f.name == "url" and value is not None:
                shown = repr(redact_url(value))
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"RedisConfig({', '.join(parts)})"
