#!/usr/bin/env bash
# Gateway benchmark: what `iicp gateway` adds on top of calling the node directly, in one run.
#
# Everything runs on this machine, on 127.0.0.1: a directory (`iicp directory --dev`: the
# node's endpoint is loopback), a backend double answering at once (`--threads 1`), `iicp node`
# registered with the directory, `iicp gateway` discovering from it, and the load generator.
# Each round sends the same chat three ways: as a plaintext IICP `POST /v1/task` CALL straight
# to the node ("node"); as the same CALL sealed with IICP-CX for the node's key ("node_cx": what
# the client SDK sends, since the node advertises a key; sealed by the load generator before
# each request's clock starts); and as an OpenAI `POST /v1/chat/completions` to the gateway
# ("gateway"), which discovers (cached), gets a route ticket (cached), seals the payload with
# IICP-CX and calls the node. The target compares gateway with node; node_cx splits the
# difference into what IICP-CX costs and what the gateway itself adds.
#
#   bash bench/gateway.sh
#
# Knobs (environment):
#   BENCH_DURATION=10       seconds measured per run (after BENCH_WARMUP=1 s of warm-up)
#   BENCH_REPEAT=3          rounds (each: node and gateway at c=1, then at c=BENCH_CONNECTIONS)
#   BENCH_CONNECTIONS=16    connections of the throughput runs
#   BENCH_SKIP_BUILD=1      use the binaries already built
#   BENCH_KEEP=1            keep the work directory (logs, database, raw results)
#   CARGO_TARGET_DIR        where the release binaries are (default ./target)
cd "$(dirname "$0")/.."
source bench/lib.sh

CHAT=urn:iicp:intent:llm:chat:v1

build
machine_report

say "starting the directory, the backend double, the node (registered) and the gateway"
DIR_PORT=$("$BENCH" free-port)
DIR_URL="http://127.0.0.1:$DIR_PORT"
"$IICP" directory --dev --listen "127.0.0.1:$DIR_PORT" --db "$WORK/directory.db" \
  2>"$WORK/directory.log" &
DIR_PID=$!
PIDS+=("$DIR_PID")
wait_url "$DIR_URL/iicp/health" "$WORK/directory.log"
echo "directory on $DIR_URL (pid $DIR_PID)" >&2

start_double
NODE_PORT=$("$BENCH" free-port)
NODE_URL="http://127.0.0.1:$NODE_PORT"
"$IICP" node --backend "$DOUBLE_URL" --listen "127.0.0.1:$NODE_PORT" --public-url "$NODE_URL" \
  --directory "$DIR_URL" --max-concurrent $((CONNECTIONS * 2)) --state-dir "$WORK/node" \
  2>"$WORK/node.log" &
NODE_PID=$!
PIDS+=("$NODE_PID")
wait_url "$NODE_URL/iicp/health" "$WORK/node.log"
registered=0
for _ in $(seq 100); do
  if "$BENCH" discover --directory "$DIR_URL" --intent "$CHAT" --expect-nodes 1 --duration 0.05 \
    --warmup 0 --concurrency 1 >/dev/null 2>&1; then
    registered=1
    break
  fi
  sleep 0.2
done
if [[ $registered != 1 ]]; then
  echo "the node did not register; its log:" >&2
  tail -n 20 "$WORK/node.log" >&2
  exit 1
fi
echo "node on $NODE_URL (pid $NODE_PID), registered" >&2

GW_PORT=$("$BENCH" free-port)
GW_URL="http://127.0.0.1:$GW_PORT"
"$IICP" gateway --directory "$DIR_URL" --listen "127.0.0.1:$GW_PORT" 2>"$WORK/gateway.log" &
GW_PID=$!
PIDS+=("$GW_PID")
wait_url "$GW_URL/v1/models" "$WORK/gateway.log"
echo "gateway on $GW_URL (pid $GW_PID)" >&2
sleep 1
RSS_GW_START=$(rss_mb "$GW_PID")
CPU_WATCH=("gateway=$GW_PID" "node=$NODE_PID" "double=$DOUBLE_PID" "directory=$DIR_PID")

say "warm-up: 3 s through the gateway and to the node (discovery and route caches filled)"
"$BENCH" chat --url "$GW_URL" --model "$MODEL" --concurrency 1 --duration 1 --warmup 0 >/dev/null
"$BENCH" chat --url "$GW_URL" --model "$MODEL" --concurrency "$CONNECTIONS" --duration 1 \
  --warmup 0 >/dev/null
"$BENCH" task --node "$NODE_URL" --model "$MODEL" --concurrency 1 --duration 1 --warmup 0 >/dev/null
"$BENCH" task --node "$NODE_URL" --model "$MODEL" --seal-via "$DIR_URL" --concurrency 1 \
  --duration 0.5 --warmup 0 >/dev/null
RSS_GW_WARM=$(rss_mb "$GW_PID")

for i in $(seq "$REPEAT"); do
  say "round $i/$REPEAT: c=1, ${DURATION}s each: node directly (plaintext, sealed), then through the gateway"
  measure "node_c1_$i" task --node "$NODE_URL" --model "$MODEL" --concurrency 1
  measure "node_cx_c1_$i" task --node "$NODE_URL" --model "$MODEL" --seal-via "$DIR_URL" \
    --concurrency 1
  measure "gateway_c1_$i" chat --url "$GW_URL" --model "$MODEL" --concurrency 1
  say "round $i/$REPEAT: c=$CONNECTIONS, ${DURATION}s each: node directly (plaintext, sealed), then through the gateway"
  measure "node_c${CONNECTIONS}_$i" task --node "$NODE_URL" --model "$MODEL" \
    --concurrency "$CONNECTIONS"
  measure "node_cx_c${CONNECTIONS}_$i" task --node "$NODE_URL" --model "$MODEL" \
    --seal-via "$DIR_URL" --concurrency "$CONNECTIONS"
  measure "gateway_c${CONNECTIONS}_$i" chat --url "$GW_URL" --model "$MODEL" \
    --concurrency "$CONNECTIONS"
done

# ---------------------------------------------------------------------------------------------
C=$CONNECTIONS
added=() cx=() own=() tput=() tput_cx=() cpu=()
for i in $(seq "$REPEAT"); do
  added+=("$(calc "$(get "gateway_c1_$i" p50_ms) - $(get "node_c1_$i" p50_ms)")")
  cx+=("$(calc "$(get "node_cx_c1_$i" p50_ms) - $(get "node_c1_$i" p50_ms)")")
  own+=("$(calc "$(get "gateway_c1_$i" p50_ms) - $(get "node_cx_c1_$i" p50_ms)")")
  tput+=("$(calc "$(get "gateway_c${C}_$i" rps) / $(get "node_c${C}_$i" rps)")")
  tput_cx+=("$(calc "$(get "gateway_c${C}_$i" rps) / $(get "node_cx_c${C}_$i" rps)")")
  cpu+=("$(get "gateway_c${C}_$i" cpu_gateway_us_per_req)")
done
ADDED=$(median "${added[@]}")
CX=$(median "${cx[@]}")
OWN=$(median "${own[@]}")
TPUT=$(median "${tput[@]}")
TPUT_CX=$(median "${tput_cx[@]}")
CPU=$(median "${cpu[@]}")

row() {
  local n=$1 line=${RESULT[$1]}
  printf '| %-15s | %8s | %3s | %8s | %6s | %6s | %6s | %6s | %5s%% | %5s%% | %5s%% | %5s%% | %5s%% | %5s%% | %7s | %7s |\n' \
    "$n" "$(field "$line" requests)" "$(field "$line" errors)" "$(field "$line" rps)" \
    "$(field "$line" p50_ms)" "$(field "$line" p90_ms)" "$(field "$line" p99_ms)" \
    "$(field "$line" max_ms)" "$(field "$line" cpu_gateway_pct)" "$(field "$line" cpu_node_pct)" \
    "$(field "$line" cpu_double_pct)" "$(field "$line" cpu_directory_pct)" \
    "$(field "$line" cpu_gen_pct)" "$(other_pct "$n")" \
    "$(field "$line" cpu_gateway_us_per_req)" "$(field "$line" cpu_node_us_per_req)"
}

echo "## gateway ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, generator on the same machine)"
echo
echo "| run             | requests | err |    req/s | p50 ms | p90 ms | p99 ms | max ms | gateway |   node | double |    dir |    gen |  other | gw µs/req | node µs/req |"
echo "|-----------------|---------:|----:|---------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|-------:|--------:|--------:|"
for i in $(seq "$REPEAT"); do
  row "node_c1_$i"
  row "node_cx_c1_$i"
  row "gateway_c1_$i"
done
for i in $(seq "$REPEAT"); do
  row "node_c${C}_$i"
  row "node_cx_c${C}_$i"
  row "gateway_c${C}_$i"
done
echo
echo "| target | measured (median of $REPEAT) | spread | ok |"
echo "|---|---|---|---|"
echo "| added p50 at c=1, gateway vs node directly, warm cache ≤ 0.5 ms | ${ADDED} ms | $(spread "${added[@]}") ms | $(pass "$ADDED <= 0.5") |"
echo "| of which IICP-CX (node_cx − node, p50 at c=1; not a target) | ${CX} ms | $(spread "${cx[@]}") ms | – |"
echo "| of which the gateway itself (gateway − node_cx, p50 at c=1; not a target) | ${OWN} ms | $(spread "${own[@]}") ms | – |"
echo "| throughput through the gateway at c=$C, fraction of the node's (no target) | $TPUT | $(spread "${tput[@]}") | – |"
echo "| same, fraction of the node's with sealed CALLs (no target) | $TPUT_CX | $(spread "${tput_cx[@]}") | – |"
echo "| gateway CPU per request at c=$C (no target) | ${CPU} µs | $(spread "${cpu[@]}") µs | – |"
echo "| gateway VmRSS (no target) | ${RSS_GW_START} MB after start, ${RSS_GW_WARM} MB after warm-up, $(rss_mb "$GW_PID") MB at the end | – | – |"
echo
noise_report
echo "(gateway / node / double / dir / gen / other: CPU in % of one core during each run's" \
  "measured window; other = the rest of the machine; µs/req: CPU time per request)"
echo
echo '```'
cat "$WORK/results.jsonl"
echo '```'
