#!/usr/bin/env bash
# Runs the official conformance runner (iicp-conformance, PyPI) against a fresh directory:
# directory-public-v1, directory-lifecycle-v1 and directory-dispatch-v1.
#
# The lifecycle profile registers https://node.example.com. The directory really dials it back:
# a dev-only resolver override sends node.example.com to a local HTTPS health responder with a
# self-signed certificate, and the responder's hit log proves the dial-backs happened.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CONFORMANCE_VENV:-.venv-conformance}
if [ ! -x "$VENV/bin/iicp-conformance" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check iicp-conformance
fi

cargo build --quiet -p iicp-cli
IICP=${CARGO_TARGET_DIR:-target}/debug/iicp
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NODE_PORT=$(free_port)
DIR_PORT=$(free_port)

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=node.example.com" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
python3 scripts/health_responder.py "$NODE_PORT" "$WORK/cert.pem" "$WORK/key.pem" "$WORK/hits.log" &
pids+=($!)
IICP_LOG=warn "$IICP" directory --listen "127.0.0.1:$DIR_PORT" --db "$WORK/directory.db" \
  --dev --dev-resolve "node.example.com=127.0.0.1:$NODE_PORT" &
pids+=($!)
BASE="http://127.0.0.1:$DIR_PORT"
for _ in $(seq 100); do curl -fs "$BASE/iicp/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$BASE/iicp/health" >/dev/null || { echo "the directory did not come up" >&2; exit 1; }

run_profile() {
  local profile=$1
  "$VENV/bin/iicp-conformance" run --profile "$profile" --target "$BASE" --output "$WORK/$profile.json" >/dev/null || true
  python3 - "$WORK/$profile.json" "$profile" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for t in report.get("results", []):
    mark = "ok  " if t["outcome"] == "pass" else "FAIL"
    print(f"  {mark} {t['test_id']} ({t.get('reason')}, HTTP {t.get('observed_status')})")
s = report["summary"]
print(f"{sys.argv[2]}: {s['passed']} passed, {s['failed']} failed")
with open(sys.argv[1] + ".summary", "w") as f:
    f.write(f"{s['passed']} {s['failed']}\n")
PY
}

run_profile directory-public-v1
run_profile directory-lifecycle-v1
# The dispatch profile needs an eligible chat node (the lifecycle profile deregistered its own).
curl -fs -X POST "$BASE/api/v1/register" -H 'content-type: application/json' -d '{
  "endpoint": "https://node.example.com", "region": "eu-central",
  "capabilities": [{"intent": "urn:iicp:intent:llm:chat:v1", "models": ["fixture-model"], "max_tokens": 4096}],
  "limits": {"max_concurrent": 1, "tokens_per_min": 1000}}' >/dev/null
run_profile directory-dispatch-v1

hits=$(grep -c '/iicp/health' "$WORK/hits.log" || true)
echo "liveness dial-backs received by node.example.com: $hits"
passed=0; failed=0
for f in "$WORK"/*.summary; do read -r p q < "$f"; passed=$((passed + p)); failed=$((failed + q)); done
echo "conformance: $passed passed, $failed failed"
if [ "$failed" -ne 0 ] || [ "$passed" -ne 21 ] || [ "$hits" -lt 3 ]; then
  echo "conformance run failed" >&2
  exit 1
fi
