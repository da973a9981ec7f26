"""Records with transport headers on a stream: dead letters, their replays, and deleting them.

An entry of ours has a ``data`` field (the bytes) and an optional ``key``; a record with
transport headers carries each header as one more field of the same entry, under the header's
own name (``kafka_dlt-original-topic``, ...), so ``XRANGE orders.DLQ - +`` in redis-cli shows the
original bytes and the failure headers side by side. Reading an entry back, every field other
than ``data`` and ``key`` is a header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from dotmac.events.adapters.redis.errors import translate
from dotmac.events.errors import ConfigurationError

__all__ = ["delete_all", "delete_entries", "entry_headers", "write_record"]

_OWN_FIELDS = (b"data", b"key")


def entry_headers(fields: Mapping[Any, Any]) -> tuple[tuple[str, bytes], ...]:
    """The transport headers of a stream entry: its fields other than ``data`` and ``key``."""
    if len(fields) <= 2 and all(name in _OWN_FIELDS for name in fields):
        return ()
    found = []
    for name, value in fields.items():
        raw = name if isinstance(name, bytes) else str(name).encode()
        if raw not in _OWN_FIELDS:
            text = raw.decode(errors="replace")
            found.append((text, value if isinstance(value, bytes) else str(value).encode()))
    return tuple(found)


async def write_record(
    client: Redis,
    stream: str,
    data: bytes,
    key: str | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    max_length: int | None,
    secrets: tuple[str, ...],
) -> None:
    """XADD one entry: ``data``, ``key`` and one field per header (a repeated name keeps its
    last value: stream fields are unique per entry here)."""
    fields: dict[str | bytes, bytes | str] = {"data": data}
    if key is not None:
        fields["key"] = key
    for name, value in headers:
        if name in ("data", "key"):
            raise ConfigurationError("headers", f"{name!r} is a field of every entry, not a header")
        fields[name] = value
    try:
        if max_length is None:
            await client.xadd(stream, fields)  # type: ignore[arg-type]
        else:
            await client.xadd(stream, fields, maxlen=max_length, approximate=True)  # type: ignore[arg-type]
    except Exception as exc:
        raise translate(exc, doing=f"write to {stream}", secrets=secrets, publish=True) from exc


async def delete_entries(
    client: Redis, stream: str, ids: Sequence[str], *, secrets: tuple[str, ...]
) -> int:
    """XDEL ``ids``; how many the stream held."""
    if not ids:
        return 0
    try:
        return int(await client.xdel(stream, *ids))
    except Exception as exc:
        raise translate(exc, doing=f"delete entries of {stream}", secrets=secrets) from exc


async def delete_all(client: Redis, stream: str, *, secrets: tuple[str, ...]) -> None:
    """Empty the stream (XTRIM MAXLEN 0): its consumer groups stay, with nothing to read."""
    try:
        await client.xtrim(stream, maxlen=0, approximate=False)
    except Exception as exc:
        raise translate(exc, doing=f"empty {stream}", secrets=secrets) from exc
