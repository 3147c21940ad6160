"""NbConnection against a real 3-member NB raft cluster (sandbox/raft.py's servers in a temp
dir): it finds the leader, and a stream of transactions survives the leader's SIGKILL with
every row written exactly once, the failover logged and counted; a restarted member rejoins.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from northbound import names
from northbound.connection import NbConnection, NorthboundUnavailable
from northbound.reconciler import Reconciler
from northbound.remotes import split_remotes
from northbound.rows import LogicalSwitch, LogicalSwitchPort, NbRow, Owner
from sandbox import procs, raft

NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
SUBNET = names.OwnerType.SUBNET
POD = names.OwnerType.POD


@pytest.fixture
def nb_cluster(tmp_path: Path) -> Iterator[list[raft.Member]]:
    if shutil.which("ovsdb-server") is None:
        pytest.fail("ovsdb-server is missing: install openvswitch-switch (see README)")
    started: list[procs.Daemon] = []
    try:
        yield raft.start_cluster(tmp_path, "nb", NB_SCHEMA, started.append)
    finally:
        procs.stop_daemons([m.daemon() for m in raft.members(tmp_path, "nb")])


def test_the_cluster_forms_with_one_leader(nb_cluster: list[raft.Member]) -> None:
    statuses = [raft.member_status(m) for m in nb_cluster]
    assert all(s is not None and s.joined for s in statuses)
    assert sorted(s.role for s in statuses if s) == ["follower", "follower", "leader"]
    assert {len(s.servers) for s in statuses if s} == {3}
    leader = raft.find_leader(nb_cluster[0].state_dir, "nb")
    assert leader is not None and leader in nb_cluster


def _port(i: int) -> list[NbRow]:
    return [LogicalSwitchPort(owner=Owner(POD, f"default/p{i}"), name=f"default_p{i}",
                              switch="ovn-default",
                              addresses=(f"0a:58:0a:10:{i // 256:02x}:{i % 256:02x} "
                                         f"10.16.{i // 256}.{i % 256}",))]


def test_transactions_survive_the_leader_dying(nb_cluster: list[raft.Member],
                                               caplog: pytest.LogCaptureFixture) -> None:
    state_dir = nb_cluster[0].state_dir
    remote = raft.cluster_remote(state_dir, "nb")
    caplog.set_level(logging.INFO, logger="northbound.connection")
    count = 250
    with NbConnection(remote, timeout=30) as nb:
        reconciler = Reconciler(nb)
        reconciler.reconcile([LogicalSwitch(owner=Owner(SUBNET, "ovn-default"),
                                            name="ovn-default")],
                             owners={Owner(SUBNET, "ovn-default")})
        leader = raft.find_leader(state_dir, "nb")
        assert leader is not None
        written = threading.Event()

        def kill_once_writing() -> None:
            written.wait(10)
            pid = procs.live_pid(leader.daemon())
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_writing)
        killer.start()
        slowest = 0.0
        for i in range(count):
            if i == 50:
                written.set()
            started = time.monotonic()
            reconciler.reconcile(_port(i), owners={Owner(POD, f"default/p{i}")})
            slowest = max(slowest, time.monotonic() - started)
        killer.join()
        assert nb.failovers == 1
        # Read back through the connection (its replica follows the new leader).
        ports = [r.name for r in nb.tables["Logical_Switch_Port"].rows.values()]
    assert sorted(ports) == sorted(f"default_p{i}" for i in range(count))
    new_leader = raft.find_leader(state_dir, "nb")
    assert new_leader is not None and new_leader != leader
    # One transaction waited for the election (~1-3 s), none failed.
    assert 0.5 < slowest < 20
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"NB: lost {leader.remote}") for m in messages), messages
    assert any(m.startswith(f"NB failover: now on {new_leader.remote} (the raft leader)")
               for m in messages), messages

    # The killed member, started again, rejoins and catches up from the leader.
    raft.restart(state_dir, leader.name)
    raft.wait_joined(nb_cluster)
    status = raft.member_status(leader)
    assert status is not None and status.joined and status.role == "follower"
    assert len(split_remotes(remote)) == 3


def test_a_follower_dying_goes_unnoticed(nb_cluster: list[raft.Member]) -> None:
    state_dir = nb_cluster[0].state_dir
    with NbConnection(raft.cluster_remote(state_dir, "nb"), timeout=30) as nb:
        leader = raft.find_leader(state_dir, "nb")
        follower = next(m for m in nb_cluster if m != leader)
        procs.stop_daemons([follower.daemon()])
        owner = Owner(SUBNET, "s1")
        Reconciler(nb).reconcile([LogicalSwitch(owner=owner, name="s1")], owners={owner})
        assert nb.failovers == 0


def test_without_quorum_nb_is_unavailable_until_a_member_returns(
        nb_cluster: list[raft.Member]) -> None:
    state_dir = nb_cluster[0].state_dir
    with NbConnection(raft.cluster_remote(state_dir, "nb"), timeout=4) as nb:
        reconciler = Reconciler(nb)
        leader = raft.find_leader(state_dir, "nb")
        follower = next(m for m in nb_cluster if m != leader)
        procs.stop_daemons([leader.daemon(), follower.daemon()])  # one of three left
        owner = Owner(SUBNET, "s1")
        with pytest.raises(NorthboundUnavailable, match="majority of its members"):
            reconciler.reconcile([LogicalSwitch(owner=owner, name="s1")], owners={owner})
        raft.restart(state_dir, follower.name)  # two of three: a leader again
        raft.wait_joined([m for m in nb_cluster if m != leader])
        time.sleep(4)  # the timed-out transaction leaves the connection thread (ovsdbapp)
        reconciler.reconcile([LogicalSwitch(owner=owner, name="s1")], owners={owner})
        assert [r.name for r in nb.tables["Logical_Switch"].rows.values()] == ["s1"]
