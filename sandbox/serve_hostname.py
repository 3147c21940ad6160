"""A tiny server for sandbox pods, like agnhost's serve-hostname.

Runs inside a pod's network namespace and answers every TCP connection and UDP datagram with
`<name> <client-ip>`: the name proves which pod answered, the client IP proves there was no
NAT on the way. An HTTP request (e.g. a readiness probe or curl) gets the same text as a
200 response.

    python -m sandbox.serve_hostname --name web-1 --tcp 8080 --udp 5353
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys


def reply_for(name: str, client_ip: str, request: bytes) -> bytes:
    text = f"{name} {client_ip}\n".encode()
    if request[:4] in (b"GET ", b"HEAD", b"POST"):
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(text)}\r\nConnection: close\r\n\r\n"
        return head.encode() + (b"" if request.startswith(b"HEAD") else text)
    return text


def serve(name: str, tcp_ports: list[int], udp_ports: list[int], bind: str = "") -> None:
    selector = selectors.DefaultSelector()
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for port in tcp_ports:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        sock.listen(128)
        selector.register(sock, selectors.EVENT_READ, "tcp")
    for port in udp_ports:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((bind, port))
        selector.register(sock, selectors.EVENT_READ, "udp")
    print(f"serving {name} on tcp {tcp_ports} udp {udp_ports}", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "udp":
                data, peer = sock.recvfrom(2048)
                sock.sendto(reply_for(name, peer[0], data), peer)
                continue
            conn, peer = sock.accept()
            with conn:
                # Read what the client says first (HTTP), but never wait long for it:
                # plain TCP probes send nothing.
                conn.settimeout(0.2)
                try:
                    request = conn.recv(2048)
                except OSError:
                    request = b""
                try:
                    conn.settimeout(2)
                    conn.sendall(reply_for(name, peer[0], request))
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--tcp", type=int, action="append", default=[])
    parser.add_argument("--udp", type=int, action="append", default=[])
    parser.add_argument("--bind", default="")
    args = parser.parse_args(argv)
    try:
        serve(args.name, args.tcp, args.udp, args.bind)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
