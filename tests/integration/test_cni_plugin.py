"""The real `kovn-cni` binary, run the way a container runtime runs it: CNI_* env + stdin.

Without an agent (errors a runtime must be able to act on), and against the agent's real
socket server with a stand-in handler (the shim <-> agent round trip).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cni_plugin import launcher
from node.cni_protocol import CniError, CniRequest, Code
from node.cni_server import CniServer, ServerError
from node.cni_shim import FALLBACK, PLUGIN, SOURCE, install

REPO = Path(__file__).resolve().parents[2]
CONF = {"cniVersion": "1.0.0", "name": "kovn", "type": "kovn-cni"}
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_UID=u-1"


SHIMS = ("compiled", "python")
_shim = {"which": "compiled"}


@pytest.fixture(autouse=True, params=SHIMS)
def shim(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs against both: the compiled kovn-cni (node/cni_shim.c, which hands the
    rare cases to the Python shim beside it) and the Python shim alone."""
    _shim["which"] = request.param
    yield request.param


def plugin_binary() -> str:
    """This checkout's kovn-cni as the sandbox installs it (node.cni_shim.install): the
    compiled shim, or (the `shim` parameter) kovn-cni-py, the Python shim it falls back to."""
    key = SOURCE.read_bytes() + launcher(os.path.realpath(sys.executable), str(REPO)).encode()
    directory = Path(tempfile.gettempdir()) / f"kovn-cni-test-{hashlib.sha1(key).hexdigest()[:12]}"
    if not (directory / FALLBACK).exists():  # one per checkout and interpreter
        problem = install(directory, os.path.realpath(sys.executable), directory / "cache")
        assert problem is None, f"the compiled kovn-cni could not be built: {problem}"
    return str(directory / (PLUGIN if _shim["which"] == "compiled" else FALLBACK))


def cni(command: str | None, stdin: bytes | str | dict[str, Any], **env: str
        ) -> tuple[int, dict[str, Any] | None, str]:
    """Run kovn-cni; (exit code, parsed stdout or None if empty, stderr)."""
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": "/opt/cni/bin", **env}
    if command is not None:
        full["CNI_COMMAND"] = command
    data = json.dumps(stdin).encode() if isinstance(stdin, dict) else (
        stdin.encode() if isinstance(stdin, str) else stdin)
    proc = subprocess.run([plugin_binary()], input=data, env=full, capture_output=True,
                          timeout=30, check=False)
    out = proc.stdout.decode().strip()
    return proc.returncode, json.loads(out) if out else None, proc.stderr.decode()


def add_env(**extra: str) -> dict[str, str]:
    return {"CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/var/run/netns/p", "CNI_IFNAME": "eth0",
            "CNI_ARGS": POD_ARGS, **extra}


def assert_error(rc: int, out: dict[str, Any] | None, code: int, *words: str) -> None:
    assert rc != 0
    assert out is not None and set(out) == {"cniVersion", "code", "msg", "details"}, out
    assert out["code"] == code, out
    for word in words:
        assert word in out["msg"], out["msg"]


def test_version() -> None:
    rc, out, _ = cni("VERSION", {"cniVersion": "1.0.0"})
    assert rc == 0
    assert out == {"cniVersion": "1.0.0",
                   "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    rc, out, _ = cni("VERSION", b"")
    assert rc == 0 and out is not None and out["cniVersion"] == "1.1.0"


def test_malformed_config() -> None:
    assert_error(*cni("ADD", b"{this is not json", **add_env())[:2], Code.DECODE_FAILED,
                 "not JSON")
    assert_error(*cni("ADD", b"", **add_env())[:2], Code.DECODE_FAILED, "stdin")
    assert_error(*cni("ADD", {"cniVersion": "1.0.0", "type": "kovn-cni"}, **add_env())[:2],
                 Code.INVALID_CONFIG, "name")
    assert_error(*cni("ADD", {**CONF, "annotationTimeout": "x"}, **add_env())[:2],
                 Code.INVALID_CONFIG, "annotationTimeout")


def test_missing_env() -> None:
    rc, out, err = cni(None, CONF, **add_env())
    assert_error(rc, out, Code.INVALID_ENVIRONMENT, "CNI_COMMAND is not set")
    assert "CNI_COMMAND" in err  # also said on stderr, for the runtime's log
    env = add_env()
    del env["CNI_CONTAINERID"]
    assert_error(*cni("ADD", CONF, **env)[:2], Code.INVALID_ENVIRONMENT, "CNI_CONTAINERID")
    assert_error(*cni("ADD", CONF, **add_env(CNI_ARGS=""))[:2], Code.INVALID_ENVIRONMENT,
                 "K8S_POD_NAMESPACE")


def test_unknown_command() -> None:
    assert_error(*cni("FROBNICATE", CONF, **add_env())[:2], Code.INVALID_ENVIRONMENT,
                 "unknown CNI_COMMAND", "FROBNICATE")


def test_unsupported_version() -> None:
    rc, out, _ = cni("ADD", {**CONF, "cniVersion": "0.2.0"}, **add_env())
    assert_error(rc, out, Code.INCOMPATIBLE_VERSION, "0.2.0", "1.1.0")
    assert_error(*cni("STATUS", CONF)[:2], Code.INCOMPATIBLE_VERSION, "1.1.0")


def test_agent_missing(tmp_path: Path) -> None:
    sock = str(tmp_path / "nobody.sock")
    rc, out, _ = cni("ADD", {**CONF, "socket": sock}, **add_env())
    assert_error(rc, out, Code.TRY_AGAIN_LATER, sock, "start `kovn node`")
    rc, out, _ = cni("STATUS", {**CONF, "cniVersion": "1.1.0", "socket": sock})
    assert_error(rc, out, Code.NOT_AVAILABLE, "start `kovn node`")
    # $KOVN_CNI_SOCKET wins over the config (a DEL whose netns still exists: see below)
    rc, out, _ = cni("DEL", {**CONF, "socket": "/elsewhere"},
                     **add_env(KOVN_CNI_SOCKET=sock, CNI_NETNS=str(tmp_path)))
    assert_error(rc, out, Code.TRY_AGAIN_LATER, sock)


# --- against the agent's socket server -------------------------------------------------------


class StandIn:
    """Records requests; ADD answers a fixed result, container id "fail" a CNI error."""

    def __init__(self) -> None:
        self.requests: list[CniRequest] = []
        self.lock = threading.Lock()

    def __call__(self, request: CniRequest) -> dict[str, Any] | None:
        with self.lock:
            self.requests.append(request)
        if request.container_id == "fail":
            raise CniError(Code.TRY_AGAIN_LATER, "no annotation yet", "pod ns/web")
        if request.container_id == "crash":
            raise ZeroDivisionError("boom")
        if request.command == "ADD":
            return {"cniVersion": request.cni_version, "interfaces": [], "ips": [],
                    "routes": [], "dns": {}}
        return None


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, StandIn]]:
    handler = StandIn()
    path = str(tmp_path / "run" / "cni.sock")
    server = CniServer(path, handler).start()
    try:
        yield path, handler
    finally:
        server.stop()
    assert not Path(path).exists(), "stop() removes the socket"


def test_round_trip(agent: tuple[str, StandIn]) -> None:
    path, handler = agent
    rc, out, _ = cni("ADD", {**CONF, "socket": path, "annotationTimeout": 3}, **add_env())
    assert rc == 0 and out is not None and out["cniVersion"] == "1.0.0"
    (req,) = handler.requests
    assert (req.command, req.container_id, req.netns, req.ifname) == (
        "ADD", "c0ffee", "/var/run/netns/p", "eth0")
    assert (req.pod_namespace, req.pod_name, req.pod_uid, req.annotation_timeout) == (
        "ns", "web", "u-1", 3.0)
    rc, out, _ = cni("DEL", {**CONF, "socket": path}, **add_env(CNI_NETNS=""))
    assert (rc, out) == (0, None)
    rc, out, _ = cni("STATUS", {**CONF, "cniVersion": "1.1.0", "socket": path})
    assert (rc, out) == (0, None)


def test_agent_errors_pass_through(agent: tuple[str, StandIn]) -> None:
    path, _ = agent
    rc, out, _ = cni("ADD", {**CONF, "socket": path}, **add_env(CNI_CONTAINERID="fail"))
    assert_error(rc, out, Code.TRY_AGAIN_LATER, "no annotation yet")
    assert out is not None and out["details"] == "pod ns/web"
    rc, out, _ = cni("ADD", {**CONF, "socket": path}, **add_env(CNI_CONTAINERID="crash"))
    assert_error(rc, out, Code.INTERNAL, "boom")


def test_what_the_compiled_shim_hands_to_the_python_one(agent: tuple[str, StandIn]) -> None:
    """Configs the compiled shim does not read itself reach the agent all the same (through
    kovn-cni-py, with the same stdin), and say the same things."""
    path, handler = agent
    escaped = json.dumps({**CONF, "socket": path}).replace("/", "\\/")  # "socket" escaped
    rc, out, _ = cni("ADD", escaped, **add_env(CNI_CONTAINERID="escaped"))
    assert rc == 0 and out is not None and out["cniVersion"] == "1.0.0"
    accented = {**CONF, "socket": path, "name": "kovn-réseau"}  # non-ASCII: sent as \u00e9
    rc, out, _ = cni("ADD", accented, **add_env(CNI_CONTAINERID="accented"))
    assert rc == 0, out
    nested = {**CONF, "socket": path, "args": {"cni": {"x": [1, {"socket": "/not/this"}]}}}
    rc, out, _ = cni("ADD", nested, **add_env(CNI_CONTAINERID="nested"))
    assert rc == 0, out
    assert [r.container_id for r in handler.requests] == ["escaped", "accented", "nested"]
    assert handler.requests[1].config["name"] == "kovn-réseau"
    assert_error(*cni("ADD", b'[1, 2]', **add_env())[:2], Code.INVALID_CONFIG)
    assert_error(*cni("ADD", b'{"cniVersion": "1.0.0"} trailing', **add_env())[:2],
                 Code.DECODE_FAILED)


def test_errors_are_printed_in_the_configs_version(agent: tuple[str, StandIn]) -> None:
    path, _ = agent
    rc, out, err = cni("ADD", {**CONF, "cniVersion": "0.4.0", "socket": path},
                       **add_env(CNI_CONTAINERID="fail"))
    assert_error(rc, out, Code.TRY_AGAIN_LATER, "no annotation yet")
    assert out is not None and out["cniVersion"] == "0.4.0"
    assert "kovn-cni: no annotation yet" in err


def test_parallel_requests(agent: tuple[str, StandIn]) -> None:
    path, handler = agent
    results: list[int] = []

    def one(i: int) -> None:
        rc, _, _ = cni("ADD", {**CONF, "socket": path}, **add_env(CNI_CONTAINERID=f"c{i}"))
        results.append(rc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * 6
    assert sorted(r.container_id for r in handler.requests) == [f"c{i}" for i in range(6)]


def test_second_agent_refused(agent: tuple[str, StandIn]) -> None:
    path, _ = agent
    with pytest.raises(ServerError, match="another agent"):
        CniServer(path, StandIn()).start()


def test_stale_socket_replaced(tmp_path: Path) -> None:
    path = tmp_path / "cni.sock"
    path.write_text("left by a killed agent")
    server = CniServer(str(path), StandIn()).start()
    try:
        rc, _, _ = cni("DEL", {**CONF, "socket": str(path)}, **add_env())
        assert rc == 0
    finally:
        server.stop()


def test_burst_of_300_connections_is_never_refused(tmp_path: Path) -> None:
    """300 runtimes connecting at once, as the shim does (a socket with a timeout, so a full
    backlog would fail connect() at once with EAGAIN): every one gets its answer."""
    slow = threading.Event()

    def handler(request: CniRequest) -> dict[str, Any] | None:
        slow.wait(0.2)  # the agent is busy: connections pile up in the backlog
        return None

    path = str(tmp_path / "cni.sock")
    server = CniServer(path, handler).start()
    request = json.dumps({"env": {**add_env(), "CNI_COMMAND": "DEL"},
                          "stdin": json.dumps(CONF)}).encode() + b"\n"
    answers: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(300)

    def one() -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            start.wait()
            sock.connect(path)
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(65536).decode()
        except OSError as exc:
            answer = f"refused: {exc}"
        finally:
            sock.close()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one) for _ in range(300)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        server.stop()
    refused = [a for a in answers if not a.startswith('{"ok":true')]
    assert len(answers) == 300 and not refused, refused[:3]
