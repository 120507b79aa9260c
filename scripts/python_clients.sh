#!/usr/bin/env bash
# Runs the official `openai` and `ollama` Python clients (PyPI), unchanged, against a real mesh
# on loopback: a dev directory, an OpenAI-compatible backend double, a node in front of it, and
# `iicp gateway`. Prints pytest's summary and exits with pytest's status.
#
#   scripts/python_clients.sh [extra pytest args]
#
# CLIENTS_VENV picks the virtualenv (default .venv-clients); CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CLIENTS_VENV:-.venv-clients}
if ! "$VENV/bin/python" -c 'import openai, ollama, pytest' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check openai ollama pytest
fi

cargo build --quiet -p iicp-cli -p iicp-testkit
BIN=${CARGO_TARGET_DIR:-target}/debug
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR_PORT=$(free_port)
BACKEND_PORT=$(free_port)
NODE_PORT=$(free_port)
NODE2_PORT=$(free_port)
GATEWAY_PORT=$(free_port)
DIRECTORY="http://127.0.0.1:$DIR_PORT"
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"

# Waits until `curl URL` succeeds (and, with a second argument, its body contains that text).
wait_for() {
  local url=$1 want=${2:-} what=$3
  for _ in $(seq 200); do
    if body=$(curl -fs "$url" 2>/dev/null) && [[ -z "$want" || "$body" == *"$want"* ]]; then
      return 0
    fi
    sleep 0.1
  done
  echo "$what did not come up ($url)" >&2
  for log in "$WORK"/*.log; do echo "--- $log" >&2; tail -20 "$log" >&2; done
  exit 1
}

IICP_LOG=warn "$BIN/iicp" directory --listen "127.0.0.1:$DIR_PORT" --db "$WORK/directory.db" \
  --dev >"$WORK/directory.log" 2>&1 &
pids+=($!)
"$BIN/iicp-backend-double" --flavor openai --listen "127.0.0.1:$BACKEND_PORT" \
  --chat-model tiny-chat --embedding-model tiny-embed >"$WORK/backend.log" 2>&1 &
pids+=($!)
wait_for "$DIRECTORY/iicp/health" "" "the directory"
wait_for "http://127.0.0.1:$BACKEND_PORT/v1/models" "tiny-chat" "the backend double"

# Two nodes in front of the same backend: the last test kills the first one.
node_pids=()
for port in "$NODE_PORT" "$NODE2_PORT"; do
  IICP_LOG=warn "$BIN/iicp" node --backend "http://127.0.0.1:$BACKEND_PORT" --directory "$DIRECTORY" \
    --listen "127.0.0.1:$port" --state-dir "$WORK/node-$port" >"$WORK/node-$port.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
done
wait_for "$DIRECTORY/api/v1/discover?intent=urn:iicp:intent:llm:chat:v1" '"count":2' "the nodes (chat)"
wait_for "$DIRECTORY/api/v1/discover?intent=urn:iicp:intent:llm:embedding:v1" '"count":2' "the nodes (embedding)"

IICP_LOG=warn "$BIN/iicp" gateway --directory "$DIRECTORY" --listen "127.0.0.1:$GATEWAY_PORT" \
  >"$WORK/gateway.log" 2>&1 &
pids+=($!)
wait_for "$GATEWAY/" "Ollama is running" "the gateway"

set +e
IICP_GATEWAY_URL="$GATEWAY" IICP_NODE_PIDS="${node_pids[*]}" "$VENV/bin/python" -m pytest -v -p no:cacheprovider \
  crates/iicp-gateway/tests/python/test_clients.py "$@"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  for log in "$WORK"/*.log; do echo "--- $log" >&2; tail -20 "$log" >&2; done
fi
exit "$status"
