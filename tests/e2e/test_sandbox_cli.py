"""`kovn sandbox up|status|down` end to end, plus real packets between two sandbox nodes.

The CLI tests run the real command in a subprocess with their own state dir and netns prefix,
so they neither collide with a user's sandbox nor with the session sandbox of other tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.cluster import Sandbox, SandboxError
from sandbox.config import SandboxConfig
from sandbox.netns import root_routes, sandbox_netns
from sandbox.pods import PodSpec, add_pod, netns_exec, remove_pod, wait_ovn_installed
from tests.e2e.conftest import CLI_PREFIX, SESSION_PREFIX

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cli:
    """Runs `python -m cli.main sandbox ...` against one state dir."""

    state_dir: Path

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "cli.main", "sandbox", *args, "--state-dir",
                str(self.state_dir)]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)

    def up(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self("up", "--prefix", CLI_PREFIX, "--nb-tcp-port", "none", "--no-kube", *args)


def _blackholes() -> set[str]:
    return {r["dst"] for r in root_routes() if r.get("type") == "blackhole"}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """A CLI runner whose sandbox is always taken down, and which checks nothing is left."""
    runner = Cli(tmp_path / "state")
    try:
        yield runner
    finally:
        with contextlib.suppress(SandboxError):
            Sandbox(SandboxConfig(state_dir=runner.state_dir, prefix=CLI_PREFIX)).down()
    assert sandbox_netns(CLI_PREFIX) == []
    assert not runner.state_dir.exists()


def _assert_clean_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("kovn: "), result.stderr
    assert text in result.stderr


def test_up_status_down(cli: Cli) -> None:
    up = cli.up()
    assert up.returncode == 0, up.stderr
    assert "node2: netns kvc-node2, underlay 203.0.113.12, chassis registered" in up.stdout
    assert "sandbox up in" in up.stdout
    assert sorted(sandbox_netns(CLI_PREFIX)) == ["kvc-node1", "kvc-node2", "kvc-outside",
                                                 "kvc-underlay"]

    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["state"] == "up"
    assert len(data["daemons"]) == 3 + 2 * 3 + 1  # central, per node, the outside server
    assert all(d["alive"] and d["pid"] for d in data["daemons"])
    assert [n["name"] for n in data["nodes"]] == ["node1", "node2"]
    assert set(data["blackholes"]) <= _blackholes()

    human = cli("status")
    assert human.returncode == 0
    assert "node1/ovn-controller" in human.stdout and "running" in human.stdout
    assert "stopped" not in human.stdout

    again = cli.up()
    _assert_clean_error(again, f"already up in {cli.state_dir}")
    assert "kovn sandbox down" in again.stderr

    down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "deleted netns kvc-node1" in down.stdout
    assert sandbox_netns(CLI_PREFIX) == []
    assert not set(data["blackholes"]) & _blackholes()

    _assert_clean_error(cli("down"), f"nothing is up in {cli.state_dir}")
    gone = cli("status")
    assert gone.returncode == 1 and "nothing is up" in gone.stdout


def test_up_after_crash_cleans_leftovers(cli: Cli) -> None:
    assert cli.up("--nodes", "1").returncode == 0
    state = json.loads((cli.state_dir / "state.json").read_text())
    pids = [d["pid"] for d in state["daemons"]]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)

    crashed = json.loads(cli("status", "--json").stdout)
    assert crashed["state"] == "crashed"
    assert not any(d["alive"] for d in crashed["daemons"])

    again = cli.up("--nodes", "1")
    assert again.returncode == 0, again.stderr
    assert "leftover: deleted netns kvc-node1" in again.stdout
    assert json.loads(cli("status", "--json").stdout)["state"] == "up"
    assert cli("down").returncode == 0


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# Answers every connection with 1 MiB, HTTP/1.0 style.
HTTP_SERVER = """
import socket
srv = socket.create_server(("10.99.0.12", 8080))
body = bytes(range(256)) * 4096
while True:
    conn, _ = srv.accept()
    with conn:
        request = b""
        while b"\\r\\n\\r\\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
"""


def test_pods_on_two_nodes_talk_over_geneve(e2e_sandbox: Sandbox) -> None:
    nb = ["ovn-nbctl", f"--db={e2e_sandbox.nb_remote}"]
    specs = [
        PodSpec("smoke-a", "0a:58:0a:63:00:0b", "10.99.0.11/16", "10.99.0.1", "smoke-a"),
        PodSpec("smoke-b", "0a:58:0a:63:00:0c", "10.99.0.12/16", "10.99.0.1", "smoke-b"),
    ]
    subprocess.run([*nb, "ls-add", "smoke"], check=True)
    for spec in specs:
        addresses = f"{spec.mac} {spec.ip_cidr.split('/')[0]}"
        subprocess.run([*nb, "lsp-add", "smoke", spec.iface_id, "--", "lsp-set-addresses",
                        spec.iface_id, addresses], check=True)
    pods = []
    server = None
    try:
        for spec, node in zip(specs, e2e_sandbox.nodes, strict=True):
            pods.append(add_pod(e2e_sandbox, node, spec))
        for pod in pods:
            wait_ovn_installed(pod.node, pod.spec.iface_id)

        ping = netns_exec(pods[0].netns, ["ping", "-c2", "-W2", "10.99.0.12"])
        assert ping.returncode == 0, ping.stdout + ping.stderr

        # TCP with full-size segments: catches checksum offload and MTU mistakes.
        # (Not http.server: it resolves its own name, which hangs in a netns without DNS.)
        server = subprocess.Popen(
            ["ip", "netns", "exec", pods[1].netns, sys.executable, "-c", HTTP_SERVER],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        fetch = ["curl", "-sf", "-m5", "-o", "/dev/null", "-w", "%{size_download}",
                 "http://10.99.0.12:8080/blob"]
        deadline = time.monotonic() + 10
        while (got := netns_exec(pods[0].netns, fetch)).returncode != 0:
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        assert got.stdout == str(1 << 20)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for pod in pods:
            remove_pod(e2e_sandbox, pod)
        subprocess.run([*nb, "--if-exists", "ls-del", "smoke"], check=False)
    for pod in pods:
        remove_pod(e2e_sandbox, pod)  # idempotent
        assert pod.netns not in sandbox_netns(SESSION_PREFIX)
