#!/usr/bin/env bash
# Where a cycle's time goes between the ingest and a gateway's hub, with no subscriber: Redis on
# its own port, `apura simulate` (a new consolidated file every $SIM_INTERVAL, every mayor
# document changing), `apura ingest --redis` polling every second and one `apura gateway`.
# After a warm-up it clears Redis' slow log, waits $SECONDS_EACH seconds, then prints per
# cycle:
#   - publish: the ingest's round trip of the cycle script (`apura_bus_call_duration_seconds`,
#     op="publish": sending the documents, the script, the reply), mean over the cycles;
#   - write: Redis' own time for each cycle's write: the `MSET`, `HSET` and `PUBLISH` of its
#     transaction (INFO commandstats, mean), or a cycle script of more than two keys (slow log);
#   - mget: Redis' time per `MGET` the gateway sent to read a cycle announced by its topics;
#   - arrival: publication (the ingest's stamp) to the documents held in the gateway's hub
#     (`apura_cycle_arrival_seconds`), mean over the cycles.
# Everything listens on 127.0.0.1 and stops on exit.
#
# Usage:  loadtest/cycle-steps.sh
#         APURA=/path/to/apura SECONDS_EACH=60 loadtest/cycle-steps.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SECONDS_EACH="${SECONDS_EACH:-30}"
SIM_INTERVAL="${SIM_INTERVAL:-5s}"
PORT_BASE="${PORT_BASE:-19400}"
REDIS_PORT=$((PORT_BASE + 1))
SIM_PORT=$((PORT_BASE + 2))
INGEST_METRICS=$((PORT_BASE + 3))
GW_PORT=$((PORT_BASE + 4))
GW_ADMIN=$((PORT_BASE + 5))
APURA="${APURA:-${CARGO_TARGET_DIR:-$ROOT/target}/release/apura}"
[ -x "$APURA" ] || { echo "no $APURA: cargo build --release" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server missing" >&2; exit 1; }

DIR=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
    local limit=$1
    shift
    for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "timed out waiting for: $*" >&2
    exit 1
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
wait_for 10 redis-cli -p "$REDIS_PORT" ping
"$APURA" simulate --listen "127.0.0.1:$SIM_PORT" --duration 2h --interval "$SIM_INTERVAL" >"$DIR/simulate.log" 2>&1 &
PIDS+=($!)
wait_for 30 curl -sf "http://127.0.0.1:$SIM_PORT/municipalities.json"
"$APURA" ingest --redis "redis://127.0.0.1:$REDIS_PORT/0" \
    --feed "http://127.0.0.1:$SIM_PORT/mayors.json" \
    --municipalities "http://127.0.0.1:$SIM_PORT/municipalities.json" \
    --interval 1s --metrics-listen "127.0.0.1:$INGEST_METRICS" >"$DIR/ingest.log" 2>&1 &
PIDS+=($!)
has_topics() { [ "$(redis-cli -p "$REDIS_PORT" hlen apura:topics)" -gt 0 ]; }
wait_for 60 has_topics
mkdir -p "$DIR/web"
"$APURA" gateway --redis "redis://127.0.0.1:$REDIS_PORT/0" --listen "127.0.0.1:$GW_PORT" \
    --web-dir "$DIR/web" --admin-listen "127.0.0.1:$GW_ADMIN" >"$DIR/gateway.log" 2>&1 &
PIDS+=($!)
wait_for 60 curl -sf "http://127.0.0.1:$GW_PORT/readyz"
sleep 3

read_metrics() {
    curl -sf "http://127.0.0.1:$INGEST_METRICS/metrics" >"$DIR/ingest-$1.txt"
    curl -sf "http://127.0.0.1:$GW_ADMIN/metrics" >"$DIR/gateway-$1.txt"
    redis-cli -p "$REDIS_PORT" --raw info commandstats >"$DIR/redis-$1.txt"
}
redis-cli -p "$REDIS_PORT" config set slowlog-log-slower-than 1000 >/dev/null
redis-cli -p "$REDIS_PORT" config set slowlog-max-len 1024 >/dev/null
redis-cli -p "$REDIS_PORT" slowlog reset >/dev/null
read_metrics before
sleep "$SECONDS_EACH"
read_metrics after
# The slow log's entries: id, time, microseconds, then the command's words (a cycle script is
# one entry; a transaction's commands are logged one by one, and EXEC not at all).
redis-cli -p "$REDIS_PORT" --json slowlog get 1024 >"$DIR/slowlog.json"

python3 - "$DIR" <<'PY'
import json, re, statistics, sys
d = sys.argv[1]
def text(name): return open(f"{d}/{name}", errors="replace").read()
def value(t, pattern):
    m = re.search(pattern + r" ([0-9.e+-]+)$", t, re.M)
    return float(m.group(1)) if m else 0.0
def delta(kind, pattern):
    return value(text(f"{kind}-after.txt"), pattern) - value(text(f"{kind}-before.txt"), pattern)
pub_n = delta("ingest", r'apura_bus_call_duration_seconds_count\{ok="true",op="publish"\}') or \
        delta("ingest", r'apura_bus_call_duration_seconds_count\{op="publish"\}')
pub_s = delta("ingest", r'apura_bus_call_duration_seconds_sum\{ok="true",op="publish"\}') or \
        delta("ingest", r'apura_bus_call_duration_seconds_sum\{op="publish"\}')
arr_n = delta("gateway", r"apura_cycle_arrival_seconds_count")
arr_s = delta("gateway", r"apura_cycle_arrival_seconds_sum")
def stat(kind, cmd, field):
    m = re.search(rf"^cmdstat_{cmd}:.*?{field}=([0-9.]+)", text(f"{kind}"), re.M)
    return float(m.group(1)) if m else 0.0
mget_calls = stat("redis-after.txt", "mget", "calls") - stat("redis-before.txt", "mget", "calls")
mget_us = stat("redis-after.txt", "mget", "usec") - stat("redis-before.txt", "mget", "usec")
tx_us = sum(stat("redis-after.txt", c, "usec") - stat("redis-before.txt", c, "usec") for c in ("mset", "hset", "publish"))
scripts = []
# An inline cycle's message is binary: the log is read for its numbers, not its text.
for entry in json.loads(open(f"{d}/slowlog.json", "rb").read().decode("utf-8", "replace")):
    words = entry[3] if len(entry) > 3 else []
    name = str(words[0]).lower() if words else ""
    if name in ("evalsha", "eval") and len(words) > 2 and int(words[2]) > 2:
        scripts.append(entry[2] / 1000)
out = {
    "cycles": int(pub_n),
    "publish_round_trip_ms_mean": round(pub_s / pub_n * 1000, 1) if pub_n else None,
    # A script's time from the slow log; a transaction's from its commands (EXEC is not logged).
    "cycle_write_in_redis_ms": {"n": len(scripts), "median": round(statistics.median(scripts), 1),
                                "min": round(min(scripts), 1), "max": round(max(scripts), 1)} if scripts else
                               {"mean": round(tx_us / pub_n / 1000, 1) if pub_n else None},
    "mget_per_cycle": round(mget_calls / arr_n, 1) if arr_n else None,
    "mget_ms_mean_in_redis": round(mget_us / mget_calls / 1000, 2) if mget_calls else None,
    "arrival_ms_mean": round(arr_s / arr_n * 1000, 1) if arr_n else None,
}
print(json.dumps(out))
PY
