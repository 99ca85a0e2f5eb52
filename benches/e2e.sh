#!/usr/bin/env bash
# End-to-end benchmark: veil vs a pass-through relay on a local broker
# (benches/e2e.rs explains what is measured). Starts Tansu on a free
# 127.0.0.1 port unless VEIL_TEST_BROKER names a running broker.
#   bash benches/e2e.sh [EVENTS] [ROUNDS]          veil vs the relay (default 200000 3)
#   bash benches/e2e.sh scaling [EVENTS] [ROUNDS]  1, 2, 4 partitions and workers (default 100000 3)
#   bash benches/e2e.sh soak [SECONDS] [RATE]      veil's memory under a steady load (default 600 3000)
#   bash benches/e2e.sh delivery [EVENTS] [ROUNDS] exactly_once vs at_least_once, mock cluster (default 10000 3)
# Tansu keeps everything in memory: the soak's defaults write about 2.7 GB
# of inputs, the scaling mode's about 3 GB of inputs and outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VEIL_TEST_BROKER:-}" ] && [ "${1:-}" != delivery ]; then
  tansu="$(command -v tansu || echo "$HOME/.cargo/bin/tansu")"
  [ -x "$tansu" ] || { echo "Tansu not found: cargo install tansu --locked --features dynostore,libsql"; exit 1; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log=$(mktemp)
  "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
  tansu_pid=$!
  trap 'kill $tansu_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do grep -q ready "$log" && break; sleep 0.1; done
  export VEIL_TEST_BROKER="127.0.0.1:$port"
  export VEIL_BENCH_BROKER_PID=$tansu_pid
  echo "Tansu $("$tansu" --version 2>/dev/null || true) at $VEIL_TEST_BROKER (pid $tansu_pid)"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
case "${1:-}" in
  scaling|soak|delivery) args=("$@") ;;   # their defaults are in benches/e2e.rs
  *) args=("${1:-200000}" "${2:-3}") ;;
esac
cargo bench --bench e2e -- "${args[@]}"
if [ -n "${tansu_pid:-}" ]; then
  echo "broker CPU: $(ps -o cputime= -p "$tansu_pid") (Tansu, whole run), peak RSS: $(grep VmHWM /proc/$tansu_pid/status | awk '{print $2/1024 " MB"}')"
fi
