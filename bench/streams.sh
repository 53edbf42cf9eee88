#!/usr/bin/env bash
# Streams, Warren against RabbitMQ (a stream queue over AMQP 0-9-1 on both),
# each run against a fresh Warren on $PORT (5673, an empty data directory)
# and the local RabbitMQ on 5672, interleaved round by round.
#
#   bench/streams.sh fanout [ROUNDS=3] [CONFIRM_WINDOWS="100 1000"]
#     1 producer appending 1 KiB persistent messages with confirms (each
#     window given), 10 consumers reading from "first" (prefetch 500, an
#     ack each), $DURATION (30) seconds: published and delivered msg/s,
#     end-to-end latency (how far behind the consumers are), broker CPU.
#
#   bench/streams.sh catchup [N=10000000] [SIZE=1024] [warren|rabbitmq|both]
#     fill a stream with N messages (no consumer), then one consumer reads
#     all of them from "first": fill and catch-up rates, the broker's RSS
#     during both and the stream's size on disk. With the defaults the
#     stream holds about 10 GB: it needs that much free disk per broker.
#
# WARREN=path/to/warren benchmarks another build (default target/release/warren).
# Needs jq, a release build (cargo build --release -p warren -p warren-perf)
# and, for RabbitMQ, a running rabbitmq-server (guest/guest on 5672).
set -euo pipefail
cd "$(dirname "$0")/.."
PERF=target/release/warren-perf
WARREN=${WARREN:-target/release/warren}
PORT=${PORT:-5673}
DURATION=${DURATION:-30}
RABBIT_URI=amqp://guest:guest@127.0.0.1:5672/%2f
WARREN_URI="amqp://guest:guest@127.0.0.1:$PORT/%2f"
STREAM=(--queue-args x-queue-type=stream -f)

PID='' DATA=''
stop() {
  [[ -n $PID ]] && { kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; }
  PID=''
  [[ -n $DATA ]] && rm -rf "$DATA"
  DATA=''
}
trap stop EXIT

start_warren() {
  DATA=$(mktemp -d /tmp/warren-streams.XXXXXX)
  "$WARREN" --data-dir "$DATA" --amqp-port "$PORT" --admin-port 0 --metrics-port 0 \
    --log-level warn >/dev/null 2>&1 &
  PID=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.01; done
}

rabbit_pid() { pgrep -f beam.smp | head -1; }

summary() { # summary NAME JSON_FILE
  jq -r --arg n "$1" '"\($n): published \(.send_rate|floor) msg/s, delivered \(.receive_rate|floor) msg/s (\(.received) of \(.expected)), latency p50 \(.latency_us.p50/1000|floor) ms p99 \(.latency_us.p99/1000|floor) ms, broker \(.broker.cpu_us_per_msg*100|floor/100) µs/msg, RSS peak \(.broker.rss_peak_kb/1024|floor) MiB"' "$2"
}

fanout() {
  local rounds=${1:-3} windows=${2:-"100 1000"} out
  out=$(mktemp -d /tmp/streams-bench.XXXXXX)
  for c in $windows; do
    for r in $(seq "$rounds"); do
      local args=(-x 1 -y 10 -s 1024 -c "$c" -q 500 "${STREAM[@]}"
        --consumer-args x-stream-offset=first -z "$DURATION" --json --quiet)
      start_warren
      "$PERF" --uri "$WARREN_URI" --broker-pid "$PID" "${args[@]}" >"$out/w$c.$r" 2>/dev/null || true
      stop
      "$PERF" --uri "$RABBIT_URI" --broker-pid "$(rabbit_pid)" "${args[@]}" >"$out/r$c.$r" 2>/dev/null || true
      summary "confirm window $c, round $r, Warren  " "$out/w$c.$r"
      summary "confirm window $c, round $r, RabbitMQ" "$out/r$c.$r"
    done
    jq -s --arg c "$c" '"confirm window \($c): median delivered Warren \(map(.receive_rate)|sort|.[length/2|floor]|floor) msg/s"' "$out"/w"$c".* -r
    jq -s --arg c "$c" '"confirm window \($c): median delivered RabbitMQ \(map(.receive_rate)|sort|.[length/2|floor]|floor) msg/s"' "$out"/r"$c".* -r
  done
}

catchup_one() { # catchup_one NAME URI PID N SIZE DIR
  local name=$1 uri=$2 pid=$3 n=$4 size=$5 dir=$6
  rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }
  echo "$name: broker RSS before: $(rss) MiB"
  "$PERF" --uri "$uri" -x 2 -y 0 -s "$size" -c 2000 -C $((n / 2)) "${STREAM[@]}" \
    --keep-queues --broker-pid "$pid" --quiet 2>&1 | grep -E 'rates|broker:' | sed "s/^/$name fill: /"
  [[ -n $dir ]] && echo "$name: stream on disk: $(du -sh "$dir" | cut -f1)"
  echo "$name: broker RSS holding the stream: $(rss) MiB"
  "$PERF" --uri "$uri" -x 0 -y 1 -q 1000 -A 100 -D "$n" "${STREAM[@]}" \
    --consumer-args x-stream-offset=first --broker-pid "$pid" --quiet 2>&1 |
    grep -E 'messages:|rates|broker:' | sed "s/^/$name catch-up: /"
  echo "$name: broker RSS after: $(rss) MiB"
}

catchup() {
  local n=${1:-10000000} size=${2:-1024} which=${3:-both}
  if [[ $which != rabbitmq ]]; then
    start_warren
    catchup_one Warren "$WARREN_URI" "$PID" "$n" "$size" "$DATA/streams"
    stop
  fi
  if [[ $which != warren ]]; then
    catchup_one RabbitMQ "$RABBIT_URI" "$(rabbit_pid)" "$n" "$size" ""
  fi
}

case ${1:-} in
  fanout) shift; fanout "$@" ;;
  catchup) shift; catchup "$@" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
