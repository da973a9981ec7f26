"""Topic patterns: ``user.*`` matches one dot-separated segment, ``user.**`` any number of them.

A subscription to a pattern follows every concrete topic it matches, including topics that
appear later. Two kinds of topic are never matched unless the pattern names them literally, so
a broad pattern cannot consume the library's own traffic: dead-letter topics (last segment
``DLQ``) and internal topics (first segment starting with ``_``, such as request-reply inboxes).
"""

from __future__ import annotations

from functools import lru_cache

from dotmac.events.errors import ConfigurationError

__all__ = ["TopicPattern", "is_pattern"]

ONE = "*"
ANY = "**"
DLQ_SEGMENT = "DLQ"


def is_pattern(topic: str) -> bool:
    """True when ``topic`` holds a wildcard and so names a set of topics, not one."""
    return ONE in topic


class TopicPattern:
    """A parsed glob over dot-separated topic names.

    ``*`` matches exactly one non-empty segment, ``**`` zero or more segments, so ``user.**``
    matches ``user``, ``user.created`` and ``user.eu.created``; ``*.created`` matches
    ``user.created`` but not ``eu.user.created``.

    Raises:
        ConfigurationError: a wildcard is part of a segment (``user*``) or a segment is empty.
    """

    __slots__ = ("_internal", "_literal_dlq", "segments", "text")

    def __init__(self, text: str) -> None:
        segments = tuple(text.split("."))
        for segment in segments:
            if not segment:
                raise ConfigurationError("topic", f"{text!r} has an empty segment")
            if ONE in segment and segment not in (ONE, ANY):
                raise ConfigurationError(
                    "topic",
                    f"{text!r}: a wildcard must be a whole segment ('*' or '**'), got {segment!r}",
                )
        self.text = text
        self.segments = segments
        self._literal_dlq = segments[-1] == DLQ_SEGMENT
        self._internal = segments[0].startswith("_")

    def matches(self, topic: str) -> bool:
        """True when ``topic`` (a concrete name) is one this pattern follows."""
        names = tuple(topic.split("."))
        if names[-1] == DLQ_SEGMENT and not self._literal_dlq:
            return False
        if names[0].startswith("_") and not self._internal:
            return False
        return _match(self.segments, names)

    def __repr__(self) -> str:
        return f"TopicPattern({self.text!r})"


@lru_cache(maxsize=1024)
def _match(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not pattern:
        return not names
    head, rest = pattern[0], pattern[1:]
    if head == ANY:  # zero segments, or one more and stay on **
        return _match(rest, names) or (bool(names) and _match(pattern, names[1:]))
    if not names:
        return False
    return (head == ONE or head == names[0]) and _match(rest, names[1:])
