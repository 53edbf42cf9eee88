#!/usr/bin/env bash
# The cost of schema validation (issue 19): scenario 1 (1 producer, 1
# consumer, auto-ack) with 1 KiB JSON bodies (warren-perf --json-body), into
# a queue without a schema and into one whose policy binds a JSON Schema
# subject the bodies match; ROUNDS interleaved rounds of SECONDS each on one
# fresh broker.
#
#   bench/schema.sh [ROUNDS=3] [SECONDS=15]
#
# Needs a release build (cargo build --release -p warren -p warren-perf),
# curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3} SECONDS_EACH=${2:-15}
API=http://127.0.0.1:15673/api
URI=amqp://guest:guest@127.0.0.1:5673/%2f
target/release/warren --ephemeral --amqp-port 5673 --admin-port 15673 --metrics-port 15693 \
  >/tmp/warren-schema-bench.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
sleep 0.5
SCHEMA='{"type":"object","properties":{"t":{"type":"string","pattern":"^[0-9a-f]{16}$"},"s":{"type":"string"},"p":{"type":"string"}},"required":["t","s","p"],"additionalProperties":false}'
curl -fsS -u guest:guest -X PUT "$API/schemas/%2F/bench" -H 'content-type: application/json' \
  -d "$(jq -n --arg s "$SCHEMA" '{schemaType: "JSON", schema: $s}')" >/dev/null
curl -fsS -u guest:guest -X PUT "$API/policies/%2F/bench-schema" -H 'content-type: application/json' \
  -d '{"pattern": "^perf-schema", "apply-to": "queues", "definition": {"schema-subject": "bench"}}'
run() { # run QUEUE
  target/release/warren-perf --uri "$URI" -s 1024 -a --json-body -z "$SECONDS_EACH" -u "$1" \
    --broker-pid "$PID" --json 2>/dev/null |
    jq -r '"\(.receive_rate) msg/s delivered, \(.broker.cpu_us_per_msg) µs broker CPU/msg"'
}
for r in $(seq "$ROUNDS"); do
  echo "round $r without a schema: $(run perf-plain)"
  echo "round $r with a schema:    $(run perf-schema)"
done
refused=$(curl -fsS http://127.0.0.1:15693/metrics | grep -c 'rabbitmq_schema_messages_refused_total' || true)
echo "refusal series (must be 0): $refused"
