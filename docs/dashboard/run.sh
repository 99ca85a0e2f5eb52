#!/usr/bin/env bash
# Produce docs/dashboard.png from a real local run: Tansu, `veil run`,
# Prometheus (Debian's package) scraping veil's /metrics, and a load
# generator with a burst (lag), some bad events (dead letters), a valid
# policy reload and a rejected one; then docs/dashboard/render.py draws the
# dashboard's panels from Prometheus. Everything listens on 127.0.0.1.
#   bash docs/dashboard/run.sh [SECONDS]        (default 360)
# Needs: tansu, prometheus, python3 with confluent-kafka, matplotlib, requests.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-360}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker_port=$(free_port); metrics_port=$(free_port); prom_port=$(free_port)
broker="127.0.0.1:$broker_port"

cargo build --release --locked --bin veil
tansu="$(command -v tansu || echo "$HOME/.cargo/bin/tansu")"
"$tansu" broker --listener-url "tcp://$broker" --advertised-listener-url "tcp://$broker" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
sleep 1
for t in events.raw:6 events.analytics:6 events.dead-letter:1; do
  "$tansu" topic create "${t%%:*}" --partitions "${t##*:}" --broker "tcp://$broker"
done

cp config/policy.yaml "$work/policy.yaml"
cat >"$work/pipeline.yaml" <<EOF
source:
  kafka:
    bootstrap_servers: "$broker"
    topics: [events.raw]
    group_id: veil-dashboard
routes:
  - name: analytics
    policy: policy.yaml
    topic: events.analytics
dead_letter:
  topic: events.dead-letter
keys:
  dir: "$PWD/examples/keys"
metrics:
  listen: 127.0.0.1:$metrics_port
EOF
VEIL_LOG=info,librdkafka=warn target/release/veil run --config "$work/pipeline.yaml" --allow-demo-key >"$work/veil.log" 2>&1 &
veil_pid=$!
pids+=($veil_pid)

cat >"$work/prometheus.yml" <<EOF
global: { scrape_interval: 5s, evaluation_interval: 5s }
rule_files: ["$PWD/deploy/prometheus/alerts.yaml"]
scrape_configs:
  - job_name: veil
    static_configs: [{ targets: ["127.0.0.1:$metrics_port"] }]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

start=$(date +%s)
python3 - "$broker" "$seconds" <<'EOF' &
# Load: 400 events/s, a 60 s burst at 4000/s (lag), a bad event every 250.
import json, sys, time
from confluent_kafka import Producer
broker, seconds = sys.argv[1], float(sys.argv[2])
events = [l for l in open("examples/events.ndjson", "rb") if l.strip()]
bad = [l for l in open("examples/bad-events.ndjson", "rb") if l.strip()]
p = Producer({"bootstrap.servers": broker, "linger.ms": 20})
t0, i = time.time(), 0
while (now := time.time()) - t0 < seconds:
    elapsed = now - t0
    rate = 4000 if seconds * 0.35 < elapsed < seconds * 0.35 + 60 else 400
    for _ in range(rate // 10):
        e = events[i % len(events)]
        key = json.loads(e).get("userId")
        value = bad[(i // 250) % len(bad)] if i % 250 == 249 else e
        while True:
            try:
                p.produce("events.raw", value, key=key.encode() if key else None)
                break
            except BufferError:
                p.poll(0.05)
        i += 1
    p.poll(0)
    time.sleep(max(0, 0.1 - (time.time() - now)))
p.flush(30)
print(f"produced {i} events", file=sys.stderr)
EOF
load_pid=$!

# A valid reload (version 4) at 55%, a rejected one (broken policy) at 70%.
sleep "$((seconds * 55 / 100))"
sed -i 's/^version: 3/version: 4/' "$work/policy.yaml"
kill -HUP "$veil_pid"
sleep "$((seconds * 15 / 100))"
cp "$work/policy.yaml" "$work/policy.good"
echo "fields: { userId: nonsense_action }" >>"$work/policy.yaml"
kill -HUP "$veil_pid"
sleep 5
cp "$work/policy.good" "$work/policy.yaml"
wait "$load_pid"
sleep 30   # let veil catch up and Prometheus scrape the tail
end=$(date +%s)

python3 docs/dashboard/render.py "http://127.0.0.1:$prom_port" "$start" "$end" docs/dashboard.png
grep -E "reload|consuming|assigned" "$work/veil.log" | sed 's/^/veil: /' | head -10
curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -E '^veil_(events_total|dead_letters_total|reloads_total)' || true
echo "work dir: $work"
