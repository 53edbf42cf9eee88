#!/usr/bin/env bash
# A long queue: publish N persistent messages (confirms, no consumer) into a
# durable queue, then drain it with one consumer; report publish and drain
# rates and the broker's RSS (peak during fill, peak during drain, after).
#   bench/backlog.sh URI BROKER_PID [N=5000000] [SIZE=1024] [persistent|transient]
# transient: non-persistent messages into a non-durable queue.
set -euo pipefail
cd "$(dirname "$0")/.."
URI=$1 PID=$2 N=${3:-5000000} SIZE=${4:-1024} MODE=${5:-persistent}
PERF=target/release/warren-perf
F=-f
[ "$MODE" = transient ] && F=
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$PID/status"; }
echo "broker RSS before: $(rss) MiB"
"$PERF" --uri "$URI" -y 0 $F -s "$SIZE" -c 1000 -C "$N" --keep-queues --broker-pid "$PID" --quiet 2>&1 |
  grep -E 'rates|broker:'
echo "broker RSS with $N queued: $(rss) MiB"
"$PERF" --uri "$URI" -x 0 -y 1 $F -q 1000 -A 100 -D "$N" --broker-pid "$PID" --quiet 2>&1 |
  grep -E 'messages:|rates|broker:'
sleep 5
echo "broker RSS after draining: $(rss) MiB"
