"""Message headers on JetStream, records written as they are (dead letters, replays), and deletes.

Every message of ours carries its key in ``Dotmac-Key``. A record written with transport headers
(a dead letter: the original bytes and key plus the failure headers) carries each of them as a
NATS header of the same name, so ``nats stream get`` or any client shows the original bytes with
the failure headers beside them. A NATS header value is one line of text, so a value is written as
it is when it is printable UTF-8 without ``%`` or surrounding spaces; otherwise the characters a
header cannot hold (control characters such as a newline, bytes that are not UTF-8, leading or
trailing spaces) and ``%`` itself are percent-encoded. Reading decodes any value holding a ``%``.
Reads leave ``Dotmac-Key`` (the key) and the server's own ``Nats-*`` headers (``Nats-Msg-Id``,
...) out of a record's headers: copying those onto a dead letter would instruct the server.

Each record written gets a ``Nats-Msg-Id`` of its own unless the caller names one: the
publisher's resends of it are stored once, and two writes are never taken for one (a dead
letter replayed within the stream's duplicate window is stored and delivered).

Deleting one record is ``STREAM.MSG.DELETE`` by sequence (the server overwrites the message,
as ``nats stream rmm`` does); deleting every record is ``STREAM.PURGE``: consumers stay, with
nothing left to read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from urllib.parse import quote, unquote_to_bytes

from nats.js import JetStreamContext
from nats.js import errors as js_errors

from dotmac.events.adapters.nats.errors import is_not_found
from dotmac.events.errors import ConfigurationError

__all__ = [
    "KEY_HEADER",
    "MSG_ID_HEADER",
    "delete_all",
    "delete_messages",
    "header_bytes",
    "header_value",
    "key_header_value",
    "record_headers",
    "transport_headers",
]

KEY_HEADER = "Dotmac-Key"
"""Header holding the event key (percent-encoded where a header cannot hold it)."""

MSG_ID_HEADER = "Nats-Msg-Id"
"""The server's deduplication id: a message with an id stored within the window is dropped."""

_SERVER_PREFIX = "nats-"
_OURS = frozenset({KEY_HEADER, MSG_ID_HEADER})
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP token, as NATS header names are
# "no message found" / "sequence N not found" / "stream store EOF" (past the last sequence):
# the answers of 2.9 to 2.12 servers for a message the stream does not hold.
_NO_MESSAGE_CODES = frozenset({10037, 10043})
_DELETE_FAILED = 10057


def key_header_value(key: str) -> str:
    """``key`` as a header value: percent-encoded only where a header cannot hold it as is."""
    if key.isascii() and key.isprintable() and "%" not in key and key.strip() == key:
        return key
    return quote(key, safe="")


def header_value(value: bytes) -> str:
    """``value`` as a NATS header value (see the module docstring); :func:`header_bytes`
    gives the bytes back."""
    text = value.decode(errors="surrogateescape")
    if text.isprintable() and "%" not in text and text.strip(" ") == text:
        return text
    encoded = "".join(
        quote(char.encode(errors="surrogateescape"), safe="")
        if char == "%" or not char.isprintable()
        else char
        for char in text
    )
    core = encoded.strip(" ")
    if not core:
        return "%20" * len(encoded)
    lead = len(encoded) - len(encoded.lstrip(" "))
    trail = len(encoded) - len(encoded.rstrip(" "))
    return "%20" * lead + core + "%20" * trail


def header_bytes(text: str) -> bytes:
    """The bytes of a header value as :func:`header_value` wrote it."""
    return unquote_to_bytes(text) if "%" in text else text.encode()


def transport_headers(headers: Mapping[str, str] | None) -> tuple[tuple[str, bytes], ...]:
    """A message's transport headers: all but the key and the server's ``Nats-*`` ones."""
    if not headers or (len(headers) <= 2 and all(name in _OURS for name in headers)):
        return ()  # an ordinary event: the common case, no work
    return tuple(
        (name, header_bytes(value))
        for name, value in headers.items()
        if name != KEY_HEADER and not name.lower().startswith(_SERVER_PREFIX)
    )


def record_headers(key: str | None, headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The NATS headers of a record written as it is: ``headers`` (a repeated name keeps its
    last value), a fresh ``Nats-Msg-Id`` unless given, and the key.

    Raises:
        ConfigurationError: a header name NATS cannot carry, ``Dotmac-Key`` among the headers,
            or a value that is not bytes.
    """
    found: dict[str, str] = {}
    for name, value in headers:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigurationError(
                "headers", f"{name!r} is not a NATS header name (letters, digits, -_.!#$&'*+^`|~)"
            )
        if name == KEY_HEADER:
            raise ConfigurationError("headers", f"{KEY_HEADER!r} holds the key: pass key= instead")
        if not isinstance(value, bytes):
            raise ConfigurationError(
                "headers", f"the value of {name!r} must be bytes, got {type(value).__name__}"
            )
        found[name] = header_value(value)
    found.setdefault(MSG_ID_HEADER, uuid.uuid4().hex)
    if key is not None:
        found[KEY_HEADER] = key_header_value(key)
    return found


def _not_held(exc: Exception) -> bool:
    if not isinstance(exc, js_errors.APIError):
        return False
    if exc.err_code in _NO_MESSAGE_CODES:
        return True
    description = (exc.description or "").lower()
    return exc.err_code == _DELETE_FAILED and any(
        words in description for words in ("no message", "not found", "eof")
    )


async def delete_messages(js: JetStreamContext, stream: str, positions: Sequence[str]) -> int:
    """Delete the messages at ``positions`` (stream sequences); how many the stream held.
    A position that is not a sequence names no message."""
    deleted = 0
    for position in dict.fromkeys(positions):
        if not (position.isascii() and position.isdigit()) or int(position) < 1:
            continue
        try:
            await js.delete_msg(stream, int(position))
        except Exception as exc:
            if _not_held(exc):
                continue
            if is_not_found(exc):
                return deleted  # no stream: nothing more to delete
            raise
        deleted += 1
    return deleted


async def delete_all(js: JetStreamContext, stream: str) -> None:
    """Purge ``stream``: every message goes, its consumers stay (nothing to do without it)."""
    try:
        await js.purge_stream(stream)
    except Exception as exc:
        if not is_not_found(exc):
            raise
