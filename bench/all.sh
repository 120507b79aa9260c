#!/usr/bin/env bash
# Every benchmark in turn: bench/directory.sh, bench/node.sh, bench/gateway.sh; then one summary
# with every figure and its verdict against the target.
#
#   bash bench/all.sh                   # ~9 minutes after the build (directory ~4, node ~2.5, gateway ~2.5)
#   BENCH_SKIP_RSS=1 bash bench/all.sh  # without the directory's 100,000-node memory run
#
# The knobs of each script apply (BENCH_DURATION, BENCH_REPEAT, BENCH_SKIP_BUILD, BENCH_KEEP,
# CARGO_TARGET_DIR, …). The release binaries are built once, here.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  printf '\n== building release binaries\n' >&2
  cargo build --release -p iicp-cli -p iicp-bench -p iicp-testkit --bins || exit 1
fi
export BENCH_SKIP_BUILD=1

OUT=$(mktemp -d "${TMPDIR:-/tmp}/iicp-bench-all.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
failed=()
for name in directory node gateway; do
  printf '\n######## bench/%s.sh\n' "$name" >&2
  if ! bash "bench/$name.sh" >"$OUT/$name.md"; then
    failed+=("$name")
  fi
done

echo
echo "# IICP benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg)"
for name in directory node gateway; do
  echo
  if [[ "$name" == directory ]]; then
    echo "## directory"
    echo
  fi
  cat "$OUT/$name.md"
done
echo
echo "## every target"
echo
grep -h -E '(PASS|MISS)' "$OUT/directory.md" "$OUT/node.md" "$OUT/gateway.md" || true
if ((${#failed[@]})); then
  echo
  echo "FAILED to run: ${failed[*]} (see the log above)"
  exit 1
fi
