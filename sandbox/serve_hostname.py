"""A tiny server for sandbox pods, like agnhost's serve-hostname.

Answers every TCP connection and UDP datagram with `<name> <client-ip>`: the name proves which
pod answered, the client IP proves there was no NAT on the way. An HTTP request (a readiness
probe, curl) gets the same text as a 200 response.

`HostnameServers` serves the sockets of many pods from one thread: the sandbox kubelet opens
each pod's listening sockets inside the pod's network namespace (a socket stays in the netns
it was created in) and hands them over, so a pod costs no process. Standalone:

    python -m sandbox.serve_hostname --name web-1 --tcp 8080 --udp 5353
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

REQUEST_WAIT = 0.2  # how long a TCP client may take to send a request (HTTP) before we answer
PROTOCOLS = ("TCP", "UDP", "SCTP")


def reply_for(name: str, client_ip: str, request: bytes) -> bytes:
    text = f"{name} {client_ip}\n".encode()
    if request[:4] in (b"GET ", b"HEAD", b"POST"):
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(text)}\r\nConnection: close\r\n\r\n"
        return head.encode() + (b"" if request.startswith(b"HEAD") else text)
    return text


def sctp_supported() -> bool:
    """Whether this kernel lets us open SCTP sockets (the sctp module may be absent)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except (OSError, AttributeError):
        return False
    return True


def listen(port: int, protocol: str = "TCP", bind: str = "") -> socket.socket:
    """A listening (TCP, SCTP) or bound (UDP) socket in the calling thread's netns."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    if protocol == "UDP":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    elif protocol == "SCTP":
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        if protocol != "UDP":
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Conn:
    owner: str
    name: str
    peer: str
    deadline: float


class HostnameServers:
    """One thread answering on the sockets of any number of pods; thread-safe add/remove."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._owned: dict[str, list[socket.socket]] = {}
        self._conns: dict[socket.socket, _Conn] = {}
        self._deadlines: list[tuple[float, int, socket.socket]] = []
        self._seq = itertools.count()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    def start(self) -> HostnameServers:
        self._thread = threading.Thread(target=self.serve_forever, name="serve-hostname",
                                        daemon=True)
        self._thread.start()
        return self

    def add(self, owner: str, name: str, sockets: Iterable[socket.socket]) -> None:
        """Serve `sockets` (from `listen`) answering with `name`; `owner` keys remove()."""
        with self._lock:
            for sock in sockets:
                kind = "udp" if sock.type == socket.SOCK_DGRAM else "listen"
                self._selector.register(sock, selectors.EVENT_READ, (kind, owner, name))
                self._owned.setdefault(owner, []).append(sock)
        self._wake()

    def remove(self, owner: str) -> None:
        """Close the sockets of `owner` (its open connections finish on their own)."""
        with self._lock:
            for sock in self._owned.pop(owner, []):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
        self._wake()

    def owners(self) -> set[str]:
        with self._lock:
            return set(self._owned)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def serve_forever(self) -> None:
        while True:
            timeout = None
            if self._deadlines:
                timeout = max(0.0, self._deadlines[0][0] - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    self._handle(key)
            with self._lock:
                self._expire()

    def _handle(self, key: selectors.SelectorKey) -> None:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        kind = key.data[0]
        try:
            if kind == "udp":
                data, peer = sock.recvfrom(2048)
                sock.sendto(reply_for(key.data[2], peer[0], data), peer)
            elif kind == "listen":
                conn, peer = sock.accept()
                conn.setblocking(False)
                deadline = time.monotonic() + REQUEST_WAIT
                self._conns[conn] = _Conn(key.data[1], key.data[2], peer[0], deadline)
                self._selector.register(conn, selectors.EVENT_READ, ("conn",))
                heapq.heappush(self._deadlines, (deadline, next(self._seq), conn))
            else:
                self._answer(sock, sock.recv(2048))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            if kind == "conn":
                self._close(sock)

    def _answer(self, conn: socket.socket, request: bytes) -> None:
        state = self._conns.get(conn)
        if state is None:
            return
        with contextlib.suppress(OSError):
            conn.send(reply_for(state.name, state.peer, request))  # small: fits the buffer
        self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        self._conns.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()

    def _expire(self) -> None:
        """Plain TCP clients send nothing: answer them once REQUEST_WAIT has passed."""
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, conn = heapq.heappop(self._deadlines)
            if conn in self._conns:
                self._answer(conn, b"")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--tcp", type=int, action="append", default=[])
    parser.add_argument("--udp", type=int, action="append", default=[])
    parser.add_argument("--sctp", type=int, action="append", default=[])
    parser.add_argument("--bind", default="")
    parser.add_argument("--pidfile", help="write the pid here (and be known by it)")
    args = parser.parse_args(argv)
    if args.pidfile:
        with open(args.pidfile, "w") as out:
            out.write(f"{os.getpid()}\n")
    wanted = [(p, "TCP") for p in args.tcp] + [(p, "UDP") for p in args.udp]
    wanted += [(p, "SCTP") for p in args.sctp]
    servers = HostnameServers()
    servers.add("main", args.name, [listen(port, proto, args.bind) for port, proto in wanted])
    print(f"serving {args.name} on tcp {args.tcp} udp {args.udp} sctp {args.sctp}", flush=True)
    try:
        servers.serve_forever()
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
