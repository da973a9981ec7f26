"""Topic patterns: what `*` and `**` match, and which patterns are refused."""

from __future__ import annotations

import pytest

from dotmac.events.errors import ConfigurationError
from dotmac.events.patterns import TopicPattern, is_pattern


@pytest.mark.parametrize(
    ("pattern", "topic", "matched"),
    [
        ("user.*", "user.created", True),
        ("user.*", "user", False),
        ("user.*", "user.eu.created", False),
        ("user.*", "users.created", False),
        ("*.created", "user.created", True),
        ("*.created", "eu.user.created", False),
        ("user.**", "user", True),
        ("user.**", "user.created", True),
        ("user.**", "user.eu.created", True),
        ("user.**", "username", False),
        ("**.created", "created", True),
        ("**.created", "a.b.created", True),
        ("**.created", "a.b.updated", False),
        ("a.**.z", "a.z", True),
        ("a.**.z", "a.b.c.z", True),
        ("a.**.z", "a.b.c", False),
        ("a.*.**", "a", False),
        ("a.*.**", "a.b", True),
        ("**", "anything.at.all", True),
        # dead letters and internal topics only when named literally
        ("user.**", "user.created.DLQ", False),
        ("**", "orders.DLQ", False),
        ("user.*.DLQ", "user.created.DLQ", True),
        ("**", "_inbox.abc", False),
        ("_inbox.*", "_inbox.abc", True),
    ],
)
def test_matching(pattern: str, topic: str, matched: bool) -> None:
    assert TopicPattern(pattern).matches(topic) is matched


@pytest.mark.parametrize("bad", ["user*", "*user", "user.**x", "user..*", ".*", "*."])
def test_a_wildcard_inside_a_segment_or_an_empty_segment_is_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="topic"):
        TopicPattern(bad)


def test_is_pattern() -> None:
    assert is_pattern("user.*") and is_pattern("**")
    assert not is_pattern("user.created")
