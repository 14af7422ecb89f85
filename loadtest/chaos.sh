#!/usr/bin/env bash
# Chaos run of the scaled deployment on loopback: a simulated count, Redis, two ingests, two
# gateways sharing one port (SO_REUSEPORT), and CLIENTS SSE clients; mid-count it kills a
# gateway with -9 (its clients reconnect to the other through the shared port; it comes back),
# restarts Redis empty, and feeds one corrupt file. At the end it prints the clients whose
# final document differs from what GET serves (must be 0), unexpected errors, and the peak
# RSS of the gateways.
#
# Usage: loadtest/chaos.sh [CLIENTS=20000] [COUNT_SECONDS=60]
# Needs: redis-server, curl, python3, a built `apura` (APURA_BIN, default target/debug/apura).
# Bounded: every process is started by this script, killed by pid at exit, and the whole run
# takes COUNT_SECONDS + ~60 s.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${1:-20000}
COUNT=${2:-60}
BIN=${APURA_BIN:-${CARGO_TARGET_DIR:-target}/debug/apura}
[ -x "$BIN" ] || { echo "build apura first (cargo build), or set APURA_BIN" >&2; exit 2; }
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port); SIM_PORT=$(free_port); GW_PORT=$(free_port)
REDIS="redis://127.0.0.1:$REDIS_PORT/0"
export APURA_LOG=${APURA_LOG:-warn}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$WORK/redis.log" --daemonize no &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis did not start" >&2; exit 1
}

start_gateway() {  # $1: index
  "$BIN" gateway --redis "$REDIS" --listen "127.0.0.1:$GW_PORT" --reuse-port --drain 2s \
    --write-timeout 10s >>"$WORK/gateway$1.log" 2>&1 &
  local pid=$!; PIDS+=("$pid"); echo "$pid" >"$WORK/gateway$1.pid"
}

# Peak RSS of every gateway process ever started, sampled every second.
sample_memory() {
  while true; do
    for f in "$WORK"/gateway*.pid; do
      local pid; pid=$(cat "$f")
      awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null >>"$WORK/rss.samples" || true
    done
    sleep 1
  done
}

start_redis
"$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --duration "${COUNT}s" --interval 2s \
  >"$WORK/simulate.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$SIM_PORT/municipalities.json" -o /dev/null && break; sleep 0.2; done

# The ingests read a file that a copier refreshes from the simulator, so that one corrupt file
# can be dropped in between two good ones.
FEED="$WORK/mayors.json"
copy_feed() {
  while true; do
    curl -sf "http://127.0.0.1:$SIM_PORT/mayors.json" -o "$WORK/mayors.tmp" && mv "$WORK/mayors.tmp" "$FEED"
    [ -f "$WORK/corrupt-now" ] && { printf '{"last_updated": {"date": "0' >"$WORK/bad.tmp"; mv "$WORK/bad.tmp" "$FEED"; rm "$WORK/corrupt-now"; sleep 3; }
    sleep 1
  done
}
curl -sf "http://127.0.0.1:$SIM_PORT/mayors.json" -o "$FEED"
copy_feed & PIDS+=($!)
for i in 1 2; do
  "$BIN" ingest --redis "$REDIS" --feed "$FEED" \
    --municipalities "http://127.0.0.1:$SIM_PORT/municipalities.json" --interval 1s \
    --metrics-listen "127.0.0.1:$(free_port)" >"$WORK/ingest$i.log" 2>&1 &
  PIDS+=($!)
done
start_gateway 1
start_gateway 2
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$GW_PORT/readyz" -o /dev/null && break; sleep 0.2; done
sample_memory & PIDS+=($!)

# Topics: the mayor documents of every city, biggest first (the index lists capitals first).
curl -sf "http://127.0.0.1:$GW_PORT/cities.json" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
cities = sorted(doc["cities"], key=lambda c: not c.get("capital"))
out = [t for c in cities for t in c["topics"] if t.startswith("mayors-")]
print("\n".join(out[:500]))' >"$WORK/topics"
[ -s "$WORK/topics" ] || { echo "no topics in /cities.json" >&2; exit 1; }

# Clients: two processes (each holds half the sockets: the open-file limit is per process).
RUN=$((COUNT + 30))
HALF=$((CLIENTS / 2))
for i in 1 2; do
  python3 loadtest/chaos_client.py 127.0.0.1 "$GW_PORT" "$HALF" "$RUN" "$WORK/topics" \
    >"$WORK/clients$i.json" 2>"$WORK/clients$i.err" &
  CLIENT_PIDS[$i]=$!; PIDS+=($!)
done

sleep $((COUNT / 4))
echo "chaos: kill -9 gateway 1"
kill -9 "$(cat "$WORK/gateway1.pid")"
sleep 5
start_gateway 1
sleep $((COUNT / 4))
echo "chaos: restart Redis empty"
kill -9 "$REDIS_PID"
sleep 2
start_redis
sleep $((COUNT / 8))
echo "chaos: a corrupt feed file"
touch "$WORK/corrupt-now"

echo "chaos: waiting for the count to end and the clients to finish"
for i in 1 2; do wait "${CLIENT_PIDS[$i]}" || true; done

python3 - "$WORK" <<'EOF'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
total = {"clients": 0, "mismatched": 0, "unexpected_errors": 0, "reconnects": 0, "refused_503": 0, "events": 0}
samples = []
for i in (1, 2):
    text = (work / f"clients{i}.json").read_text().strip()
    if not text:
        print(f"client process {i} printed nothing:", (work / f"clients{i}.err").read_text()[-2000:])
        total["unexpected_errors"] += 1
        continue
    r = json.loads(text)
    for k in total:
        total[k] += r.get(k, 0)
    samples += r.get("samples", [])
rss = [int(x) for x in (work / "rss.samples").read_text().split()] if (work / "rss.samples").exists() else [0]
print(f"clients: {total['clients']}, events: {total['events']}, reconnects: {total['reconnects']}, 503: {total['refused_503']}")
print(f"clients whose final document differs from GET: {total['mismatched']}")
print(f"unexpected errors: {total['unexpected_errors']}")
print(f"peak gateway RSS: {max(rss) // 1024} MiB")
for s in samples[:10]:
    print("  ", s)
EOF
grep -h "feed rejected" "$WORK"/ingest*.log | head -3 || true
