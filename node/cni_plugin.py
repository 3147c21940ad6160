"""`kovn-cni-py`: the CNI plugin in Python, a thin shim in front of the `kovn node` agent.

`kovn-cni` itself is node/cni_shim.c compiled, which does the common case and hands this
everything else (VERSION, configs it does not read, an agent it cannot reach), with the same
environment and stdin; without a C compiler this is `kovn-cni` (node/cni_shim.py installs
either). A container runtime runs the plugin with CNI_* in the environment and the network
config on stdin, once per pod for ADD and once for DEL, so its start-up is on every pod's
path to Ready. It therefore does almost nothing itself: it forwards the raw CNI_*
environment and stdin to the agent over its unix socket (config field "socket",
$KOVN_CNI_SOCKET, default /var/run/kovn/cni.sock), where node.cni_protocol validates and
answers, and prints the agent's result or CNI error on stdout (errors exit 1).

Why it imports only C modules (`posix`, `_socket`, `_json`, all built into CPython): `json`,
`socket` and `os` would pull in `re`, `enum`, `selectors` and friends, ~20 ms of CPU per exec
before the first byte is sent, more than the whole ADD costs the agent. Started as
`python3 -I -S` (no site, no venv scan: `launcher` below writes such an executable) the
shim costs ~10 ms of CPU per exec. Only the rare paths import the full node.cni_protocol: a
VERSION query, an agent that is not reachable (a malformed invocation is then reported as
such rather than as "agent unreachable").

One command is answered here without the agent: a DEL that finds the agent unreachable and
the pod's netns already gone succeeds (see `nothing_left_for_del`), because DEL must be
idempotent and there is then nothing only DEL could clean.
"""

import _json
import _socket
import posix
import sys

# Mirrors of node.cni_protocol's constants (tests/unit/test_cni_shim.py keeps them equal).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
FORWARDED = ("ADD", "DEL", "CHECK", "STATUS", "GC")
DEFAULT_SOCKET = "/var/run/kovn/cni.sock"
SOCKET_ENV = "KOVN_CNI_SOCKET"
TRY_AGAIN_LATER, NOT_AVAILABLE, INTERNAL = 11, 50, 100
# The agent bounds ADD by its annotation and ovn-installed timeouts; wait a bit longer.
BASE_TIMEOUT = 120.0


class _Decoding:
    """What `_json.make_scanner` reads from a json.JSONDecoder, with the stdlib defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity
    memo: dict = {}


_scan = _json.make_scanner(_Decoding())
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)


def loads(text: str) -> object:
    """json.loads for one JSON document; ValueError if it is not exactly one."""
    text = text.strip()
    try:
        value, end = _scan(text, 0)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at position {exc.value}") from None
    except SystemError:
        # Malformed JSON: _json raises json.decoder.JSONDecodeError only once json.decoder is
        # imported (else a bare SystemError). A rare path: let json say what is wrong.
        import json
        return json.loads(text)
    if end != len(text):
        raise ValueError(f"extra data at position {end}")
    return value


def dumps(value: object) -> str:
    """json.dumps (compact separators aside) for the str/int/list/dict/None values here."""
    return "".join(_encode(value, 0))


class CniFailure(Exception):
    """A CNI error to print: the spec's code, msg and details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


class AgentUnreachable(CniFailure):
    """No agent listens on the socket: the request never reached it."""


def environ() -> dict:
    return {key.decode(errors="surrogateescape"): value.decode(errors="surrogateescape")
            for key, value in posix.environ.items()}


def netns_exists(path: str) -> bool:
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


def nothing_left_for_del(command: str, netns: str) -> bool:
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
    return command == "DEL" and (not netns or not netns_exists(netns))


def socket_path(env: dict, config: dict) -> str:
    """Where the agent listens: $KOVN_CNI_SOCKET, else config "socket", else the default."""
    configured = config.get("socket")
    return env.get(SOCKET_ENV) or (configured if isinstance(configured, str) and configured
                                   else DEFAULT_SOCKET)


def call_agent(env: dict, stdin: str, config: dict, path: str) -> object:
    """Forward the invocation to the agent at `path`; its result (None for no result), or
    CniFailure (AgentUnreachable if nothing listens there)."""
    command = env.get("CNI_COMMAND", "")
    extra = config.get("annotationTimeout")
    timeout = BASE_TIMEOUT + (extra if isinstance(extra, int | float) else 0)
    request = {"env": {k: v for k, v in env.items() if k.startswith("CNI_")}, "stdin": stdin}
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            code = NOT_AVAILABLE if command == "STATUS" else TRY_AGAIN_LATER
            raise AgentUnreachable(code, f"the kovn node agent is not reachable at {path} "
                                   f"({exc.strerror or exc}): start `kovn node` on this node "
                                   "(it creates the socket once it is ready), or point the "
                                   "network config's \"socket\" (or $KOVN_CNI_SOCKET) at its "
                                   "socket") from None
        try:
            sock.sendall((dumps(request) + "\n").encode())
            sock.shutdown(_socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            raise CniFailure(TRY_AGAIN_LATER, f"the kovn node agent at {path} did not answer "
                             f"{command} within {timeout:.0f}s") from None
        except OSError as exc:
            raise CniFailure(TRY_AGAIN_LATER, f"lost the connection to the kovn node agent at "
                             f"{path}: {exc}") from None
    finally:
        sock.close()
    try:
        response = loads(b"".join(chunks).decode())
        if not isinstance(response, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise CniFailure(TRY_AGAIN_LATER, f"the kovn node agent at {path} sent no valid "
                         f"answer (did it stop?): {exc}") from None
    if response.get("ok"):
        return response.get("result")
    error = response.get("error") or {}
    raise CniFailure(int(error.get("code", INTERNAL)), str(error.get("msg", "agent error")),
                     str(error.get("details", "")))


def full_protocol():  # -> the module (annotating it would import types)
    """node.cni_protocol, for the rare paths: importable from the shim's own checkout."""
    root = __file__.rsplit("/", 2)[0]
    if root not in sys.path:
        sys.path.append(root)
    from node import cni_protocol
    return cni_protocol


def run(env: dict, data: bytes, stdout, stderr) -> int:  # stdout, stderr: text files
    command = env.get("CNI_COMMAND", "")
    text = data.decode(errors="replace")
    try:
        config = loads(text) if text.strip() else None
    except ValueError:
        config = None
    version = config.get("cniVersion") if isinstance(config, dict) else None
    version = version if version in SUPPORTED_VERSIONS else LATEST_VERSION
    try:
        if command not in FORWARDED or not isinstance(config, dict):
            # VERSION, or an invocation the agent would refuse: say what is wrong here.
            protocol = full_protocol()
            request = protocol.parse_request(env, data)
            stdout.write(dumps(protocol.version_result(request.config.get("cniVersion")))
                         + "\n")
            return 0
        try:
            result = call_agent(env, text, config, socket_path(env, config))
        except AgentUnreachable as unreachable:
            full_protocol().parse_request(env, data)  # a malformed invocation says so first
            if not nothing_left_for_del(command, env.get("CNI_NETNS", "")):
                raise
            container = env.get("CNI_CONTAINERID", "")[:12]
            stderr.write(f"kovn-cni: DEL {container}: {unreachable.msg}; the netns "
                         f"{env.get('CNI_NETNS') or '(none given)'} is gone, so there is "
                         "nothing to delete: the agent removes stale OVS ports when it "
                         "starts\n")
            result = None
    except Exception as error:  # CniFailure, or node.cni_protocol.CniError: same fields
        if not hasattr(error, "code"):
            raise
        stdout.write(dumps({"cniVersion": version, "code": error.code, "msg": error.msg,
                            "details": error.details}) + "\n")
        stderr.write(f"kovn-cni: {error.msg}\n")
        return 1
    if result is not None:
        stdout.write(dumps(result) + "\n")
    return 0


def main() -> int:
    try:
        stdin = sys.stdin
        data = b"" if stdin is None or stdin.isatty() else stdin.buffer.read()
        return run(environ(), data, sys.stdout, sys.stderr)
    except Exception as exc:  # never a traceback instead of CNI JSON
        sys.stdout.write(dumps({"cniVersion": LATEST_VERSION, "code": INTERNAL,
                                "msg": f"kovn-cni failed: {exc!r}", "details": ""}) + "\n")
        return 1


def launcher(python: str, root: str) -> str:
    """The text of an executable `kovn-cni` that starts this shim without site or venv
    (`-I -S`: ~10 ms of CPU instead of ~65 ms for the pip console script)."""
    return (f"#!{python} -IS\n"
            "# kovn-cni, the CNI plugin (node/cni_plugin.py); written by kovn, do not edit.\n"
            f"import sys\nsys.path.append({root!r})\n"
            "from node.cni_plugin import main\nsys.exit(main())\n")


if __name__ == "__main__":
    sys.exit(main())
