#!/usr/bin/env bash
# Directory benchmark: registration with real liveness dial-back, discover with 50 matching
# nodes, authenticated heartbeats, and the resident memory of a directory holding many nodes.
#
# Everything runs on this machine: the directory (`iicp directory --dev`, durable SQLite store),
# a health responder the directory dials back, and the load generator (`iicp-bench`).
#
#   bash bench/directory.sh
#
# Knobs (environment):
#   BENCH_REGISTER_NODES=5000         registrations in the registration run
#   BENCH_REGISTER_CONCURRENCY=64     concurrent registrations
#   BENCH_DURATION=10                 seconds measured for discover and heartbeat (after 1 s warmup)
#   BENCH_DISCOVER_CONCURRENCY=32     discover connections
#   BENCH_HEARTBEAT_CONCURRENCY=32    heartbeat connections
#   BENCH_RSS_NODES=100000            nodes registered before reading VmRSS
#   BENCH_SKIP_RSS=1                  skip the memory run (it takes a few minutes)
#   BENCH_SKIP_BUILD=1                use the binaries already built
#   BENCH_KEEP=1                      keep the work directory (databases, logs)
#   CARGO_TARGET_DIR                  where the release binaries are (default ./target)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

REGISTER_NODES=${BENCH_REGISTER_NODES:-5000}
REGISTER_CONCURRENCY=${BENCH_REGISTER_CONCURRENCY:-64}
DURATION=${BENCH_DURATION:-10}
DISCOVER_CONCURRENCY=${BENCH_DISCOVER_CONCURRENCY:-32}
HEARTBEAT_CONCURRENCY=${BENCH_HEARTBEAT_CONCURRENCY:-32}
RSS_NODES=${BENCH_RSS_NODES:-100000}
SKIP_RSS=${BENCH_SKIP_RSS:-0}
DISCOVER_NODES=50
CHAT=urn:iicp:intent:llm:chat:v1

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
  local ticks
  ticks=$(awk '{print $14 + $15}' "/proc/$1/stat")
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
}

# CPU seconds used so far by finished children of this shell (the load generator runs). `times`
# must run in this shell, not in a $(…) subshell, hence the file.
children_cpu() {
  times >"$WORK/times"
  tail -n1 "$WORK/times" | awk '{
    t = 0
    for (i = 1; i <= NF; i++) {
      m = index($i, "m"); t += substr($i, 1, m - 1) * 60 + substr($i, m + 1, length($i) - m - 1)
    }
    printf "%.2f", t
  }' >"$WORK/cpu"
}

# ---------------------------------------------------------------------------------------------
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  say "building release binaries"
  cargo build --release -p iicp-cli -p iicp-bench
fi
for bin in "$IICP" "$BENCH"; do
  [[ -x "$bin" ]] || { echo "missing $bin (set CARGO_TARGET_DIR?)" >&2; exit 1; }
done

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
say "machine: $(nproc) cores, load average $LOAD"
if pgrep -x rustc >/dev/null 2>&1 || pgrep -x cargo >/dev/null 2>&1; then
  echo "warning: cargo/rustc is running on this machine; the numbers will be lower" >&2
fi

say "starting the health responder (dial-back target)"
"$BENCH" health-responder --listen 127.0.0.1:0 >"$WORK/responder.addr" 2>"$WORK/responder.log" &
RESPONDER_PID=$!
PIDS+=("$RESPONDER_PID")
for _ in $(seq 50); do
  [[ -s "$WORK/responder.addr" ]] && break
  sleep 0.1
done
RESPONDER="http://$(head -n1 "$WORK/responder.addr")"
"$BENCH" wait --url "$RESPONDER/iicp/health" --timeout 10
echo "health responder on $RESPONDER" >&2

# start_directory NAME: a fresh directory on a free loopback port; sets DIR_URL and DIR_PID.
start_directory() {
  local name=$1 port
  port=$("$BENCH" free-port)
  "$IICP" directory --dev --register-rate-limit 100000000 \
    --listen "127.0.0.1:$port" --db "$WORK/$name.db" 2>"$WORK/$name.log" &
  DIR_PID=$!
  PIDS+=("$DIR_PID")
  DIR_URL="http://127.0.0.1:$port"
  if ! "$BENCH" wait --url "$DIR_URL/iicp/health" --timeout 15; then
    echo "the directory did not start; its log:" >&2
    tail -n 20 "$WORK/$name.log" >&2
    exit 1
  fi
  echo "directory '$name' on $DIR_URL (pid $DIR_PID, db $WORK/$name.db)" >&2
}

stop_directory() {
  local pid kept=()
  kill -TERM "$DIR_PID" 2>/dev/null || true
  wait "$DIR_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do
    [[ "$pid" == "$DIR_PID" ]] || kept+=("$pid")
  done
  PIDS=("${kept[@]}")
}

# percent A B SECONDS: (A - B) CPU seconds over SECONDS, in percent of one core.
percent() {
  awk -v a="$1" -v b="$2" -v s="$3" 'BEGIN { if (s > 0) printf "%.0f", (a - b) / s * 100; else print "?" }'
}

# measure NAME CMD...: runs a load command, keeps its JSON line in RESULT[NAME], the directory's
# CPU use during it in CPU[NAME] and the load generator's in GEN[NAME] (percent of one core).
declare -A RESULT CPU GEN
measure() {
  local name=$1 before after gen_before gen_after resp_before resp_after line seconds
  shift
  before=$(cpu_seconds "$DIR_PID")
  resp_before=$(cpu_seconds "$RESPONDER_PID")
  children_cpu
  gen_before=$(cat "$WORK/cpu")
  if ! line=$("$@"); then
    echo "warning: $name reported errors: $line" >&2
  fi
  after=$(cpu_seconds "$DIR_PID")
  resp_after=$(cpu_seconds "$RESPONDER_PID")
  children_cpu
  gen_after=$(cat "$WORK/cpu")
  seconds=$(field "$line" seconds)
  RESULT[$name]=$line
  CPU[$name]=$(percent "$after" "$before" "$seconds")
  GEN[$name]=$(percent "$gen_after" "$gen_before" "$seconds")
  echo "$line" >&2
  echo "CPU during $name: directory ${CPU[$name]}%, load generator ${GEN[$name]}%," \
    "health responder $(percent "$resp_after" "$resp_before" "$seconds")% of one core" >&2
}

# ---------------------------------------------------------------------------------------------
say "registration: $REGISTER_NODES nodes, concurrency $REGISTER_CONCURRENCY, real dial-back"
start_directory register
measure register "$BENCH" register --directory "$DIR_URL" --count "$REGISTER_NODES" \
  --concurrency "$REGISTER_CONCURRENCY" --endpoint-base "$RESPONDER" --out "$WORK/register.jsonl"

say "heartbeat: ${DURATION}s over the $REGISTER_NODES registered nodes, concurrency $HEARTBEAT_CONCURRENCY"
measure heartbeat "$BENCH" heartbeat --directory "$DIR_URL" --tokens "$WORK/register.jsonl" \
  --duration "$DURATION" --concurrency "$HEARTBEAT_CONCURRENCY"
stop_directory

say "discover: fresh directory with exactly $DISCOVER_NODES matching nodes, ${DURATION}s, concurrency $DISCOVER_CONCURRENCY"
start_directory discover
"$BENCH" register --directory "$DIR_URL" --count "$DISCOVER_NODES" --concurrency 8 \
  --endpoint-base "$RESPONDER" --out "$WORK/discover.jsonl" >/dev/null
# Every registered node is a candidate: limit=50 must list all of them.
"$BENCH" discover --directory "$DIR_URL" --intent "$CHAT" --limit "$DISCOVER_NODES" \
  --expect-nodes "$DISCOVER_NODES" --duration 0.1 --warmup 0 --concurrency 1 >/dev/null
measure discover "$BENCH" discover --directory "$DIR_URL" --intent "$CHAT" --expect-nodes 10 \
  --duration "$DURATION" --concurrency "$DISCOVER_CONCURRENCY"
stop_directory

RSS_BASE=""
RSS_FULL=""
if [[ "$SKIP_RSS" != 1 ]]; then
  say "memory: registering $RSS_NODES nodes, then reading VmRSS"
  start_directory rss
  RSS_BASE=$(rss_mb "$DIR_PID")
  measure register_rss "$BENCH" register --directory "$DIR_URL" --count "$RSS_NODES" \
    --concurrency "$REGISTER_CONCURRENCY" --endpoint-base "$RESPONDER" --out "$WORK/rss.jsonl"
  sleep 2 # let the flush and the writer settle
  RSS_FULL=$(rss_mb "$DIR_PID")
  HWM=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$DIR_PID/status")
  echo "VmRSS: ${RSS_BASE} MB empty, ${RSS_FULL} MB with $RSS_NODES nodes (peak ${HWM} MB)" >&2
  stop_directory
fi

# ---------------------------------------------------------------------------------------------

row() {
  local name=$1 target=$2 ok=$3 line=${RESULT[$1]:-}
  [[ -n "$line" ]] || return 0
  printf '| %-12s | %9s | %6s | %9s | %7s | %7s | %7s | %8s | %6s | %6s | %-24s | %-4s |\n' \
    "$name" "$(field "$line" requests)" "$(field "$line" errors)" "$(field "$line" rps)" \
    "$(field "$line" p50_ms)" "$(field "$line" p90_ms)" "$(field "$line" p99_ms)" \
    "$(field "$line" max_ms)" "${CPU[$name]}%" "${GEN[$name]}%" "$target" "$ok"
}

rps_of() { field "${RESULT[$1]}" rps; }
p99_of() { field "${RESULT[$1]}" p99_ms; }
errors_of() { field "${RESULT[$1]}" errors; }

say "summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, generator on the same machine)"
echo "| run          |  requests | errors |     req/s |  p50 ms |  p90 ms |  p99 ms |   max ms | dirCPU | genCPU | target                   | ok   |"
echo "|--------------|-----------|--------|-----------|---------|---------|---------|----------|--------|--------|--------------------------|------|"
row register ">= 500/s" "$(pass "$(rps_of register) >= 500 && $(errors_of register) == 0")"
row discover ">= 20000/s, p99 <= 5 ms" \
  "$(pass "$(rps_of discover) >= 20000 && $(p99_of discover) <= 5 && $(errors_of discover) == 0")"
row heartbeat ">= 10000/s" "$(pass "$(rps_of heartbeat) >= 10000 && $(errors_of heartbeat) == 0")"
if [[ -n "$RSS_FULL" ]]; then
  row register_rss ">= 500/s" \
    "$(pass "$(rps_of register_rss) >= 500 && $(errors_of register_rss) == 0")"
  echo
  echo "RSS with $RSS_NODES nodes: $RSS_FULL MB (empty: $RSS_BASE MB) — target <= 300 MB:" \
    "$(pass "$RSS_FULL <= 300")"
fi
echo "(dirCPU / genCPU: CPU used by the directory / the load generator during the run, in % of one" \
  "core; the box has $(nproc) cores)"
