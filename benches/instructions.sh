#!/usr/bin/env bash
# Deterministic companion to `cargo bench --bench ratio`: instructions per
# event for each variant, counted by valgrind's callgrind (repeatable on a
# noisy machine, unlike wall time). Each count includes one-off setup
# (loading 1,000 events, compiling the policy, one warm-up pass of the
# engine), measured separately as `setup` and subtracted.
# Needs valgrind (apt-get install valgrind). Usage: bash benches/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ratio --no-run 2>/dev/null
bin=$(ls -t target/release/deps/ratio-* | grep -v '\.d$' | head -1)
count() {
  VEIL_BENCH_ONLY="$1" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --bench 1 2>&1 \
    | sed -n 's/.*refs: *\([0-9,]*\).*/\1/p' | tr -d ,
}
setup=$(count none)
printf '%-22s %12s\n' variant 'instr/event'
for v in serde_json_roundtrip value_policy veil_engine hmac_floor; do
  n=$(count "$v")
  printf '%-22s %12d\n' "$v" $(( (n - setup) / 1000 ))
done
