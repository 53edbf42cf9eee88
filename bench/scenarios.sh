#!/usr/bin/env bash
# Every scenario of BENCHMARKS.md, Warren against RabbitMQ, in one run, as a
# markdown table of Warren's figure, RabbitMQ's and their ratio.
#
#   bench/scenarios.sh [--quick] [--no-rabbitmq] [--restart-rabbitmq] [SCENARIO...]
#
# SCENARIO is any of: startup idle declares s1 s2 s3 fanout headers topic
# latency backlog (default: all, in this order: memory per connection and per queue
# are measured while RabbitMQ is fresh — restarted by startup with
# --restart-rabbitmq — since its RSS never shrinks after a load). Each Warren run gets a fresh broker on $PORT (5673):
# `--ephemeral`, except s3 and backlog, which get an empty data directory.
# RabbitMQ is the local one on 5672 (guest/guest, pid of beam.smp); start it
# with a raised open-files limit first, e.g. as root:
#   su rabbitmq -s /bin/sh -c 'ulimit -n 65536; /usr/lib/rabbitmq/bin/rabbitmq-server -detached'
# (Debian's default of 1024 descriptors is not enough for the idle scenario).
# --restart-rabbitmq lets the startup scenario stop and start it (as root)
# to time its start; without it, that row has no RabbitMQ figure.
#
# Runs last $DURATION seconds (15; --quick: 5) and the backlog holds $BACKLOG
# messages (1000000; --quick: 200000). Raw JSON from every run is kept in
# $OUT (a new temp directory unless set). Needs jq. On the 2-core machine the
# full set takes about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

RABBIT=1 RESTART_RABBIT=0 QUICK=0
SCENARIOS=()
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    --no-rabbitmq) RABBIT=0 ;;
    --restart-rabbitmq) RESTART_RABBIT=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) SCENARIOS+=("$a") ;;
  esac
done
[[ ${#SCENARIOS[@]} -gt 0 ]] ||
  SCENARIOS=(startup idle declares s1 s2 s3 fanout headers topic latency backlog)
PORT=${PORT:-5673}
if [[ $QUICK == 1 ]]; then
  DURATION=${DURATION:-5} BACKLOG=${BACKLOG:-200000}
else
  DURATION=${DURATION:-15} BACKLOG=${BACKLOG:-1000000}
fi
OUT=${OUT:-$(mktemp -d /tmp/warren-scenarios.XXXXXX)}
mkdir -p "$OUT"
BIN=target/release/warren
PERF=target/release/warren-perf
W_URI="amqp://guest:guest@127.0.0.1:$PORT/%2f"
R_URI="amqp://guest:guest@127.0.0.1:5672/%2f"

cargo build --release --quiet --workspace --bin warren --bin warren-perf

WARREN_PID='' DATA=''
stop_warren() {
  if [[ -n $WARREN_PID ]]; then
    kill "$WARREN_PID" 2>/dev/null && wait "$WARREN_PID" 2>/dev/null || true
  fi
  WARREN_PID=''
  [[ -n $DATA ]] && rm -rf "$DATA"
  DATA=''
}
trap stop_warren EXIT

# Start a fresh Warren (ephemeral, or with an empty data dir given "disk")
# and wait until it accepts connections.
start_warren() {
  stop_warren
  local store=(--ephemeral)
  if [[ ${1:-} == disk ]]; then
    DATA=$(mktemp -d /tmp/warren-bench-data.XXXXXX)
    store=(--data-dir "$DATA")
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use: stop what listens there or set PORT" >&2
    exit 1
  fi
  "$BIN" "${store[@]}" --amqp-port "$PORT" --admin-port 0 --metrics-port 0 \
    --log-level warn >"$OUT/warren.log" 2>&1 &
  WARREN_PID=$!
  wait_for_port "$PORT" 10
  kill -0 "$WARREN_PID" 2>/dev/null || { echo "warren did not start: $OUT/warren.log" >&2; exit 1; }
}

wait_for_port() {
  local port=$1 limit=$2 start=$SECONDS
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS - start < limit)) || { echo "nothing listens on $port" >&2; return 1; }
    sleep 0.01
  done
}

rabbit_pid() { pgrep -f beam.smp | head -1; }
have_rabbit() { [[ $RABBIT == 1 ]] && [[ -n $(rabbit_pid) ]]; }

# perf NAME BROKER(warren|rabbitmq) ARGS... — one warren-perf run, JSON kept.
perf() {
  local name=$1 broker=$2
  shift 2
  local uri=$W_URI pid=$WARREN_PID
  if [[ $broker == rabbitmq ]]; then uri=$R_URI pid=$(rabbit_pid); fi
  "$PERF" --uri "$uri" --broker-pid "$pid" --json --quiet "$@" \
    >"$OUT/$name.$broker.json" 2>"$OUT/$name.$broker.log" || true
}

# get NAME BROKER JQ — a figure from a kept run ("" when missing).
get() {
  local f="$OUT/$1.$2.json"
  [[ -s $f ]] && jq -r "$3 // empty" "$f" 2>/dev/null || true
}

# Formatting: numbers with thousands separators, and the ratio of two.
fmt() { # fmt NUMBER [DECIMALS]
  [[ -z $1 ]] && { echo "–"; return; }
  awk -v n="$1" -v d="${2:-0}" 'BEGIN {
    s = sprintf("%." d "f", n); i = index(s, "."); int_part = i ? substr(s, 1, i - 1) : s
    frac = i ? substr(s, i) : ""; sign = ""
    if (substr(int_part, 1, 1) == "-") { sign = "-"; int_part = substr(int_part, 2) }
    while (length(int_part) > 3) { frac = "," substr(int_part, length(int_part) - 2) frac; int_part = substr(int_part, 1, length(int_part) - 3) }
    print sign int_part frac }'
}
ratio() { # ratio W R HIGHER_IS_BETTER(1|0)
  [[ -z $1 || -z $2 ]] && { echo "–"; return; }
  awk -v w="$1" -v r="$2" -v up="$3" 'BEGIN {
    if (w == 0 || r == 0) { print "–"; exit }
    if (up == 1) printf "%.1f×\n", w / r; else printf "1/%.1f\n", r / w }'
}
row() { echo "| $1 | $2 | $3 | $4 |"; }

# throughput NAME TITLE [disk] -- ARGS: delivered rate and broker CPU per msg.
throughput() {
  local name=$1 title=$2 store=mem
  shift 2
  [[ $1 == disk ]] && { store=disk; shift; }
  [[ $1 == -- ]] && shift
  start_warren "$store"
  perf "$name" warren -z "$DURATION" "$@"
  stop_warren
  if have_rabbit; then perf "$name" rabbitmq -z "$DURATION" "$@"; fi
  local wr rr wc rc ws rs
  wr=$(get "$name" warren .receive_rate) rr=$(get "$name" rabbitmq .receive_rate)
  ws=$(get "$name" warren .send_rate) rs=$(get "$name" rabbitmq .send_rate)
  wc=$(get "$name" warren .broker.cpu_us_per_msg) rc=$(get "$name" rabbitmq .broker.cpu_us_per_msg)
  row "$title: delivered msg/s" "$(fmt "$wr")" "$(fmt "$rr")" "$(ratio "$wr" "$rr" 1)"
  row "$title: published msg/s" "$(fmt "$ws")" "$(fmt "$rs")" "$(ratio "$ws" "$rs" 1)"
  row "$title: broker CPU µs/msg" "$(fmt "$wc" 2)" "$(fmt "$rc" 2)" "$(ratio "$wc" "$rc" 0)"
}

latency() {
  local rate
  for rate in 5000 20000; do
    local name=latency-$rate
    start_warren
    perf "$name" warren -z "$DURATION" -s 1024 -r "$rate" -a
    stop_warren
    if have_rabbit; then perf "$name" rabbitmq -z "$DURATION" -s 1024 -r "$rate" -a; fi
    local p
    for p in p50 p99 p999; do
      local w r
      w=$(get "$name" warren ".latency_us.$p") r=$(get "$name" rabbitmq ".latency_us.$p")
      row "latency at $rate msg/s: $p µs" "$(fmt "$w")" "$(fmt "$r")" "$(ratio "$w" "$r" 0)"
    done
    local w r
    w=$(get "$name" warren .receive_rate) r=$(get "$name" rabbitmq .receive_rate)
    row "latency at $rate msg/s: delivered msg/s" "$(fmt "$w")" "$(fmt "$r")" ""
  done
}

declares() {
  start_warren
  perf declares warren --queue-declare-bench 10000
  stop_warren
  if have_rabbit; then perf declares rabbitmq --queue-declare-bench 10000; fi
  local w r
  w=$(get declares warren .declare_s) r=$(get declares rabbitmq .declare_s)
  row "10,000 queue declares: seconds" "$(fmt "$w" 3)" "$(fmt "$r" 3)" "$(ratio "$w" "$r" 0)"
  w=$(get declares warren .broker_bytes_per_queue) r=$(get declares rabbitmq .broker_bytes_per_queue)
  row "RSS per empty queue: bytes" "$(fmt "$w")" "$(fmt "$r")" "$(ratio "$w" "$r" 0)"
}

idle() {
  start_warren
  perf idle warren --idle-connections 1000 --idle-hold 5
  stop_warren
  if have_rabbit; then perf idle rabbitmq --idle-connections 1000 --idle-hold 5; fi
  local w r
  w=$(get idle warren .broker_bytes_per_connection) r=$(get idle rabbitmq .broker_bytes_per_connection)
  row "RSS per idle connection (1,000): bytes" "$(fmt "$w")" "$(fmt "$r")" "$(ratio "$w" "$r" 0)"
}

# A backlog of 16-byte transient messages: fill with confirms and no
# consumer, then drain; RSS at the peak and after draining.
backlog() {
  local broker
  for broker in warren rabbitmq; do
    if [[ $broker == warren ]]; then start_warren disk; else have_rabbit || continue; fi
    local pid=$WARREN_PID
    [[ $broker == rabbitmq ]] && pid=$(rabbit_pid)
    local before
    before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    perf backlog-fill "$broker" -y 0 -s 16 -c 1000 -C "$BACKLOG" --queue-pattern backlog-%d --keep-queues
    perf backlog-drain "$broker" -x 0 -y 1 -s 16 -q 1000 -A 100 -D "$BACKLOG" --queue-pattern backlog-%d
    sleep 5
    awk -v b="$before" '/VmRSS/ {print b, $2}' "/proc/$pid/status" >"$OUT/backlog-rss.$broker"
    [[ $broker == warren ]] && stop_warren
  done
  local n w r
  n=$(fmt "$BACKLOG")
  w=$(get backlog-fill warren .confirm_rate) r=$(get backlog-fill rabbitmq .confirm_rate)
  row "$n × 16 B queued: fill msg/s" "$(fmt "$w")" "$(fmt "$r")" "$(ratio "$w" "$r" 1)"
  w=$(get backlog-drain warren .receive_rate) r=$(get backlog-drain rabbitmq .receive_rate)
  row "$n × 16 B queued: drain msg/s" "$(fmt "$w")" "$(fmt "$r")" "$(ratio "$w" "$r" 1)"
  local wp rp
  wp=$(jq -s 'map(.broker.rss_peak_kb) | max / 1024' "$OUT"/backlog-{fill,drain}.warren.json 2>/dev/null || true)
  rp=$(jq -s 'map(.broker.rss_peak_kb) | max / 1024' "$OUT"/backlog-{fill,drain}.rabbitmq.json 2>/dev/null || true)
  row "$n × 16 B queued: peak RSS MiB" "$(fmt "$wp")" "$(fmt "$rp")" "$(ratio "$wp" "$rp" 0)"
  local wb wa rb ra
  read -r wb wa <"$OUT/backlog-rss.warren" || true
  [[ -f $OUT/backlog-rss.rabbitmq ]] && read -r rb ra <"$OUT/backlog-rss.rabbitmq"
  row "$n × 16 B queued: RSS before → 5 s after draining, MiB" \
    "$(fmt "$((wb / 1024))") → $(fmt "$((wa / 1024))")" \
    "${rb:+$(fmt "$((rb / 1024))") → $(fmt "$((ra / 1024))")}" ""
}

# Time from exec to the first answered AMQP protocol header (connection.start).
startup() {
  local best='' i
  for i in 1 2 3 4 5; do
    local t
    t=$(python3 - "$BIN" "$PORT" <<'EOF'
import socket, subprocess, sys, time
binary, port = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
p = subprocess.Popen([binary, "--ephemeral", "--amqp-port", str(port), "--admin-port", "0",
                      "--metrics-port", "0", "--log-level", "warn"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            if s.recv(1) == b"\x01":
                break
        except OSError:
            time.sleep(0.001)
    print(f"{(time.monotonic() - t0) * 1000:.1f}")
finally:
    p.terminate()
    p.wait()
EOF
)
    echo "$t" >>"$OUT/startup.warren"
    [[ -z $best ]] || awk -v t="$t" -v b="$best" 'BEGIN { exit !(t < b) }' && best=$t
  done
  local r=''
  if [[ $RESTART_RABBIT == 1 ]] && have_rabbit; then
    rabbitmqctl stop >/dev/null 2>&1 || true
    while [[ -n $(rabbit_pid) ]]; do sleep 0.1; done
    local t0
    t0=$(date +%s%N)
    su rabbitmq -s /bin/sh -c 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; /usr/lib/rabbitmq/bin/rabbitmq-server -detached' >/dev/null 2>&1
    wait_for_port 5672 120
    until python3 -c 'import socket; s = socket.create_connection(("127.0.0.1", 5672)); s.sendall(b"AMQP\x00\x00\x09\x01"); assert s.recv(1) == b"\x01"' 2>/dev/null; do
      sleep 0.01
    done
    r=$((($(date +%s%N) - t0) / 1000000))
  fi
  row "start-up to first AMQP connection: ms (best of 5)" "$best" "${r:-–}" "$(ratio "$best" "$r" 0)"
}

echo "Warren $(git describe --always --dirty 2>/dev/null || echo '?') vs RabbitMQ" \
  "$(have_rabbit && rabbitmqctl version 2>/dev/null || echo '(not measured)'), $(date -u +%F), $(nproc) cores;" \
  "runs of ${DURATION} s; raw JSON in $OUT"
echo
row "scenario" "Warren" "RabbitMQ" "ratio"
row "---" "---" "---" "---"
for s in "${SCENARIOS[@]}"; do
  case $s in
    s1) throughput s1 "1: 1→1, 16 B, auto-ack" -- -s 16 -a ;;
    s2) throughput s2 "2: 1→1, 16 B, confirms + manual acks" -- -s 16 -c 100 -q 100 ;;
    s3) throughput s3 "3: persistent 1 KiB, confirms + manual acks" disk -- -f -s 1024 -c 100 -q 100 ;;
    fanout) throughput fanout "4: fanout 1→10 queues, 64 B" -- -t fanout -y 10 -s 64 -a ;;
    headers) throughput headers "1 with 5 string headers (Celery-like), 16 B" -- -s 16 -a \
      --header "task=tasks.add,id=4f9c2b7e-1d3a-4c55-9a0e-8a1f3e2b9c10,lang=py,root_id=4f9c2b7e-1d3a-4c55-9a0e-8a1f3e2b9c10,retries=0" ;;
    topic) throughput topic "topic, 1,000 wildcard bindings, 16 B" -- -t topic -k perf.a.key \
      --queue-binding-key 'perf.*.key' --bindings 1000 --binding-pattern 'perf.*.key%d' -s 16 -a ;;
    latency) latency ;;
    declares) declares ;;
    idle) idle ;;
    backlog) backlog ;;
    startup) startup ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
done
