#!/usr/bin/env bash
# Two Warren builds on the same scenarios, interleaved run by run, so drift
# on a shared machine falls on both alike.
#
#   bench/ab.sh A_BINARY B_BINARY [ROUNDS] [SCENARIO...]
#
# SCENARIO is s1, s2 or s3 (BENCHMARKS.md's scenarios 1–3; default all
# three). Each round runs every scenario once against a fresh A and a fresh
# B on $PORT (5673): `--ephemeral`, except s3, which gets an empty data
# directory. Runs last $DURATION seconds (10). Prints delivered msg/s and
# broker CPU µs per message for every run, then the medians. Needs jq and a
# release build of warren-perf (target/release/warren-perf).
set -euo pipefail
cd "$(dirname "$0")/.."

A=${1:?usage: bench/ab.sh A_BINARY B_BINARY [ROUNDS] [SCENARIO...]}
B=${2:?usage: bench/ab.sh A_BINARY B_BINARY [ROUNDS] [SCENARIO...]}
ROUNDS=${3:-3}
shift $(($# < 3 ? $# : 3))
SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=(s1 s2 s3)
PORT=${PORT:-5673}
DURATION=${DURATION:-10}
PERF=target/release/warren-perf
OUT=$(mktemp -d /tmp/warren-ab.XXXXXX)

args_of() {
  case $1 in
    s1) echo "-s 16 -a" ;;
    s2) echo "-s 16 -c 100 -q 100" ;;
    s3) echo "-f -s 1024 -c 100 -q 100" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

PID='' DATA=''
stop() {
  [[ -n $PID ]] && { kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; }
  PID=''
  [[ -n $DATA ]] && rm -rf "$DATA"
  DATA=''
}
trap stop EXIT

run() { # run BINARY SCENARIO FILE
  local store=(--ephemeral)
  if [[ $2 == s3 ]]; then
    DATA=$(mktemp -d /tmp/warren-ab-data.XXXXXX)
    store=(--data-dir "$DATA")
  fi
  "$1" "${store[@]}" --amqp-port "$PORT" --admin-port 0 --metrics-port 0 \
    --log-level warn >"$OUT/broker.log" 2>&1 &
  PID=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.01; done
  # shellcheck disable=SC2046
  "$PERF" --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" --broker-pid "$PID" \
    --json --quiet -z "$DURATION" $(args_of "$2") >"$3" 2>/dev/null || true
  stop
}

for round in $(seq 1 "$ROUNDS"); do
  for s in "${SCENARIOS[@]}"; do
    for side in A B; do
      bin=$A
      [[ $side == B ]] && bin=$B
      f="$OUT/$s.$side.$round.json"
      run "$bin" "$s" "$f"
      printf '%s %s round %s: %s msg/s, %s µs/msg\n' "$s" "$side" "$round" \
        "$(jq -r '.receive_rate | floor' "$f")" "$(jq -r '.broker.cpu_us_per_msg' "$f")"
    done
  done
done

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo
echo "| scenario | A msg/s | B msg/s | A µs/msg | B µs/msg |"
echo "|---|---|---|---|---|"
for s in "${SCENARIOS[@]}"; do
  row="| $s"
  for field in receive_rate broker.cpu_us_per_msg; do
    for side in A B; do
      v=$(cat "$OUT/$s.$side."*.json | jq -r ".$field" | median)
      row="$row | $(printf '%.2f' "$v")"
    done
  done
  echo "$row |"
done
echo "(raw JSON in $OUT)"
