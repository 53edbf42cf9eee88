#!/usr/bin/env bash
# Start-up time with a large backlog on disk: fill a durable queue with N
# persistent 1 KiB messages, stop the broker (SIGKILL, then SIGTERM for a
# clean stop), and time each restart until the broker accepts an AMQP
# connection.
#   bench/recovery.sh [N=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
PORT=${PORT:-5673}
DIR=$(mktemp -d /tmp/warren-recovery.XXXXXX)
BIN=target/release/warren
PERF=target/release/warren-perf
trap 'pkill -f "$BIN --data-dir $DIR" || true; rm -rf "$DIR"' EXIT

start() {
  "$BIN" --data-dir "$DIR" --amqp-port "$PORT" --admin-port 0 --metrics-port 0 >"$DIR.log" 2>&1 &
  echo $!
}

# Milliseconds from now until `warren healthcheck` (a real AMQP handshake) succeeds.
time_to_accept() {
  local t0=$(date +%s%N)
  start >/dev/null
  until "$BIN" healthcheck --port "$PORT" 2>/dev/null; do sleep 0.005; done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
}

pid=$(start)
until "$BIN" healthcheck --port "$PORT" 2>/dev/null; do sleep 0.01; done
"$PERF" --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" -y 0 -f -s 1024 -c 1000 -C "$N" --keep-queues --quiet 2>&1 | grep -E 'messages:|rates'
echo "on disk: $(du -sh "$DIR" | cut -f1)"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "restart after SIGKILL: accepting after $(time_to_accept) ms"
pid=$(pgrep -f "$BIN --data-dir $DIR")
kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
echo "restart after clean stop: accepting after $(time_to_accept) ms"
pid=$(pgrep -f "$BIN --data-dir $DIR")
"$PERF" --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" -x 0 -y 1 -f -q 1000 -A 100 -D "$N" --keep-queues --quiet 2>&1 | grep -E 'messages:|rates'
