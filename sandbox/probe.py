"""Real packets from inside a network namespace: TCP/UDP probes and ping.

A socket belongs to the network namespace of the thread that created it, so a probe switches
only its own thread into the pod's namespace (setns), creates the socket, and switches back:
no process per probe, and the rest of the program is never moved (node.netns.in_netns).
"""

from __future__ import annotations

import socket
import subprocess

from node.netns import in_netns


def _socket_in(netns: str | None, family: int, kind: int) -> socket.socket:
    if netns is None:
        return socket.socket(family, kind)
    with in_netns(netns):
        return socket.socket(family, kind)


def probe(netns: str | None, host: str, port: int, proto: str = "tcp",
          timeout: float = 2.0) -> str | None:
    """Connect from `netns` to host:port and return what answered (None: nothing did)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = _socket_in(netns, family, kind)
    try:
        sock.settimeout(timeout)
        if proto == "tcp":
            sock.connect((host, port))
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace").strip() or None
        sock.sendto(b"probe\n", (host, port))
        data, _ = sock.recvfrom(4096)
        return data.decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        sock.close()


def ping(netns: str, host: str, count: int = 3, timeout: float = 2.0) -> bool:
    """ICMP echo from `netns`; True when any of `count` echoes (0.2 s apart) is answered."""
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", str(count), "-W",
         str(max(1, int(timeout))), "-i", "0.2", host],
        capture_output=True, check=False,
    )
    return result.returncode == 0


def tcp_open(netns: str | None, host: str, port: int, timeout: float = 1.0) -> bool:
    """A kubelet's tcpSocket probe: does a TCP connect to host:port from `netns` succeed?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = _socket_in(netns, family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def http_get(netns: str | None, host: str, port: int, path: str = "/",
             headers: tuple[tuple[str, str], ...] = (), timeout: float = 1.0) -> int | None:
    """A kubelet's httpGet probe: the HTTP status of GET path from `netns` (None: no answer)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = _socket_in(netns, family, socket.SOCK_STREAM)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: kube-probe/kovn",
             "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\n" not in head and (chunk := sock.recv(1024)):
            head += chunk
        parts = head.split(b"\n", 1)[0].split()
        return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
