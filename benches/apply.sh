#!/usr/bin/env bash
# Whole-process speed of `veil apply` (issue 14): the shipped policy over
# the reference events, input from a file, output to /dev/null, side by
# side in alternating rounds with a bare serde_json round trip of the same
# lines through the same buffered I/O (examples/json_roundtrip.rs).
#
#   bash benches/apply.sh [EVENTS] [ROUNDS]     (default 200000 events, 5 rounds)
#
# One-thread runs are pinned to one core (taskset -c 0) so "per core" means
# one core; `--threads 2` runs get both. Prints events/s per contestant
# (median of the rounds) and the ratios of the medians of per-round times.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-200000}"
rounds="${2:-5}"
cargo build --release --quiet --bin veil --example json_roundtrip
target="${CARGO_TARGET_DIR:-target}"
veil="$target/release/veil"
roundtrip="$target/release/examples/json_roundtrip"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The reference events repeated up to EVENTS lines.
ref=examples/events.ndjson
n=$(grep -c . "$ref")
: > "$work/in.ndjson"
for _ in $(seq $(( (events + n - 1) / n ))); do cat "$ref" >> "$work/in.ndjson"; done
head -n "$events" "$work/in.ndjson" > "$work/events.ndjson"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), SHA extensions: $(grep -q sha_ni /proc/cpuinfo && echo yes || echo no)"
echo "input: $events events, $(du -m "$work/events.ndjson" | cut -f1) MB"

one() { # nanoseconds taken by "$@"
  local start end
  start=$(date +%s%N)
  "$@" < "$work/events.ndjson" > /dev/null 2> "$work/err"
  end=$(date +%s%N)
  echo $(( end - start ))
}
names=(json_roundtrip veil_apply_1_thread veil_apply_2_threads)
declare -A times
for r in $(seq "$rounds"); do
  times[json_roundtrip]+="$(one taskset -c 0 "$roundtrip") "
  times[veil_apply_1_thread]+="$(one taskset -c 0 "$veil" apply --policy config/policy.yaml --keys tests/keys -q --threads 1) "
  times[veil_apply_2_threads]+="$(one "$veil" apply --policy config/policy.yaml --keys tests/keys -q --threads 2) "
done
python3 - "$events" "${times[json_roundtrip]}" "${times[veil_apply_1_thread]}" "${times[veil_apply_2_threads]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
names = ["json_roundtrip (1 core)", "veil apply --threads 1 (1 core)", "veil apply --threads 2"]
runs = [[int(x) / 1e9 for x in a.split()] for a in sys.argv[2:]]
for name, t in zip(names, runs):
    print(f"  {name:<34} {n / statistics.median(t):>10,.0f} events/s  (rounds: {', '.join(f'{n / x:,.0f}' for x in t)})")
ratio = lambda a, b: statistics.median([x / y for x, y in zip(runs[a], runs[b])])
print(f"  veil 1 thread vs serde_json round trip: {ratio(0, 1):.2f}x as fast")
print(f"  veil 2 threads vs 1 thread:             {ratio(1, 2):.2f}x as fast")
PY
