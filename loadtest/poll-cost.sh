#!/usr/bin/env bash
# What a conditional poll of the consolidated file costs both sides when nothing changed (the
# provider answers 304): `apura ingest --redis` polls `apura simulate`, whose files do not change
# during the measurement (a tick of an hour), at each interval of $INTERVALS for $SECONDS_EACH
# seconds; CPU of both processes (utime + stime from /proc/PID/stat) and the bytes of the
# ingest's connections to the provider (`ss -ti`: bytes_sent, bytes_received, TCP payload) are
# read after a warm-up and at the end.
#
# Usage:  loadtest/poll-cost.sh                         # 10s, 1s and 100ms, 60 s each
#         INTERVALS="2s 1s" SECONDS_EACH=120 loadtest/poll-cost.sh
# Prints one line per interval: polls, CPU ms per poll on each side, bytes per poll.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
INTERVALS="${INTERVALS:-10s 1s 100ms}"
SECONDS_EACH="${SECONDS_EACH:-60}"
WARMUP="${WARMUP:-5}"
PORT_BASE="${PORT_BASE:-19300}"
REDIS_PORT=$((PORT_BASE + 79))
SIM_PORT=$((PORT_BASE + 81))
OUT="${OUT:-$(mktemp -d)}"
APURA="${APURA:-${CARGO_TARGET_DIR:-$ROOT/target}/release/apura}"
[ -x "$APURA" ] || { echo "no $APURA: cargo build --release" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server missing" >&2; exit 1; }

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cpu_ms PID: utime + stime, in ms.
cpu_ms() {
    local hz
    hz=$(getconf CLK_TCK)
    awk -v hz="$hz" '{ sub(/^.*\) /, ""); print ($12 + $13) * 1000 / hz }' "/proc/$1/stat"
}
# sent|received: payload bytes of every open connection to the provider, from the ingest's side.
tcp_bytes() {
    ss -tinH state established "( dport = :$SIM_PORT )" |
        grep -o "bytes_$1:[0-9]*" | awk -F: '{ n += $2 } END { print n + 0 }'
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$APURA" simulate --listen "127.0.0.1:$SIM_PORT" --duration 2h --interval 1h >"$OUT/simulate.log" 2>&1 &
SIM=$!
PIDS+=("$SIM")
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$SIM_PORT/municipalities.json" && break; sleep 0.2; done

printf 'interval\tpolls\tingest_cpu_ms_per_poll\tprovider_cpu_ms_per_poll\trequest_bytes_per_poll\tresponse_bytes_per_poll\n'
for interval in $INTERVALS; do
    "$APURA" ingest --redis "redis://127.0.0.1:$REDIS_PORT/0" \
        --feed "http://127.0.0.1:$SIM_PORT/mayors.json" \
        --municipalities "http://127.0.0.1:$SIM_PORT/municipalities.json" \
        --interval "$interval" --metrics-listen "127.0.0.1:$((PORT_BASE + 82))" >"$OUT/ingest-$interval.log" 2>&1 &
    ING=$!
    PIDS+=("$ING")
    # The first poll fetches and publishes the whole file; the warm-up lets it finish.
    sleep "$WARMUP"
    polls0=$(curl -s "http://127.0.0.1:$((PORT_BASE + 82))/metrics" | awk '/^apura_feed_fetch_duration_seconds_count\{.*not_modified/ { n += $2 } END { print n + 0 }')
    i0=$(cpu_ms "$ING") s0=$(cpu_ms "$SIM") r0=$(tcp_bytes sent) w0=$(tcp_bytes received)
    sleep "$SECONDS_EACH"
    polls1=$(curl -s "http://127.0.0.1:$((PORT_BASE + 82))/metrics" | awk '/^apura_feed_fetch_duration_seconds_count\{.*not_modified/ { n += $2 } END { print n + 0 }')
    i1=$(cpu_ms "$ING") s1=$(cpu_ms "$SIM") r1=$(tcp_bytes sent) w1=$(tcp_bytes received)
    kill -TERM "$ING"
    wait "$ING" 2>/dev/null || true
    awk -v iv="$interval" -v p0="$polls0" -v p1="$polls1" -v i0="$i0" -v i1="$i1" -v s0="$s0" -v s1="$s1" \
        -v r0="$r0" -v r1="$r1" -v w0="$w0" -v w1="$w1" 'BEGIN {
            n = p1 - p0; if (n < 1) n = 1
            printf "%s\t%d\t%.3f\t%.3f\t%.0f\t%.0f\n", iv, p1 - p0, (i1 - i0) / n, (s1 - s0) / n, (r1 - r0) / n, (w1 - w0) / n
        }'
done
echo "logs in $OUT" >&2
