"""The demo command: its numbers follow from its failure pattern, and both entry points run it."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

import dotmac.events
from dotmac.events.cli import INSTALL_HINT, main, run_demo


async def test_demo_numbers_follow_from_the_failure_pattern() -> None:
    summary = await run_demo(events=300, concurrency=4)
    # Orders 1..300: every 50th always fails (6 -> DLQ after 3 attempts, 2 retries each),
    # every other 10th fails once (24 retries), the rest succeed first time.
    assert summary["published"] == 300
    assert summary["handled"] == 294
    assert summary["dead_lettered"] == 6
    assert summary["attempts_per_dead_letter"] == 3
    assert summary["retried"] == 24 + 6 * 2


def test_python_dash_m_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dotmac.events", "demo", "--events", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "dead_lettered             2" in done.stdout


def _run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command line as a process; ``stdin`` (text or bytes) is fed to it."""
    done = subprocess.run(
        [sys.executable, "-m", "dotmac.events", *args],
        capture_output=True,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        timeout=60,
        env=env,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_bare_command_runs_the_demo() -> None:
    assert main([]) == 0


WORKER = ["worker", "tests.faults.worker_app:router"]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["demo", "--events", "0"], "Invalid value for '--events': 0 is not in the range x>=1."),
        (["demo", "--concurrency", "0"], "'--concurrency': 0 is not in the range x>=1."),
        (["worker", "no_such_module_x", "--bus", "memory://"], "cannot import module"),
        (["worker", "tests.faults.worker_app:nope", "--bus", "memory://"], "no attribute 'nope'"),
        (["worker", "tests.faults.worker_app:not_a_router", "--bus", "memory://"], "not an Event"),
        ([*WORKER, "--bus", "amqp://x"], "unknown scheme"),
        ([*WORKER, "--bus", "redis://h?nope=1"], "nope"),
        ([*WORKER, "--bus", "memory://", "--drain-timeout", "0"], "--drain-timeout must be > 0"),
        ([*WORKER, "--bus", "memory://", "--concurrency", "0"], "0 is not in the range x>=1."),
        ([*WORKER, "--bus", "memory://", "--concurrency", "x"], "'x' is not a valid integer"),
        (WORKER, "give --bus URL or set DOTMAC_EVENTS_URL"),
        (["publish", "t", "{x", "--bus", "memory://"], "JSON is not valid"),
        (["publish", "t", "[1]", "--bus", "memory://"], "JSON must be an object"),
        (["publish", "t", "--bus", "memory://"], "give TOPIC and JSON, or --file PATH"),
        (["publish", "--bus", "memory://"], "give TOPIC and JSON, or --file PATH"),
        (["publish", "t", "{}", "--file", "-", "--bus", "memory://"], "JSON or --file, not both"),
        (["publish", "--file", "/no/such/file.jsonl", "--bus", "memory://"], "No such file"),
        (["publish", "--file", "-", "--batch-size", "0", "--bus", "memory://"], "x>=1"),
        (["publish", "--file", "-"], "give --bus URL or set DOTMAC_EVENTS_URL"),
        (["publish", "", "--file", "-", "--bus", "memory://"], "topic must be a non-empty str"),
        (["publish", "--file", "-", "--bus", "kafka://"], "kafka:// needs host:port"),
        (["stats", "t"], "give --bus URL or set DOTMAC_EVENTS_URL"),
        (["stats", "t", "--bus", "memory://", "--watch", "0"], "at least 0.1 seconds"),
        (["stats", "--watch", "t", "--bus", "memory://"], "put TOPIC before --watch"),
        (["stats", "t", "--bus", "redis://h:99999"], "port"),
        (["--nope"], "No such option '--nope'"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_bad_arguments_give_one_line_and_a_non_zero_exit(args: list[str], line: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOTMAC_EVENTS_URL"}
    done = _run_cli(*args, env=env, stdin="")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("dotmac-events: error: ") and line in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (b'{"n": 1}\n{"n": 2\n', "line 2: JSON is not valid"),
        (b'{"n": 1}\n\n[3]\n', "line 3: must be a JSON object, got an array"),
        (b'"x"\n', "line 1: must be a JSON object, got a string"),
    ],
)
def test_a_bad_payload_line_names_its_number(lines: bytes, reason: str) -> None:
    done = _run_cli("publish", "t", "--file", "-", "--bus", "memory://", stdin=lines)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and reason in done.stderr, done.stderr
    assert "none after" in done.stderr


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"topic": "a", "payload": {}, "keys": "k"}', "unknown field 'keys'"),
        (b'{"topic": "a"}', '{"topic": ..., "payload": {...}, "key": ...}'),
        (b'{"topic": "a", "payload": [1]}', '"payload" must be a JSON object, got an array'),
        (b'{"topic": "", "payload": {}}', "topic must be a non-empty str"),
        (b'{"topic": "a", "payload": {}, "key": 7}', "key must be a str or None"),
    ],
)
def test_a_bad_envelope_line_says_what_is_wrong(line: bytes, reason: str) -> None:
    done = _run_cli("publish", "--file", "-", "--bus", "memory://", stdin=line + b"\n")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "line 1: " in done.stderr and reason in done.stderr, done.stderr


def test_version_prints_the_package_version() -> None:
    done = _run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"dotmac-events {version('dotmac-events')}\n"
    assert dotmac.events.__version__ == version("dotmac-events")


def test_a_module_without_handlers_is_refused() -> None:
    done = _run_cli("worker", "json", "--bus", "memory://")
    assert done.returncode == 1
    assert done.stderr == "dotmac-events: error: 'json' has no handlers\n"


def test_passwords_stay_out_of_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["worker", "x:y", "--bus", "redis://u:hunter2-secret@h:6379/0?bogus=1"])
    err = capsys.readouterr().err
    assert code != 0 and "bogus" in err and "hunter2-secret" not in err


def test_missing_cli_extra_prints_the_install_line() -> None:
    script = (
        "import sys; sys.modules['click'] = None; "
        "from dotmac.events.cli import main; sys.exit(main(['demo']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == f"{INSTALL_HINT}\n"
    assert 'pip install "dotmac-events[cli]"' in done.stderr


def test_importing_the_library_or_the_cli_package_loads_no_cli_library() -> None:
    script = (
        "import sys, dotmac.events, dotmac.events.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'rich')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_publish_prints_the_event_id_on_the_memory_bus() -> None:
    done = _run_cli("publish", "orders", '{"n": 1}', "--bus", "memory://", "--key", "c1")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) >= 32


def test_stats_prints_a_table() -> None:
    done = _run_cli("stats", "orders", "--bus", "memory://", "--group", "g")
    assert done.returncode == 0, done.stderr
    for metric in ("length", "lag", "pending", "dlq_depth"):
        assert metric in done.stdout


def test_an_unreachable_broker_during_publish_file_is_one_line() -> None:
    url = "redis://127.0.0.1:1/0?connection_timeout=1&publish_retries=0"
    done = _run_cli("publish", "t", "--file", "-", "--bus", url, stdin='{"n": 1}\n')
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("dotmac-events: error: ")
    assert done.stderr.endswith("; 0 event(s) were published before it\n"), done.stderr
    assert done.stdout == ""
