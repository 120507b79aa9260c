# Shared by bench/node.sh and bench/gateway.sh (sourced, not run).
#
# Provides: the work directory and its cleanup, the release build, starting background services
# on free loopback ports, one load run with the CPU of every process involved, and the noise
# report (load average, busy cores, other CPU users).
set -euo pipefail

TARGET_DIR=${CARGO_TARGET_DIR:-target}
IICP="$TARGET_DIR/release/iicp"
BENCH="$TARGET_DIR/release/iicp-bench"
DOUBLE="$TARGET_DIR/release/iicp-backend-double"
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-1}
REPEAT=${BENCH_REPEAT:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
MODEL=bench-model
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/iicp-bench.XXXXXX")
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
    echo "work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*" >&2; }

# field JSON KEY: a scalar field of a one-line JSON object.
field() {
  sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<<"$1"
}

rss_mb() {
  awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}

# calc EXPR: floating-point arithmetic, printed with the given format (default %.3f).
calc() {
  awk "BEGIN { printf \"${2:-%.3f}\", $1 }"
}

pass() { awk "BEGIN { exit !($1) }" && echo PASS || echo MISS; }

build() {
  if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    say "building release binaries"
    cargo build --release -p iicp-cli -p iicp-bench -p iicp-testkit --bins
  fi
  local bin
  for bin in "$IICP" "$BENCH" "$DOUBLE"; do
    [[ -x "$bin" ]] || { echo "missing $bin (set CARGO_TARGET_DIR?)" >&2; exit 1; }
  done
}

LOAD_BEFORE=""
machine_report() {
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  say "machine: $(nproc) cores, load average $LOAD_BEFORE"
  if pgrep -x rustc >/dev/null 2>&1 || pgrep -x cargo >/dev/null 2>&1; then
    echo "warning: cargo/rustc is running on this machine; the numbers will be noisy" >&2
  fi
}

# wait_url URL LOG: waits until GET URL answers 200, or shows the log and exits.
wait_url() {
  if ! "$BENCH" wait --url "$1" --timeout 20; then
    echo "$1 did not come up; the log:" >&2
    tail -n 20 "$2" >&2
    exit 1
  fi
}

# start_double: a single-threaded OpenAI-compatible backend double answering at once; sets
# DOUBLE_URL and DOUBLE_PID.
start_double() {
  "$DOUBLE" --flavor openai --chat-model "$MODEL" --threads 1 --listen 127.0.0.1:0 \
    >"$WORK/double.url" 2>"$WORK/double.log" &
  DOUBLE_PID=$!
  PIDS+=("$DOUBLE_PID")
  local _
  for _ in $(seq 100); do
    [[ -s "$WORK/double.url" ]] && break
    sleep 0.1
  done
  DOUBLE_URL=$(head -n1 "$WORK/double.url")
  [[ -n "$DOUBLE_URL" ]] || { echo "the backend double did not start" >&2; exit 1; }
  wait_url "$DOUBLE_URL/v1/models" "$WORK/double.log"
  echo "backend double on $DOUBLE_URL (pid $DOUBLE_PID, 1 worker thread, instant replies)" >&2
}

# start_node [ARGS…]: `iicp node` in front of the double on a free port; sets NODE_URL and
# NODE_PID. --max-concurrent is above the connection count so no task waits for a slot.
start_node() {
  local port
  port=$("$BENCH" free-port)
  NODE_URL="http://127.0.0.1:$port"
  "$IICP" node --backend "$DOUBLE_URL" --listen "127.0.0.1:$port" \
    --max-concurrent $((CONNECTIONS * 2)) --state-dir "$WORK/node" "$@" \
    2>"$WORK/node.log" &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  wait_url "$NODE_URL/iicp/health" "$WORK/node.log"
  echo "node on $NODE_URL (pid $NODE_PID, --max-concurrent $((CONNECTIONS * 2)))" >&2
}

# CPU seconds a process has used so far.
cpu_seconds() {
  awk -v hz="$CLK_TCK" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"
}

# measure NAME CMD ARGS…: one load run (an iicp-bench load command) with the CPU of every
# watched process (CPU_WATCH, LABEL=PID) over its measured window. Keeps the JSON line in
# RESULT[NAME] and appends it to $WORK/results.jsonl.
declare -A RESULT
CPU_WATCH=()
measure() {
  local name=$1 line cpu_args=() w
  shift
  for w in "${CPU_WATCH[@]}"; do
    cpu_args+=(--cpu "$w")
  done
  if ! line=$("$BENCH" "$@" --name "$name" --duration "$DURATION" --warmup "$WARMUP" \
    --clk-tck "$CLK_TCK" "${cpu_args[@]}"); then
    echo "warning: $name reported errors" >&2
  fi
  RESULT[$name]=$line
  echo "$line" >>"$WORK/results.jsonl"
  echo "$line" >&2
  cpu_line "$name" >&2
}

# cpu_line NAME: the CPU each process used during a run, in % of one core, and what the rest of
# the machine used (other programs: the noise).
cpu_line() {
  local line=${RESULT[$1]} w label total=0 out="" v
  for w in gen "${CPU_WATCH[@]}"; do
    label=${w%%=*}
    v=$(field "$line" "cpu_${label}_pct")
    out+="$label ${v:-?}%, "
    total=$(calc "$total + ${v:-0}" "%.1f")
  done
  v=$(field "$line" cpu_machine_pct)
  echo "CPU during $1 (% of one core): ${out}everything else $(calc "${v:-0} - $total" "%.0f")%" \
    "(machine busy ${v:-?}% of $(($(nproc) * 100))%)"
}

# other_pct NAME: CPU the rest of the machine used during a run (% of one core).
other_pct() {
  local line=${RESULT[$1]} w total=0 v
  for w in gen "${CPU_WATCH[@]}"; do
    v=$(field "$line" "cpu_${w%%=*}_pct")
    total=$(calc "$total + ${v:-0}" "%.1f")
  done
  calc "$(field "$line" cpu_machine_pct) - $total" "%.0f"
}

# get NAME KEY: one field of a run's JSON line.
get() { field "${RESULT[$1]}" "$2"; }

# median A B C…
median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
minimum() { printf '%s\n' "$@" | sort -g | head -n1; }
maximum() { printf '%s\n' "$@" | sort -g | tail -n1; }
spread() { echo "$(minimum "$@")–$(maximum "$@")"; }

noise_report() {
  local others=() name
  for name in "${!RESULT[@]}"; do
    others+=("$(other_pct "$name")")
  done
  echo "noise: load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after;" \
    "CPU used by other programs during the runs: $(minimum "${others[@]}")–$(maximum "${others[@]}")% of one core"
}
