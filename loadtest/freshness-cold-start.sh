#!/usr/bin/env bash
# TSE cold start on a real-size tree: how long until every city's mayor document is served.
#
# Starts `apura simulate --layout tse` with the whole synthetic list (5,568 cities with an
# election), a count that is already over, and every councillor file missing (404), then a cold
# `apura run --source tse` at the default rate (50 requests/s). Every second it reads the
# gateway's `/cities.json` and counts the cities that have a mayor topic; when all have one (or
# after LIMIT seconds) it asks every `mayors-*` topic once, reads the simulator's counters
# (blocks, refused requests, highest rate) and prints one JSON line. Everything stays on
# 127.0.0.1 and stops by itself.
#
#   bash loadtest/freshness-cold-start.sh
#   APURA=/path/to/apura LIMIT=900 RATE=50 bash loadtest/freshness-cold-start.sh
set -euo pipefail

APURA=${APURA:-target/release/apura}
LIMIT=${LIMIT:-400}
RATE=${RATE:-50}
EXPECTED=${EXPECTED:-5568}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port)
gw_port=$(free_port)
log=$(mktemp)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

# A count of two seconds: every city is published and final before the ingest starts.
"$APURA" simulate --layout tse --missing-office councillor --duration 2s --interval 1s \
  --listen "127.0.0.1:$sim_port" --log warn >/dev/null 2>&1 &
pids+=($!)
until curl -sf "http://127.0.0.1:$sim_port/tse/status" | grep -q '"finished":true'; do sleep 0.5; done

"$APURA" run --source tse --base-url "http://127.0.0.1:$sim_port/oficial/ele2028/" \
  --election 9426 --rate-limit "$RATE" --listen "127.0.0.1:$gw_port" --log info >"$log" 2>&1 &
pids+=($!)

python3 - "$gw_port" "$sim_port" "$LIMIT" "$EXPECTED" "$RATE" <<'PY'
import json, os, sys, time, urllib.request, urllib.error
gw, sim, limit, expected, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""
start = time.monotonic()
marks, served, loads = {}, 0, []
topics = []
while time.monotonic() - start < limit:
    status, body = get(f"http://127.0.0.1:{gw}/cities.json")
    if status == 200:
        cities = json.loads(body)["cities"]
        topics = [t for c in cities for t in c["topics"] if t.startswith("mayors-")]
        served = len(topics)
    t = time.monotonic() - start
    for mark in (60, 111, 150, 321):
        if t >= mark and mark not in marks:
            marks[mark] = served
    loads.append(os.getloadavg()[0])
    if served >= expected:
        break
    time.sleep(1)
took = time.monotonic() - start
ok = sum(1 for t in topics if get(f"http://127.0.0.1:{gw}/cities/{t}.json")[0] == 200)
_, body = get(f"http://127.0.0.1:{sim}/tse/status")
s = json.loads(body)
print(json.dumps({
    "rate_limit": rate,
    "mayor_documents_served": ok,
    "expected": expected,
    "seconds": round(took, 1),
    "served_at_seconds": marks,
    "requests": s["requests"], "not_found": s["not_found"], "max_rate": s["max_rate"],
    "refused": s["refused"], "blocked": s["blocked"], "over_limit": s["over_limit"],
    "load_average_1m_mean": round(sum(loads) / len(loads), 2),
    "load_average_1m_max": round(max(loads), 2),
}))
PY
grep -c "TSE cycle" "$log" | sed 's/^/TSE cycles logged: /'
