"""Telling our own daemons and netns from those of another sandbox.

Netns names are global, so a sandbox with the same prefix but another state dir would share
them. Before deleting a netns we look at the OVS/OVN daemons running inside it: a daemon's
`--pidfile=` argument names the state dir it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sandbox import netns, procs
from sandbox.errors import SandboxError

STATE_FILE = "state.json"
# Written first into a fresh state dir: only a directory that carries it is ever deleted.
MARKER = ".kovn-sandbox"


@dataclass(frozen=True)
class NetnsDaemon:
    """An OVS/OVN daemon found running inside a sandbox netns."""

    netns: str
    binary: str
    pid: int
    state_dir: Path | None  # the sandbox it belongs to, from its pidfile; None if unknown


def known_daemons(state_dir: Path, recorded: list[procs.Daemon]) -> list[procs.Daemon]:
    """Recorded daemons plus live ones found by pidfile in state_dir (crash before recording)."""
    daemons = {d.pidfile: d for d in recorded}
    for pidfile in procs.find_pidfiles(state_dir):
        found = procs.daemon_from_pidfile(pidfile)
        if found is not None and str(pidfile) not in daemons:
            daemons[str(pidfile)] = found
    return list(daemons.values())


def daemons_in_netns(prefix: str) -> list[NetnsDaemon]:
    """The OVS/OVN daemons running in any netns of sandboxes with this prefix."""
    found = []
    for ns in netns.sandbox_netns(prefix):
        for pid in netns.netns_pids(ns):
            argv = procs.cmdline(pid)
            binary = Path(argv[0]).name if argv else ""
            if binary in procs.DAEMON_BINARIES:
                found.append(NetnsDaemon(ns, binary, pid, _state_dir_of(argv)))
    return found


def sandboxes_using_prefix(prefix: str) -> set[Path]:
    """State dirs of the sandboxes whose daemons run in netns with this prefix."""
    return {d.state_dir for d in daemons_in_netns(prefix) if d.state_dir is not None}


def check_netns_ours(prefix: str, state_dir: Path, ours: list[procs.Daemon]) -> None:
    """Raise if a daemon that is not ours runs in one of the prefix's netns.

    That is another sandbox with the same prefix; deleting its netns would break it.
    """
    our_pids = {pid for d in ours if (pid := procs.live_pid(d))}
    for daemon in daemons_in_netns(prefix):
        if daemon.pid in our_pids:
            continue
        owner = f"the sandbox in {daemon.state_dir}" if daemon.state_dir else "another sandbox"
        how = (f"`kovn sandbox down --state-dir {daemon.state_dir}`" if daemon.state_dir
               else "stopping it")
        raise SandboxError(
            f"netns {daemon.netns} runs {daemon.binary} (pid {daemon.pid}) of {owner}, "
            f"not of {state_dir}: use another --prefix, or free {prefix!r} with {how}")


def _state_dir_of(argv: list[str]) -> Path | None:
    """The sandbox state dir of a daemon: where state.json sits above its --pidfile."""
    pidfile = next((a.split("=", 1)[1] for a in argv if a.startswith("--pidfile=")), None)
    if pidfile is None:
        return None
    for parent in list(Path(pidfile).parents)[:2]:
        if (parent / STATE_FILE).exists() or (parent / MARKER).exists():
            return parent
    return None
