"""``create_bus(url)``: one URL names the transport and its settings.

    memory://?max_queue_size=5000
    redis://user:secret@host:6379/0?key_prefix=app&block_ms=500     (also rediss://, TLS)
    redis+cluster://user:secret@h1:7000,h2:7001?partitions=32   (Redis Cluster; rediss+cluster://)
    kafka://h1:9092,h2:9092?client_id=billing&num_partitions=6
    nats://user:secret@h1:4222,h2:4222?stream_prefix=APP&ack_wait=60   (also tls://, TLS)

Query parameters map onto the fields of :class:`~dotmac.events.adapters.memory.MemoryConfig`,
:class:`~dotmac.events.adapters.redis_config.RedisConfig`,
:class:`~dotmac.events.adapters.kafka_config.KafkaConfig` or
:class:`~dotmac.events.adapters.nats_config.NatsConfig` by name, converted to the field's type
(int, float, bool as ``true/false/1/0/yes/no/on/off``, ``none`` for optional fields). A Kafka URL's
``user:password@`` becomes ``sasl_username``/``sasl_password``; a NATS URL's becomes
``user``/``password`` (a lone ``token@`` becomes ``token``). With no URL, ``DOTMAC_EVENTS_URL``
is read. Passwords never appear in errors or in :func:`redact`'s output.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from dotmac.events.adapters.kafka_config import KafkaConfig
from dotmac.events.adapters.memory import MemoryConfig
from dotmac.events.adapters.nats_config import NatsConfig
from dotmac.events.adapters.redis_cluster_config import RedisClusterConfig
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.errors import ConfigurationError

if TYPE_CHECKING:
    from dotmac.events.bus import EventBus
    from dotmac.events.codec import Codec
    from dotmac.events.observability.observer import Observer

__all__ = ["ENV_VAR", "create_bus", "parse_bus_url", "redact"]

ENV_VAR = "DOTMAC_EVENTS_URL"
SCHEMES = ("memory", "redis", "rediss", "redis+cluster", "rediss+cluster", "kafka", "nats", "tls")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# Fields the URL's other parts set, or that no string can express.
_NOT_PARAMETERS: dict[type[Any], frozenset[str]] = {
    MemoryConfig: frozenset(),
    RedisConfig: frozenset({"url", "host", "port", "db", "username"}),
    RedisClusterConfig: frozenset({"url", "host", "port", "db", "username", "topic_partitions"}),
    KafkaConfig: frozenset({"bootstrap_servers", "ssl_context", "sasl_username"}),
    NatsConfig: frozenset({"servers", "user"}),
}
_SECRET_PARAMETERS = frozenset({"password", "sasl_password", "token"})

AnyConfig = MemoryConfig | RedisConfig | KafkaConfig | NatsConfig


def redact(url: str) -> str:
    """``url`` with the password of its userinfo and any password parameter replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = _split_netloc(rest)
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hosts}"
    path, qmark, query = tail.partition("?")
    if qmark:
        pairs = [p.split("=", 1) for p in query.split("&")]
        query = "&".join(
            f"{p[0]}=***" if len(p) == 2 and p[0] in _SECRET_PARAMETERS else "=".join(p)
            for p in pairs
        )
    return f"{scheme}://{netloc}{slash}{path}{qmark}{query}"


def _split_netloc(rest: str) -> tuple[str, str, str]:
    """``rest`` (after ``scheme://``) as (netloc, the separator found, what follows it)."""
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    if cut < len(rest) and rest[cut] == "/":
        return rest[:cut], "/", rest[cut + 1 :]
    return rest[:cut], "", rest[cut:]


def parse_bus_url(url: str | None = None) -> AnyConfig:
    """The config a bus URL describes (``DOTMAC_EVENTS_URL`` when ``url`` is None).

    Raises:
        ConfigurationError: no URL, an unknown scheme or parameter, or a bad value; the
            message names the bad part and never holds a password.
    """
    if url is None:
        url = os.environ.get(ENV_VAR)
        if not url:
            raise ConfigurationError("url", f"no bus URL given and {ENV_VAR} is not set")
    if not isinstance(url, str):
        raise ConfigurationError("url", f"must be a str, got {type(url).__name__}")
    secrets = _secrets(url)
    try:
        return _parse(url)
    except ConfigurationError as exc:
        reason = exc.reason
        for secret in secrets:
            reason = reason.replace(secret, "***")
        raise ConfigurationError(exc.field, reason) from None


def create_bus(
    url: str | None = None,
    *,
    codec: Codec | None = None,
    observer: Observer | None = None,
) -> EventBus:
    """A bus for ``url`` (``DOTMAC_EVENTS_URL`` when None); see the module docstring.

    Raises:
        ConfigurationError: the URL is missing or invalid (the message names the bad part).
        ImportError: the transport's extra is not installed (the message gives the pip line).
    """
    config = parse_bus_url(url)
    if isinstance(config, RedisClusterConfig):  # before RedisConfig: it is one
        from dotmac.events.adapters import create_redis_cluster_bus

        return create_redis_cluster_bus(config, codec=codec, observer=observer)
    if isinstance(config, RedisConfig):
        from dotmac.events.adapters import create_redis_bus

        return create_redis_bus(config, codec=codec, observer=observer)
    if isinstance(config, KafkaConfig):
        from dotmac.events.adapters import create_kafka_bus

        return create_kafka_bus(config, codec=codec, observer=observer)
    if isinstance(config, NatsConfig):
        from dotmac.events.adapters import create_nats_bus

        return create_nats_bus(config, codec=codec, observer=observer)
    from dotmac.events.adapters.memory import create_memory_bus

    return create_memory_bus(config, codec=codec, observer=observer)


def _secrets(url: str) -> list[str]:
    found: list[str] = []
    _, _, rest = url.partition("://")
    netloc, _, tail = _split_netloc(rest)
    userinfo, at, _ = netloc.rpartition("@")
    if at and ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        found += [raw, unquote(raw)]
    _, _, query = tail.partition("?")
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name in _SECRET_PARAMETERS and value:
            found += [value, unquote(value)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _parse(url: str) -> AnyConfig:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError("url", f"must look like scheme://..., got {redact(url)!r}")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(
            "url", f"unknown scheme {scheme!r}; use one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    netloc, _, tail = _split_netloc(rest)
    path, _, query = tail.partition("?")
    if scheme == "memory":
        if netloc or path:
            raise ConfigurationError("url", "memory:// takes no host or path, only ?parameters")
        return MemoryConfig(**_parameters(MemoryConfig, query))
    if scheme == "kafka":
        return _kafka(netloc, path, query)
    if scheme in ("nats", "tls"):
        return _nats(scheme, netloc, path, query)
    if scheme.endswith("+cluster"):
        if path not in ("", "0"):
            raise ConfigurationError("url", f"Redis Cluster has only database 0, got {path!r}")
        return RedisClusterConfig(
            url=f"{scheme}://{netloc}", **_parameters(RedisClusterConfig, query)
        )
    return _redis(scheme, netloc, path, query)


def _redis(scheme: str, netloc: str, path: str, query: str) -> RedisConfig:
    params = _parameters(RedisConfig, query)
    if path and not path.isdigit():
        raise ConfigurationError("url", f"the path must be a database number, got {path!r}")
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ConfigurationError("url", "the port must be a number in 0..65535") from None
    if not parts.hostname:
        raise ConfigurationError(
            "url", f"{scheme}:// needs a host, as in {scheme}://localhost:6379"
        )
    return RedisConfig(url=f"{scheme}://{netloc}/{path or '0'}", **params)


def _kafka(netloc: str, path: str, query: str) -> KafkaConfig:
    params = _parameters(KafkaConfig, query)
    if path:
        raise ConfigurationError("url", f"kafka:// takes no path, got {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        params["sasl_username"] = unquote(user)
        if colon:
            params["sasl_password"] = unquote(password)
    if not hosts:
        raise ConfigurationError("url", "kafka:// needs host:port[,host:port...]")
    return KafkaConfig(bootstrap_servers=hosts, **params)


def _nats(scheme: str, netloc: str, path: str, query: str) -> NatsConfig:
    params = _parameters(NatsConfig, query)
    if path:
        raise ConfigurationError("url", f"{scheme}:// takes no path, got {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            params["user"] = unquote(user)
            params["password"] = unquote(password)
        elif "token" not in params:
            params["token"] = unquote(user)
    if not hosts or any(not h for h in hosts.split(",")):
        raise ConfigurationError("url", f"{scheme}:// needs host:port[,host:port...]")
    servers = ",".join(f"{scheme}://{h if ':' in h else h + ':4222'}" for h in hosts.split(","))
    return NatsConfig(servers=servers, **params)


def _parameters(config: type[Any], query: str) -> dict[str, Any]:
    hints = typing.get_type_hints(config)
    allowed = {f.name for f in fields(config)} - _NOT_PARAMETERS[config]
    found: dict[str, Any] = {}
    for name, raw in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise ConfigurationError(
                name,
                f"unknown URL parameter for {config.__name__} "
                f"(known: {', '.join(sorted(allowed))})",
            )
        if name in found:
            raise ConfigurationError(name, "URL parameter given twice")
        shown = "***" if name in _SECRET_PARAMETERS else repr(raw)
        try:
            found[name] = _convert(raw, hints[name])
        except ValueError as exc:
            raise ConfigurationError(name, f"URL parameter {shown}: {exc}") from None
    return found


def _convert(raw: str, hint: Any) -> Any:
    """``raw`` as a value of type ``hint`` (ValueError says what was expected)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) < len(typing.get_args(hint)) and raw.lower() in ("", "none", "null"):
            return None
        errors = []
        for option in options:
            try:
                return _convert(raw, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(" or ".join(errors))
    if origin is Literal:
        for choice in typing.get_args(hint):
            if str(choice) == raw:
                return choice
        raise ValueError(f"expected one of {', '.join(str(c) for c in typing.get_args(hint))}")
    if hint is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError("expected a bool (true/false, 1/0, yes/no, on/off)")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an int") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    if hint is str:
        return raw
    raise ValueError(f"cannot be set from a URL ({hint})")
