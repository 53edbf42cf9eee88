#!/usr/bin/env bash
# The management API and the Prometheus endpoint with many queues: declare
# N queues (default 100,000) in a fresh vhost over AMQP, then time one page
# of /api/queues/{vhost} (the first and one deep in the list), the same page
# sorted by message count, one vhost's /api/vhosts entry, and scrapes of
# /metrics and /metrics/per-object. Medians of 5 runs, with the response
# size. The vhost is deleted at the end.
#
#   bench/mgmt-scale.sh HTTP_URL METRICS_URL AMQP_URL [N]
#
# e.g. against Warren (release) on spare ports and RabbitMQ on its own:
#   target/release/warren --ephemeral --amqp-port 5673 --admin-port 15673 \
#       --metrics-port 15693 &
#   bench/mgmt-scale.sh http://127.0.0.1:15673 http://127.0.0.1:15693 \
#       amqp://guest:guest@127.0.0.1:5673 100000
#   bench/mgmt-scale.sh http://127.0.0.1:15672 http://127.0.0.1:15692 \
#       amqp://guest:guest@127.0.0.1:5672 100000
# BROKER_PID=pid also prints the broker's RSS. Needs curl and the test venv
# (.venv with pika and requests).
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP=${1:?usage: bench/mgmt-scale.sh HTTP_URL METRICS_URL AMQP_URL [N]}
METRICS=${2:?usage}
AMQP=${3:?usage}
N=${4:-100000}
PY=.venv/bin/python
VHOST=scale-$$
VH=$($PY -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=''))" "$VHOST")

curl -sf -u guest:guest -X PUT "$HTTP/api/vhosts/$VH" -H 'content-type: application/json' -d '{}' >/dev/null
trap 'curl -s -u guest:guest -X DELETE "$HTTP/api/vhosts/$VH" >/dev/null || true' EXIT

start=$(date +%s%N)
$PY - "$AMQP" "$VHOST" "$N" <<'EOF'
import sys, urllib.parse, pika
url, vhost, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = pika.URLParameters(url.rstrip("/") + "/" + urllib.parse.quote(vhost, safe=""))
conn = pika.BlockingConnection(p)
ch = conn.channel()
for i in range(n):
    ch.queue_declare(f"q-{i:07d}", durable=False, arguments={})
    if i % 1000 == 0:
        ch.basic_publish("", f"q-{i:07d}", b"x" * 16)
conn.close()
EOF
echo "declared $N queues in $(( ($(date +%s%N) - start) / 1000000 )) ms"

# RabbitMQ's stats lag: wait until the list shows them all.
for _ in $(seq 1 120); do
  total=$(curl -s -u guest:guest "$HTTP/api/queues/$VH?page=1&page_size=1&columns=name" \
    | $PY -c "import json,sys; print(json.load(sys.stdin).get('total_count', 0))")
  [[ $total -ge $N ]] && break
  sleep 1
done

time_it() {  # label url [auth]
  local label=$1 url=$2 auth=${3:-}
  local times=() size=0
  for _ in 1 2 3 4 5; do
    read -r t s < <(curl -s -o /dev/null ${auth:+-u $auth} -w '%{time_total} %{size_download}\n' "$url")
    times+=("$t"); size=$s
  done
  local median
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)
  printf '%-44s median %8.3f s   %10d bytes\n' "$label" "$median" "$size"
}

deep=$((N / 100 / 2))
time_it "GET /api/queues/{vh}?page=1&page_size=100" "$HTTP/api/queues/$VH?page=1&page_size=100" guest:guest
time_it "GET /api/queues/{vh}?page=$deep&page_size=100" "$HTTP/api/queues/$VH?page=$deep&page_size=100" guest:guest
time_it "  same, sort=messages" "$HTTP/api/queues/$VH?page=1&page_size=100&sort=messages&sort_reverse=true" guest:guest
time_it "  same, name filter" "$HTTP/api/queues/$VH?page=1&page_size=100&name=q-00099" guest:guest
time_it "GET /api/vhosts/{vh}" "$HTTP/api/vhosts/$VH" guest:guest
time_it "GET /api/overview" "$HTTP/api/overview" guest:guest
time_it "GET /metrics" "$METRICS/metrics"
time_it "GET /metrics/per-object" "$METRICS/metrics/per-object"
if [[ -n ${BROKER_PID:-} ]]; then
  echo "broker RSS with the queues: $(( $(ps -o rss= -p "$BROKER_PID") / 1024 )) MiB"
fi
