#!/usr/bin/env bash
# The ingest's CPU on a simulated count night, with no gateway and no client: Redis on its own
# port, `apura simulate` (a new file every 5 s, every mayor changing), and `apura ingest`
# polling it every second. Prints the ingest's CPU (user + system) per second of wall time,
# measured over SECONDS after a warm-up of 8 s.
#
# Usage: loadtest/ingest-cpu.sh APURA_BINARY [SECONDS] [PORT_BASE]
#        loadtest/ingest-cpu.sh target/release/apura 30
set -euo pipefail
APURA=${1:?usage: loadtest/ingest-cpu.sh APURA_BINARY [SECONDS] [PORT_BASE]}
SECONDS_MEASURED=${2:-30}
PORT_BASE=${3:-18600}
REDIS_PORT=$((PORT_BASE + 79))
SIM_PORT=$((PORT_BASE + 81))
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$APURA" simulate --listen "127.0.0.1:$SIM_PORT" --duration 2h --interval 5s >"$DIR/sim.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$SIM_PORT/municipalities.json" -o /dev/null && break; sleep 0.1; done
"$APURA" ingest --redis "redis://127.0.0.1:$REDIS_PORT/0" \
    --feed "http://127.0.0.1:$SIM_PORT/mayors.json" \
    --municipalities "http://127.0.0.1:$SIM_PORT/municipalities.json" --interval 1s >"$DIR/ingest.log" 2>&1 &
INGEST=$!
PIDS+=("$INGEST")
sleep 8
ticks() { awk '{print $14 + $15}' "/proc/$INGEST/stat"; }
hz=$(getconf CLK_TCK)
a=$(ticks)
sleep "$SECONDS_MEASURED"
b=$(ticks)
echo "$(basename "$APURA"): ingest CPU $(((b - a) * 1000 / hz / SECONDS_MEASURED)) ms per second over ${SECONDS_MEASURED} s (load average $(cut -d' ' -f1 /proc/loadavg))"
