"""Running commands and the sandbox's daemons, and stopping exactly those daemons again.

A daemon is identified by its pidfile, never by name: `down` must not touch an `ovsdb-server`
of the host or of another sandbox. Before signalling a pid we check that /proc/<pid>/cmdline is
the recorded binary started with that very `--pidfile=`, which also guards against pid reuse.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sandbox.errors import SandboxError

# The daemons the sandbox starts; used to recognise our processes in leftovers.
DAEMON_BINARIES = ("ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller")
# Programs that do not daemonize themselves (see spawn_daemon); we write their pidfiles.
SPAWNED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; on failure raise SandboxError with its stderr.

    Every setup step goes through here so that a failing `ip` or `ovs-vsctl` reads as one line
    naming the command, not as a CalledProcessError traceback.
    """
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, env=full_env, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise SandboxError(f"{argv[0]} not found: install it or fix PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"`{' '.join(argv)}` did not finish in {timeout}s") from exc
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        detail = msg[-1] if msg else f"exit code {proc.returncode}"
        raise SandboxError(f"`{' '.join(argv)}` failed: {detail}")
    return proc


@dataclass(frozen=True)
class Daemon:
    """One daemon of the sandbox as recorded in state.json."""

    name: str  # "nb", "sb", "northd", "node1/ovsdb-server", ...
    binary: str  # basename of the executable, checked against /proc/<pid>/cmdline
    pidfile: str
    log: str
    pid: int | None = None
    netns: str | None = None
    # argv elements that identify the process; None means `--pidfile=<pidfile>`, which every
    # OVS daemon has. Programs without a --pidfile option name a file of this sandbox instead.
    match: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.match is not None:
            object.__setattr__(self, "match", tuple(self.match))  # JSON gives a list

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Daemon:
        return cls(**data)


def read_pidfile(pidfile: str | Path) -> int | None:
    """The pid in an OVS pidfile, or None if it is missing or garbage."""
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """argv of a process, or [] if it is gone (or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_our_process(
    pid: int, binary: str, pidfile: str | Path, match: Sequence[str] | None = None
) -> bool:
    """True if pid is alive and is `binary` started with `--pidfile=<pidfile>` (or `match`)."""
    argv = cmdline(pid)
    if not argv or os.path.basename(argv[0]) != binary:
        return False
    if _is_zombie(pid):
        return False
    return all(m in argv for m in (match or [f"--pidfile={pidfile}"]))


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def live_pid(daemon: Daemon) -> int | None:
    """The daemon's pid if it is running (pidfile first, else the recorded pid), else None."""
    for pid in (read_pidfile(daemon.pidfile), daemon.pid):
        if pid and is_our_process(pid, daemon.binary, daemon.pidfile, daemon.match):
            return pid
    return None


def crashes_logged(daemon: Daemon) -> int:
    """How often an OVS daemon aborted (`|EMER|` lines in its log; under `--monitor` each
    was followed by a restart)."""
    if daemon.binary not in DAEMON_BINARIES:
        return 0
    try:
        with open(daemon.log, errors="replace") as log:
            return sum("|EMER|" in line for line in log)
    except OSError:
        return 0


def start_daemon(
    name: str,
    binary: str,
    args: Sequence[str],
    *,
    pidfile: Path,
    log: Path,
    unixctl: Path | None = None,
    env: Mapping[str, str] | None = None,
    netns: str | None = None,
    monitor: bool = False,
) -> Daemon:
    """Start an OVS/OVN daemon detached (it returns once it is ready) and record its pid.

    OVS daemons fork and write the pidfile before the parent exits, so after `--detach`
    returns the pid is known; `ip netns exec` execs the binary, so cmdline stays recognisable.
    `monitor` adds OVS's `--monitor`, as ovs-ctl and the distributions' units run their
    daemons: a monitor process restarts the daemon when it dies of a crash signal (an
    assertion aborts), rewriting the pidfile; SIGTERM/SIGKILL still stop both.
    """
    # No syslog: without a syslog daemon (/dev/log) every message would cost a socket, a
    # failed connect and a close; the log file has everything.
    argv = [binary, "--detach", "--no-chdir", f"--pidfile={pidfile}", f"--log-file={log}",
            "-vsyslog:off"]
    if monitor:
        argv.append("--monitor")
    if unixctl is not None:
        argv.append(f"--unixctl={unixctl}")
    argv += list(args)
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        run(argv, env=env, timeout=60)
    except SandboxError as exc:
        raise SandboxError(f"{name} did not start ({exc}); see {log}") from exc
    pid = read_pidfile(pidfile)
    if pid is None or not is_our_process(pid, binary, pidfile):
        raise SandboxError(f"{name} exited right after starting; see {log}")
    return Daemon(name=name, binary=binary, pidfile=str(pidfile), log=str(log), pid=pid,
                  netns=netns)


# Detaches "$@" the way OVS's --detach does: the shell forks it into the background and exits,
# so the daemon is reparented to init (never our zombie) and keeps running after `up` ends.
_DETACH = 'cd "$1" && shift && log=$1 && shift && "$@" </dev/null >>"$log" 2>&1 & echo $!'


def spawn_daemon(
    name: str,
    argv: Sequence[str],
    *,
    pidfile: Path,
    log: Path,
    match: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    netns: str | None = None,
) -> Daemon:
    """Start a program that cannot daemonize itself, detached, and write its pidfile for it.

    `match` must name argv elements unique to this daemon and sandbox (a file in its state
    dir), since such programs have no `--pidfile=`. Returns once the program runs (has exec'd).
    With `netns` it runs inside that network namespace (`ip netns exec` execs it: same pid).
    """
    binary = os.path.basename(argv[0])
    full_env = {**os.environ, **env} if env else None
    wrapped = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    try:
        proc = subprocess.run(
            ["sh", "-c", _DETACH, "sh", str(cwd or "/"), str(log), *wrapped],
            capture_output=True, text=True, env=full_env, timeout=10, check=True)
        pid = int(proc.stdout.strip())
    except (subprocess.SubprocessError, ValueError) as exc:
        raise SandboxError(f"{name} did not start ({exc}); see {log}") from exc
    pidfile.write_text(f"{pid}\n")
    daemon = Daemon(name=name, binary=binary, pidfile=str(pidfile), log=str(log), pid=pid,
                    netns=netns, match=tuple(match) if match else None)
    # The background child may not have exec'd yet: until it has, its cmdline is the shell's.
    deadline = time.monotonic() + 5
    while live_pid(daemon) is None:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid) or time.monotonic() > deadline:
            raise SandboxError(f"{name} exited right after starting; see {log}")
        time.sleep(0.01)
    return daemon


def stop_daemons(daemons: Iterable[Daemon], timeout: float = 5) -> list[str]:
    """SIGTERM every running daemon, wait for all to exit, SIGKILL those that do not.

    Returns one line per daemon that was actually running. Signals go only to pids that pass
    `is_our_process`, so a stale pidfile pointing at a reused pid is harmless.
    """
    running: dict[int, Daemon] = {}
    for daemon in daemons:
        pid = live_pid(daemon)
        if pid is not None:
            running[pid] = daemon
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p, d) for p, d in running.items()):
        time.sleep(0.05)
    stopped = []
    for pid, daemon in running.items():
        how = "stopped"
        if _alive(pid, daemon):
            _signal(pid, signal.SIGKILL)
            how = "killed"
            _wait_gone(pid, daemon, 2)
        stopped.append(f"{how} {daemon.name} (pid {pid})")
    return stopped


def _alive(pid: int, daemon: Daemon) -> bool:
    return is_our_process(pid, daemon.binary, daemon.pidfile, daemon.match)


def _wait_gone(pid: int, daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, daemon):
        time.sleep(0.05)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def find_pidfiles(state_dir: Path) -> list[Path]:
    """Pidfiles directly in the state dir and in its node dirs (for leftovers without state)."""
    if not state_dir.is_dir():
        return []
    return sorted([*state_dir.glob("*.pid"), *state_dir.glob("*/*.pid")])


def daemon_from_pidfile(pidfile: Path) -> Daemon | None:
    """Reconstruct a Daemon record from a pidfile whose process is alive and is ours.

    An OVS daemon is ours if it was started with that `--pidfile=`; a spawned one (no such
    option) if it is a known program that names a file in the pidfile's directory.
    """
    pid = read_pidfile(pidfile)
    if pid is None:
        return None
    argv = cmdline(pid)
    binary = os.path.basename(argv[0]) if argv else ""
    if binary in DAEMON_BINARIES and is_our_process(pid, binary, pidfile):
        return Daemon(name=str(pidfile), binary=binary, pidfile=str(pidfile), log="", pid=pid)
    mine = [a for a in argv[1:] if str(pidfile.parent) + "/" in a]
    spawned = binary in SPAWNED_BINARIES or binary.startswith("python")
    if spawned and mine and not _is_zombie(pid):
        return Daemon(name=str(pidfile), binary=binary, pidfile=str(pidfile), log="", pid=pid,
                      match=(mine[0],))
    return None
