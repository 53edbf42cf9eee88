#!/usr/bin/env bash
# The cost of encryption at rest (issue 19): scenario 3 (persistent 1 KiB,
# confirms, manual acks: the consumer keeps up, so write-behind spares most
# writes), a fill of N persistent 1 KiB messages with no consumer (every
# message sealed and written), and a stream (1 producer, 1 consumer from
# the first offset, 1 KiB), each on a fresh broker with and without
# --encryption-key-file, ROUNDS interleaved rounds.
#
#   bench/encryption.sh [ROUNDS=2] [N=300000]
#
# Needs a release build (cargo build --release -p warren -p warren-perf) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2} N=${2:-300000}
DIR=$(mktemp -d /tmp/warren-enc.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
head -c 32 /dev/urandom | base64 >"$DIR/key"
URI=amqp://guest:guest@127.0.0.1:5673/%2f
broker() { # broker NAME [ARGS...]: start a fresh broker, print its pid
  local name=$1; shift
  rm -rf "$DIR/$name"
  target/release/warren --data-dir "$DIR/$name" --amqp-port 5673 --admin-port 15673 \
    --metrics-port 15693 "$@" >"$DIR/$name.log" 2>&1 &
  echo $!
}
stop() { kill "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
measure() { # measure LABEL [ARGS...]
  local label=$1; shift
  local pid
  pid=$(broker b "$@"); sleep 0.5
  target/release/warren-perf --uri "$URI" -f -s 1024 -c 100 -q 100 -z 15 \
    --broker-pid "$pid" --json 2>/dev/null |
    jq -r --arg l "$label" '"\($l) scenario 3: \(.receive_rate) msg/s delivered, \(.broker.cpu_us_per_msg) µs broker CPU/msg"'
  stop "$pid"
  pid=$(broker b "$@"); sleep 0.5
  target/release/warren-perf --uri "$URI" -y 0 -f -s 1024 -c 1000 -C "$N" --keep-queues \
    --broker-pid "$pid" --json 2>/dev/null |
    jq -r --arg l "$label" --arg n "$N" '"\($l) fill of \($n): \(.confirm_rate) msg/s confirmed, \(.broker.cpu_us_per_msg // "?") µs broker CPU/msg"'
  stop "$pid"
  pid=$(broker b "$@"); sleep 0.5
  target/release/warren-perf --uri "$URI" -x 1 -y 1 -s 1024 -c 1000 -q 500 -f \
    --queue-args x-queue-type=stream --consumer-args x-stream-offset=first -z 15 \
    --broker-pid "$pid" --json 2>/dev/null |
    jq -r --arg l "$label" '"\($l) stream: \(.receive_rate) msg/s delivered, \(.broker.cpu_us_per_msg) µs broker CPU/msg"'
  stop "$pid"
}
for r in $(seq "$ROUNDS"); do
  measure "round $r plain    "
  measure "round $r encrypted" --encryption-key-file "$DIR/key"
done
