#!/usr/bin/env python3
"""Chaos clients for loadtest/chaos.sh: N SSE clients on one gateway address, each following one
city topic through kills and restarts (reconnecting with Last-Event-ID, honouring `retry:`),
then comparing its final document with what GET serves.

Usage: chaos_client.py HOST PORT CLIENTS SECONDS TOPICS_FILE
Prints one JSON line: clients, mismatched, unexpected_errors, reconnects, refused_503, events.
"""
import asyncio
import json
import random
import resource
import sys
import time
import urllib.request

HOST, PORT, CLIENTS, SECONDS, TOPICS_FILE = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

stats = {"reconnects": 0, "refused_503": 0, "unexpected_errors": 0, "events": 0}
errors_seen = []


def unexpected(what):
    stats["unexpected_errors"] += 1
    if len(errors_seen) < 10:
        errors_seen.append(what)


async def read_events(reader, state):
    """Decode the chunked SSE body; keep the latest (version, data) of the topic."""
    buf = b""
    while True:
        line = await reader.readline()
        if not line:
            return
        n = int(line.strip().split(b";")[0] or b"0", 16)
        if n == 0:
            return
        chunk = await reader.readexactly(n + 2)
        buf += chunk[:-2]
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            version, data = None, None
            for l in block.split(b"\n"):
                if l.startswith(b"id: "):
                    version = int(l[4:])
                elif l.startswith(b"data: "):
                    data = l[6:]
                elif l.startswith(b"retry: "):
                    state["retry"] = int(l[7:]) / 1000
            if data is not None:
                stats["events"] += 1
                if state["version"] is not None and version < state["version"]:
                    unexpected(f"{state['topic']}: version went back {state['version']} -> {version}")
                state["version"], state["data"] = version, data


async def client(state, deadline):
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), 10)
            head = f"GET /events?topics={state['topic']} HTTP/1.1\r\nHost: chaos\r\n"
            if state["version"] is not None:
                head += f"Last-Event-ID: {state['version']}\r\n"
            writer.write((head + "\r\n").encode())
            status = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            code = int(status.split()[1]) if status else 0
            if code == 200:
                remaining = deadline - time.monotonic()
                await asyncio.wait_for(read_events(reader, state), max(remaining, 0.1))
            elif code == 503:
                stats["refused_503"] += 1
                state["retry"] = random.uniform(1, 5)
            elif code == 0:
                pass  # closed before answering: a gateway going away
            else:
                unexpected(f"HTTP {code} for {state['topic']}")
        except asyncio.TimeoutError:
            pass  # the run is over
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # a killed gateway: reconnect
        except Exception as e:  # noqa: BLE001 - anything else is a finding
            unexpected(repr(e))
        finally:
            if writer is not None:
                writer.close()
        if time.monotonic() >= deadline:
            break
        stats["reconnects"] += 1
        await asyncio.sleep(state["retry"] * random.uniform(0.5, 1.5))


def get(path):
    with urllib.request.urlopen(f"http://{HOST}:{PORT}{path}", timeout=30) as r:
        return r.read()


async def main():
    topics = [t for t in open(TOPICS_FILE).read().split() if t]
    # Skewed like count night: a quarter of the readers on the first (biggest) city.
    states = [{"topic": topics[0] if random.random() < 0.25 else random.choice(topics),
               "version": None, "data": None, "retry": 1.0} for _ in range(CLIENTS)]
    deadline = time.monotonic() + SECONDS
    tasks = []
    for i, s in enumerate(states):
        tasks.append(asyncio.create_task(client(s, deadline)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    finals, mismatched = {}, 0
    for s in states:
        if s["topic"] not in finals:
            finals[s["topic"]] = get(f"/cities/{s['topic']}.json")
        if s["data"] != finals[s["topic"]]:
            mismatched += 1
            if mismatched <= 5:
                got = json.loads(s["data"])["version"] if s["data"] else None
                want = json.loads(finals[s["topic"]])["version"]
                errors_seen.append(f"mismatch {s['topic']}: client v{got}, GET v{want}")
    print(json.dumps({"clients": CLIENTS, "mismatched": mismatched, **stats,
                      "samples": errors_seen}))


asyncio.run(main())
