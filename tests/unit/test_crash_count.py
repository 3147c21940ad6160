"""sandbox.procs.crashes_logged: `kovn sandbox status` says when an OVS daemon aborted."""

from __future__ import annotations

from pathlib import Path

from sandbox.procs import Daemon, crashes_logged

ABORT = ("2026-12-01T14:31:15.877Z|00080|util|EMER|../lib/conntrack.c:1063: assertion "
         "conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state()\n")


def test_counts_the_aborts_of_ovs_daemons_only(tmp_path: Path) -> None:
    log = tmp_path / "vs.log"
    log.write_text("2026-12-01T14:30:00.000Z|00001|bridge|INFO|started\n" + ABORT * 2)
    vswitchd = Daemon("node1/ovs-vswitchd", "ovs-vswitchd", str(tmp_path / "vs.pid"), str(log))
    assert crashes_logged(vswitchd) == 2
    kubelet = Daemon("node1/kubelet", "python3", str(tmp_path / "k.pid"), str(log))
    assert crashes_logged(kubelet) == 0
    gone = Daemon("node2/ovs-vswitchd", "ovs-vswitchd", "x", str(tmp_path / "missing.log"))
    assert crashes_logged(gone) == 0
