#!/usr/bin/env bash
# The cost of OpenTelemetry tracing on scenarios 1 and 2 (BENCHMARKS.md):
# a build without tracing against this one with it off, then this one off
# against on with 0 %, 1 % and 100 % of (context-less) messages starting a
# trace. Spans go to bench/otlp-sink.py on $SINK_PORT (4319), which reads
# and drops them.
#
#   bench/otel.sh BEFORE_BINARY [ROUNDS]
#
# Needs a release build (cargo build --release -p warren -p warren-perf),
# python3 and jq; runs bench/ab.sh four times (about 4 × ROUNDS × 50 s).
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:?usage: bench/otel.sh BEFORE_BINARY [ROUNDS]}
ROUNDS=${2:-3}
SINK_PORT=${SINK_PORT:-4319}
WARREN=$PWD/target/release/warren
DIR=$(mktemp -d /tmp/warren-otel.XXXXXX)

python3 bench/otlp-sink.py "$SINK_PORT" &
SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT

wrapper() { # wrapper NAME SAMPLER [ARG]
  cat >"$DIR/$1" <<SH
#!/bin/sh
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT
export OTEL_TRACES_SAMPLER=$2 OTEL_TRACES_SAMPLER_ARG=${3:-1}
exec "$WARREN" "\$@"
SH
  chmod +x "$DIR/$1"
  echo "$DIR/$1"
}
ON_0=$(wrapper on-0 parentbased_always_off)
ON_1=$(wrapper on-1pct parentbased_traceidratio 0.01)
ON_100=$(wrapper on-100pct parentbased_always_on)

for pair in "$BEFORE $WARREN" "$WARREN $ON_0" "$WARREN $ON_1" "$WARREN $ON_100"; do
  # shellcheck disable=SC2086
  set -- $pair
  echo "== A: $1  B: $2"
  bench/ab.sh "$1" "$2" "$ROUNDS" s1 s2
done
