#!/usr/bin/env bash
# The soak: a fresh broker under a long, mixed, self-checking load, its
# memory and descriptors watched.
#
#   bench/soak.sh [DURATION_SECONDS=1800]
#
# Starts target/$PROFILE/warren (PROFILE=release unless set; CI uses debug)
# with a new data directory on ephemeral ports (never 5672/15672/15692, which
# a local RabbitMQ may hold), runs `warren-perf --soak DURATION` against it
# (warren-perf/src/soak.rs says what runs and what it checks: lanes of
# publishers with confirms and consumers that ack, reject, requeue and
# reconnect, TTL and dead-lettering, and 20 churn connections a second that
# declare, bind and delete queues and exchanges), and samples the broker's
# VmRSS, open descriptors and threads every $SAMPLE_EVERY (5) seconds.
#
# It passes when all of these hold:
# - the driver's own checks passed: every confirmed message delivered, no
#   unprovoked client-side error, no stuck lane;
# - RSS flat: the median of the last third of the samples taken after the
#   warm-up ($WARMUP seconds: a tenth of the run, at least 10 s) is at most
#   the first third's median plus $RSS_TOLERANCE_PCT % (10) and
#   $RSS_SLACK_MIB MiB (16: allocator slack; in a short run the thirds are a
#   few samples apart);
# - descriptors flat: the same medians, plus $FD_TOLERANCE_PCT % (10) and
#   $FD_SLACK (20: churn connections come and go);
# - once the driver is gone, the broker is back where it started: no
#   connection, channel or consumer left, no queue and no exchange beyond the
#   start's, and at most $FD_SLACK_IDLE (8) descriptors more than before the
#   run;
# - no ERROR and no `panicked` line in the broker's log (WARN lines are
#   counted and shown, not failed).
# The table also gives each figure's least-squares trend per hour over the
# samples after the warm-up (for runs of 5 minutes or more; information, not
# judged).
#
# Other settings: BUILD=0 skips `cargo build`; SOAK_ARGS adds warren-perf
# flags (e.g. "--soak-rate 100 --soak-churn-rate 40"); KEEP=1 keeps the work
# directory (the broker's log, samples.tsv, the driver's output and JSON
# summary) — it is also kept on failure. Exits 0 on pass, 1 on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-1800}
PROFILE=${PROFILE:-release}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
WARMUP=${WARMUP:-$(( DURATION / 10 > 10 ? DURATION / 10 : 10 ))}
RSS_TOLERANCE_PCT=${RSS_TOLERANCE_PCT:-10}
RSS_SLACK_MIB=${RSS_SLACK_MIB:-16}
FD_TOLERANCE_PCT=${FD_TOLERANCE_PCT:-10}
FD_SLACK=${FD_SLACK:-20}
FD_SLACK_IDLE=${FD_SLACK_IDLE:-8}
BIN=target/$PROFILE/warren
PERF=target/$PROFILE/warren-perf

if [[ ${BUILD:-1} != 0 ]]; then
  flag=()
  [[ $PROFILE == release ]] && flag=(--release)
  cargo build "${flag[@]}" --quiet -p warren -p warren-perf --bin warren --bin warren-perf
fi

WORK=$(mktemp -d /tmp/warren-soak.XXXXXX)
LOG=$WORK/broker.log
BROKER_PID='' SAMPLER_PID='' RESULT=1
cleanup() {
  [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
  if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BROKER_PID" 2>/dev/null || true
  fi
  if [[ $RESULT == 0 && ${KEEP:-0} != 1 ]]; then
    rm -rf "$WORK"
  else
    echo "work directory kept: $WORK"
  fi
}
trap cleanup EXIT

# Ports 0: the kernel picks free ephemeral ones; the log says which.
NO_COLOR=1 "$BIN" --data-dir "$WORK/data" --amqp-port 0 --admin-port 0 --metrics-port 0 \
  --log-level info >"$LOG" 2>&1 &
BROKER_PID=$!
plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$LOG"; }
for _ in $(seq 300); do
  plain_log | grep -q 'Server startup complete' && break
  kill -0 "$BROKER_PID" 2>/dev/null || { echo "the broker exited:"; cat "$LOG"; exit 1; }
  sleep 0.1
done
AMQP_PORT=$(plain_log | sed -n 's/.*started TCP listener on .*:\([0-9]*\)$/\1/p' | head -1)
ADMIN_PORT=$(plain_log | sed -n 's/.*Management plugin: .* started on port \([0-9]*\).*/\1/p' | head -1)
[[ -n $AMQP_PORT && -n $ADMIN_PORT ]] || { echo "cannot find the broker's ports in its log:"; cat "$LOG"; exit 1; }
URI="amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
echo "soak: $PROFILE broker pid $BROKER_PID on AMQP $AMQP_PORT, HTTP $ADMIN_PORT; $DURATION s; work in $WORK"

sample() { # seconds-since-start rss_kb fds threads
  local status
  status=$(cat "/proc/$BROKER_PID/status" 2>/dev/null) || return 1
  printf '%s %s %s %s\n' "$1" \
    "$(awk '/^VmRSS:/ {print $2}' <<<"$status")" \
    "$(ls "/proc/$BROKER_PID/fd" 2>/dev/null | wc -l)" \
    "$(awk '/^Threads:/ {print $2}' <<<"$status")"
}
overview() { # the management API's object totals (python3: no curl needed)
  python3 -c 'import base64, sys, urllib.request as u
r = u.Request(sys.argv[1] + "/api/overview", headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
print(u.urlopen(r, timeout=10).read().decode())' "$ADMIN"
}

overview >"$WORK/overview-before.json"
sample 0 >"$WORK/idle-before.txt"
T0=$(date +%s)
(
  while kill -0 "$BROKER_PID" 2>/dev/null; do
    sample $(( $(date +%s) - T0 )) || break
    sleep "$SAMPLE_EVERY"
  done
) >"$WORK/samples.tsv" &
SAMPLER_PID=$!

# shellcheck disable=SC2086 # SOAK_ARGS is a list of flags
set +e
"$PERF" --uri "$URI" --soak "$DURATION" --json ${SOAK_ARGS:-} \
  >"$WORK/summary.json" 2> >(tee "$WORK/driver.log" >&2)
DRIVER_STATUS=$?
set -e
DRIVER_END=$(( $(date +%s) - T0 ))
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=''
# Let the broker finish with the last connections, then look again.
sleep 5
overview >"$WORK/overview-after.json" || echo '{}' >"$WORK/overview-after.json"
sample "$DRIVER_END" >"$WORK/idle-after.txt" || echo "$DRIVER_END 0 0 0" >"$WORK/idle-after.txt"
kill "$BROKER_PID" 2>/dev/null || true
for _ in $(seq 300); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
plain_log >"$WORK/broker.plain.log"

set +e
python3 - "$WORK" "$DRIVER_STATUS" "$DURATION" "$WARMUP" "$RSS_TOLERANCE_PCT" "$RSS_SLACK_MIB" \
  "$FD_TOLERANCE_PCT" "$FD_SLACK" "$FD_SLACK_IDLE" <<'PY'
import json, re, statistics, sys
from collections import Counter

work, driver_status = sys.argv[1], int(sys.argv[2])
duration, warmup = float(sys.argv[3]), float(sys.argv[4])
rss_pct, rss_slack, fd_pct, fd_slack, fd_slack_idle = map(float, sys.argv[5:10])
failures = []

samples = []
for line in open(f"{work}/samples.tsv"):
    f = line.split()
    if len(f) == 4 and all(x.isdigit() for x in f):
        samples.append(tuple(int(x) for x in f))
before = [int(x) for x in open(f"{work}/idle-before.txt").read().split()]
after = [int(x) for x in open(f"{work}/idle-after.txt").read().split()]
steady = [s for s in samples if warmup <= s[0] <= duration]
if len(steady) < 3:
    failures.append(f"only {len(steady)} samples after the warm-up: too short a run to judge")
    steady = samples or [tuple(before)]
third = max(1, len(steady) // 3)
first, last = steady[:third], steady[-third:]
mid = steady[len(steady) // 2 - third // 2 : len(steady) // 2 - third // 2 + third] or first
med = lambda rows, i: statistics.median(r[i] for r in rows)

rows = []
for name, i, unit, pct, slack in [
    ("RSS (MiB)", 1, 1024, rss_pct, rss_slack * 1024),
    ("open descriptors", 2, 1, fd_pct, fd_slack),
    ("threads", 3, 1, None, None),
]:
    a, m, z = med(first, i), med(mid, i), med(last, i)
    peak = max(s[i] for s in samples) if samples else 0
    limit = a * (1 + pct / 100) + slack if pct is not None else None
    ok = limit is None or z <= limit
    if not ok:
        failures.append(f"{name} grew: median {z / unit:.1f} in the last third against "
                        f"{a / unit:.1f} in the first (limit {limit / unit:.1f})")
    # Least-squares slope over the steady samples, per hour (information).
    n = len(steady)
    mt, mv = sum(r[0] for r in steady) / n, sum(r[i] for r in steady) / n
    var = sum((r[0] - mt) ** 2 for r in steady)
    slope = sum((r[0] - mt) * (r[i] - mv) for r in steady) / var * 3600 if var else 0.0
    fmt = (lambda v: f"{v / unit:.1f}") if unit > 1 else (lambda v: f"{v:.0f}")
    # (Meaningless over a few minutes, when the lingering connections still ramp up.)
    long_enough = steady[-1][0] - steady[0][0] >= 300
    trend = f"{slope / unit:+.1f}/h" if long_enough else "-"
    verdict = "-" if limit is None else "ok" if ok else "GREW"
    rows.append((name, fmt(before[i]), fmt(a), fmt(m), fmt(z), fmt(peak), fmt(after[i]), trend, verdict))
if after[2] > before[2] + fd_slack_idle:
    failures.append(f"descriptors after the run: {after[2]}, before: {before[2]}")

def totals(path):
    try:
        return json.load(open(path)).get("object_totals", {})
    except Exception:
        return {}
t0, t1 = totals(f"{work}/overview-before.json"), totals(f"{work}/overview-after.json")
if not t1:
    failures.append("the management API did not answer after the run")
for k in ("connections", "channels", "consumers"):
    if t1.get(k, 0) != 0:
        failures.append(f"{t1[k]} {k} left after the driver closed everything")
for k in ("queues", "exchanges"):
    if t1.get(k, 0) > t0.get(k, 0):
        failures.append(f"{k}: {t1[k]} after the run, {t0.get(k, 0)} before")

log = open(f"{work}/broker.plain.log", errors="replace").read().splitlines()
errors = [l for l in log if re.search(r"\bERROR\b", l) or "panicked" in l]
warns = [l for l in log if re.search(r"\bWARN\b", l)]
if errors:
    failures.append(f"{len(errors)} ERROR/panicked line(s) in the broker's log")

try:
    s = json.load(open(f"{work}/summary.json"))
except Exception:
    s = {}
if driver_status != 0 or not s.get("pass"):
    failures.append(f"the driver's checks failed (exit {driver_status})")

print()
print(f"soak: {s.get('duration_s', '?')} s, samples every few seconds, warm-up {warmup:.0f} s")
hdr = ("broker", "idle before", "first third", "middle third", "last third", "peak", "idle after", "trend", "flat?")
w = [max(len(str(r[c])) for r in rows + [hdr]) for c in range(len(hdr))]
for r in [hdr] + rows:
    print("  " + "  ".join(str(v).rjust(w[c]) if c else str(v).ljust(w[c]) for c, v in enumerate(r)))
if s:
    print(f"  messages: {s['published']:,} published ({s['megabytes_published']:,} MB), "
          f"{s['confirmed']:,} confirmed, {s['acked']:,} acked, {s['dead_letters']:,} dead letters, "
          f"{s['requeued']:,} requeued, {s['redelivered']:,} redelivered, {s['missing']} lost")
    print(f"  churn: {s['churn_connections']:,} connections ({s['churn_abrupt']:,} dropped, "
          f"{s['churn_lingering']:,} lingering), {s['churn_channels']:,} channels, "
          f"{s['queues_declared']:,} queues declared, {s['queues_deleted']:,} deleted, "
          f"{s['exchanges_declared']:,} exchanges, {s['bindings']:,} bindings")
    print(f"  client errors: {s['expected_errors']:,} provoked, {s['errors']} unexpected; "
          f"{s['consumer_restarts']:,} consumer restarts")
print(f"  broker log: {len(log):,} lines, {len(warns)} WARN, {len(errors)} ERROR/panicked")
strip = lambda l: re.sub(r"^\S+\s+", "", re.sub(r"peer=\S+|\d+\.\d+\.\d+\.\d+:\d+|\[[0-9a-f:]+\]:\d+", "…", l))
for line, n in Counter(strip(l) for l in warns).most_common(10):
    print(f"    {n} × {line[:160]}")
for l in errors[:10]:
    print(f"    {l[:200]}")
if failures:
    print("FAILED:")
    for f in failures:
        print(f"  - {f}")
    sys.exit(1)
print("PASSED")
PY
RESULT=$?
set -e
exit "$RESULT"
