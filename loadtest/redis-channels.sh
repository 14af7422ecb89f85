#!/usr/bin/env bash
# One channel for every cycle, or one channel per topic, or a pattern: what each costs Redis.
#
# Starts a private redis-server on a free loopback port, attaches SUBSCRIBERS redis-cli
# subscribers in each layout, publishes CYCLES cycles of DOCS documents of SIZE bytes, and prints
# the Redis CPU time (user + sys, from INFO) and the time spent executing PUBLISH (INFO
# commandstats) per cycle, and what subscribing cost. Everything stays on 127.0.0.1 and stops by itself.
#
#   bash loadtest/redis-channels.sh            # 4 subscribers, 3,000 × 1 KB documents
#   SUBSCRIBERS=8 DOCS=17000 bash loadtest/redis-channels.sh
set -euo pipefail

SUBSCRIBERS=${SUBSCRIBERS:-4}
TOPICS=${TOPICS:-17000}
DOCS=${DOCS:-3000}
SIZE=${SIZE:-1024}
CYCLES=${CYCLES:-20}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
  --client-output-buffer-limit "pubsub 0 0 0" >/dev/null &
server=$!
subs=()
cleanup() { kill "${subs[@]}" "$server" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
cli() { redis-cli -p "$port" "$@"; }
until cli ping >/dev/null 2>&1; do sleep 0.05; done

# The cycles, as the Redis protocol for `redis-cli --pipe`: the same bytes reach Redis either way,
# as one PUBLISH per cycle or as one PUBLISH per document.
python3 - "$dir" "$CYCLES" "$DOCS" "$SIZE" <<'PY'
import sys
folder, cycles, docs, size = sys.argv[1], *map(int, sys.argv[2:])
def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
with open(folder + "/one.resp", "wb") as f:
    for _ in range(cycles):
        f.write(command(b"PUBLISH", b"apura:cycles", b"x" * (docs * size)))
with open(folder + "/many.resp", "wb") as f:
    for _ in range(cycles):
        for i in range(1, docs + 1):
            f.write(command(b"PUBLISH", b"apura:doc:t%d" % i, b"x" * size))
PY

cpu() { cli info cpu | awk -F: '/used_cpu_(user|sys):/ {s += $2} END {printf "%.6f", s}'; }

measure() { # name, protocol file
  local name=$1 file=$2 before after usec
  cli config resetstat >/dev/null
  before=$(cpu)
  cli --pipe <"$file" >/dev/null
  sleep 1 # let Redis finish writing to the subscribers
  after=$(cpu)
  usec=$(cli info commandstats | awk -F'[:,=]' '/^cmdstat_publish:/ {print $5}')
  printf '%-27s publish:   %6.1f ms Redis CPU per cycle (%6.1f ms executing PUBLISH)\n' "$name" \
    "$(echo "($after - $before) * 1000 / $CYCLES" | bc -l)" "$(echo "$usec / 1000 / $CYCLES" | bc -l)"
}

subscribe() { # name, then redis-cli arguments
  local name=$1 before after mem_before mem_after
  shift
  before=$(cpu)
  mem_before=$(cli info memory | awk -F: '/^used_memory:/ {print $2+0}')
  for _ in $(seq "$SUBSCRIBERS"); do
    cli "$@" >/dev/null 2>&1 &
    subs+=($!)
  done
  sleep 2
  after=$(cpu)
  mem_after=$(cli info memory | awk -F: '/^used_memory:/ {print $2+0}')
  printf '%-27s subscribe: %6.1f ms Redis CPU, %7.2f MB of Redis memory for %s subscribers\n' "$name" \
    "$(echo "($after - $before) * 1000" | bc -l)" "$(echo "($mem_after - $mem_before) / 1000000" | bc -l)" "$SUBSCRIBERS"
}
unsubscribe() { kill "${subs[@]}" 2>/dev/null || true; wait "${subs[@]}" 2>/dev/null || true; subs=(); sleep 0.5; }

echo "$SUBSCRIBERS subscribers, $CYCLES cycles of $DOCS documents × $SIZE bytes, $TOPICS topics"
subscribe "one channel" subscribe apura:cycles
measure "one channel" "$dir/one.resp"
unsubscribe
channels=$(seq -f 'apura:doc:t%g' 1 "$TOPICS" | tr '\n' ' ')
# shellcheck disable=SC2086
subscribe "one channel per topic" subscribe $channels
measure "one channel per topic" "$dir/many.resp"
unsubscribe
subscribe "one pattern per subscriber" psubscribe 'apura:doc:*'
measure "one pattern per subscriber" "$dir/many.resp"
unsubscribe
