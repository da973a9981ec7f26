"""A real Redis Cluster for the tests, started from ``redis-server --cluster-enabled yes``.

``redis_cluster_url`` (session): ``REDIS_CLUSTER_URL`` if set, else 3 masters on free loopback
ports joined by ``redis-cli --cluster create``, each in its own temporary directory (its
``nodes.conf``), no persistence; stopped by PID at the end. :class:`LocalCluster` is used
directly by fault tests that want replicas (``replicas=1``: 3 masters, 3 replicas) and kill a
master. No binary is a test failure with a clear message, never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import find_redis_binary, free_port

__all__ = ["LocalCluster", "cluster_info", "redis_cluster_url", "replicas_in_sync"]


def _cli() -> str:
    binary = find_redis_binary()
    cli = shutil.which("redis-cli") or (
        str(Path(binary).with_name("redis-cli")) if binary is not None else None
    )
    if binary is None or cli is None or not Path(cli).is_file():
        pytest.fail(
            "Redis Cluster tests need redis-server and redis-cli (apt-get install redis-server) "
            "or REDIS_CLUSTER_URL. Redis tests never skip.",
            pytrace=False,
        )
    return cli


def _ask(port: int, command: bytes, timeout: float = 0.5) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(command)
            return sock.recv(65536)
    except OSError:
        return b""


def cluster_info(port: int) -> dict[str, str]:
    """``CLUSTER INFO`` of the node on ``port`` as a dict (empty when it does not answer)."""
    reply = _ask(port, b"CLUSTER INFO\r\n").decode(errors="replace")
    pairs = (line.split(":", 1) for line in reply.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


class LocalCluster:
    """``masters`` masters (and ``replicas`` replicas each) on 127.0.0.1, started by start()."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.binary = find_redis_binary() or ""
        self.cli = _cli()
        self.ports = [free_port() for _ in range(masters * (1 + replicas))]
        # the bus port given, not derived (port + 10000 may be taken, or above 65535)
        self.bus_ports = {port: free_port() for port in self.ports}
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._dir = tempfile.mkdtemp(prefix="dotmac-cluster-")

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _start_node(self, port: int) -> None:
        workdir = Path(self._dir) / str(port)
        workdir.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                self.binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_ports[port]),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
                "--loglevel", "warning",
                "--dir", str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        for port in self.ports:
            self._start_node(port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while not _ask(port, b"PING\r\n").startswith(b"+PONG"):
                if time.monotonic() > deadline or self.processes[port].poll() is not None:
                    self.stop()
                    raise RuntimeError(f"cluster node on port {port} did not start")
                time.sleep(0.02)
        subprocess.run(
            [
                self.cli,
                "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=timeout,
        )  # fmt: skip
        self.wait_ok(deadline - time.monotonic())

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and agrees on the epoch."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [cluster_info(p) for p in self.live_ports()]
            if all(i.get("cluster_state") == "ok" for i in infos) and infos:
                if len({i.get("cluster_current_epoch") for i in infos}) == 1:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"cluster not ok within {timeout}s: {infos}")

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.processes.items() if proc.poll() is None]

    def master_ports(self) -> list[int]:
        """Ports of the live nodes that are masters now (``ROLE``)."""
        return [
            p for p in self.live_ports() if _ask(p, b"ROLE\r\n").startswith(b"*3\r\n$6\r\nmaster")
        ]

    def wait_promoted(self, masters: int, timeout: float = 30.0) -> None:
        """Wait until ``masters`` live nodes are masters again (a replica took over), and ok."""
        deadline = time.monotonic() + timeout
        while len(self.master_ports()) < masters:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica promoted within {timeout}s")
            time.sleep(0.02)
        self.wait_ok(deadline - time.monotonic())

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (its replica takes over after the node timeout)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def replicas_in_sync(cluster: LocalCluster, timeout: float) -> None:
    """Wait until every master reports as many connected, online replicas as it should have."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        masters = cluster.master_ports()
        replies = [_ask(p, b"INFO replication\r\n").decode(errors="replace") for p in masters]
        online = [r.count("state=online") for r in replies]
        if masters and all(n >= cluster.replicas for n in online):
            return
        time.sleep(0.05)
    raise RuntimeError(f"replicas not in sync within {timeout}s")


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """URL of a real Redis Cluster (3 masters) for the session (see the module docstring)."""
    from_env = os.environ.get("REDIS_CLUSTER_URL")
    if from_env:
        yield from_env
        return
    with LocalCluster(masters=3) as cluster:
        yield cluster.url
