#!/usr/bin/env bash
# What writing one cycle costs Redis: a fenced Lua script (the lock checked, then one `SET` and
# one `HSET` per document, then the `PUBLISH` of the list of topics), against the same writes as
# apura makes them, without Lua (`WATCH` of the lock, then `MULTI`, one `MSET`, one `HSET`, the
# `PUBLISH` and `EXEC`: `write_cycle` in src/bus/redis.rs).
#
# Starts a private redis-server on a free loopback port, sends CYCLES cycles of DOCS documents of
# SIZE bytes each way (the same keys, documents and message), alternating, and prints Redis' own
# time per cycle for each (the script from the slow log; the transaction from INFO commandstats:
# WATCH, GET, MULTI and EXEC, whose time includes the commands it runs) and the wall time of
# each cycle's round trip from here. Everything stays on 127.0.0.1 and stops by itself.
#
#   bash loadtest/redis-cycle-write.sh           # 10 cycles of 5,570 documents of 1,100 bytes
#   DOCS=17000 SIZE=2000 bash loadtest/redis-cycle-write.sh
set -euo pipefail

DOCS=${DOCS:-5570}
SIZE=${SIZE:-1100}
CYCLES=${CYCLES:-10}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
  --slowlog-log-slower-than 0 --slowlog-max-len 100000 >/dev/null &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done

python3 - "$port" "$DOCS" "$SIZE" "$CYCLES" <<'PY'
import re, socket, statistics, sys, time
port, docs, size, cycles = map(int, sys.argv[1:5])
# The fenced script. KEYS: leader, topics index, then one document key per document. ARGV:
# token, channel, message, version, then topic and JSON of each document.
lua = b"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this process does not hold the leader lock')
end
for i = 1, #KEYS - 2 do
  redis.call('SET', KEYS[i + 2], ARGV[4 + 2 * i])
  redis.call('HSET', KEYS[2], ARGV[3 + 2 * i], ARGV[4])
end
return redis.call('PUBLISH', ARGV[2], ARGV[3])
"""

sock = socket.create_connection(("127.0.0.1", port))
buf = b""
def command(*args):
    args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
def read_reply():
    global buf
    def line():
        global buf
        while b"\r\n" not in buf:
            buf += sock.recv(1 << 20)
        l, buf = buf.split(b"\r\n", 1)
        return l
    l = line()
    kind, rest = l[:1], l[1:]
    if kind == b"+":
        return rest
    if kind == b":":
        return int(rest)
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        while len(buf) < n + 2:
            buf += sock.recv(1 << 20)
        v, buf = buf[:n], buf[n + 2:]
        return v
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply() for _ in range(n)]
    raise RuntimeError(f"unexpected reply {l!r}")
def call(*commands):
    sock.sendall(b"".join(commands))
    return [read_reply() for _ in commands]

token = b"bench-token"
call(command("SET", "apura:leader", token))
topics = [b"mayors-xx-city-%05d" % i for i in range(docs)]
body = b"{" + b"x" * (size - 2) + b"}"
message = b"".join(topics)  # the list of topics: what a cycle this big announces
def stats():
    info = call(command("INFO", "commandstats"))[0].decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=\d+,usec=(\d+)", info)}

script_ms, script_wall, tx_ms, tx_wall = [], [], [], []
sha = call(command("SCRIPT", "LOAD", lua))[0]
for cycle in range(cycles):
    version = cycle + 1
    # The script: KEYS leader, index, documents; ARGV token, channel, message, version, topic and JSON.
    args = ["EVALSHA", sha, 2 + docs, "apura:leader", "apura:topics"]
    args += [b"apura:doc:" + t for t in topics]
    args += [token, "apura:cycles", message, version]
    for t in topics:
        args += [t, body]
    call(command("SLOWLOG", "RESET"))
    started = time.perf_counter()
    call(command(*args))
    script_wall.append((time.perf_counter() - started) * 1000)
    entries = call(command("SLOWLOG", "GET", "100"))[0]
    script_ms.append(max(e[2] for e in entries if e[3][0].upper() == b"EVALSHA") / 1000)

    # The transaction: the lock watched and checked, then every write in MULTI/EXEC.
    before = stats()
    started = time.perf_counter()
    _, holder = call(command("WATCH", "apura:leader"), command("GET", "apura:leader"))
    assert holder == token
    mset = ["MSET"]
    hset = ["HSET", "apura:topics"]
    for t in topics:
        mset += [b"apura:doc:" + t, body]
        hset += [t, version]
    replies = call(command("MULTI"), command(*mset), command(*hset),
                   command("PUBLISH", "apura:cycles", message), command("EXEC"))
    tx_wall.append((time.perf_counter() - started) * 1000)
    assert replies[-1] is not None, "EXEC aborted"
    after = stats()
    # EXEC's time includes the commands it runs (MSET, HSET, PUBLISH).
    tx_ms.append(sum(after.get(c, 0) - before.get(c, 0) for c in ("watch", "get", "multi", "exec")) / 1000)

med = lambda xs: round(statistics.median(xs), 1)
print(f"{cycles} cycles of {docs} documents of {size} bytes ({docs * size / 1e6:.1f} MB), alternating")
print(f"Lua script: Redis {med(script_ms)} ms (min {min(script_ms):.1f}, max {max(script_ms):.1f}); round trip {med(script_wall)} ms")
print(f"WATCH + MULTI/MSET/HSET/PUBLISH/EXEC (apura): Redis {med(tx_ms)} ms (min {min(tx_ms):.1f}, max {max(tx_ms):.1f}); round trip {med(tx_wall)} ms")
PY
