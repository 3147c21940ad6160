"""Calling a CNI plugin the way a container runtime does (the runtime side of the CNI spec).

The network configuration comes from a conflist file; like libcni we take its first plugin
and inject the list's `name` and `cniVersion`. The plugin binary `<type>` is looked up in the
CNI bin dir and exec'd per call with the CNI_* environment and the configuration on stdin,
inside the node's network namespace: a real runtime runs in the host's namespace, which in
the sandbox is the node netns. The plugin is forked from a thread that has entered that netns
(a child inherits its parent thread's namespaces), not through `ip netns exec`, whose extra
exec and mounts would add to every pod's CPU; its CPU time is read from wait4's rusage, so
that bench/pod_ready.py can tell the plugin's share from the harness's.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.netns import in_netns

# Well-known CNI error codes (spec "Error" section).
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
# Not in the spec: the plugin could not be run or printed no valid answer.
EXEC_FAILED = 999


class CniError(Exception):
    """An error result of a plugin (or of running it): code, msg and details as the spec has."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg} ({details})" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    @property
    def retry_soon(self) -> bool:
        return self.code == TRY_AGAIN_LATER


def load_conf(path: Path) -> dict[str, Any]:
    """The network configuration a runtime hands its (first) plugin for conflist `path`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CniError(INVALID_NETWORK_CONFIG, f"cannot read CNI config {path}: {exc}") from exc
    if "plugins" not in data:  # a single-plugin .conf file
        return data
    plugins = data.get("plugins") or []
    if not plugins or not isinstance(plugins[0], dict) or "type" not in plugins[0]:
        raise CniError(INVALID_NETWORK_CONFIG, f"{path}: conflist without a plugin with a type")
    return {**plugins[0], "name": data.get("name", ""), "cniVersion": data.get("cniVersion", "")}


@dataclass(frozen=True)
class CniCall:
    """What identifies one attachment: the same values go to ADD and DEL."""

    container_id: str
    netns_path: str  # "/var/run/netns/<name>"
    ifname: str
    namespace: str
    pod: str
    pod_uid: str

    def env(self, command: str, bin_dir: Path) -> dict[str, str]:
        args = (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.pod};"
                f"K8S_POD_INFRA_CONTAINER_ID={self.container_id};K8S_POD_UID={self.pod_uid}")
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": self.container_id,
                "CNI_NETNS": self.netns_path, "CNI_IFNAME": self.ifname, "CNI_ARGS": args,
                "CNI_PATH": str(bin_dir)}


class _MeasuredPopen(subprocess.Popen):
    """A Popen that keeps the child's resource usage when it reaps it (wait4, not waitpid)."""

    cpu_seconds = 0.0

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:  # Popen's reaping hook
        try:
            pid, status, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return self.pid, 0  # as Popen does: someone else reaped it
        if pid == self.pid:
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return pid, status


def invoke(command: str, call: CniCall, conf: dict[str, Any], bin_dir: Path,
           node_netns: str | None, timeout: float = 180,
           cpu: list[float] | None = None) -> dict[str, Any]:
    """Exec the plugin for `command` (ADD, DEL, CHECK); its JSON result, or CniError. The
    plugin's CPU seconds are appended to `cpu` if given."""
    plugin = bin_dir / str(conf.get("type", ""))
    if not conf.get("type") or not os.access(plugin, os.X_OK):
        raise CniError(EXEC_FAILED, f"CNI plugin {conf.get('type')!r} not found in {bin_dir}")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           **call.env(command, bin_dir)}
    try:
        proc = _spawn([str(plugin)], env, node_netns)
    except OSError as exc:
        raise CniError(EXEC_FAILED, f"cannot run {plugin}: {exc}") from exc
    try:
        stdout, stderr = proc.communicate(json.dumps(conf).encode(), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise CniError(EXEC_FAILED, f"CNI {command} did not return in {timeout:.0f}s") from exc
    finally:
        if cpu is not None:
            cpu.append(proc.cpu_seconds)
    out = stdout.decode(errors="replace").strip()
    try:
        answer = json.loads(out) if out else {}
    except ValueError:
        answer = None
    if proc.returncode != 0:
        if isinstance(answer, dict) and "code" in answer:
            raise CniError(int(answer.get("code") or EXEC_FAILED), str(answer.get("msg", "")),
                           str(answer.get("details", "")))
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise CniError(EXEC_FAILED, f"CNI {command} exited with {proc.returncode}",
                       lines[-1] if lines else out[:200])
    if not isinstance(answer, dict):
        raise CniError(EXEC_FAILED, f"CNI {command} printed no JSON result", out[:200])
    return answer


def _spawn(argv: list[str], env: dict[str, str], netns: str | None) -> _MeasuredPopen:
    """Start the plugin, in `netns` if given (this thread enters it only to fork)."""
    def popen() -> _MeasuredPopen:
        return _MeasuredPopen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)

    if netns is None:
        return popen()
    with in_netns(netns):
        return popen()


def result_ips(result: dict[str, Any]) -> list[str]:
    """The addresses (without prefix length) of a CNI result, in order."""
    return [str(entry["address"]).split("/")[0] for entry in result.get("ips") or []
            if entry.get("address")]
