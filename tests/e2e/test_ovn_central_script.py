"""manifests/ovn-central/raft-db.sh with real ovsdb-servers: the three members of the
StatefulSet form the NB and SB raft clusters (member 0 creates, the others join through the
other members' addresses), any member serves writes, and a restarted member comes back from
its database file as the same server.

Each member runs the script as its container would, with POD_NAME / POD_IP /
OVN_CENTRAL_IPS, in a network namespace of its own making (loopback addresses 127.0.0.11-13
stand in for the three nodes' InternalIPs), so nothing touches the machine's ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.controlplane import eventually

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "manifests" / "ovn-central" / "raft-db.sh"
NETNS = "kvmanifest-raft"  # not a sandbox prefix: no sandbox cleans it up
IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
DATABASES = {"nb": ("OVN_Northbound", 6641), "sb": ("OVN_Southbound", 6642)}


class Members:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[tuple[int, str], subprocess.Popen[bytes]] = {}

    def start(self, ordinal: int, db: str) -> None:
        env = {**os.environ, "POD_NAME": f"ovn-central-{ordinal}", "POD_IP": IPS[ordinal],
               "OVN_CENTRAL_IPS": " ".join(IPS), "OVN_DB_DIR": str(self.dir(ordinal)),
               "OVN_RUNDIR": str(self.dir(ordinal))}
        log = (self.dir(ordinal) / f"{db}.log").open("ab")
        self.procs[ordinal, db] = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, "sh", str(SCRIPT), db], env=env, stdout=log,
            stderr=subprocess.STDOUT)

    def dir(self, ordinal: int) -> Path:
        path = self.root / f"m{ordinal}"
        path.mkdir(exist_ok=True)
        return path

    def stop(self, ordinal: int, db: str) -> None:
        proc = self.procs.pop((ordinal, db))
        proc.send_signal(signal.SIGTERM)  # exec'd: this is ovsdb-server itself
        proc.wait(timeout=10)

    def status(self, ordinal: int, db: str) -> str:
        ctl = self.dir(ordinal) / f"ovn{db}_db.ctl"
        return subprocess.run(["ovs-appctl", "-t", str(ctl), "cluster/status",
                               DATABASES[db][0]], capture_output=True, text=True,
                              check=False).stdout


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Members]:
    subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
    for ip in IPS:
        subprocess.run(["ip", "-n", NETNS, "addr", "add", f"{ip}/8", "dev", "lo"], check=True)
    running = Members(tmp_path)
    try:
        yield running
    finally:
        for key in list(running.procs):
            with contextlib.suppress(Exception):
                running.stop(*key)
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


def nbctl(remote: str, *args: str, check: bool = True) -> str:
    """ovn-nbctl in the members' netns; with check=False "" when it fails (a member that is
    catching up refuses reads)."""
    result = subprocess.run(["ip", "netns", "exec", NETNS, "ovn-nbctl", f"--db={remote}",
                             "--timeout=10", *args], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        assert not check, f"ovn-nbctl {' '.join(args)}: {result.stderr}"
        return ""
    return result.stdout


def server(status: str) -> str:
    return next(line for line in status.splitlines() if line.startswith("Server ID:"))


def test_three_members_form_both_raft_clusters_and_survive_a_restart(members: Members) -> None:
    for ordinal in range(3):
        for db in DATABASES:
            members.start(ordinal, db)
    for db in DATABASES:
        for ordinal in range(3):
            eventually(lambda o=ordinal, d=db: "Status: cluster member" in members.status(o, d),
                       30, f"member {ordinal} of {db} in the cluster")
        status = members.status(0, db)
        assert all(f"tcp:{ip}:{6643 if db == 'nb' else 6644}" in status for ip in IPS), status
    every = ",".join(f"tcp:{ip}:6641" for ip in IPS)
    nbctl(every, "ls-add", "before-restart")
    server_id = server(members.status(2, "nb"))
    members.stop(2, "nb")
    nbctl(every, "ls-add", "while-one-is-down")  # two of three: still a quorum
    members.start(2, "nb")
    eventually(lambda: "Status: cluster member" in members.status(2, "nb"), 30,
               "member 2 back in the NB cluster")
    assert server(members.status(2, "nb")) == server_id  # the same member, not a new one
    listed = eventually(lambda: "while-one-is-down" in (out := nbctl(
        f"tcp:{IPS[2]}:6641", "--no-leader-only", "ls-list", check=False)) and out, 30,
        "the restarted member caught up")
    assert "before-restart" in listed
    log = (members.dir(2) / "nb.log").read_text()
    assert log.count("joining the OVN_Northbound cluster") == 1  # the restart only served
