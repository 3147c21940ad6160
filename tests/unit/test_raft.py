"""The pure parts of OVN raft HA: remote lists, member names and files, the sandbox's HA
config and remotes, and reading `ovs-appctl cluster/status`."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import build_parser
from cli.remotes import sandbox_default
from northbound.remotes import check_remote, join_remotes, split_remotes
from sandbox import central, raft
from sandbox.cli import format_status
from sandbox.config import SandboxConfig

# `ovs-appctl -t nb1.ctl cluster/status OVN_Northbound` of OVS 3.1, as seen in the sandbox.
LEADER_STATUS = """\
7ebc
Name: OVN_Northbound
Cluster ID: 8c9c (8c9c94ce-8bd6-45db-83b0-451f6f3098b3)
Server ID: 7ebc (7ebcfe17-a7e2-483a-921b-56d36356cfba)
Address: tcp:127.0.0.1:38377
Status: cluster member
Role: leader
Term: 1
Leader: self
Vote: self

Last Election started 163 ms ago, reason: timeout
Last Election won: 163 ms ago
Election timer: 1000
Log: [2, 5]
Entries not yet committed: 0
Entries not yet applied: 0
Connections: <-f57f ->f57f <-cad6 ->cad6
Disconnections: 0
Servers:
    cad6 (cad6 at tcp:127.0.0.1:46271) next_index=5 match_index=4 last msg 76 ms ago
    7ebc (7ebc at tcp:127.0.0.1:38377) (self) next_index=2 match_index=4
    f57f (f57f at tcp:127.0.0.1:53573) next_index=5 match_index=4 last msg 77 ms ago
"""

JOINING_STATUS = """\
f57f
Name: OVN_Northbound
Cluster ID: not yet known
Server ID: f57f (f57f0000-a7e2-483a-921b-56d36356cfba)
Address: tcp:127.0.0.1:53573
Status: joining cluster
Remotes for joining: tcp:127.0.0.1:38377
Role: follower
Term: 0
Leader: unknown
Vote: unknown

Election timer: 1000
Log: [1, 1]
Servers:
"""


def test_split_remotes_like_the_idl() -> None:
    assert split_remotes("unix:/a.sock") == ["unix:/a.sock"]
    assert split_remotes("unix:/a.sock,unix:/b.sock, tcp:127.0.0.1:6641,") == [
        "unix:/a.sock", "unix:/b.sock", "tcp:127.0.0.1:6641"]
    # A piece without a colon continues the previous remote (ovs.db.idl._parse_remotes).
    assert split_remotes("tcp:10.0.0.1:6641,t,s,tcp:10.0.0.2:6641") == [
        "tcp:10.0.0.1:6641,t,s", "tcp:10.0.0.2:6641"]
    assert split_remotes("") == []
    many = ["unix:/x/nb1.sock", "unix:/x/nb2.sock", "unix:/x/nb3.sock"]
    assert split_remotes(join_remotes(many)) == many


def test_check_remote_says_what_is_wrong() -> None:
    assert check_remote(" unix:/a.sock , unix:/b.sock ") == "unix:/a.sock,unix:/b.sock"
    for bad, said in (("", "no address"), ("nb.sock", "not an OVSDB address"),
                      ("unix:/a,http://x", "not an OVSDB address"),
                      ("ptcp:6641", "listening address")):
        with pytest.raises(ValueError, match=said):
            check_remote(bad)


def test_member_names_and_files(tmp_path: Path) -> None:
    assert raft.member_names() == ["nb1", "nb2", "nb3", "sb1", "sb2", "sb3"]
    second = raft.members(tmp_path, "nb")[1]
    assert (second.name, second.schema_name) == ("nb2", "OVN_Northbound")
    assert second.socket == tmp_path / "nb2.sock" and second.remote == f"unix:{tmp_path}/nb2.sock"
    assert (second.pidfile, second.ctl, second.db_file) == (
        tmp_path / "nb2.pid", tmp_path / "nb2.ctl", tmp_path / "nb2.db")
    assert second.daemon().binary == "ovsdb-server"
    assert second.daemon().pidfile == str(tmp_path / "nb2.pid")  # teardown by pidfile
    assert raft.parse_member_name("sb3") == ("sb", 3)
    for bad in ("nb0", "nb4", "xb1", "nb", "node1/agent"):
        with pytest.raises(ValueError, match="members are nb1, nb2"):
            raft.parse_member_name(bad)
    with pytest.raises(ValueError):
        raft.member_name("ic", 1)


def test_cluster_remote_lists_every_member(tmp_path: Path) -> None:
    assert raft.cluster_remote(tmp_path, "sb") == ",".join(
        f"unix:{tmp_path}/sb{i}.sock" for i in (1, 2, 3))


def test_parse_cluster_status_of_a_leader() -> None:
    status = raft.parse_cluster_status(LEADER_STATUS)
    assert (status.server_id, status.role, status.term, status.leader) == (
        "7ebc", "leader", 1, "self")
    assert status.address == "tcp:127.0.0.1:38377"
    assert status.servers == ("cad6", "7ebc", "f57f")
    assert status.joined


def test_parse_cluster_status_of_a_joining_member() -> None:
    status = raft.parse_cluster_status(JOINING_STATUS)
    assert (status.status, status.role, status.leader) == ("joining cluster", "follower",
                                                           "unknown")
    assert not status.joined and status.servers == ()


def test_parse_cluster_status_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="cluster/status"):
        raft.parse_cluster_status("ovs-appctl: cannot connect to nb1.ctl")


def test_standalone_sandbox_is_unchanged(tmp_path: Path) -> None:
    config = SandboxConfig(state_dir=tmp_path)
    assert not config.ovn_ha
    assert central.nb_remote(config) == f"unix:{tmp_path}/nb.sock"
    assert central.sb_remote(config) == f"unix:{tmp_path}/sb.sock"
    assert central.nb_tcp_remote(config) == "tcp:127.0.0.1:6641"
    assert config.nb_tcp_ports == (6641,)


def test_ha_sandbox_remotes_name_every_member(tmp_path: Path) -> None:
    config = SandboxConfig(state_dir=tmp_path, ovn_ha=True, nb_tcp_port=7641)
    assert split_remotes(central.nb_remote(config)) == [
        f"unix:{tmp_path}/nb{i}.sock" for i in (1, 2, 3)]
    assert split_remotes(central.sb_remote(config)) == [
        f"unix:{tmp_path}/sb{i}.sock" for i in (1, 2, 3)]
    assert central.nb_tcp_remote(config) == (
        "tcp:127.0.0.1:7641,tcp:127.0.0.1:7642,tcp:127.0.0.1:7643")
    assert SandboxConfig.from_json(config.to_json()) == config  # state.json keeps ovn_ha


def test_ha_config_checks_the_member_ports(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must differ"):
        SandboxConfig(state_dir=tmp_path, ovn_ha=True, nb_tcp_port=7000, apiserver_port=7002)
    SandboxConfig(state_dir=tmp_path, ovn_ha=False, nb_tcp_port=7000, apiserver_port=7002)
    with pytest.raises(ValueError, match="no room"):
        SandboxConfig(state_dir=tmp_path, ovn_ha=True, nb_tcp_port=65534)
    assert SandboxConfig(state_dir=tmp_path, ovn_ha=True, nb_tcp_port=None).nb_tcp_ports == ()


def test_status_shows_the_raft_roles() -> None:
    raft_rows = [{"name": "nb1", "role": "leader", "term": 3},
                 {"name": "nb2", "role": "follower", "term": 3},
                 {"name": "nb3", "role": "down", "term": None}]
    status = {"state_dir": "/tmp/x", "state": "degraded", "prefix": "kovn", "started_at": None,
              "nb_remote": "unix:/tmp/x/nb1.sock,unix:/tmp/x/nb2.sock",
              "sb_remote": "unix:/tmp/x/sb1.sock", "nb_tcp_remote": None, "ovn_ha": True,
              "raft": raft_rows, "daemons": [], "nodes": [], "blackholes": [], "kube": None}
    text = format_status(status)
    assert "raft (--ovn-ha): nb1 leader (term 3), nb2 follower, nb3 down" in text
    assert "raft" not in format_status({**status, "ovn_ha": False, "raft": []})


def test_cli_default_finds_an_ha_sandbox(tmp_path: Path) -> None:
    default = f"unix:{tmp_path}/nb.sock"
    assert sandbox_default(default) == default  # nothing there: the message names it
    for i in (1, 2, 3):
        (tmp_path / f"nb{i}.sock").touch()
    assert sandbox_default(default) == ",".join(f"unix:{tmp_path}/nb{i}.sock" for i in (1, 2, 3))
    (tmp_path / "nb.sock").touch()  # a standalone sandbox's socket wins
    assert sandbox_default(default) == default
    assert sandbox_default("tcp:127.0.0.1:6641") == "tcp:127.0.0.1:6641"


def test_the_cli_flags() -> None:
    parser = build_parser()
    up = parser.parse_args(["sandbox", "up", "--ovn-ha", "--nb-tcp-port", "none"])
    assert up.ovn_ha and up.nb_tcp_port is None
    assert not parser.parse_args(["sandbox", "up"]).ovn_ha
    members = "unix:/s/nb1.sock,unix:/s/nb2.sock,unix:/s/nb3.sock"
    assert parser.parse_args(["controller", "--nb", members]).nb == members
    node = parser.parse_args(["node", "--node", "n1", "--ovs-db", "unix:/db.sock",
                              "--sb-remote", "tcp:10.0.0.1:6642, tcp:10.0.0.2:6642",
                              "--encap-ip", "10.0.0.9"])
    assert node.sb_remote == "tcp:10.0.0.1:6642,tcp:10.0.0.2:6642"
    with pytest.raises(SystemExit):
        parser.parse_args(["controller", "--nb", "nb.sock"])
