"""One small HTTP server per process: `/metrics` (Prometheus), `/healthz`, `/readyz`.

One thread, one request at a time: a scrape renders a few hundred samples in milliseconds,
probes answer from memory, and a single thread can never pile up under a scraper that
misbehaves (a client that stalls is cut off after REQUEST_TIMEOUT). The probes are
callables that return None when all is well, else a one-line reason; the reason is the
503's body, so `curl host:port/readyz` says what is wrong, not just that something is.

    server = TelemetryServer(parse_address("0.0.0.0:9476"), registry, liveness, readiness)
    server.start()

`bind_in` lets a process listen in another network namespace than its own (the sandbox's
node agents live in node namespaces and listen on the machine's loopback): the listening
socket belongs to the namespace of the thread that created it, accepting works from any.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from telemetry.address import OFF, Address, TelemetryError

LOG = logging.getLogger(__name__)
REQUEST_TIMEOUT = 5.0
Check = Callable[[], str | None]
"""A probe: None when healthy (ready), else why not, in one line; a text starting with "ok"
is healthy with a remark (`ok: standby, the leader is elsewhere`), answered with 200."""


def process_registry() -> CollectorRegistry:
    """A registry of this process's own: CPU, memory, open fds, GC and Python version (the
    standard `process_*`, `python_*` series), to which a component adds its metrics. Not the
    library's global one, so two instances in one test process never share a counter."""
    # No `<counter>_created` series: they double what is scraped and nobody graphs them.
    disable_created_metrics()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class _Server(HTTPServer):
    """HTTPServer that knows IPv6 and whose owner answers the requests."""

    def __init__(self, address: Address, owner: TelemetryServer) -> None:
        self.owner = owner
        self.address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        super().__init__((address.host, address.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT  # applied to the connection: a stalled client is dropped
    server_version = "kovn-telemetry"

    def do_GET(self) -> None:
        owner: TelemetryServer = self.server.owner  # type: ignore[attr-defined]
        status, content_type, body = owner.respond(self.path, self.headers.get("Accept", ""))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s %s", self.address_string(), format % args)


class TelemetryServer:
    def __init__(self, address: Address, registry: CollectorRegistry, liveness: Check,
                 readiness: Check, what: str = "kovn",
                 bind_in: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness
        self.what = what
        self._thread: threading.Thread | None = None
        try:
            with bind_in() if bind_in is not None else contextlib.nullcontext():
                self._server = _Server(address, self)
        except OSError as exc:
            hint = (f"another process (another {what}?) listens there: choose another port "
                    f"with --metrics-address HOST:PORT, or --metrics-address {OFF}"
                    if exc.errno == errno.EADDRINUSE else
                    f"use an address of this host, or --metrics-address {OFF}")
            raise TelemetryError(f"cannot serve {what} metrics on {address}: "
                                 f"{exc.strerror or exc}; {hint}") from exc

    @property
    def address(self) -> Address:
        """Where it listens (the port the kernel chose for port 0)."""
        host, port = self._server.server_address[:2]
        return Address(str(host), int(port))

    def start(self) -> TelemetryServer:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.5},
                                        name="kovn-telemetry", daemon=True)
        self._thread.start()
        LOG.info("%s: /metrics, /healthz and /readyz on http://%s", self.what, self.address)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def respond(self, path: str, accept: str = "") -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path`."""
        route = path.split("?", 1)[0]
        if route == "/metrics":
            encode, content_type = choose_encoder(accept)
            try:
                return 200, content_type, encode(self.registry)
            except Exception as exc:  # a collector failed: say which, keep serving
                LOG.exception("rendering /metrics failed")
                return 500, "text/plain; charset=utf-8", f"collecting failed: {exc!r}\n".encode()
        if route in ("/healthz", "/livez"):
            return self._probe(self.liveness)
        if route == "/readyz":
            return self._probe(self.readiness)
        if route == "/":
            return 200, "text/plain; charset=utf-8", \
                f"{self.what}: /metrics /healthz /readyz\n".encode()
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz\n"

    @staticmethod
    def _probe(check: Check) -> tuple[int, str, bytes]:
        try:
            problem = check()
        except Exception as exc:
            problem = f"the check itself failed: {type(exc).__name__}: {exc}"
        if problem is None:
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if problem.startswith("ok"):  # healthy, with a remark ("ok: standby")
            return 200, "text/plain; charset=utf-8", f"{problem}\n".encode()
        return 503, "text/plain; charset=utf-8", f"{problem.splitlines()[0]}\n".encode()
