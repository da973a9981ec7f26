"""Every example in examples/ runs, on the memory bus and on a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("transport", ["memory", "redis"])
def test_router_runs_in_an_asgi_lifespan(transport: str, request: pytest.FixtureRequest) -> None:
    env = dict(os.environ)
    if transport == "redis":
        url = request.getfixturevalue("redis_url")
        env["DOTMAC_EVENTS_URL"] = f"{url}?key_prefix=example-{os.getpid()}:"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "asgi_lifespan.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "statuses: [202]" in done.stdout
    assert "welcomed: ['ada@example.com']" in done.stdout
