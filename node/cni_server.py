"""The agent's end of the CNI: a unix socket, one request per connection, a thread each.

The shim writes one JSON request and closes its write side; the server answers with one JSON
response (a result or a CNI error) and closes, or, when the request says `"reply": "printed"`
(the compiled shim, node/cni_shim.c), with exactly what kovn-cni prints
(node.cni_protocol.printed). The socket file appears only once the server
listens (bound under a temporary name, then renamed), so its existence means "ready"; on
stop it is removed, and only if it is still ours.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.cni_protocol import (
    CniError,
    CniRequest,
    Code,
    decode,
    encode,
    error_response,
    ok_response,
    printed,
)

LOG = logging.getLogger(__name__)
MAX_REQUEST = 1 << 20  # a network config with a big prevResult is still far below this

Handler = Callable[[CniRequest], dict[str, Any] | None]
Observer = Callable[[str, int, float], None]
"""Told of every request answered: (command, CNI error code or 0, seconds)."""


class ServerError(RuntimeError):
    pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per connection: an ADD mostly waits (for the controller's annotation, for
    ovn-controller), so hundreds may be in flight at once during a rollout."""

    daemon_threads = True
    allow_reuse_address = False
    # socketserver's default backlog is 5: a burst of runtimes connecting at once would find
    # it full, and a shim's connect() then fails at once (EAGAIN on a unix socket). The
    # kernel caps this at net.core.somaxconn (4096 by default since Linux 5.4).
    request_queue_size = 1024

    def __init__(self, path: str, owner: CniServer) -> None:
        self.owner = owner
        super().__init__(path, _RequestHandler, bind_and_activate=True)


class _RequestHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        server.owner.serve_connection(self.request)


class CniServer:
    def __init__(self, path: str, handler: Handler, observe: Observer | None = None) -> None:
        self.path = path
        self.handler = handler
        self.observe = observe
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._inode: int | None = None
        self._busy = 0
        self._idle = threading.Condition()

    def start(self) -> CniServer:
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if _someone_listens(self.path):
                raise ServerError(f"another agent already serves CNI on {self.path}; stop it "
                                  "first, or give this one another --socket")
            target.unlink()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        Path(tmp).unlink(missing_ok=True)
        self._server = _Server(tmp, self)
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.path)
        self._inode = os.stat(self.path).st_ino
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="kovn-cni-server",
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def serving(self) -> bool:
        """Started, not stopped, and its thread alive."""
        return self._server is not None and self._thread is not None and \
            self._thread.is_alive()

    @property
    def busy(self) -> int:
        """Requests being answered right now."""
        return self._busy

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let running requests finish (up to `grace` s), remove the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        deadline = time.monotonic() + grace
        with self._idle:
            while self._busy and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            if self._busy:
                LOG.warning("stopping with %d CNI request(s) still running", self._busy)
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._server = None

    def serve_connection(self, conn: socket.socket) -> None:
        with self._idle:
            self._busy += 1
        try:
            conn.settimeout(10)
            try:
                data = _read_request(conn)
            except (OSError, ServerError) as exc:
                LOG.warning("dropped a CNI connection: %s", exc)
                return
            try:
                message: dict[str, Any] | ValueError = decode(data)
            except ValueError as exc:
                message = exc
            response = self._respond(message)
            if isinstance(message, dict) and message.get("reply") == "printed":
                wire = printed(response, message)
            else:
                wire = encode(response)
            conn.settimeout(10)
            try:
                conn.sendall(wire)
            except OSError as exc:  # the runtime gave up waiting: nothing more to do
                LOG.warning("could not send the CNI answer: %s", exc)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _respond(self, message: dict[str, Any] | ValueError) -> dict[str, Any]:
        started = time.monotonic()
        request: CniRequest | None = None
        code = 0
        try:
            if isinstance(message, ValueError):
                raise CniError(Code.DECODE_FAILED, f"malformed request: {message}")
            request = CniRequest.from_wire(message)
            return ok_response(self.handler(request))
        except CniError as error:
            code = error.code
            what = f"{request.command} {request.container_id[:12]}" if request else "request"
            LOG.warning("%s failed (code %d): %s", what, error.code, error.msg)
            return error_response(error)
        except Exception as exc:
            code = Code.INTERNAL
            LOG.exception("%s failed", request.command if request else "request")
            return error_response(CniError(Code.INTERNAL, f"kovn node agent error: {exc!r}"))
        finally:
            if self.observe is not None:
                self.observe(request.command if request else "", int(code),
                             time.monotonic() - started)


def _read_request(conn: socket.socket) -> bytes:
    chunks, size = [], 0
    while chunk := conn.recv(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST:
            raise ServerError(f"request larger than {MAX_REQUEST} bytes")
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def _someone_listens(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
