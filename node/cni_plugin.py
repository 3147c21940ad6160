"""`kovn-cni`: the CNI plugin binary, a thin shim in front of the `kovn node` agent.

A container runtime runs it with CNI_* in the environment and the network config on stdin.
VERSION is answered here; every other command goes to the agent over its unix socket (config
field "socket", $KOVN_CNI_SOCKET, default /var/run/kovn/cni.sock), and the agent's result or
CNI error is printed on stdout. Errors exit 1. Imports only the standard library and
node.cni_protocol, so it starts fast.

One command is answered here without the agent: a DEL that finds the agent unreachable and
the pod's netns already gone succeeds (see `nothing_left_for_del`), because DEL must be
idempotent and there is then nothing only DEL could clean.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO, TextIO

from node.cni_protocol import (
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    CniError,
    CniRequest,
    Code,
    decode,
    encode,
    parse_request,
    response_error,
    version_result,
)

# The agent bounds ADD by its annotation and ovn-installed timeouts; wait a bit longer.
BASE_TIMEOUT = 120.0


class AgentUnreachable(CniError):
    """No agent listens on the socket: the request never reached it."""


def nothing_left_for_del(request: CniRequest) -> bool:
    """Whether a DEL may succeed without the agent: CNI_NETNS is empty or no longer exists.

    An attachment is the pod end of a veth (in the pod's netns), its host end (in the node's
    netns) and an OVS port on br-int. Once the pod's netns is gone the kernel has destroyed
    the veth pair, both ends; all that can be left is the OVS port, and `kovn node` removes
    such ports when it starts, before it serves the CNI (Attachments.reconcile: "its veth is
    gone", "its netns is gone"). So nothing is left that only DEL could clean, and the CNI
    spec wants DEL to succeed when the resources are already gone: a runtime must not retry
    a deletion for as long as the agent is down.

    While the netns still exists, the attachment is live: the pod is still plugged into
    br-int, and the netns may outlive this DEL (a runtime detaching one network of several,
    a netns pinned by a process). The start-up reconcile would then keep that port (veth,
    netns and pod all present), so succeeding would leak a working attachment: the error
    (11, try again later) stays, and the runtime retries until the agent is back.
    """
    return request.command == "DEL" and (not request.netns or
                                          not os.path.exists(request.netns))


def call_agent(request: CniRequest, path: str) -> dict[str, Any] | None:
    """Send the request to the agent at `path`; its result (None for no result) or CniError
    (AgentUnreachable if nothing listens there)."""
    timeout = BASE_TIMEOUT + (request.annotation_timeout or 0)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            code = Code.NOT_AVAILABLE if request.command == "STATUS" else Code.TRY_AGAIN_LATER
            raise AgentUnreachable(code, f"the kovn node agent is not reachable at {path} "
                           f"({exc.strerror or exc}): start `kovn node` on this node (it creates "
                           "the socket once it is ready), or point the network config's "
                           f'"socket" (or $KOVN_CNI_SOCKET) at its socket') from exc
        try:
            sock.sendall(encode(request.to_wire()))
            sock.shutdown(socket.SHUT_WR)
            data = _read_all(sock)
        except TimeoutError as exc:
            raise CniError(Code.TRY_AGAIN_LATER,
                           f"the kovn node agent at {path} did not answer {request.command} "
                           f"within {timeout:.0f}s") from exc
        except OSError as exc:
            raise CniError(Code.TRY_AGAIN_LATER,
                           f"lost the connection to the kovn node agent at {path}: {exc}") from exc
    finally:
        sock.close()
    try:
        response = decode(data)
    except ValueError as exc:
        raise CniError(Code.TRY_AGAIN_LATER,
                       f"the kovn node agent at {path} sent no valid answer (did it stop?): "
                       f"{exc}") from exc
    error = response_error(response)
    if error is not None:
        raise error
    return response.get("result")


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def run(env: Mapping[str, str], stdin: BinaryIO | None, stdout: TextIO, stderr: TextIO) -> int:
    data = b"" if stdin is None or stdin.isatty() else stdin.read()
    version = _config_version(data)
    try:
        request = parse_request(env, data)
        if request.command == "VERSION":
            result: dict[str, Any] | None = version_result(request.config.get("cniVersion"))
        else:
            try:
                result = call_agent(request, request.socket_path(env))
            except AgentUnreachable as error:
                if not nothing_left_for_del(request):
                    raise
                print(f"kovn-cni: DEL {request.container_id[:12]}: {error.msg}; the netns "
                      f"{request.netns or '(none given)'} is gone, so there is nothing to "
                      "delete: the agent removes stale OVS ports when it starts", file=stderr)
                result = None
    except CniError as error:
        print(json.dumps(error.to_json(version)), file=stdout)
        print(f"kovn-cni: {error.msg}", file=stderr)
        return 1
    if result is not None:
        print(json.dumps(result), file=stdout)
    return 0


def _config_version(data: bytes) -> str:
    """The cniVersion to answer errors in: the config's, if it names one we know."""
    try:
        version = json.loads(data).get("cniVersion")
    except (ValueError, AttributeError):
        return LATEST_VERSION
    return version if version in SUPPORTED_VERSIONS else LATEST_VERSION


def main() -> int:
    try:
        return run(os.environ, sys.stdin.buffer if sys.stdin else None, sys.stdout, sys.stderr)
    except Exception as exc:  # never a traceback instead of CNI JSON
        error = CniError(Code.INTERNAL, f"kovn-cni failed: {exc!r}")
        print(json.dumps(error.to_json()), file=sys.stdout)
        return 1


if __name__ == "__main__":
    sys.exit(main())
