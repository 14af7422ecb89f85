#!/usr/bin/env bash
# The issue-6 scenario on this machine, every run bounded in time and stopping by itself:
#
#   get        GET of one city document: apura vs nginx serving the same bytes (wrk, same settings)
#   fanout     $SUBS subscribers (half SSE, half WebSocket) on ONE apura gateway process;
#              COMPRESS="0 1" runs it with identity streams, then compressed ones (gzip SSE,
#              permessage-deflate WebSocket), each on a fresh gateway, in every run
#   nchan      the same $SUBS subscribers and message size on nginx + nchan, stamped both ways
#              (nchan-N: published_at per message; nchan-cycle-N: once per cycle, as apura's ingest)
#   compare50k $C50_SUBS subscribers: $C50_PROCS apura gateways vs nchan with $C50_PROCS workers
#              (nchan twice: published_at stamped per message, and per cycle); $RUNS runs each
#              way, alternating who goes first
#   scale      $SCALE_SUBS subscribers on $SCALE_GATEWAYS apura gateways, held $SCALE_HOLD;
#              $SCALE_RUNS runs
#   apura50k   (not in the default set) the apura half of compare50k alone
#   kinds      (not in the default set) memory per connection of SSE only, then WebSocket only,
#              $SUBS subscribers on one gateway; GATEWAY_ENV="MALLOC_ARENA_MAX=1" tries settings
#   tsepeak    (not in the default set) the TSE layout's count night: `apura simulate --layout
#              tse` over $TSE_NIGHT (a new set of files every $TSE_SIM_INTERVAL, every city's
#              files changing as its sections come in), `apura ingest --source tse` at the
#              authority's default budget polling every --interval of $TSE_INTERVALS, $TSE_SUBS
#              subscribers on one gateway from $TSE_WAIT after the start for $TSE_HOLD: freshness
#              per class (tsepeak-<interval>-<run>.json), the ingest's per-file waits by tier
#              (logs/tsepeak-*-ingest-metrics.txt) and the simulator's block count
#   freshness  (not in the default set) $SUBS subscribers on one gateway, the ingest polling the
#              consolidated file at each --interval of $FRESH_INTERVALS (the old default 10s,
#              the new 1s), alternating, $RUNS times each, each on a fresh stack: from a file
#              coming out at the simulator (a new one every $SIM_INTERVAL) to the subscribers
#              holding it (apura-load --source-ticks; reports freshness-<interval>-<run>.json)
#
# The stack: `apura simulate` (a new feed file every $SIM_INTERVAL), `apura ingest --redis` as
# the only leader, Redis on its own port, `apura gateway --redis --reuse-port` processes, and
# `apura-load` (this folder) as clients from several loopback source addresses. Everything
# listens on 127.0.0.1; every process started here is stopped on exit.
#
# Usage:  loadtest/bench.sh                      # all phases, defaults below
#         PHASES="get fanout" RUNS=3 loadtest/bench.sh
#         APURA=/path/to/apura loadtest/bench.sh # use a prebuilt apura binary
# Results: $OUT/*.json (one report per run), *.svg plots, logs/, summary.md (printed at the end).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

PHASES="${PHASES:-get fanout nchan compare50k scale}"
RUNS="${RUNS:-3}"                      # repetitions of get/fanout/nchan; medians are reported
SUBS="${SUBS:-19000}"                  # one process each side: under 20,000 open files
HOLD="${HOLD:-60s}"
COMPRESS="${COMPRESS:-0}"              # fanout: 0 identity streams, 1 compressed (fanoutz-N), "0 1" both
FANOUT_ARGS="${FANOUT_ARGS:-}"         # fanout: extra apura-load flags, e.g. "--hot-share 1" (one topic)
CONNECT_RATE="${CONNECT_RATE:-2000}"   # new subscribers per second, all workers together
C50_SUBS="${C50_SUBS:-50000}"
C50_PROCS="${C50_PROCS:-4}"
C50_HOLD="${C50_HOLD:-60s}"
SCALE_SUBS="${SCALE_SUBS:-200000}"
SCALE_GATEWAYS="${SCALE_GATEWAYS:-12}" # ~16,700 connections each, under 20,000 open files
SCALE_HOLD="${SCALE_HOLD:-300s}"
SCALE_RUNS="${SCALE_RUNS:-1}"         # repetitions of scale (each ~4 min of ramp, then the hold)
SCALE_RATE="${SCALE_RATE:-1500}"
SCALE_INTERVAL="${SCALE_INTERVAL:-15s}" # 200,000 deliveries per cycle cost ~5 CPU-s here: not every 5 s
SIM_INTERVAL="${SIM_INTERVAL:-5s}"     # a cycle changing every mayor topic every 5 s
FRESH_INTERVALS="${FRESH_INTERVALS:-10s 1s}" # freshness: the ingest's --interval on each side
FRESH_SETTLE="${FRESH_SETTLE:-15s}"    # freshness: ticks out this close to the end are not counted
FRESH_PHASE_MS="${FRESH_PHASE_MS:-10000}" # freshness: the ingest starts 0 to this many ms after the simulator
SIM_DURATION="${SIM_DURATION:-2h}"     # the count never finishes during a bench
TSE_NIGHT="${TSE_NIGHT:-30m}"          # tsepeak: the simulated night, first section to last
TSE_SIM_INTERVAL="${TSE_SIM_INTERVAL:-10s}" # tsepeak: a new set of files this often
TSE_INTERVALS="${TSE_INTERVALS:-5s}"   # tsepeak: the ingest's --interval on each side
TSE_SUBS="${TSE_SUBS:-10000}"          # tsepeak: subscribers (mayor topics, capitals and a Zipf tail)
TSE_WAIT="${TSE_WAIT:-180s}"           # tsepeak: subscribers come this long after the start (every city published)
TSE_HOLD="${TSE_HOLD:-600s}"           # tsepeak: and hold this long
TSE_SETTLE="${TSE_SETTLE:-30s}"        # tsepeak: ticks out this close to the end are not counted
LOAD_MAX_DURATION="${LOAD_MAX_DURATION:-9m}" # apura-load's own bound (tsepeak raises it)
FULL_FEED="${FULL_FEED:-0}"            # 1: ingest councillors too (a 30-60 MB file per cycle)
WRK_THREADS="${WRK_THREADS:-1}"
WRK_CONNS="${WRK_CONNS:-64}"
WRK_DURATION="${WRK_DURATION:-10s}"
SERVER_WORKERS="${SERVER_WORKERS:-2}"  # nginx static workers = apura's runtime threads (2 cores)
SOURCES="${SOURCES:-127.0.0.2-127.0.0.33}"
PER_WORKER="${PER_WORKER:-18000}"      # subscribers per apura-load worker process
READ_PACE="${READ_PACE:-0s}"           # apura-load --read-pace: 0s waits in epoll_wait per write
PORT_BASE="${PORT_BASE:-18100}"
REDIS_PORT=$((PORT_BASE + 79))
GW_PORT=$((PORT_BASE + 80))
SIM_PORT=$((PORT_BASE + 81))
STATIC_PORT=$((PORT_BASE + 90))
NCHAN_PORT=$((PORT_BASE + 91))
INGEST_METRICS_PORT=$((PORT_BASE + 98))
ADMIN_PORT_BASE=$((PORT_BASE + 100)) # gateway i's /metrics and /status on ADMIN_PORT_BASE + i
OUT="${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}"
APURA="${APURA:-}"
GATEWAY_ENV="${GATEWAY_ENV:-}"          # extra environment of the gateways, e.g. TOKIO_WORKER_THREADS=1
SERVER_CPUS="${SERVER_CPUS:-}"          # e.g. 0: gateways and nginx pinned to these CPUs (taskset);
                                        # run the bench itself under `taskset -c 1` so that the
                                        # load generator, ingest and Redis keep to the others
HOT_DOC="/cities/mayors-sp-sao-paulo.json"

mkdir -p "$OUT/logs"
# Absolute: nginx reads its files relative to its own prefix, not to this shell.
OUT="$(cd "$OUT" && pwd)"
PIDS=()
LAST_PID=
log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- processes -------------------------------------------------------------------------------

# pin PID...: every thread of each PID on $SERVER_CPUS (nothing when it is unset); threads
# started later inherit it.
pin() {
    [ -n "$SERVER_CPUS" ] || return 0
    local pid
    for pid in "$@"; do taskset -a -p -c "$SERVER_CPUS" "$pid" >/dev/null; done
}

# start NAME CMD...: run CMD in the background, logging to $OUT/logs/NAME.log; sets LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$OUT/logs/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# stop PID...: SIGTERM, then SIGKILL after 10 s.
stop() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local alive=()
    local pid
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    if [ "${#alive[@]}" -gt 0 ]; then stop "${alive[@]}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http URL [SECONDS]: until URL answers 2xx.
wait_http() {
    local url=$1 limit=${2:-60}
    for _ in $(seq $((limit * 5))); do
        curl -sf -o /dev/null --max-time 2 "$url" && return 0
        sleep 0.2
    done
    log "no answer from $url after ${limit}s"
    return 1
}

# wait_port PORT [SECONDS]: until 127.0.0.1:PORT takes a connection; the bench stops if it never
# does (a server that failed to start would otherwise be measured as 0 subscribers).
wait_port() {
    local port=$1 limit=${2:-10}
    for _ in $(seq $((limit * 5))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.2
    done
    log "nothing listens on 127.0.0.1:$port after ${limit}s"
    exit 1
}

# --- build -----------------------------------------------------------------------------------

build() {
    log "building apura-load (release, a member of the workspace)"
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p apura-load
    LOAD="${CARGO_TARGET_DIR:-$ROOT/target}/release/apura-load"
    if [ -z "$APURA" ]; then
        log "building apura (release)"
        cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
        APURA="${CARGO_TARGET_DIR:-$ROOT/target}/release/apura"
    fi
    local c
    for c in simulate ingest gateway; do
        "$APURA" "$c" --help >/dev/null 2>&1 || {
            log "$APURA has no '$c' command: build apura from a main with the simulator and Redis"
            exit 1
        }
    done
    command -v redis-server >/dev/null || { log "redis-server missing: apt-get install -y redis-server"; exit 1; }
}

# --- the apura stack -------------------------------------------------------------------------

STACK_PIDS=()
GW_PIDS=()

# start_stack INTERVAL [INGEST_INTERVAL [INGEST_DELAY]]: Redis, simulator (a new file every
# INTERVAL), one ingest leader polling it every INGEST_INTERVAL (1s), started INGEST_DELAY
# seconds after the simulator answers (0).
start_stack() {
    local interval=$1 ingest_interval=${2:-1s} ingest_delay=${3:-0}
    start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    STACK_PIDS=("$LAST_PID")
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    start simulate "$APURA" simulate --listen "127.0.0.1:$SIM_PORT" --duration "$SIM_DURATION" --interval "$interval"
    STACK_PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$SIM_PORT/municipalities.json"
    sleep "$ingest_delay"
    local extra=()
    if [ "$FULL_FEED" = 1 ]; then extra=(--councillors-feed "http://127.0.0.1:$SIM_PORT/councillors.json"); fi
    start ingest "$APURA" ingest --redis "redis://127.0.0.1:$REDIS_PORT/0" \
        --feed "http://127.0.0.1:$SIM_PORT/mayors.json" \
        --municipalities "http://127.0.0.1:$SIM_PORT/municipalities.json" \
        --interval "$ingest_interval" "${extra[@]}"
    STACK_PIDS+=("$LAST_PID")
    # Gateways start once the first cycle is in Redis, so each loads every document at start.
    for _ in $(seq 300); do
        [ "$(redis-cli -p "$REDIS_PORT" hlen apura:topics 2>/dev/null || echo 0)" -gt 0 ] && break
        sleep 0.2
    done
}

stop_stack() {
    stop_gateways
    if [ "${#STACK_PIDS[@]}" -gt 0 ]; then stop "${STACK_PIDS[@]}"; fi
    STACK_PIDS=()
}

# start_gateways N: N gateway processes sharing $GW_PORT (SO_REUSEPORT), ready.
start_gateways() {
    local n=$1 i
    GW_PIDS=() GW_METRICS=()
    for i in $(seq "$n"); do
        # shellcheck disable=SC2086 # GATEWAY_ENV is a list of NAME=VALUE words
        start "gateway-$i" env $GATEWAY_ENV "$APURA" gateway --redis "redis://127.0.0.1:$REDIS_PORT/0" \
            --listen "127.0.0.1:$GW_PORT" --reuse-port --web-dir "$OUT/no-web" \
            --admin-listen "127.0.0.1:$((ADMIN_PORT_BASE + i))"
        GW_PIDS+=("$LAST_PID")
        GW_METRICS+=("127.0.0.1:$((ADMIN_PORT_BASE + i))/metrics")
    done
    wait_http "http://127.0.0.1:$GW_PORT$HOT_DOC" 120
    pin "${GW_PIDS[@]}"
    # Every process must hold the documents before clients come: ask each through its own log.
    for i in $(seq "$n"); do
        for _ in $(seq 300); do
            sed 's/\x1b\[[0-9;]*m//g' "$OUT/logs/gateway-$i.log" 2>/dev/null |
                grep -q "snapshots loaded documents=[1-9]" && break
            sleep 0.2
        done
    done
    sleep 1
}

# The running gateways' metrics addresses, comma-separated.
gw_metrics() { (IFS=,; echo "${GW_METRICS[*]}"); }

stop_gateways() {
    if [ "${#GW_PIDS[@]}" -gt 0 ]; then stop "${GW_PIDS[@]}"; fi
    GW_PIDS=()
}

# --- nginx -----------------------------------------------------------------------------------

# start_nginx NAME TEMPLATE PORT WORKERS: nginx in the foreground with its files under $OUT/NAME.
start_nginx() {
    local name=$1 template=$2 port=$3 workers=$4 dir="$OUT/$1"
    mkdir -p "$dir/tmp" "$dir/www"
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@WORKERS@|$workers|g" \
        "$HERE/nginx/$template" >"$dir/nginx.conf"
    start "$name" nginx -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" -g "daemon off;"
    NGINX_PID=$LAST_PID
    wait_port "$port"
    if [ -n "$SERVER_CPUS" ]; then
        sleep 0.5 # the workers are forked once the port listens
        # shellcheck disable=SC2046 # one PID per word
        pin $(nginx_pids | tr , ' ')
    fi
}

# The master and its workers.
nginx_pids() {
    local kids
    kids=$(pgrep -P "$NGINX_PID" | paste -sd, -)
    echo "$NGINX_PID${kids:+,$kids}"
}

# --- phases ----------------------------------------------------------------------------------

workers_for() { echo $((($1 + PER_WORKER - 1) / PER_WORKER)); }

# load LABEL TARGET SUBS RATE HOLD WATCH [extra apura-load flags...]
load() {
    local label=$1 target=$2 subs=$3 rate=$4 hold=$5 watch=$6
    local sse=${LOAD_SSE:-$((subs / 2))} ws=${LOAD_WS:-$((subs - subs / 2))}
    shift 6
    log "$label: $subs subscribers on $target"
    # In the background and waited for, so that an interrupted bench stops it too (its workers
    # exit when it does).
    "$LOAD" run --target "$target" --sse "$sse" --ws "$ws" \
        --workers "$(workers_for "$subs")" --connect-rate "$rate" --hold "$hold" \
        --max-duration "$LOAD_MAX_DURATION" --sources "$SOURCES" --watch-pid "$watch" --handshake-timeout 30s \
        --read-pace "$READ_PACE" --label "$label" --out "$OUT/$label.json" "$@" >"$OUT/logs/$label.out" 2>>"$OUT/logs/$label.log" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait "$LAST_PID" || log "$label: apura-load exited with status $?"
    cat "$OUT/logs/$label.out"
}

phase_get() {
    log "get: apura gateway vs nginx static, wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION, $RUNS runs each"
    # A quiet stack: one publication, then nothing for an hour, so neither side has background work.
    start_stack 1h
    start_gateways 1
    start_nginx static static.conf.in "$STATIC_PORT" "$SERVER_WORKERS"
    mkdir -p "$OUT/static/www/cities"
    curl -sf "http://127.0.0.1:$GW_PORT$HOT_DOC" -o "$OUT/static/www$HOT_DOC"
    curl -sf "http://127.0.0.1:$STATIC_PORT$HOT_DOC" -o "$OUT/static/nginx-body.json"
    cmp "$OUT/static/www$HOT_DOC" "$OUT/static/nginx-body.json"
    log "same $(wc -c <"$OUT/static/nginx-body.json") bytes from both"
    : >"$OUT/get.tsv"
    local i server url
    for i in $(seq "$RUNS"); do
        # Alternate who goes first, so drift in the machine's load does not favour one side.
        local order="apura nginx"
        [ $((i % 2)) = 0 ] && order="nginx apura"
        for server in $order; do
            if [ "$server" = apura ]; then url="http://127.0.0.1:$GW_PORT$HOT_DOC"; else url="http://127.0.0.1:$STATIC_PORT$HOT_DOC"; fi
            wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --latency "$url" >"$OUT/logs/wrk-$server-$i.log" 2>&1
            printf '%s\t%s\t%s\t%s\t%s\n' "$server" "$i" \
                "$(awk '/Requests\/sec/ {print $2}' "$OUT/logs/wrk-$server-$i.log")" \
                "$(awk '$1 == "99%" {print $2}' "$OUT/logs/wrk-$server-$i.log")" \
                "$(grep -c 'Non-2xx\|Socket errors' "$OUT/logs/wrk-$server-$i.log" || true)" >>"$OUT/get.tsv"
            tail -n +1 "$OUT/get.tsv" | tail -1 >&2
        done
    done
    stop "$NGINX_PID"
    stop_stack
}

phase_fanout() {
    start_stack "$SIM_INTERVAL"
    local i z label flags
    for i in $(seq "$RUNS"); do
        for z in $COMPRESS; do
            # 1: the same run with compressed streams (fanoutz-N), right after the plain one.
            label="fanout-$i" flags=()
            if [ "$z" = 1 ]; then label="fanoutz-$i" flags=(--compress); fi
            # A fresh gateway per run: memory per connection is measured from a clean baseline.
            start_gateways 1
            # shellcheck disable=SC2086 # FANOUT_ARGS is a list of words
            load "$label" "127.0.0.1:$GW_PORT" "$SUBS" "$CONNECT_RATE" "$HOLD" "${GW_PIDS[0]}" "${flags[@]}" \
                --server-metrics "$(gw_metrics)" $FANOUT_ARGS
            stop_gateways
        done
    done
    stop_stack
}

# Documents for nchan: every mayor document as apura serves it, saved once.
save_docs() {
    [ -s "$OUT/docs/topics.txt" ] && return 0
    start_stack 1h
    start_gateways 1
    "$LOAD" publish --docs-from "127.0.0.1:$GW_PORT" --save-docs "$OUT/docs" --duration 0s \
        --target "127.0.0.1:$NCHAN_PORT" 2>>"$OUT/logs/save-docs.log"
    stop_stack
}

# nchan_run LABEL SUBS WORKERS HOLD [STAMP]: STAMP `message` (published_at when each message is
# POSTed: nchan's own fan-out, its best case) or `cycle` (once per cycle, as apura's ingest does:
# the time to POST 5,568 messages one channel at a time counts too).
nchan_run() {
    local label=$1 subs=$2 workers=$3 hold=$4 stamp=${5:-message}
    start_nginx nchan nchan.conf.in "$NCHAN_PORT" "$workers"
    local ramp_s=$((subs / CONNECT_RATE + 1)) hold_s=${hold%s}
    # Publish for as long as the clients ramp and hold, then stop by itself.
    start "publish-$label" "$LOAD" publish --target "127.0.0.1:$NCHAN_PORT" --docs-dir "$OUT/docs" \
        --interval "$SIM_INTERVAL" --duration "$((ramp_s + hold_s + 30))s" --stamp "$stamp" --conns 16
    local pub=$LAST_PID
    sleep 2 # the first cycle creates the channels
    load "$label" "127.0.0.1:$NCHAN_PORT" "$subs" "$CONNECT_RATE" "$hold" "$(nginx_pids)" \
        --topics-file "$OUT/docs/topics.txt" --sse-path "/sub/{topic}" --ws-path "/sub/{topic}" --ws-subscribe "" \
        --cycle-key version
    stop "$pub" "$NGINX_PID"
}

phase_nchan() {
    save_docs
    local i workers=$(((SUBS + 19000 - 1) / 19000))
    [ "$workers" -lt "$SERVER_WORKERS" ] && workers=$SERVER_WORKERS
    for i in $(seq "$RUNS"); do
        nchan_run "nchan-$i" "$SUBS" "$workers" "$HOLD" message
        nchan_run "nchan-cycle-$i" "$SUBS" "$workers" "$HOLD" cycle
    done
}

# phase_apura50k [LABEL]
phase_apura50k() {
    start_stack "$SIM_INTERVAL"
    start_gateways "$C50_PROCS"
    load "${1:-apura-50k}" "127.0.0.1:$GW_PORT" "$C50_SUBS" "$CONNECT_RATE" "$C50_HOLD" "$(IFS=,; echo "${GW_PIDS[*]}")" \
        --server-metrics "$(gw_metrics)"
    stop_stack
}

phase_compare50k() {
    save_docs
    local i
    for i in $(seq "$RUNS"); do
        # Alternate who goes first, so drift in the machine's load does not favour one side.
        if [ $((i % 2)) = 1 ]; then phase_apura50k "apura-50k-$i"; fi
        nchan_run "nchan-50k-$i" "$C50_SUBS" "$C50_PROCS" "$C50_HOLD" message
        nchan_run "nchan-50k-cycle-$i" "$C50_SUBS" "$C50_PROCS" "$C50_HOLD" cycle
        if [ $((i % 2)) = 0 ]; then phase_apura50k "apura-50k-$i"; fi
    done
}

phase_kinds() {
    start_stack "$SIM_INTERVAL"
    start_gateways 1
    LOAD_SSE=$SUBS LOAD_WS=0 load "sse-only" "127.0.0.1:$GW_PORT" "$SUBS" "$CONNECT_RATE" "$HOLD" "${GW_PIDS[0]}" \
        --server-metrics "$(gw_metrics)"
    stop_gateways
    start_gateways 1
    LOAD_SSE=0 LOAD_WS=$SUBS load "ws-only" "127.0.0.1:$GW_PORT" "$SUBS" "$CONNECT_RATE" "$HOLD" "${GW_PIDS[0]}" \
        --server-metrics "$(gw_metrics)"
    stop_stack
}

phase_freshness() {
    local i iv order label delay_ms delay
    for i in $(seq "$RUNS"); do
        # Alternate who goes first, so drift in the machine's load does not favour one side.
        order=$FRESH_INTERVALS
        if [ $((i % 2)) = 0 ]; then order=$(echo "$FRESH_INTERVALS" | tr ' ' '\n' | tac | paste -sd' ' -); fi
        for iv in $order; do
            label="freshness-$iv-$i"
            # Polls start at a random phase against the simulator's ticks: with a fixed one,
            # every run would see the same waits (at 10s, only one half of the 0-10 s range).
            delay_ms=$((RANDOM * 32768 + RANDOM))
            delay_ms=$((delay_ms % (FRESH_PHASE_MS + 1)))
            delay=$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))
            log "$label: ingest --interval $iv started ${delay}s after the simulator, a new file every $SIM_INTERVAL"
            start_stack "$SIM_INTERVAL" "$iv" "$delay"
            start_gateways 1
            load "$label" "127.0.0.1:$GW_PORT" "$SUBS" "$CONNECT_RATE" "$HOLD" "${GW_PIDS[0]}" \
                --source-ticks "127.0.0.1:$SIM_PORT/ticks" --freshness-settle "$FRESH_SETTLE"
            stop_stack
        done
    done
}

# The TSE stack: the simulator in the TSE layout (authority's limit and block emulated), the
# ingest at its default budget as the only leader, Redis; gateways come after.
start_tse_stack() {
    local ingest_interval=$1
    start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    STACK_PIDS=("$LAST_PID")
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    start simulate "$APURA" simulate --layout tse --listen "127.0.0.1:$SIM_PORT" \
        --duration "$TSE_NIGHT" --interval "$TSE_SIM_INTERVAL"
    STACK_PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$SIM_PORT/tse/status"
    start ingest "$APURA" ingest --redis "redis://127.0.0.1:$REDIS_PORT/0" --source tse \
        --base-url "http://127.0.0.1:$SIM_PORT/oficial/ele2028/" --election 9426 \
        --interval "$ingest_interval" --metrics-listen "127.0.0.1:$INGEST_METRICS_PORT"
    STACK_PIDS+=("$LAST_PID")
    for _ in $(seq 600); do
        [ "$(redis-cli -p "$REDIS_PORT" hlen apura:topics 2>/dev/null || echo 0)" -gt 0 ] && break
        sleep 0.2
    done
}

phase_tsepeak() {
    local i iv label started wait_s hold_s
    wait_s=${TSE_WAIT%s} hold_s=${TSE_HOLD%s}
    for i in $(seq "$RUNS"); do
        for iv in $TSE_INTERVALS; do
            label="tsepeak-$iv-$i"
            log "$label: TSE night of $TSE_NIGHT, ingest --interval $iv, $TSE_SUBS subscribers from ${wait_s}s for ${hold_s}s"
            started=$(date +%s)
            start_tse_stack "$iv"
            start_gateways 1
            # Subscribers come once every city is published (a topic not yet out is a 404).
            sleep $((started + wait_s - $(date +%s) > 0 ? started + wait_s - $(date +%s) : 0))
            LOAD_MAX_DURATION=$((hold_s / 60 + 5))m load "$label" "127.0.0.1:$GW_PORT" "$TSE_SUBS" "$CONNECT_RATE" "$TSE_HOLD" "${GW_PIDS[0]}" \
                --source-ticks "127.0.0.1:$SIM_PORT/ticks" --freshness-settle "$TSE_SETTLE" --server-metrics "$(gw_metrics)"
            curl -sf "http://127.0.0.1:$INGEST_METRICS_PORT/metrics" >"$OUT/logs/$label-ingest-metrics.txt" || true
            curl -sf "http://127.0.0.1:$SIM_PORT/tse/status" >"$OUT/logs/$label-sim-status.json" || true
            stop_stack
        done
    done
}

phase_scale() {
    local i
    for i in $(seq "$SCALE_RUNS"); do
        start_stack "$SCALE_INTERVAL"
        start_gateways "$SCALE_GATEWAYS"
        load "scale-$i" "127.0.0.1:$GW_PORT" "$SCALE_SUBS" "$SCALE_RATE" "$SCALE_HOLD" "$(IFS=,; echo "${GW_PIDS[*]}")" \
            --server-metrics "$(gw_metrics)"
        stop_stack
    done
}

# --- main ------------------------------------------------------------------------------------

build
{
    echo "date: $(date -u +%FT%TZ)"
    echo "apura: $APURA ($("$APURA" --version 2>/dev/null || echo '?'); bench checkout $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "cpu: $(nproc) x $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r); open files: $(ulimit -n)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2); nchan: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'); wrk: $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?')"
    echo "settings: PHASES='$PHASES' RUNS=$RUNS SUBS=$SUBS HOLD=$HOLD CONNECT_RATE=$CONNECT_RATE SIM_INTERVAL=$SIM_INTERVAL COMPRESS='$COMPRESS' FANOUT_ARGS='$FANOUT_ARGS' FULL_FEED=$FULL_FEED READ_PACE=$READ_PACE SCALE_RUNS=$SCALE_RUNS SCALE_HOLD=$SCALE_HOLD GATEWAY_ENV='$GATEWAY_ENV' SERVER_CPUS='$SERVER_CPUS' BENCH_CPUS='$(taskset -cp $$ | awk '{print $NF}')' FRESH_INTERVALS='$FRESH_INTERVALS' FRESH_SETTLE=$FRESH_SETTLE FRESH_PHASE_MS=$FRESH_PHASE_MS TSE_NIGHT=$TSE_NIGHT TSE_SIM_INTERVAL=$TSE_SIM_INTERVAL TSE_INTERVALS='$TSE_INTERVALS' TSE_SUBS=$TSE_SUBS TSE_WAIT=$TSE_WAIT TSE_HOLD=$TSE_HOLD TSE_SETTLE=$TSE_SETTLE"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2
for phase in $PHASES; do
    log "=== phase $phase"
    "phase_$phase"
done
python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
log "results in $OUT"
