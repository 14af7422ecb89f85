"""A WebSocket client of the gateway written with Python's `websockets`, which offers
permessage-deflate by default, as browsers do. It prints one JSON line per event on stdout.

    ws_python.py follow URL TOPICS SECONDS [COUNT]
        Prints {"extensions": <the server's Sec-WebSocket-Extensions>, "negotiated": [...]}, sends
        {"type": "subscribe", "topics": TOPICS.split(",")} (compressed, when negotiated), then
        prints every message received as it came, until COUNT messages (0: no limit), SECONDS
        pass or the server closes; then {"closed": <close code or null>}.
    ws_python.py bomb URL BYTES
        Sends one message of BYTES bytes that compresses to a few KB, then prints
        {"close_code": ..., "close_reason": ...} once the server has closed.
"""

import asyncio
import json
import sys

import websockets


async def follow(url, topics, seconds, count):
    async with websockets.connect(url, max_size=None, close_timeout=2) as ws:
        print(json.dumps({
            "extensions": ws.response_headers.get("Sec-WebSocket-Extensions"),
            "negotiated": [e.name for e in ws.extensions],
        }), flush=True)
        await ws.send(json.dumps({"type": "subscribe", "topics": topics.split(",")}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        received = 0
        while count == 0 or received < count:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                message = await asyncio.wait_for(ws.recv(), left)
            except asyncio.TimeoutError:
                break
            except websockets.ConnectionClosed:
                break
            print(message, flush=True)
            received += 1
        print(json.dumps({"closed": ws.close_code}), flush=True)


async def bomb(url, size):
    async with websockets.connect(url, max_size=None, close_timeout=5) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topics": ["a" * size]}))
        try:
            for _ in range(100):
                await asyncio.wait_for(ws.recv(), 10)
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass
        print(json.dumps({"close_code": ws.close_code, "close_reason": ws.close_reason}),
              flush=True)


def main():
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "follow":
        count = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        asyncio.run(follow(url, sys.argv[3], float(sys.argv[4]), count))
    elif mode == "bomb":
        asyncio.run(bomb(url, int(sys.argv[3])))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
