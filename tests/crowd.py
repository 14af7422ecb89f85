#!/usr/bin/env python3
"""A crowd of connections that never complete a request, for tests/connections.rs.

Usage: crowd.py HOST PORT COUNT SECONDS SOURCES

Holds COUNT connections to HOST:PORT for SECONDS, spread over the loopback source addresses
SOURCES (e.g. 127.0.0.10-127.0.0.29), a quarter of each kind:

- events: `GET /events?topics=brazil HTTP/1.1...` sent one byte every 2 s;
- x:      a lone `X`, then nothing;
- nocrlf: a whole request head but its final CRLF, then nothing;
- idle:   a whole `GET /brazil.json`, its response read, then an idle kept-alive connection.

A connection the server closes is opened again after half a second. At the end, prints one
JSON line: per kind, connections opened, closed by the server, the longest time a connection
lived until the server closed it (from its connect; for `idle`, from the end of its response),
and the oldest connection still open.
"""

import asyncio
import json
import socket
import sys
import time

HEAD = b"GET /events?topics=brazil HTTP/1.1\r\nHost: gateway\r\nAccept: text/event-stream\r\n\r\n"
NOCRLF = b"GET /brazil.json HTTP/1.1\r\nHost: gateway\r\nUser-Agent: crowd\r\n"
GET = b"GET /brazil.json HTTP/1.1\r\nHost: gateway\r\n\r\n"
KINDS = ["events", "x", "nocrlf", "idle"]


def sources(spec):
    first, _, last = spec.partition("-")
    a = [int(x) for x in first.split(".")]
    b = [int(x) for x in (last or first).split(".")]
    return [f"{a[0]}.{a[1]}.{a[2]}.{n}" for n in range(a[3], b[3] + 1)]


class Stats:
    def __init__(self):
        self.opened = 0
        self.closed = 0
        self.refused = 0
        self.longest = 0.0
        self.open_since = {}

    def report(self, now):
        oldest = max((now - t for t in self.open_since.values()), default=0.0)
        return {
            "opened": self.opened,
            "closed": self.closed,
            "refused": self.refused,
            "longest": round(self.longest, 3),
            "oldest_open": round(oldest, 3),
        }


async def closed(reader, wait):
    """True if the server closed the connection within `wait` seconds."""
    try:
        data = await asyncio.wait_for(reader.read(65536), wait)
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503")


async def one(host, port, source, kind, stats, end, slot):
    while time.monotonic() < end:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.bind((source, 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except OSError:
            stats.refused += 1
            await asyncio.sleep(0.5)
            continue
        stats.opened += 1
        started = time.monotonic()
        stats.open_since[slot] = started
        try:
            if kind == "events":
                gone = False
                for i in range(len(HEAD)):
                    writer.write(HEAD[i : i + 1])
                    await writer.drain()
                    if await closed(reader, min(2.0, max(0.0, end - time.monotonic()))):
                        gone = True
                        break
                    if time.monotonic() >= end:
                        break
            else:
                if kind == "x":
                    writer.write(b"X")
                elif kind == "nocrlf":
                    writer.write(NOCRLF)
                else:
                    writer.write(GET)
                    await writer.drain()
                    response = b""
                    while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                        chunk = await asyncio.wait_for(reader.read(65536), 10)
                        if not chunk:
                            break
                        response += chunk
                    started = time.monotonic()
                    stats.open_since[slot] = started
                await writer.drain()
                gone = await closed(reader, max(0.0, end - time.monotonic()))
            if gone:
                stats.closed += 1
                stats.longest = max(stats.longest, time.monotonic() - started)
        except (OSError, asyncio.TimeoutError):
            stats.closed += 1
            stats.longest = max(stats.longest, time.monotonic() - started)
        finally:
            stats.open_since.pop(slot, None)
            writer.close()
        await asyncio.sleep(0.5)


async def main():
    host, port, count, seconds, spec = sys.argv[1:6]
    port, count, seconds = int(port), int(count), float(seconds)
    addrs = sources(spec)
    stats = {k: Stats() for k in KINDS}
    end = time.monotonic() + seconds
    tasks = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        source = addrs[i % len(addrs)]
        tasks.append(one(host, port, source, kind, stats[kind], end, i))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    oldest = {}

    async def snapshot():
        # The oldest connections still open, just before the run ends and closes them.
        await asyncio.sleep(max(0.0, end - 0.2 - time.monotonic()))
        now = time.monotonic()
        for k, s in stats.items():
            oldest[k] = s.report(now)["oldest_open"]

    await asyncio.gather(snapshot(), *tasks)
    now = time.monotonic()
    report = {k: s.report(now) for k, s in stats.items()}
    for k in report:
        report[k]["oldest_open"] = oldest.get(k, 0.0)
    print(json.dumps(report), flush=True)


asyncio.run(main())
