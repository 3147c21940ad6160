"""OVN central as raft clusters (`kovn sandbox up --ovn-ha`): NB and SB, three members each.

Each member is its own ovsdb-server with its own database file, unix socket (its client
remote), control socket and raft port on 127.0.0.1, named `<db><i>` (nb1, nb2, nb3, sb1...)
so that its files sit beside the standalone servers' (`nb1.db`, `nb1.sock`, `nb1.pid`,
`nb1.log`, `nb1.ctl`) and the sandbox's teardown by pidfile stops every member. The first
member creates the cluster (`ovsdb-tool create-cluster`), the others join it (`join-cluster`);
clients get all members as one comma-separated remote, as the OVSDB IDLs (C and Python) and
ovn-nbctl/ovn-sbctl accept, and find the leader themselves.

The members talk raft over TCP on 127.0.0.1, as a real cluster's do between hosts (OVS also
accepts unix: raft addresses, which would hide what a TCP port means: a free one is picked
for each member at `up`, and the member's database file remembers it across restarts).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from northbound.remotes import join_remotes
from sandbox.config import RAFT_MEMBERS
from sandbox.errors import SandboxError, SandboxTimeout
from sandbox.procs import Daemon, live_pid, run, start_daemon

MEMBERS = RAFT_MEMBERS
DATABASES = {"nb": "OVN_Northbound", "sb": "OVN_Southbound"}
Record = Callable[[Daemon], None]


# ------------------------------------------------------------------------------- members


@dataclass(frozen=True)
class Member:
    """One ovsdb-server of a clustered database; pure paths, so any process rebuilds them."""

    db: str  # "nb" or "sb"
    index: int  # 1-based
    state_dir: Path

    @property
    def name(self) -> str:
        """`nb1`: the daemon's name in state.json and the stem of its files."""
        return member_name(self.db, self.index)

    @property
    def schema_name(self) -> str:
        return DATABASES[self.db]

    def path(self, suffix: str) -> Path:
        return self.state_dir / f"{self.name}.{suffix}"

    @property
    def db_file(self) -> Path:
        return self.path("db")

    @property
    def socket(self) -> Path:
        return self.path("sock")

    @property
    def pidfile(self) -> Path:
        return self.path("pid")

    @property
    def log(self) -> Path:
        return self.path("log")

    @property
    def ctl(self) -> Path:
        """The unixctl socket: `ovs-appctl -t <ctl> cluster/status OVN_Northbound`."""
        return self.path("ctl")

    @property
    def remote(self) -> str:
        return f"unix:{self.socket}"

    def daemon(self) -> Daemon:
        """The record of this member's server (for live_pid and stop_daemons)."""
        return Daemon(name=self.name, binary="ovsdb-server", pidfile=str(self.pidfile),
                      log=str(self.log))


def member_name(db: str, index: int) -> str:
    if db not in DATABASES:
        raise ValueError(f"no clustered database {db!r}; known: {', '.join(DATABASES)}")
    if not 1 <= index <= MEMBERS:
        raise ValueError(f"member index must be 1..{MEMBERS}, got {index}")
    return f"{db}{index}"


def parse_member_name(name: str) -> tuple[str, int]:
    """`nb2` -> ("nb", 2); ValueError naming the valid ones otherwise."""
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    if match and match.group(1) in DATABASES and 1 <= int(match.group(2)) <= MEMBERS:
        return match.group(1), int(match.group(2))
    valid = ", ".join(member_names())
    raise ValueError(f"{name!r} is not a raft member; members are {valid}")


def members(state_dir: Path, db: str) -> list[Member]:
    return [Member(db, i, Path(state_dir)) for i in range(1, MEMBERS + 1)]


def member_names() -> list[str]:
    """nb1, nb2, nb3, sb1, sb2, sb3."""
    return [member_name(db, i) for db in DATABASES for i in range(1, MEMBERS + 1)]


def cluster_remote(state_dir: Path, db: str) -> str:
    """Every member's unix socket, comma-separated (what northd, kovn and nbctl get)."""
    return join_remotes(m.remote for m in members(state_dir, db))


def tcp_ports(first: int) -> list[int]:
    """The NB TCP ports of the members: PORT, PORT+1, PORT+2 (SandboxConfig.nb_tcp_ports)."""
    return [first + i for i in range(MEMBERS)]


# ------------------------------------------------------------------------------- start


def free_raft_port(taken: Sequence[int] = ()) -> int:
    """A 127.0.0.1 port nothing listens on (and not one chosen already)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def _server_args(member: Member, tcp_port: int | None) -> list[str]:
    remotes = [f"--remote=punix:{member.socket}"]
    if tcp_port is not None:
        remotes.append(f"--remote=ptcp:{tcp_port}:127.0.0.1")
    return [*remotes, str(member.db_file)]


def start_member(member: Member, tcp_port: int | None = None) -> Daemon:
    """Start (or start again) one member's ovsdb-server on its existing database file.

    A restarted member reads its raft address and the cluster from its file, so it rejoins
    by itself and catches up from the leader."""
    return start_daemon(member.name, "ovsdb-server", _server_args(member, tcp_port),
                        pidfile=member.pidfile, log=member.log, unixctl=member.ctl)


def start_cluster(state_dir: Path, db: str, schema: Path, record: Record,
                  tcp_port: int | None = None, wait: float | None = 30) -> list[Member]:
    """Create the cluster on member 1, join members 2 and 3, wait until all are in it
    (`wait`: at most that many seconds; None: return at once, call wait_joined later).

    `tcp_port`: also serve clients on 127.0.0.1:tcp_port (+1, +2 for the next members).
    Each server is `record`ed as soon as it runs, so a failure half-way tears down exactly.
    """
    group = members(state_dir, db)
    ports: list[int] = []
    for _ in group:
        ports.append(free_raft_port(ports))
    addresses = [f"tcp:127.0.0.1:{p}" for p in ports]
    client_ports = tcp_ports(tcp_port) if tcp_port is not None else [None] * MEMBERS
    for i, member in enumerate(group):
        if i == 0:
            run(["ovsdb-tool", "create-cluster", str(member.db_file), str(schema),
                 addresses[0]])
        else:  # join through every member before it: any of them can admit it
            run(["ovsdb-tool", "join-cluster", str(member.db_file), member.schema_name,
                 addresses[i], *addresses[:i]])
        record(start_member(member, client_ports[i]))
    if wait is not None:
        wait_joined(group, wait)
    return group


def wait_joined(group: Sequence[Member], timeout: float = 30) -> None:
    """Until every member is a connected cluster member and one of them leads."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = {m.name: member_status(m) for m in group}
        joined = all(s is not None and s.joined for s in statuses.values())
        if joined and any(s is not None and s.role == "leader" for s in statuses.values()):
            return
        if time.monotonic() > deadline:
            stuck = [n for n, s in statuses.items() if s is None or not s.joined]
            logs = ", ".join(str(m.log) for m in group if m.name in stuck) or str(group[0].log)
            raise SandboxTimeout(
                f"the {DATABASES[group[0].db]} raft cluster did not form within {timeout:.0f}s "
                f"(not joined: {', '.join(stuck) or 'none'}, or no leader); see {logs}")
        time.sleep(0.1)


# ------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class ClusterStatus:
    """What one member says about the cluster (`ovs-appctl cluster/status`)."""

    server_id: str
    address: str
    status: str  # "cluster member", "joining cluster", "leaving cluster", ...
    role: str  # "leader", "follower", "candidate"
    term: int
    leader: str  # "self", a server id, or "unknown"
    servers: tuple[str, ...]  # the server ids the member knows in the cluster

    @property
    def joined(self) -> bool:
        return self.status == "cluster member"


def parse_cluster_status(text: str) -> ClusterStatus:
    """Read `ovs-appctl -t CTL cluster/status DB` (OVS 3.1); ValueError if it is not one."""
    fields: dict[str, str] = {}
    servers: list[str] = []
    in_servers = False
    for line in text.splitlines():
        if in_servers:
            if line.startswith((" ", "\t")) and line.strip():
                servers.append(line.split()[0])
                continue
            in_servers = False
        key, sep, value = line.partition(":")
        if not sep or line.startswith((" ", "\t")):
            continue
        if key == "Servers":
            in_servers = True
        else:
            fields.setdefault(key.strip(), value.strip())
    try:
        return ClusterStatus(
            server_id=fields["Server ID"].split()[0], address=fields.get("Address", ""),
            status=fields["Status"], role=fields["Role"], term=int(fields.get("Term", "0")),
            leader=fields.get("Leader", "unknown"), servers=tuple(servers))
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"not an ovs-appctl cluster/status output: {text[:200]!r}") from exc


def member_status(member: Member) -> ClusterStatus | None:
    """The member's view of its cluster, or None when its server is not running/answering."""
    if live_pid(member.daemon()) is None:
        return None
    proc = run(["ovs-appctl", "-t", str(member.ctl), "--timeout=5", "cluster/status",
                member.schema_name], check=False, timeout=10)
    if proc.returncode != 0:
        return None
    try:
        return parse_cluster_status(proc.stdout)
    except ValueError:
        return None


def find_leader(state_dir: Path, db: str) -> Member | None:
    """The member that is the cluster's leader now (None during an election)."""
    for member in members(state_dir, db):
        status = member_status(member)
        if status is not None and status.role == "leader":
            return member
    return None


def describe(state_dir: Path) -> list[dict[str, object]]:
    """Every member with its role and term, for `kovn sandbox status`."""
    rows: list[dict[str, object]] = []
    for db in DATABASES:
        for member in members(state_dir, db):
            status = member_status(member)
            rows.append({"name": member.name, "database": member.schema_name,
                         "remote": member.remote, "ctl": str(member.ctl),
                         "role": status.role if status else "down",
                         "term": status.term if status else None,
                         "address": status.address if status else None})
    return rows


def restart(state_dir: Path, name: str, tcp_port: int | None = None) -> Daemon:
    """Start a stopped (killed) member again; it rejoins with its own database file."""
    db, index = parse_member_name(name)
    member = Member(db, index, Path(state_dir))
    if live_pid(member.daemon()) is not None:
        raise SandboxError(f"{name} is running; stop it first")
    if not member.db_file.exists():
        raise SandboxError(f"{member.db_file} is missing: {name} was never started here")
    port = tcp_ports(tcp_port)[index - 1] if tcp_port is not None and db == "nb" else None
    return start_member(member, port)
