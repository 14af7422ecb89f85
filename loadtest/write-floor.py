#!/usr/bin/env python3
"""The kernel's cost of one delivery on this machine: one write() of a frame to each of many
loopback TCP connections, drained by an epoll reader in another process.

On loopback the receiving socket's TCP processing and the reader's wake-up run in the writer's
system call, so the writer's *system* CPU time per write is the least any server pays per
delivery here (user time is left out: it is this script's own interpreter). The writer sends
ROUNDS rounds, one frame per connection each, PAUSE seconds apart so the reader drains and
sleeps between them as subscribers do between cycles.

CALL picks the system call: `send` (the default), `sendmsg` (the frame in three pieces, as a
server sends a chunk's head, a document and its tail), `write` or `writev` (the same three
pieces).

Usage:  loadtest/write-floor.py                      # 9,000 connections, 1,100-byte frames
        CONNS=5000 FRAME=2000 ROUNDS=40 loadtest/write-floor.py
        CONNS=18000 CALL=writev loadtest/write-floor.py
"""

import os
import resource
import select
import socket
import sys
import time

CONNS = int(os.environ.get("CONNS", "9000"))
FRAME = int(os.environ.get("FRAME", "1100"))
ROUNDS = int(os.environ.get("ROUNDS", "30"))
PAUSE = float(os.environ.get("PAUSE", "0.2"))
CALL = os.environ.get("CALL", "send")
CALLS = ("send", "sendmsg", "write", "writev")


def reader(listener, ready_w):
    """Accept CONNS connections, then drain every readable one until all are closed."""
    ep = select.epoll()
    conns = {}
    for _ in range(CONNS):
        c, _ = listener.accept()
        c.setblocking(False)
        conns[c.fileno()] = c
        ep.register(c.fileno(), select.EPOLLIN)
    os.write(ready_w, b"r")
    buf = bytearray(65536)
    while conns:
        for fd, _ in ep.poll():
            c = conns[fd]
            try:
                n = c.recv_into(buf)
            except BlockingIOError:
                continue
            if n == 0:
                ep.unregister(fd)
                c.close()
                del conns[fd]
    os._exit(0)


def main():
    if CALL not in CALLS:
        sys.exit(f"CALL={CALL}: one of {', '.join(CALLS)}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CONNS + 64
    if hard < need:
        sys.exit(f"{CONNS} connections need {need} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        reader(listener, ready_w)
    listener.close()
    socks = []
    for _ in range(CONNS):
        s = socket.create_connection(addr)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    os.read(ready_r, 1)
    frame = b"x" * FRAME
    # An HTTP/1.1 chunk: its size line, the document, CRLF; FRAME bytes in all.
    body = FRAME - len(b"%x\r\n" % FRAME) - 2
    pieces = [b"%x\r\n" % body, b"x" * body, b"\r\n"]
    calls = {
        "send": lambda s: s.send(frame),
        "sendmsg": lambda s: s.sendmsg(pieces),
        "write": lambda s: os.write(s.fileno(), frame),
        "writev": lambda s: os.writev(s.fileno(), pieces),
    }
    call = calls[CALL]
    time.sleep(0.5)
    sys_time, writes = 0.0, 0
    for _ in range(ROUNDS):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        for s in socks:
            call(s)
        sys_time += resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
        writes += len(socks)
        time.sleep(PAUSE)
    for s in socks:
        s.close()
    os.waitpid(pid, 0)
    load = os.getloadavg()[0]
    print(
        f"{writes} {CALL} calls of {FRAME} bytes to {CONNS} loopback connections: "
        f"{sys_time / writes * 1e6:.1f} µs of system CPU per call "
        f"(load average {load:.1f})"
    )


if __name__ == "__main__":
    main()
