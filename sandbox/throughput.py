"""TCP and UDP throughput between two network namespaces, with no external tools.

There is no iperf on these machines, and QoS is only proven by real packets, so this is the
smallest sender/receiver that measures what a rate limit lets through: a receiver thread in
netns B (it enters the netns only to create its socket, node.netns.in_netns, like
sandbox/probe.py) and a sender thread in netns A, both in this process.

What is measured: the bytes the RECEIVER got in a window of `seconds` starting at its first
byte, divided by the window. Counting at the receiver matters twice: for UDP the sender's
figure says nothing about what a meter dropped, and for TCP the send buffer (megabytes) would
keep draining at the limited rate long after the sender stopped writing. The sender writes
flat out (TCP: 64 KiB writes; UDP: datagrams of at most 1372 bytes, so a datagram fits the
pod MTU of 1400 unfragmented) until the receiver's window closes; UDP may be paced instead
(`rate_mbps`), because flat-out UDP on the userspace datapath is CPU-bound and can lose
packets for reasons no meter is responsible for.

    python -m sandbox.throughput --from kovn-pod-a --to kovn-pod-b --ip 10.16.0.7 [--udp]
        [--seconds 3] [--port 0] [--size 1372] [--rate MBPS] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass

from node.netns import in_netns

DEFAULT_SECONDS = 3.0
POD_MTU = 1400
MAX_DATAGRAM = POD_MTU - 20 - 8
"""The largest UDP payload that fits one IPv4 packet on a pod's interface (no fragments)."""
TCP_CHUNK = 64 * 1024
FIRST_BYTE_TIMEOUT = 5.0
"""How long the receiver waits for the first byte before it reports 0 (nothing got through)."""


@dataclass(frozen=True)
class Result:
    """One run. `mbps` is what the receiver measured (the figure to compare with a limit);
    `sent_mbps` is what the sender pushed over the same time, for reference."""

    proto: str
    seconds: float
    received_bytes: int
    mbps: float
    sent_bytes: int
    sent_mbps: float
    datagrams: int = 0  # UDP: datagrams received

    def line(self) -> str:
        extra = f", {self.datagrams} datagrams" if self.proto == "udp" else ""
        return (f"{self.proto}: {self.mbps:.2f} Mbit/s received over {self.seconds:.2f} s "
                f"({self.received_bytes} bytes{extra}; sender {self.sent_mbps:.2f} Mbit/s)")


def _socket_in(netns: str | None, kind: int) -> socket.socket:
    if netns is None:
        return socket.socket(socket.AF_INET, kind)
    with in_netns(netns):
        return socket.socket(socket.AF_INET, kind)


class _Receiver:
    """Counts bytes for `seconds` from the first one; `done` tells the sender to stop."""

    def __init__(self, netns: str | None, ip: str, port: int, udp: bool, seconds: float):
        self.udp, self.seconds = udp, seconds
        self.sock = _socket_in(netns, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # a bigger buffer loses fewer datagrams to us
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((ip, port))
        if not udp:
            self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.received = self.datagrams = 0
        self.window = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by measure(), never lost in the thread
            self.error = exc
        finally:
            self.done.set()
            self.sock.close()

    def _run(self) -> None:
        buf = bytearray(256 * 1024)
        self.sock.settimeout(FIRST_BYTE_TIMEOUT)
        conn = self.sock
        if not self.udp:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                return
        try:
            try:
                first = conn.recv_into(buf)
            except TimeoutError:
                return
            start = time.monotonic()
            end = start + self.seconds
            self.received, self.datagrams = first, 1
            while (left := end - time.monotonic()) > 0:
                conn.settimeout(left)
                try:
                    n = conn.recv_into(buf)
                except TimeoutError:
                    break
                if n == 0 and not self.udp:  # the sender closed early
                    break
                self.received += n
                self.datagrams += 1
            self.window = min(time.monotonic(), end) - start
        finally:
            if conn is not self.sock:
                conn.close()


def _send(netns: str | None, ip: str, port: int, udp: bool, stop: threading.Event,
          deadline: float, size: int, rate_mbps: float | None) -> int:
    """Write flat out (or paced, UDP) until `stop` or `deadline`; the bytes written."""
    sock = _socket_in(netns, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    sent = 0
    try:
        # A SYN lost on the userspace datapath (its first packet is an upcall) is sent again
        # after 1 s: the connect gets as long as the receiver waits, not the writes' 0.5 s.
        sock.settimeout(FIRST_BYTE_TIMEOUT)
        try:
            sock.connect((ip, port))
        except TimeoutError:  # nothing got through: the run measures 0
            return 0
        sock.settimeout(0.5)  # so a blocked write still notices `stop`
        payload = b"\x00" * (size if udp else TCP_CHUNK)
        interval = size * 8 / (rate_mbps * 1e6) if udp and rate_mbps else 0.0
        next_at = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                sent += sock.send(payload)
            except TimeoutError:
                continue
            except (ConnectionRefusedError, BrokenPipeError, ConnectionResetError):
                if not udp:  # the receiver closed: the run is over
                    break
                continue  # UDP: an ICMP error from an earlier datagram; keep going
            except OSError as exc:  # ENOBUFS: the datapath is full, keep trying
                if exc.errno != errno.ENOBUFS:
                    raise
            if interval:
                next_at += interval
                if (wait := next_at - time.monotonic()) > 0:
                    time.sleep(wait)
    finally:
        sock.close()
    return sent


def measure(from_netns: str | None, to_netns: str | None, ip: str, *, udp: bool = False,
            seconds: float = DEFAULT_SECONDS, port: int = 0, size: int = MAX_DATAGRAM,
            rate_mbps: float | None = None) -> Result:
    """Throughput from `from_netns` to `ip` (an address in `to_netns`) for `seconds`.

    `port` 0 takes a free one; `size` is the UDP datagram payload; `rate_mbps` paces UDP
    (None: flat out). A run where nothing arrives within FIRST_BYTE_TIMEOUT measures 0."""
    if udp and not 0 < size <= 65507:
        raise ValueError(f"UDP datagram size {size} is not 1..65507")
    receiver = _Receiver(to_netns, ip, port, udp, seconds)
    thread = threading.Thread(target=receiver.run, name="throughput-receiver", daemon=True)
    thread.start()
    started = time.monotonic()
    deadline = started + FIRST_BYTE_TIMEOUT + seconds
    sent = _send(from_netns, ip, receiver.port, udp, receiver.done, deadline, size, rate_mbps)
    elapsed = time.monotonic() - started
    thread.join(FIRST_BYTE_TIMEOUT + seconds + 5)
    if receiver.error is not None:
        raise receiver.error
    window = receiver.window or seconds
    return Result(
        proto="udp" if udp else "tcp", seconds=round(window, 3),
        received_bytes=receiver.received,
        mbps=round(receiver.received * 8 / window / 1e6, 3),
        sent_bytes=sent, sent_mbps=round(sent * 8 / max(elapsed, 1e-9) / 1e6, 3),
        datagrams=receiver.datagrams if udp else 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="src", required=True, help="sender's netns (ip netns name)")
    parser.add_argument("--to", dest="dst", required=True, help="receiver's netns")
    parser.add_argument("--ip", required=True, help="the receiver's address (in --to)")
    parser.add_argument("--udp", action="store_true", help="UDP instead of TCP")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--port", type=int, default=0, help="receiver's port (0: any free)")
    parser.add_argument("--size", type=int, default=MAX_DATAGRAM, help="UDP datagram bytes")
    parser.add_argument("--rate", type=float, default=None, help="pace UDP at MBPS")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = measure(args.src, args.dst, args.ip, udp=args.udp, seconds=args.seconds,
                         port=args.port, size=args.size, rate_mbps=args.rate)
    except OSError as exc:
        print(f"throughput: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(result)) if args.json else result.line())
    return 0 if result.received_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
