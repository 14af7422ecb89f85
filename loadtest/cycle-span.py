#!/usr/bin/env python3
"""How long the ingest takes to publish a change: subscribe to the cycles channel of a running
stack's Redis, note when each cycle message arrives, and print, per change (messages less than
GAP seconds apart), how many cycles it came as, the time from its first to its last, and its
bytes.

A subscriber that does nothing else reads each message as Redis sends it, so the span is the
ingest's publication of the change (its encoding, its Redis round trips and Redis's own work),
not a gateway's: compare it with the gateways' `apura_cycle_arrival_seconds` and the fan-out's
latency to see whether a change's last cycle or the writes decide when its last reader gets it.

Usage:  loadtest/cycle-span.py PORT [SECONDS]     # e.g. 18479: loadtest/bench.sh's Redis at
                                                  # PORT_BASE=18400 (PORT_BASE + 79)
        CHANNEL=apura:cycles GAP=1.0 loadtest/cycle-span.py 6379 30
"""

import os
import socket
import sys
import time

CHANNEL = os.environ.get("CHANNEL", "apura:cycles").encode()
GAP = float(os.environ.get("GAP", "1.0"))


def bulk(buf, at):
    """One RESP bulk string or integer at `at`: (value, next position), or None if incomplete.
    Values over 100 bytes are given as their length."""
    end = buf.find(b"\r\n", at)
    if end < 0:
        return None
    if buf[at : at + 1] == b":":
        return buf[at + 1 : end], end + 2
    n = int(buf[at + 1 : end])
    start = end + 2
    if len(buf) < start + n + 2:
        return None
    return (buf[start : start + n] if n < 100 else n), start + n + 2


def messages(sock, until):
    """(arrival time, payload bytes) of every message on the channel until `until`."""
    buf = b""
    sock.settimeout(0.5)
    while time.time() < until:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not data:
            return
        now = time.time()
        buf += data
        while buf.startswith(b"*3\r\n"):
            at, parts = 4, []
            for _ in range(3):
                got = bulk(buf, at)
                if got is None:
                    break
                value, at = got
                parts.append(value)
            if len(parts) < 3:
                break
            buf = buf[at:]
            if parts[0] == b"message":
                yield now, parts[2] if isinstance(parts[2], int) else len(parts[2])


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    port = int(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    sock = socket.create_connection(("127.0.0.1", port))
    command = b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL)
    sock.sendall(command)
    changes = []
    for at, size in messages(sock, time.time() + seconds):
        if changes and at - changes[-1][-1][0] <= GAP:
            changes[-1].append((at, size))
        else:
            changes.append([(at, size)])
    if not changes:
        sys.exit("no cycle published on the channel")
    for change in changes:
        span = 1000 * (change[-1][0] - change[0][0])
        size = sum(s for _, s in change)
        print(f"cycles {len(change):4d}  first to last {span:7.1f} ms  bytes {size:,}")
    print(
        "the first and last changes may be cut short by the start and the end of the listening"
    )


if __name__ == "__main__":
    main()
