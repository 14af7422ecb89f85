#!/usr/bin/env python3
"""Bytes on the wire of one subscriber, per stream form, over the same simulated minutes.

Starts `apura demo` (a fixed seed), then, side by side on the same gateway for the same time,
subscribes a page's set of topics in every form: SSE identity (no Accept-Encoding), SSE gzip
(Accept-Encoding: gzip, as every browser sends), WebSocket plain and WebSocket with
permessage-deflate (Python's `websockets`, Debian's python3-websockets), and both compressed
forms again with deltas (`&delta=1`, `"delta": true`). Every byte read from
each socket is counted, response heads and framing included. The gzip stream is decoded and the
WebSocket messages parsed as they come, and both must carry the same versions as identity.

    python3 loadtest/wire_bytes.py [--bin target/release/apura] [--seconds 120]

Prints a Markdown table: bytes per form, and each compressed form against identity.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib

import websockets
from websockets.legacy.client import WebSocketClientProtocol

SETS = {
    "São Paulo page": ["mayors-sp-sao-paulo", "councillors-sp-sao-paulo", "state-sp", "brazil"],
    "small city's mayor + brazil": ["mayors-ac-campo-da-mata", "brazil"],
}


class Counter:
    def __init__(self):
        self.bytes = 0
        self.versions = {}  # topic -> last version received

    def saw(self, topic, version):
        self.versions[topic] = max(version, self.versions.get(topic, 0))


async def sse(port, topics, gzip, counter, stop, delta=False):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accept = "Accept-Encoding: gzip, deflate, br\r\n" if gzip else ""
    query = f"topics={','.join(topics)}" + ("&delta=1" if delta else "")
    writer.write(f"GET /events?{query} HTTP/1.1\r\nHost: bench\r\n{accept}\r\n".encode())
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += await reader.read(65536)
    counter.bytes += len(raw)
    head, raw = raw.split(b"\r\n\r\n", 1)
    assert (b"content-encoding: gzip" in head.lower()) == gzip, head
    inflater = zlib.decompressobj(wbits=31) if gzip else None
    text = b""
    body = raw

    def dechunk():
        nonlocal body, text
        while b"\r\n" in body:
            size_line, rest = body.split(b"\r\n", 1)
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            chunk, body = rest[:size], rest[size + 2:]
            text += inflater.decompress(chunk) if inflater else chunk

    while not stop.is_set():
        dechunk()
        while b"\n\n" in text:
            block, text = text.split(b"\n\n", 1)
            lines = block.decode().split("\n")
            ident = [l[4:] for l in lines if l.startswith("id: ")]
            data = [l[6:] for l in lines if l.startswith("data: ")]
            if ident and data:
                counter.saw(json.loads(data[0])["topic"], int(ident[0]))
        try:
            got = await asyncio.wait_for(reader.read(65536), 0.5)
        except asyncio.TimeoutError:
            continue
        if not got:
            break
        counter.bytes += len(got)
        body += got
    writer.close()


def counting_protocol(counter):
    class Counting(WebSocketClientProtocol):
        def data_received(self, data):
            counter.bytes += len(data)
            super().data_received(data)
    return Counting


async def ws(port, topics, deflate, counter, stop, delta=False):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None,
                                  compression="deflate" if deflate else None,
                                  create_protocol=counting_protocol(counter)) as conn:
        negotiated = [e.name for e in conn.extensions]
        assert negotiated == (["permessage-deflate"] if deflate else []), negotiated
        await conn.send(json.dumps({"type": "subscribe", "topics": topics, "delta": delta}))
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(conn.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            m = json.loads(message)
            if m.get("type") in ("snapshot", "update", "patch"):
                counter.saw(m["topic"], m["version"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(port, seconds):
    stop = asyncio.Event()
    forms = ["SSE identity", "SSE gzip", "SSE gzip + deltas", "WebSocket",
             "WebSocket permessage-deflate", "WebSocket permessage-deflate + deltas"]
    counters = {(name, form): Counter() for name in SETS for form in forms}
    tasks = []
    for name, topics in SETS.items():
        c = lambda form: counters[(name, form)]
        tasks += [
            sse(port, topics, False, c("SSE identity"), stop),
            sse(port, topics, True, c("SSE gzip"), stop),
            sse(port, topics, True, c("SSE gzip + deltas"), stop, delta=True),
            ws(port, topics, False, c("WebSocket"), stop),
            ws(port, topics, True, c("WebSocket permessage-deflate"), stop),
            ws(port, topics, True, c("WebSocket permessage-deflate + deltas"), stop, delta=True),
        ]
    running = [asyncio.create_task(t) for t in tasks]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*running)
    return forms, counters


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(here, "..", "target", "release", "apura"))
    ap.add_argument("--seconds", type=float, default=120, help="time measured")
    ap.add_argument("--seed", default="2026")
    ap.add_argument("--duration", default="10m", help="the simulated night (apura demo)")
    ap.add_argument("--interval", default="5s", help="a new feed file every (apura demo)")
    args = ap.parse_args()
    port = free_port()
    cmd = [args.bin, "demo", "--listen", f"127.0.0.1:{port}", "--seed", args.seed,
           "--duration", args.duration, "--interval", args.interval]
    demo = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "APURA_LOG": "warn"})
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or demo.poll() is not None:
                sys.exit("apura demo did not become ready")
            time.sleep(0.2)
        # Every topic of the sets published before anyone subscribes.
        for topics in SETS.values():
            for topic in topics:
                path = ("/brazil.json" if topic == "brazil" else
                        f"/states/{topic[6:]}.json" if topic.startswith("state-") else
                        f"/cities/{topic}.json")
                while True:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
                        break
                    except OSError:
                        if time.time() > deadline:
                            sys.exit(f"{topic} never published")
                        time.sleep(0.5)
        forms, counters = asyncio.run(measure(port, args.seconds))
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(30)
    print(f"`{' '.join(['apura'] + cmd[1:])}`, {args.seconds:.0f} s measured, one subscriber "
          "per form, side by side\n")
    print("| topics | " + " | ".join(forms) + " |")
    print("| --- | " + " | ".join("---:" for _ in forms) + " |")
    ok = True
    for name in SETS:
        identity = counters[(name, "SSE identity")]
        ws_plain = counters[(name, "WebSocket")]
        cells = []
        for form in forms:
            c = counters[(name, form)]
            base = ws_plain if form.startswith("WebSocket") else identity
            ratio = "" if c is base else f" (1/{base.bytes / max(c.bytes, 1):.1f})"
            cells.append(f"{c.bytes:,} B{ratio}")
            # Every form received every topic.
            ok &= set(c.versions) == set(SETS[name])
        print(f"| {name} | " + " | ".join(cells) + " |")
    if not ok:
        sys.exit("some form did not receive every topic")


if __name__ == "__main__":
    main()
