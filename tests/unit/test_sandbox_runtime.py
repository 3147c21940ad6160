"""The sandbox kubelet's building blocks that need no root: the runtime side of CNI, the
work queue, readiness thresholds and the in-process hostname servers (loopback sockets)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from sandbox import cni
from sandbox.kubelet import ProbeState, retry_delay
from sandbox.podstatus import Probe
from sandbox.probe import http_get, probe, tcp_open
from sandbox.serve_hostname import HostnameServers, listen, reply_for
from sandbox.workqueue import Timer, WorkQueue


def test_conflist_gives_the_first_plugin_with_name_and_version(tmp_path: Path) -> None:
    path = tmp_path / "10-kovn.conflist"
    path.write_text(json.dumps({"cniVersion": "1.1.0", "name": "kovn", "plugins": [
        {"type": "kovn-cni", "socket": "/s", "name": "ignored"}, {"type": "portmap"}]}))
    assert cni.load_conf(path) == {"type": "kovn-cni", "socket": "/s", "name": "kovn",
                                   "cniVersion": "1.1.0"}
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "x"}))
    assert cni.load_conf(path)["type"] == "x"  # a plain .conf
    for bad in ("{", json.dumps({"name": "n", "plugins": []})):
        path.write_text(bad)
        with pytest.raises(cni.CniError) as info:
            cni.load_conf(path)
        assert info.value.code == cni.INVALID_NETWORK_CONFIG


def test_env_is_what_a_runtime_sets() -> None:
    call = cni.CniCall(container_id="c1", netns_path="/var/run/netns/p", ifname="eth0",
                       namespace="demo", pod="web", pod_uid="u1")
    assert call.env("ADD", Path("/opt/cni/bin")) == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/p",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;"
                    "K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1"}


def _plugin(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "plug"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


CALL = cni.CniCall("c", "/var/run/netns/x", "eth0", "ns", "p", "u")


def test_invoke_results_and_errors(tmp_path: Path) -> None:
    conf = {"type": "plug", "cniVersion": "1.1.0", "name": "n"}
    _plugin(tmp_path, 'cat >/dev/null; echo \'{"ips": [{"address": "10.16.0.5/16"}]}\'')
    result = cni.invoke("ADD", CALL, conf, tmp_path, None)
    assert cni.result_ips(result) == ["10.16.0.5"]
    _plugin(tmp_path, 'echo \'{"code": 11, "msg": "later", "details": "d"}\'; exit 1')
    with pytest.raises(cni.CniError) as info:
        cni.invoke("ADD", CALL, conf, tmp_path, None)
    assert (info.value.code, info.value.msg, info.value.retry_soon) == (11, "later", True)
    _plugin(tmp_path, "echo boom >&2; exit 3")
    with pytest.raises(cni.CniError, match=r"exited with 3 \(boom\)"):
        cni.invoke("ADD", CALL, conf, tmp_path, None)
    with pytest.raises(cni.CniError, match="not found"):
        cni.invoke("ADD", CALL, {**conf, "type": "missing"}, tmp_path, None)
    _plugin(tmp_path, "echo not-json")
    with pytest.raises(cni.CniError, match="no JSON"):
        cni.invoke("ADD", CALL, conf, tmp_path, None)


def test_retry_backoff() -> None:
    later, broken = cni.CniError(11, "later"), cni.CniError(7, "bad")
    assert [retry_delay(later, n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert retry_delay(later, 20) == 5.0
    assert retry_delay(broken, 1) == 1.0 and retry_delay(broken, 20) == 30.0


def test_probe_thresholds() -> None:
    state = ProbeState(Probe(container="c", kind="tcp", success_threshold=2,
                             failure_threshold=2))
    assert [state.record(ok) for ok in (True, True, False, True, False, False)] == [
        False, True, False, False, False, True]
    assert state.ready is False


def test_work_queue_runs_a_key_once_at_a_time_and_again_if_added_meanwhile() -> None:
    seen: list[str] = []
    running = threading.Event()
    release = threading.Event()

    def handler(key: object) -> None:
        seen.append(str(key))
        if len(seen) == 1:
            running.set()
            release.wait(5)

    queue = WorkQueue(handler, 4, Timer())
    queue.add("a")
    assert running.wait(5)
    queue.add("a")
    queue.add("a")  # coalesced with the previous add
    release.set()
    deadline = time.monotonic() + 5
    while queue.busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["a", "a"]
    queue.add_after("b", 0.05)
    deadline = time.monotonic() + 5
    while "b" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == ["a", "a", "b"]


def test_hostname_servers_answer_tcp_udp_and_http_from_one_thread() -> None:
    servers = HostnameServers().start()
    tcp = listen(0, "TCP", "127.0.0.1")
    udp = listen(0, "UDP", "127.0.0.1")
    servers.add("pod-a", "web-1", [tcp, udp])
    tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
    silent = socket.create_connection(("127.0.0.1", tcp_port))  # sends nothing, waits
    try:
        assert probe(None, "127.0.0.1", udp_port, "udp") == "web-1 127.0.0.1"
        assert http_get(None, "127.0.0.1", tcp_port, "/x") == 200
        assert probe(None, "127.0.0.1", tcp_port) == "web-1 127.0.0.1"
        silent.settimeout(2)
        assert silent.recv(100) == b"web-1 127.0.0.1\n"
    finally:
        silent.close()
    assert servers.owners() == {"pod-a"}
    servers.remove("pod-a")
    assert not tcp_open(None, "127.0.0.1", tcp_port, 0.5)
    assert reply_for("n", "1.2.3.4", b"HEAD / HTTP/1.0").endswith(b"\r\n\r\n")
