#!/usr/bin/env bash
# Per-message TTL on a long queue: fill queue ttl-big with N 16-byte
# messages that each carry an expiration (no consumer), then, while they wait
# and expire, run a paced producer -> consumer pair on another queue. A broker
# that expires without a task or timer per message and without stalling
# other queues empties ttl-big soon after the last message's TTL, with flat
# memory and thread counts and no latency spike on the other queue.
#
# Reports: fill rate; when ttl-big is empty, counted from the last publish
# (polled every 100 ms with a passive queue.declare); the broker's RSS
# (VmRSS) and threads before the fill, with the queue full, at their peak
# during expiry and after; its CPU time over the expiry window, less what the
# side load costs at the same rate (measured while the messages wait); the
# side queue's latency percentiles over the whole window and its worst
# one-second p99 while waiting and while expiring.
#
#   bench/ttl-expiry.sh [--rabbitmq] [N=1000000] [TTL_MS=10000] [SPREAD_MS=0]
#
# SPREAD_MS > 0 gives message i the expiration TTL_MS + (i mod SPREAD_MS), so
# messages do not expire in queue order. --rabbitmq runs the same against
# the local RabbitMQ (amqp://guest:guest@127.0.0.1:5672, pid of beam.smp)
# after Warren (RabbitMQ expires at the head only: a later message with a
# shorter TTL waits for the ones before it); its fill of 1M takes about 15 s
# on a 2-core machine, longer than the default TTL, so compare with
# TTL_MS=30000. Warren gets an empty temp data
# dir on $PORT (5673); the side load is $RATE msg/s (5000) of $SIZE bytes
# (1024). KEEP=1 keeps the logs (per-second side-load lines, JSON summaries)
# and says where. Needs jq.
set -euo pipefail
cd "$(dirname "$0")/.."

RABBIT=0
POS=()
for a in "$@"; do
  case $a in
    --rabbitmq) RABBIT=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) POS+=("$a") ;;
  esac
done
N=${POS[0]:-1000000} TTL=${POS[1]:-10000} SPREAD=${POS[2]:-0}
PORT=${PORT:-5673} RATE=${RATE:-5000} SIZE=${SIZE:-1024}
BIN=${BIN:-target/release/warren}
PERF=target/release/warren-perf
TTL_MAX=$((SPREAD > 0 ? TTL + SPREAD - 1 : TTL))
# Give up on a queue that is not empty this long after its last message is due.
GIVE_UP_MS=${GIVE_UP_MS:-300000}
TICK=$(getconf CLK_TCK)

cargo build --release --quiet --workspace --bin warren --bin warren-perf

DIR=$(mktemp -d /tmp/warren-ttl.XXXXXX)
WARREN_PID='' SIDE_PID=''
cleanup() {
  [[ -n $SIDE_PID ]] && kill "$SIDE_PID" 2>/dev/null || true
  [[ -n $WARREN_PID ]] && kill "$WARREN_PID" 2>/dev/null && wait "$WARREN_PID" 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then echo "logs kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
# "rss_kb hwm_kb threads cpu_ticks" of a process.
sample() {
  local st cpu
  st=$(awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} /^Threads/ {t=$2} END {print r, h, t}' "/proc/$1/status")
  # utime + stime (fields 14, 15), counted after the ")" that ends the name.
  cpu=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')
  echo "$st $cpu"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }
secs() { awk -v t="$1" -v k="$TICK" 'BEGIN {printf "%.2f", t / k}'; }

declare -A R # "<broker>:<metric>" -> value

# run NAME URI PID
run() {
  local name=$1 uri=$2 pid=$3 log="$DIR/$1"
  local rss hwm thr cpu
  local spread_flag=()
  ((SPREAD > 0)) && spread_flag=(--expiration-spread "$SPREAD")
  echo "== $name: $N messages, TTL $TTL-$TTL_MAX ms, side load $RATE msg/s x $SIZE B; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

  read -r rss hwm thr cpu < <(sample "$pid")
  R[$name:rss0]=$rss R[$name:thr0]=$thr

  local t_fill0 t_fill1
  t_fill0=$(now_ms)
  "$PERF" --uri "$uri" -u ttl-big -x 1 -y 0 -s 16 -C "$N" -c 10000 --drain-timeout 60 \
    --message-properties "expiration=$TTL" "${spread_flag[@]}" \
    --broker-pid "$pid" --keep-queues --quiet --json >"$log.fill.json" 2>"$log.fill.log"
  t_fill1=$(now_ms)
  R[$name:fill_s]=$(awk -v d=$((t_fill1 - t_fill0)) 'BEGIN {printf "%.2f", d / 1000}')
  R[$name:fill_rate]=$(jq -r '.confirm_rate | floor' "$log.fill.json")
  R[$name:fill_us]=$(jq -r '.broker.cpu_us_per_msg' "$log.fill.json")

  if ((t_fill1 - t_fill0 >= TTL)); then
    echo "   warning: the fill took longer than the TTL, so messages expired during it; pass a longer TTL_MS" >&2
  fi
  read -r rss hwm thr cpu < <(sample "$pid")
  R[$name:rss1]=$rss R[$name:thr1]=$thr
  local depth0
  read -r _ depth0 _ < <("$PERF" --uri "$uri" --queue-depth ttl-big)
  R[$name:queued]=$depth0

  # The side load runs until ttl-big is empty (SIGINT ends it with a summary).
  "$PERF" --uri "$uri" -u ttl-side -x 1 -y 1 -r "$RATE" -s "$SIZE" -z 3600 --json \
    >"$log.side.json" 2>"$log.side.log" &
  SIDE_PID=$!
  local t_side0
  t_side0=$(now_ms)

  # The first message is due at about t_fill0 + TTL; the side load's CPU
  # rate is measured from 1 s after it starts until then.
  local t_due0=$((t_fill0 + TTL)) t_due_last=$((t_fill1 + TTL_MAX))
  local base_t0='' base_c0='' base_t1='' base_c1='' exp_c0=''
  local t_first='' t_empty='' peak_rss=0 peak_thr=0 depth now
  while :; do
    now=$(now_ms)
    read -r rss hwm thr cpu < <(sample "$pid")
    if [[ -z $base_t0 && $now -ge $((t_side0 + 1000)) && $now -lt $t_due0 ]]; then
      base_t0=$now base_c0=$cpu
    fi
    if [[ -z $exp_c0 && $now -ge $t_due0 ]]; then
      exp_c0=$cpu base_t1=$now base_c1=$cpu
    fi
    if [[ -n $exp_c0 ]]; then
      ((rss > peak_rss)) && peak_rss=$rss
      ((thr > peak_thr)) && peak_thr=$thr
    fi
    read -r _ depth _ < <("$PERF" --uri "$uri" --queue-depth ttl-big)
    [[ $depth =~ ^[0-9]+$ ]] || { echo "depth probe of ttl-big failed" >&2; exit 1; }
    [[ -z $t_first && $depth -lt $depth0 ]] && t_first=$now
    if ((depth == 0)); then
      t_empty=$now
      break
    fi
    if ((now > t_due_last + GIVE_UP_MS)); then
      echo "   ttl-big still holds $depth messages $((GIVE_UP_MS / 1000)) s after the last was due; giving up" >&2
      break
    fi
    sleep 0.1
  done
  local exp_c1=$cpu t_end=$now
  [[ -z $exp_c0 ]] && exp_c0=$cpu # emptied before the first message was due
  R[$name:peak_rss]=$((peak_rss > rss ? peak_rss : rss)) R[$name:peak_thr]=$((peak_thr > thr ? peak_thr : thr))
  R[$name:hwm]=$hwm
  R[$name:due]="$((t_due0 - t_fill1))/$((t_due_last - t_fill1))"
  R[$name:first]=${t_first:+$((t_first - t_fill1))}
  R[$name:empty]=${t_empty:+$((t_empty - t_fill1))}
  R[$name:lag]=${t_empty:+$((t_empty - t_due_last))}
  R[$name:exp_cpu]=$(secs $((exp_c1 - exp_c0)))
  # Expiry CPU less the side load's share at its measured rate.
  if [[ -n $base_t0 && -n $base_t1 && $((base_t1 - base_t0)) -ge 1000 ]]; then
    R[$name:base_cpu]=$(awk -v c=$((base_c1 - base_c0)) -v t=$((base_t1 - base_t0)) -v k="$TICK" \
      'BEGIN {printf "%.1f", 100 * c / k / (t / 1000)}')
    R[$name:net_cpu]=$(awk -v e=$((exp_c1 - exp_c0)) -v b=$((base_c1 - base_c0)) \
      -v tb=$((base_t1 - base_t0)) -v te=$((t_end - base_t1)) -v k="$TICK" \
      'BEGIN {printf "%.2f", (e - b * te / tb) / k}')
    R[$name:exp_us]=$(awk -v s="${R[$name:net_cpu]}" -v n="$N" 'BEGIN {printf "%.2f", s * 1e6 / n}')
  fi

  sleep 2
  kill -INT "$SIDE_PID"
  wait "$SIDE_PID" || echo "   side load exited with status $?" >&2
  SIDE_PID=''
  local p
  p=$(jq -r '.latency_us | "\(.p50) \(.p99) \(.p999) \(.max)"' "$log.side.json")
  read -r R[$name:p50] R[$name:p99] R[$name:p999] R[$name:max] <<<"$p"
  R[$name:side]="$(jq -r '"\(.sent)/\(.received)"' "$log.side.json")"
  # Worst one-second p99 of the side load while ttl-big waits (the second
  # ends before the first message is due) and while it expires.
  read -r R[$name:w99_wait] R[$name:w99_exp] < <(
    awk -v s="$t_side0" -v due="$t_due0" -v end="${t_empty:-$t_end}" '
      /^time: .*latency: [0-9]/ {
        t = substr($2, 1, length($2) - 1) * 1000
        split($(NF - 1), l, "/"); p99 = l[5] + 0
        if (s + t <= due) { if (p99 > w) w = p99 }
        else if (s + t - 1000 < end) { if (p99 > e) e = p99 }
      }
      END { printf "%s %s\n", (w == "" ? "-" : w), (e == "" ? "-" : e) }' "$log.side.log")

  sleep 3
  read -r rss hwm thr cpu < <(sample "$pid")
  R[$name:rss2]=$rss
  R[$name:threads]="${R[$name:thr0]}/${R[$name:thr1]}/${R[$name:peak_thr]}/$thr"
}

# Warren: a fresh release broker on $PORT with an empty data dir.
"$BIN" --data-dir "$DIR/data" --amqp-port "$PORT" --admin-port 0 --metrics-port 0 >"$DIR/warren.log" 2>&1 &
WARREN_PID=$!
for _ in $(seq 300); do
  "$BIN" healthcheck --port "$PORT" 2>/dev/null && break
  kill -0 "$WARREN_PID" 2>/dev/null || { cat "$DIR/warren.log" >&2; exit 1; }
  sleep 0.05
done
BROKERS=(warren)
run warren "amqp://guest:guest@127.0.0.1:$PORT/%2f" "$WARREN_PID"
# Stopped, so that it does not share the two cores with RabbitMQ's run.
kill "$WARREN_PID" && wait "$WARREN_PID" || true
WARREN_PID=''

if ((RABBIT)); then
  RMQ_PID=$(pgrep -f beam.smp | head -1 || true)
  [[ -n $RMQ_PID ]] || { echo "--rabbitmq: no beam.smp process" >&2; exit 1; }
  RMQ_URI="amqp://guest:guest@127.0.0.1:5672/%2f"
  BROKERS+=(rabbitmq)
  run rabbitmq "$RMQ_URI" "$RMQ_PID"
  # ttl-big was kept for the depth probe; a one-second consume run deletes it.
  "$PERF" --uri "$RMQ_URI" -u ttl-big -x 0 -y 1 -D 0 --quiet >/dev/null 2>&1 || true
fi

row() {
  local label=$1 key=$2 b
  printf '%-44s' "$label"
  for b in "${BROKERS[@]}"; do printf '%14s' "${R[$b:$key]:--}"; done
  echo
}
mibrow() {
  local label=$1 key=$2 b
  printf '%-44s' "$label"
  for b in "${BROKERS[@]}"; do printf '%14s' "$(mib "${R[$b:$key]}")"; done
  echo
}
echo
echo "ttl-expiry: $N x 16 B, expiration $TTL ms$( ((SPREAD > 0)) && echo " + (i mod $SPREAD)"), side load $RATE msg/s x $SIZE B; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s' ''; for b in "${BROKERS[@]}"; do printf '%14s' "$b"; done; echo
row "fill time (s)" fill_s
row "fill rate (confirmed msg/s)" fill_rate
row "queued after fill" queued
row "first/last message due (ms after last publish)" due
row "first expiry seen (ms after last publish)" first
row "ttl-big empty (ms after last publish)" empty
row "  of which past the last TTL (ms)" lag
mibrow "broker RSS before fill (MiB)" rss0
mibrow "broker RSS with the queue full (MiB)" rss1
mibrow "broker RSS peak while expiring (MiB)" peak_rss
mibrow "broker RSS 5 s after empty (MiB)" rss2
mibrow "broker VmHWM (MiB)" hwm
row "broker threads before/full/peak/after" threads
row "broker CPU over the expiry window (s)" exp_cpu
row "  side load alone (% of a core)" base_cpu
row "  expiry's share (s)" net_cpu
row "broker CPU per message: fill (µs)" fill_us
row "broker CPU per message: expiry (µs)" exp_us
row "side load sent/received" side
row "side latency p50 (µs)" p50
row "side latency p99 (µs)" p99
row "side latency p99.9 (µs)" p999
row "side latency max (µs)" max
row "side worst 1-s p99 while waiting (µs)" w99_wait
row "side worst 1-s p99 while expiring (µs)" w99_exp
