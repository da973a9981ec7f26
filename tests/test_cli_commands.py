"""``dotmac-events publish`` / ``stats`` / ``worker MODULE`` as real processes on real brokers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest

from dotmac.events.urls import create_bus

ROOT = Path(__file__).resolve().parents[1]
SECRET = "pw-never-shown-42"


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
COMMAND = [sys.executable, "-m", "dotmac.events"]


def _cli(
    *args: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        cwd=ROOT,
        env=ENV,
    )


def _tables(output: str) -> list[list[dict[str, str]]]:
    """Every stats table in ``output`` (ANSI codes and all), as rows keyed by column name."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] = []
    for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output).splitlines():
        if "┃" in line:
            header = [c.strip() for c in line.strip().strip("┃").split("┃")]
            tables.append([])
        elif "│" in line and header:
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            if len(cells) == len(header):  # not a line still being written
                tables[-1].append(dict(zip(header, cells, strict=True)))
    return tables


def _shows(output: str, topic: str, column: str, value: str) -> bool:
    """Whether the last table (so far) has ``value`` in ``column`` of ``topic``'s row."""
    tables = _tables(output)
    rows = tables[-1] if tables else []
    return any(row["topic"] == topic and row[column] == value for row in rows)


def _row(output: str, topic: str, group: str = "-") -> dict[str, str]:
    """The last table's row for ``topic`` and ``group``."""
    tables = _tables(output)
    for row in tables[-1] if tables else []:
        if row["topic"] == topic and row["group"] == group:
            return row
    raise AssertionError(f"no {topic}/{group} row in:\n{output}")


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_publish_then_stats_on_redis(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    for n in range(3):
        done = _cli("publish", "orders", f'{{"n": {n}}}', "--bus", url, "--key", "c")
        assert done.returncode == 0, done.stderr
    done = _cli("stats", "orders", "--bus", url, "--group", "billing")
    assert done.returncode == 0, done.stderr
    assert _row(done.stdout, "orders", "billing")["length"] == "3"
    assert _row(done.stdout, "orders", "billing")["dlq_depth"] in ("0", "-")


@pytest.mark.kafka
@pytest.mark.timeout(60)
def test_publish_then_stats_on_kafka(kafka_bootstrap: str) -> None:
    url = f"kafka://{kafka_bootstrap}?num_partitions=1&linger_ms=0"
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    for n in range(2):
        done = _cli("publish", topic, f'{{"n": {n}}}', "--bus", url)
        assert done.returncode == 0, done.stderr
    done = _cli("stats", topic, "--bus", url, "--group", "billing")
    assert done.returncode == 0, done.stderr
    assert _row(done.stdout, topic, "billing")["length"] == "2"


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_env_var_names_the_bus(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DOTMAC_EVENTS_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "dotmac.events", "publish", "t", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_worker_runs_a_modules_event_handlers(redis_url: str, tmp_path: Path) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:&block_ms=200"
    topic = "jobs"
    for n in range(5):
        assert _cli("publish", topic, f'{{"n": {n}}}', "--bus", url).returncode == 0
    record = tmp_path / "handled.txt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dotmac.events",
            "worker",
            "tests.faults.worker_app_default",
            "--bus",
            url,
            "--drain-timeout",
            "5",
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "WORKER_TOPIC": topic,
            "WORKER_RECORD": str(record),
        },
    )
    try:
        deadline = time.monotonic() + 30
        while not (record.exists() and len(record.read_text().split()) >= 5):
            assert time.monotonic() < deadline and proc.poll() is None, "worker did not handle 5"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "worker ready: 1 handler(s)" in err
    assert sorted(int(n) for n in record.read_text().split()) == list(range(5))


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_worker_never_shows_the_password(redis_url: str) -> None:
    base = redis_url.split("://", 1)[1]
    url = f"redis://nobody:{SECRET}@{base}?connection_timeout=2"
    done = _cli("worker", "tests.faults.worker_app:router", "--bus", url, "--log-level", "debug")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert "***" in done.stderr


async def _read_back(url: str, topic: str, count: int) -> list[tuple[object, str | None]]:
    """``count`` events of ``topic`` as (payload, key), in the order one consumer gets them."""
    got: list[tuple[object, str | None]] = []
    async with create_bus(url) as bus:
        await bus.subscribe(topic, lambda e: got.append((e.payload, e.key)), group="check")
        deadline = time.monotonic() + 20
        while len(got) < count:
            assert time.monotonic() < deadline, f"read back {len(got)} of {count}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing more arrives
    return got


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_publish_file_sends_every_line_in_batches(redis_url: str, tmp_path: Path) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    lines = tmp_path / "orders.jsonl"
    lines.write_text("".join(f'{{"n": {n}}}\n' + ("\n" if n == 600 else "") for n in range(1201)))
    done = _cli(
        "publish", "orders", "--file", str(lines), "--key", "c", "--batch-size", "500", "--bus", url
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "published 1201 event(s)\n"
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    got = await _read_back(url, "orders", 1201)
    assert got == [({"n": n}, "c") for n in range(1201)]


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_publish_file_of_envelopes_from_stdin(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    lines = (
        '{"topic": "a", "payload": {"n": 1}, "key": "k1"}\n'
        '{"topic": "b", "payload": {"n": 2}}\n'
        '{"topic": "a", "payload": {"n": 3}}\n'
    )
    done = _cli("publish", "--file", "-", "--key", "fallback", "--bus", url, stdin=lines)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "published 3 event(s)\n"
    assert await _read_back(url, "a", 2) == [({"n": 1}, "k1"), ({"n": 3}, "fallback")]
    assert await _read_back(url, "b", 1) == [({"n": 2}, "fallback")]


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_bad_line_publishes_the_lines_before_it_and_none_after(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    lines = "".join('{"n": 7\n' if n == 7 else f'{{"n": {n}}}\n' for n in range(1, 11))
    done = _cli("publish", "t", "--file", "-", "--batch-size", "4", "--bus", url, stdin=lines)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("dotmac-events: error: line 7: JSON is not valid")
    assert done.stderr.endswith("the 6 event(s) before it were published, none after\n")
    assert done.stderr.count("\n") == 1
    assert await _read_back(url, "t", 6) == [({"n": n}, None) for n in range(1, 7)]


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_stats_shows_a_row_per_topic_and_group(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    for topic, count in (("a", 3), ("b", 1)):
        for n in range(count):
            assert _cli("publish", topic, f'{{"n": {n}}}', "--bus", url).returncode == 0
    await _read_back(url, "a", 3)  # group "check" has taken and acked all of a
    done = _cli("stats", "a", "b", "--group", "check", "--group", "other", "--bus", url)
    assert done.returncode == 0, done.stderr
    [table] = _tables(done.stdout)
    assert [(r["topic"], r["group"]) for r in table] == [
        ("a", "check"),
        ("a", "other"),
        ("b", "check"),
        ("b", "other"),
    ]
    assert _row(done.stdout, "a", "check") | {"oldest_pending_age": ""} == {
        "topic": "a",
        "group": "check",
        "length": "3",
        "lag": "0",
        "pending": "0",
        "oldest_pending_age": "",
        "dlq_depth": "0",
    }
    assert _row(done.stdout, "b", "other")["length"] == "1"
    assert _row(done.stdout, "b", "other")["lag"] == "-"  # no such group


def _spawn(*args: str, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*COMMAND, *args], stdout=stdout, stderr=stderr, cwd=ROOT, env=ENV)


def _read_until(fd: int, done: object, timeout: float, sink: bytearray) -> None:
    """Read ``fd`` into ``sink`` until ``done(text)`` holds (a pty or a pipe)."""
    deadline = time.monotonic() + timeout
    while not done(sink.decode(errors="replace")):  # type: ignore[operator]
        assert time.monotonic() < deadline, sink.decode(errors="replace")
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty's other side closed
                chunk = b""
            assert chunk, f"output ended:\n{sink.decode(errors='replace')}"
            sink += chunk


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_stats_watch_redraws_until_sigterm(redis_url: str) -> None:
    """With no TOPIC the watch lists the bus's topics each round, so a new one shows up."""
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    assert _cli("publish", "w", "{}", "--bus", url).returncode == 0
    proc = _spawn(
        "stats", "--watch", "0.2", "--bus", url, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    out = bytearray()
    try:
        fd = proc.stdout.fileno()
        _read_until(fd, lambda text: _shows(text, "w", "length", "1"), 20, out)
        assert _cli("publish", "w", "{}", "--bus", url).returncode == 0
        assert _cli("publish", "v", "{}", "--bus", url).returncode == 0
        _read_until(
            fd,
            lambda text: _shows(text, "w", "length", "2") and _shows(text, "v", "length", "1"),
            20,
            out,
        )
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == b"" and b"Traceback" not in rest
    assert len(_tables((out + rest).decode())) >= 2


def test_stats_watch_in_a_terminal_redraws_in_place_until_ctrl_c() -> None:
    leader, follower = pty.openpty()
    proc = _spawn(
        "stats",
        "w",
        "--watch",
        "0.2",
        "--bus",
        "memory://",
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    out = bytearray()
    try:
        _read_until(leader, lambda text: text.count("every 0.2s") >= 3, 20, out)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(leader)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert b"\x1b[1A" in out or b"\x1b[2K" in out  # the cursor goes back up: redrawn in place
    assert _row(out.decode(), "w")["length"] == "0"


def test_publish_file_shows_a_progress_bar_in_a_terminal(tmp_path: Path) -> None:
    lines = tmp_path / "many.jsonl"
    lines.write_text("".join(f'{{"n": {n}}}\n' for n in range(3000)))
    leader, follower = pty.openpty()
    proc = _spawn(
        "publish",
        "t",
        "--file",
        str(lines),
        "--batch-size",
        "100",
        "--bus",
        "memory://",
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    err = bytearray()
    try:
        out, _ = proc.communicate(timeout=30)
        with contextlib.suppress(AssertionError):  # read what the pty holds, up to its end
            _read_until(leader, lambda text: False, 2, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(leader)
    assert proc.returncode == 0, err
    assert out == b"published 3000 event(s)\n"
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err.decode())
    assert "publishing" in shown and "3000 events" in shown, shown
    assert "━" in shown  # the bar


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_the_readme_cli_block_runs(redis_url: str, tmp_path: Path) -> None:
    """The README's publish/stats block as a bash script on a real Redis (the URL it exports
    is replaced by the test's; the --watch line gets two seconds, then Ctrl-C)."""
    readme = (ROOT / "README.md").read_text()
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) if "--file -" in b]
    lines = []
    for line in block.splitlines():
        if line.startswith("export DOTMAC_EVENTS_URL="):
            continue
        if "--watch" in line:
            line = f"timeout --preserve-status -s INT 2 {line}"
        lines.append(line)
    script = tmp_path / "cli.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(lines) + "\n")
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    done = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            **ENV,
            "DOTMAC_EVENTS_URL": url,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("published 2 event(s)") == 2, done.stdout
    tables = _tables(done.stdout)
    assert [(r["topic"], r["group"], r["length"]) for r in tables[0]] == [
        ("orders", "billing", "4"),
        ("orders", "audit", "4"),
        ("refunds", "billing", "1"),
        ("refunds", "audit", "1"),
    ]
    assert len(tables) >= 2  # and the watch drew at least once
    assert done.stdout.endswith(f"dotmac-events {version('dotmac-events')}\n")


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_stats_without_a_topic_lists_the_bus_topics(redis_url: str) -> None:
    url = f"{redis_url}?key_prefix=cli-{uuid.uuid4().hex[:8]}:"
    for topic in ("b", "a", "a", "a.DLQ", "_internal"):
        assert _cli("publish", topic, "{}", "--bus", url).returncode == 0
    done = _cli("stats", "--bus", url, "--group", "g")
    assert done.returncode == 0, done.stderr
    [table] = _tables(done.stdout)
    # Dead letters show as their topic's dlq_depth; internal topics are left out.
    assert [(r["topic"], r["length"], r["dlq_depth"]) for r in table] == [
        ("a", "2", "1"),
        ("b", "1", "0"),
    ]
