"""NatsConfig: settings of the NATS JetStream bus, and how topics and groups are named there.

Importable without the ``nats-py`` package. Topic ``t`` is the subject ``subject_prefix.t`` in a
stream of its own (:meth:`NatsConfig.stream_name`); a group is a durable pull consumer of that
stream (:meth:`NatsConfig.consumer_name`). Characters a subject cannot hold (whitespace, ``*``,
``>``, ``%``, ``$``, non-ASCII, empty segments) are percent-encoded, so every topic has a
subject and the subject gives the topic back (:meth:`NatsConfig.topic_of`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from dotmac.events.errors import ConfigurationError

__all__ = ["NatsConfig", "redact_servers"]

_SCHEMES = ("nats", "tls", "ws", "wss")
_SECRET_FIELDS = frozenset({"password", "token"})
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SUBJECT_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# Kept as they are in a subject token; everything else is percent-encoded ('.' separates).
_TOKEN_SAFE = "!\"#&'()+,-/:;<=?@[\\]^_`{|}~"


def _hash(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def _sanitized(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64]


def encode_topic(topic: str) -> str:
    """``topic`` as subject tokens: dots kept (unless a segment is empty), the rest escaped."""
    if "" in topic.split("."):
        return quote(topic, safe=_TOKEN_SAFE).replace(".", "%2E")
    return ".".join(quote(part, safe=_TOKEN_SAFE) for part in topic.split("."))


def redact_servers(servers: str) -> str:
    """``servers`` with every password in them replaced by ``***``."""
    shown = []
    for server in servers.split(","):
        parts = urlsplit(server.strip())
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            server = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        shown.append(server.strip())
    return ",".join(shown)


def _require(ok: bool, name: str, reason: str) -> None:
    if not ok:
        raise ConfigurationError(name, reason)


def _int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class NatsConfig:
    """Settings of :class:`~dotmac.events.adapters.nats.NatsJetStreamBus`.

    Connection: ``servers`` is one URL or several, comma-separated (``nats://``, ``tls://``,
    ``ws://``, ``wss://``). ``user``/``password`` or ``token`` or ``creds_file`` authenticate;
    secrets never appear in ``repr()``, logs or errors. ``tls=True`` (implied by ``tls://``)
    with optional ``tls_ca_file``/``tls_cert_file``/``tls_key_file``. The client reconnects on
    its own, waiting ``reconnect_wait`` between tries, for as long as it takes.

    Streams: topic ``t`` is subject ``subject_prefix.t`` in stream
    ``stream_prefix_<t sanitised>_<hash>``, created on first use with ``storage``,
    ``replicas`` and the limits ``max_age`` (seconds), ``max_msgs`` and ``max_bytes`` (None: no
    limit). A limit deletes old messages whether or not every group has handled them. Each
    publish carries ``Nats-Msg-Id`` = the event id, so a publish retried within
    ``duplicate_window`` seconds is stored once.

    Consuming: a named group is a durable pull consumer; the server hands a message to one
    consumer of the group and waits ``ack_wait`` seconds for its ack before handing it to
    another. Live consumers report progress (``+WPI``) every ``ack_wait / 3`` for messages
    they hold, so only a dead consumer's messages move. ``max_ack_pending`` bounds what a whole
    group holds unacked; ``prefetch_count`` what one subscription holds. One pull request
    waits ``fetch_wait`` seconds. ``new_group_start`` is where a named group that does not
    exist yet begins (private groups begin at the end). Patterns (``user.*``) look for new
    streams every ``pattern_refresh`` seconds.

    Publishing: each publish waits ``publish_timeout`` for the stream's ack; a publish that
    got none is sent again ``publish_retries`` times (deduplicated by ``Nats-Msg-Id``) before
    PublishError.
    """

    servers: str = "nats://127.0.0.1:4222"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    name: str | None = None
    connect_timeout: float = 5.0
    reconnect_wait: float = 1.0
    stream_prefix: str = "DOTMAC"
    subject_prefix: str = "dotmac"
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    max_age: float | None = 7 * 86_400.0
    max_msgs: int | None = None
    max_bytes: int | None = None
    duplicate_window: float = 120.0
    ack_wait: float = 30.0
    max_ack_pending: int = 10_000
    prefetch_count: int = 200
    fetch_wait: float = 1.0
    new_group_start: Literal["earliest", "latest"] = "earliest"
    pattern_refresh: float = 5.0
    publish_timeout: float = 5.0
    publish_retries: int = 2
    close_timeout: float = 10.0

    def __post_init__(self) -> None:
        self._check_connection()
        self._check_streams()
        self._check_consuming()

    def _check_connection(self) -> None:
        _require(
            isinstance(self.servers, str) and bool(self.servers.strip()),
            "servers",
            "must be a non-empty str of URLs separated by commas",
        )
        for server in self.servers.split(","):
            try:
                parts = urlsplit(server.strip())
                parts.port  # noqa: B018 (raises ValueError on a bad port)
            except ValueError:
                raise ConfigurationError("servers", "a port must be a number in 0..65535") from None
            _require(
                parts.scheme in _SCHEMES and bool(parts.hostname),
                "servers",
                f"each server must look like nats://host:4222 (schemes: {', '.join(_SCHEMES)}), "
                f"got {redact_servers(server.strip())!r}",
            )
        for name in ("user", "password", "token", "creds_file", "name"):
            value = getattr(self, name)
            shown = "<hidden>" if name in _SECRET_FIELDS else repr(value)
            _require(
                value is None or (isinstance(value, str) and bool(value)),
                name,
                f"must be a non-empty str or None, got {shown}",
            )
        _require(
            not (self.token and (self.user or self.password)),
            "token",
            "give either token or user/password, not both",
        )
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            value = getattr(self, name)
            _require(
                value is None or (isinstance(value, str) and bool(value)),
                name,
                f"must be a non-empty str or None, got {value!r}",
            )
        _require(
            (self.tls_cert_file is None) == (self.tls_key_file is None),
            "tls_key_file",
            "give tls_cert_file and tls_key_file together",
        )
        for name in ("connect_timeout", "reconnect_wait"):
            _require(
                _seconds(getattr(self, name)),
                name,
                f"must be > 0 seconds, got {getattr(self, name)!r}",
            )

    def _check_streams(self) -> None:
        _require(
            isinstance(self.stream_prefix, str) and bool(_NAME.fullmatch(self.stream_prefix)),
            "stream_prefix",
            f"must be letters, digits, '_' or '-' only, got {self.stream_prefix!r}",
        )
        _require(
            isinstance(self.subject_prefix, str)
            and bool(_SUBJECT_PREFIX.fullmatch(self.subject_prefix)),
            "subject_prefix",
            f"must be dot-separated tokens of letters, digits, '_' or '-', "
            f"got {self.subject_prefix!r}",
        )
        _require(
            self.storage in ("file", "memory"),
            "storage",
            f"must be 'file' or 'memory', got {self.storage!r}",
        )
        _require(
            _int_at_least(self.replicas, 1) and self.replicas <= 5,
            "replicas",
            f"must be an int in 1..5, got {self.replicas!r}",
        )
        _require(
            self.max_age is None or _seconds(self.max_age),
            "max_age",
            f"must be > 0 seconds or None, got {self.max_age!r}",
        )
        for name in ("max_msgs", "max_bytes"):
            value = getattr(self, name)
            _require(
                value is None or _int_at_least(value, 1),
                name,
                f"must be an int >= 1 or None, got {value!r}",
            )
        _require(
            _seconds(self.duplicate_window),
            "duplicate_window",
            f"must be > 0 seconds, got {self.duplicate_window!r}",
        )

    def _check_consuming(self) -> None:
        _require(
            _seconds(self.ack_wait) and self.ack_wait >= 0.3,
            "ack_wait",
            f"must be >= 0.3 seconds, got {self.ack_wait!r}",
        )
        _require(
            _int_at_least(self.prefetch_count, 1),
            "prefetch_count",
            f"must be an int >= 1, got {self.prefetch_count!r}",
        )
        _require(
            _int_at_least(self.max_ack_pending, 1) and self.max_ack_pending >= self.prefetch_count,
            "max_ack_pending",
            f"must be an int >= prefetch_count ({self.prefetch_count!r}), "
            f"got {self.max_ack_pending!r}",
        )
        _require(
            _seconds(self.fetch_wait) and self.fetch_wait <= self.ack_wait,
            "fetch_wait",
            f"must be > 0 seconds and at most ack_wait, got {self.fetch_wait!r}",
        )
        _require(
            self.new_group_start in ("earliest", "latest"),
            "new_group_start",
            f"must be 'earliest' or 'latest', got {self.new_group_start!r}",
        )
        for name in ("pattern_refresh", "publish_timeout", "close_timeout"):
            _require(
                _seconds(getattr(self, name)),
                name,
                f"must be > 0 seconds, got {getattr(self, name)!r}",
            )
        _require(
            _int_at_least(self.publish_retries, 0),
            "publish_retries",
            f"must be an int >= 0, got {self.publish_retries!r}",
        )

    # --- names -----------------------------------------------------------------------------

    def subject(self, topic: str) -> str:
        """The subject ``topic``'s events are published on."""
        return f"{self.subject_prefix}.{encode_topic(topic)}"

    def topic_of(self, subject: str) -> str | None:
        """The topic of one of our subjects; None for any other subject."""
        head = f"{self.subject_prefix}."
        if not subject.startswith(head) or subject.startswith(f"{head}$"):
            return None
        return unquote(subject[len(head) :])

    def stream_name(self, topic: str) -> str:
        """The stream holding ``topic`` (readable part, then a hash that keeps names apart)."""
        return f"{self.stream_prefix}_{_sanitized(topic)}_{_hash(topic, 12)}"

    def consumer_name(self, group: str) -> str:
        """The durable consumer of ``group`` (the group's own name when NATS accepts it)."""
        if _NAME.fullmatch(group) and len(group) <= 64:
            return group
        return f"{_sanitized(group)}_{_hash(group, 10)}"

    @property
    def delayed_stream(self) -> str:
        """The internal stream where delayed events wait until due."""
        return f"{self.stream_prefix}__DELAYED"

    @property
    def delayed_subjects(self) -> str:
        """The subjects of :attr:`delayed_stream` (no topic's subject starts with ``$``)."""
        return f"{self.subject_prefix}.$delayed.>"

    def delayed_subject(self, topic: str) -> str:
        return f"{self.subject_prefix}.$delayed.{encode_topic(topic)}"

    # --- secrets -----------------------------------------------------------------------------

    @property
    def secrets(self) -> tuple[str, ...]:
        """Secret strings to scrub from any message (password, token, the URLs' passwords)."""
        found = [s for s in (self.password, self.token) if s]
        for server in self.servers.split(","):
            password = urlsplit(server.strip()).password
            if password:
                found.append(password)
        return tuple(found)

    def describe_target(self) -> str:
        """Where this config connects, safe to log."""
        return redact_servers(self.servers)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                shown = "'***'"
            elif f.name == "servers":
                shown = repr(redact_servers(value))
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"NatsConfig({', '.join(parts)})"
