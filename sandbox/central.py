"""OVN central: the NB and SB databases (one ovsdb-server each) and ovn-northd.

It runs in the root namespace; nodes reach the SB over its unix socket, which is a filesystem
path and therefore visible from every network namespace. With `ovn_ha` each database is a
raft cluster of three ovsdb-servers instead (sandbox/raft.py), and every client gets the
members as one comma-separated remote.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from northbound.remotes import join_remotes
from sandbox import raft
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.procs import Daemon, run, start_daemon

SCHEMAS = {
    "nb": Path("/usr/share/ovn/ovn-nb.ovsschema"),
    "sb": Path("/usr/share/ovn/ovn-sb.ovsschema"),
}


def nb_remote(config: SandboxConfig) -> str:
    """The NB's unix socket, or with ovn_ha every NB member's, comma-separated."""
    if config.ovn_ha:
        return raft.cluster_remote(config.state_dir, "nb")
    return f"unix:{config.state_dir / 'nb.sock'}"


def sb_remote(config: SandboxConfig) -> str:
    """The SB's unix socket, or with ovn_ha every SB member's, comma-separated."""
    if config.ovn_ha:
        return raft.cluster_remote(config.state_dir, "sb")
    return f"unix:{config.state_dir / 'sb.sock'}"


def nb_tcp_remote(config: SandboxConfig) -> str | None:
    """The NB's TCP remote for clients (`tcp:127.0.0.1:PORT`, one per raft member), or None
    when disabled."""
    if config.nb_tcp_port is None:
        return None
    return join_remotes(f"tcp:127.0.0.1:{port}" for port in config.nb_tcp_ports)


def check_tcp_ports_free(config: SandboxConfig) -> None:
    for port in config.nb_tcp_ports:
        check_tcp_port_free(port)


def check_tcp_port_free(port: int) -> None:
    """Fail early if 127.0.0.1:port is taken: ovsdb-server would only log it and retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SandboxError(
                f"127.0.0.1:{port} is in use ({exc.strerror}); another sandbox? "
                "Use --nb-tcp-port with another port, or --nb-tcp-port none"
            ) from exc


def start_central(config: SandboxConfig, record: Callable[[Daemon], None]) -> None:
    """Create both databases, start their servers and northd, `record` each daemon started.

    Recording each daemon as soon as it runs (rather than returning a list at the end) lets a
    failure half-way be cleaned up exactly, by pidfile.
    """
    d = config.state_dir
    if config.ovn_ha:  # both clusters elect their leaders at the same time
        clusters = [raft.start_cluster(d, "nb", SCHEMAS["nb"], record, wait=None,
                                       tcp_port=config.nb_tcp_port),
                    raft.start_cluster(d, "sb", SCHEMAS["sb"], record, wait=None)]
        for group in clusters:
            raft.wait_joined(group)
    for db in () if config.ovn_ha else ("nb", "sb"):
        run(["ovsdb-tool", "create", str(d / f"{db}.db"), str(SCHEMAS[db])])
        remotes = [f"--remote=punix:{d / f'{db}.sock'}"]
        if db == "nb" and config.nb_tcp_port is not None:
            remotes.append(f"--remote=ptcp:{config.nb_tcp_port}:127.0.0.1")
        record(start_daemon(
            db, "ovsdb-server", [*remotes, str(d / f"{db}.db")],
            pidfile=d / f"{db}.pid", log=d / f"{db}.log", unixctl=d / f"{db}.ctl",
        ))
    record(start_daemon(
        "northd", "ovn-northd",
        [f"--ovnnb-db={nb_remote(config)}", f"--ovnsb-db={sb_remote(config)}"],
        pidfile=d / "northd.pid", log=d / "northd.log", unixctl=d / "northd.ctl",
    ))


def raft_members(config: SandboxConfig) -> list[str]:
    """The raft members of an ovn_ha sandbox (nb1..sb3); none otherwise."""
    return raft.member_names() if config.ovn_ha else []


def restart_member(config: SandboxConfig, name: str) -> Daemon:
    """Start a stopped raft member again; it rejoins its cluster with its own database file
    (and the same pidfile, so state.json needs no new record)."""
    return raft.restart(config.state_dir, name, config.nb_tcp_port)


def raft_status(config: SandboxConfig) -> list[dict[str, object]]:
    """Every member with its role and term (`kovn sandbox status`); [] without ovn_ha."""
    return raft.describe(config.state_dir) if config.ovn_ha else []
