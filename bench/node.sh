#!/usr/bin/env bash
# Node benchmark: what `iicp node` adds on top of its backend, measured side by side in one run.
#
# Everything runs on this machine, on 127.0.0.1: a backend double answering at once
# (`iicp-backend-double --flavor openai --threads 1`), `iicp node` in front of it (no directory:
# it serves locally), and the load generator (`iicp-bench`). Each round sends the same chat
# twice: as an OpenAI `POST /v1/chat/completions` straight to the double ("direct"), and as an
# IICP `POST /v1/task` CALL to the node ("node"), which sends that request to the double.
#
#   bash bench/node.sh
#
# Knobs (environment):
#   BENCH_DURATION=10       seconds measured per run (after BENCH_WARMUP=1 s of warm-up)
#   BENCH_REPEAT=3          rounds (each: direct and node at c=1, then at c=BENCH_CONNECTIONS)
#   BENCH_CONNECTIONS=16    connections of the throughput runs
#   BENCH_SKIP_BUILD=1      use the binaries already built
#   BENCH_KEEP=1            keep the work directory (logs, raw results)
#   CARGO_TARGET_DIR        where the release binaries are (default ./target)
cd "$(dirname "$0")/.."
source bench/lib.sh

build
machine_report

say "starting the backend double and the node"
start_double
start_node
sleep 1
RSS_START=$(rss_mb "$NODE_PID")
echo "node VmRSS after start: $RSS_START MB" >&2
CPU_WATCH=("node=$NODE_PID" "double=$DOUBLE_PID")

say "warm-up: 3 s through the node at c=1 and c=$CONNECTIONS (not counted)"
"$BENCH" task --node "$NODE_URL" --model "$MODEL" --concurrency 1 --duration 1.5 --warmup 0 >/dev/null
"$BENCH" task --node "$NODE_URL" --model "$MODEL" --concurrency "$CONNECTIONS" --duration 1.5 \
  --warmup 0 >/dev/null
sleep 1
RSS_WARM=$(rss_mb "$NODE_PID")
echo "node VmRSS after warm-up: $RSS_WARM MB" >&2

for i in $(seq "$REPEAT"); do
  say "round $i/$REPEAT: c=1, ${DURATION}s each, direct then through the node"
  measure "direct_c1_$i" chat --url "$DOUBLE_URL" --model "$MODEL" --concurrency 1
  measure "node_c1_$i" task --node "$NODE_URL" --model "$MODEL" --concurrency 1
  say "round $i/$REPEAT: c=$CONNECTIONS, ${DURATION}s each, direct then through the node"
  measure "direct_c${CONNECTIONS}_$i" chat --url "$DOUBLE_URL" --model "$MODEL" \
    --concurrency "$CONNECTIONS"
  measure "node_c${CONNECTIONS}_$i" task --node "$NODE_URL" --model "$MODEL" \
    --concurrency "$CONNECTIONS"
done
sleep 1
RSS_END=$(rss_mb "$NODE_PID")
TASKS_SEEN=$(awk -F'"requests":' '/"name":"node_/ {split($2, a, ","); n += a[1]} END {print n + 0}' \
  "$WORK/results.jsonl")

# ---------------------------------------------------------------------------------------------
C=$CONNECTIONS
added=() tput=() cpu_hi=() cpu_lo=()
for i in $(seq "$REPEAT"); do
  added+=("$(calc "$(get "node_c1_$i" p50_ms) - $(get "direct_c1_$i" p50_ms)")")
  tput+=("$(calc "$(get "node_c${C}_$i" rps) / $(get "direct_c${C}_$i" rps)")")
  cpu_hi+=("$(calc "$(get "node_c${C}_$i" cpu_node_us_per_req) / $(get "direct_c${C}_$i" cpu_double_us_per_req)" %.2f)")
  cpu_lo+=("$(calc "$(get "node_c1_$i" cpu_node_us_per_req) / $(get "direct_c1_$i" cpu_double_us_per_req)" %.2f)")
done
ADDED=$(median "${added[@]}")
TPUT=$(median "${tput[@]}")
CPU_HI=$(median "${cpu_hi[@]}")
CPU_LO=$(median "${cpu_lo[@]}")

row() {
  local n=$1 line=${RESULT[$1]}
  printf '| %-14s | %8s | %3s | %8s | %6s | %6s | %6s | %6s | %5s%% | %5s%% | %5s%% | %5s%% | %7s | %7s |\n' \
    "$n" "$(field "$line" requests)" "$(field "$line" errors)" "$(field "$line" rps)" \
    "$(field "$line" p50_ms)" "$(field "$line" p90_ms)" "$(field "$line" p99_ms)" \
    "$(field "$line" max_ms)" "$(field "$line" cpu_node_pct)" "$(field "$line" cpu_double_pct)" \
    "$(field "$line" cpu_gen_pct)" "$(other_pct "$n")" \
    "$(field "$line" cpu_node_us_per_req)" "$(field "$line" cpu_double_us_per_req)"
}

echo "## node ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, generator on the same machine)"
echo
echo "| run            | requests | err |    req/s | p50 ms | p90 ms | p99 ms | max ms |   node | double |    gen |  other | node µs/req | double µs/req |"
echo "|----------------|---------:|----:|---------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|--------:|--------:|"
for i in $(seq "$REPEAT"); do
  row "direct_c1_$i"
  row "node_c1_$i"
done
for i in $(seq "$REPEAT"); do
  row "direct_c${C}_$i"
  row "node_c${C}_$i"
done
echo
echo "| target | measured (median of $REPEAT) | spread | ok |"
echo "|---|---|---|---|"
echo "| node CPU per task ≤ 2.5× the double's CPU per request (c=$C) | ${CPU_HI}× | $(spread "${cpu_hi[@]}")× | $(pass "$CPU_HI <= 2.5") |"
echo "| same, at c=1 (not a target) | ${CPU_LO}× | $(spread "${cpu_lo[@]}")× | – |"
echo "| added p50 at c=1 ≤ 0.15 ms | ${ADDED} ms | $(spread "${added[@]}") ms | $(pass "$ADDED <= 0.15") |"
echo "| throughput through the node at c=$C ≥ 0.4 of the double's | $TPUT | $(spread "${tput[@]}") | $(pass "$TPUT >= 0.4") |"
echo "| node VmRSS idle ≤ 20 MB | ${RSS_START} MB after start, ${RSS_WARM} MB after warm-up | – | $(pass "$RSS_START <= 20 && $RSS_WARM <= 20") |"
echo
echo "VmRSS after all runs: ${RSS_END} MB (the replay guard remembers the last 5 minutes of task" \
  "ids: about $TASKS_SEEN here)."
noise_report
echo "(node / double / gen / other: CPU in % of one core during each run's measured window;" \
  "other = the rest of the machine; µs/req: CPU time per request)"
echo
echo '```'
cat "$WORK/results.jsonl"
echo '```'
