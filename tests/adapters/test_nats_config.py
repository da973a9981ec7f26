"""NatsConfig checks, the names topics and groups get on the server, and nats:// URLs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dotmac.events import ConfigurationError, NatsConfig
from dotmac.events.urls import parse_bus_url, redact

SUBJECT_TOKEN = re.compile(r"[^\s*>.]+")
NAME = re.compile(r"[A-Za-z0-9_-]+")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"servers": ""}, "servers"),
        ({"servers": "http://h:4222"}, "servers"),
        ({"servers": "nats://h:99999"}, "servers"),
        ({"servers": "nats://h:4222,"}, "servers"),
        ({"token": "t", "user": "u"}, "token"),
        ({"password": ""}, "password"),
        ({"tls_cert_file": "c.pem"}, "tls_key_file"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"stream_prefix": "A.B"}, "stream_prefix"),
        ({"subject_prefix": "a.*"}, "subject_prefix"),
        ({"subject_prefix": "a..b"}, "subject_prefix"),
        ({"storage": "disk"}, "storage"),
        ({"replicas": 0}, "replicas"),
        ({"max_age": -1}, "max_age"),
        ({"max_msgs": 0}, "max_msgs"),
        ({"max_bytes": True}, "max_bytes"),
        ({"duplicate_window": 0}, "duplicate_window"),
        ({"ack_wait": 0.1}, "ack_wait"),
        ({"prefetch_count": 0}, "prefetch_count"),
        ({"max_ack_pending": 10, "prefetch_count": 20}, "max_ack_pending"),
        ({"fetch_wait": 40.0, "ack_wait": 30.0}, "fetch_wait"),
        ({"new_group_start": "middle"}, "new_group_start"),
        ({"pattern_refresh": 0}, "pattern_refresh"),
        ({"publish_timeout": 0}, "publish_timeout"),
        ({"publish_retries": -1}, "publish_retries"),
    ],
)
def test_bad_settings_name_their_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        NatsConfig(**options)
    assert caught.value.field == field


def test_secrets_never_show() -> None:
    config = NatsConfig(servers="nats://u:urlsecret@h:4222", user="u", password="pw-secret")
    shown = repr(config)
    assert "urlsecret" not in shown and "pw-secret" not in shown
    assert config.describe_target() == "nats://u:***@h:4222"
    assert set(config.secrets) == {"pw-secret", "urlsecret"}
    with pytest.raises(ConfigurationError) as caught:
        NatsConfig(servers="http://u:urlsecret@h:4222")
    assert "urlsecret" not in str(caught.value)
    assert "tok-secret" not in repr(NatsConfig(token="tok-secret"))


@pytest.mark.parametrize(
    "topic",
    ["orders", "orders.created", "a b", "a..b", ".lead", "trail.", "x*y.>", "50%", "$sys", "zoë"],
)
def test_every_topic_has_a_subject_that_gives_it_back(topic: str) -> None:
    config = NatsConfig(subject_prefix="app.events")
    subject = config.subject(topic)
    tokens = subject.split(".")
    assert all(SUBJECT_TOKEN.fullmatch(t) for t in tokens), subject
    assert config.topic_of(subject) == topic
    assert NAME.fullmatch(config.stream_name(topic))


@given(st.text(min_size=1, max_size=80))
def test_subjects_round_trip_and_stay_apart(topic: str) -> None:
    config = NatsConfig()
    subject = config.subject(topic)
    assert config.topic_of(subject) == topic
    assert not subject.startswith(f"{config.subject_prefix}.$")  # the delayed stream's space
    assert all(SUBJECT_TOKEN.fullmatch(t) for t in subject.split("."))
    assert NAME.fullmatch(config.stream_name(topic)) and len(config.stream_name(topic)) < 100


def test_names_keep_topics_and_groups_apart() -> None:
    config = NatsConfig()
    assert config.stream_name("a.b") != config.stream_name("a_b")
    assert config.consumer_name("workers") == "workers"
    assert config.consumer_name("dlq.reader") != config.consumer_name("dlq_reader")
    assert NAME.fullmatch(config.consumer_name("dlq.reader"))
    assert config.topic_of(config.delayed_subject("a")) is None
    assert config.topic_of("other.a") is None


def test_nats_urls() -> None:
    config = parse_bus_url("nats://alice:p%40ss@h1:4222,h2?stream_prefix=APP&ack_wait=60")
    assert isinstance(config, NatsConfig)
    assert config.servers == "nats://h1:4222,nats://h2:4222"
    assert (config.user, config.password) == ("alice", "p@ss")
    assert (config.stream_prefix, config.ack_wait) == ("APP", 60.0)
    token = parse_bus_url("nats://s3cret@127.0.0.1")
    assert isinstance(token, NatsConfig) and token.token == "s3cret"
    assert token.servers == "nats://127.0.0.1:4222"
    tls = parse_bus_url("tls://h:4443?storage=memory&max_age=none")
    assert isinstance(tls, NatsConfig) and tls.servers == "tls://h:4443"
    assert tls.storage == "memory" and tls.max_age is None
    assert redact("nats://alice:s3cret@h:4222?token=abc") == "nats://alice:***@h:4222?token=***"


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("nats://", "url"),
        ("nats://h:4222/path", "url"),
        ("nats://h:4222?servers=x", "servers"),
        ("nats://h:4222?ack_wait=soon", "ack_wait"),
        ("nats://u:s3cret@h:4222?bogus=1", "bogus"),
    ],
)
def test_bad_nats_urls_name_the_part(url: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_bus_url(url)
    assert caught.value.field == field
    assert "s3cret" not in str(caught.value)
