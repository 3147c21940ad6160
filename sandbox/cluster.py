"""The whole sandbox: OVN central plus N nodes, brought up and down as one unit.

Everything the sandbox starts or adds is recorded in `<state_dir>/state.json` as soon as it
exists, so `down` (or the next `up` after a crash) removes exactly that and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox import central, identities, kube, leftovers, metrics, netns, outside, procs, workloads
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError, SandboxTimeout
from sandbox.node import (
    SandboxNode,
    create_underlay,
    make_node,
    start_node,
    wait_tunnels,
    warm_underlay,
)
from sandbox.prerequisites import check_prerequisites, require_root

__all__ = ["Sandbox", "SandboxError", "SandboxNode", "SandboxTimeout"]

STATE_FILE = leftovers.STATE_FILE
# Written first into a fresh state dir: we only ever delete a directory that carries it.
MARKER = leftovers.MARKER


class Sandbox:
    """An OVN sandbox described by a SandboxConfig; `up`, `status`, `down` act on the machine."""

    def __init__(self, config: SandboxConfig = SandboxConfig()) -> None:  # noqa: B008 (frozen)
        self.config = config
        self.nb_remote = central.nb_remote(config)
        self.sb_remote = central.sb_remote(config)
        self.nb_tcp_remote = central.nb_tcp_remote(config)
        # The admin kubeconfig (exists while a sandbox with config.kube is up).
        self.kubeconfig = kube.kubeconfig(config)
        self.nodes: list[SandboxNode] = [make_node(config, i) for i in range(1, config.nodes + 1)]
        self._daemons: list[procs.Daemon] = []
        self._blackholes: list[str] = []
        self._phase = "down"
        self._started_at: float | None = None

    # ---------------------------------------------------------------- state file

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def _state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    @classmethod
    def load(cls, state_dir: Path) -> Sandbox:
        """The sandbox recorded in state_dir by `up` (running or crashed)."""
        state_dir = Path(state_dir)
        state = _read_state(state_dir)
        if state is None:
            raise SandboxError(f"nothing is up in {state_dir} (start it with `kovn sandbox up`)")
        config = SandboxConfig.from_json({**state["config"], "state_dir": str(state_dir)})
        sandbox = cls(config)
        sandbox._daemons = [procs.Daemon.from_json(d) for d in state.get("daemons", [])]
        sandbox._blackholes = list(state.get("blackholes", []))
        sandbox._phase = state.get("phase", "up")
        sandbox._started_at = state.get("started_at")
        return sandbox

    def _save(self) -> None:
        state = {
            "version": 1,
            "phase": self._phase,
            "started_at": self._started_at,
            "config": self.config.to_json(),
            "nodes": [_node_json(n) for n in self.nodes],
            "daemons": [d.to_json() for d in self._daemons],
            "blackholes": self._blackholes,
        }
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self._state_path)

    def _record(self, daemon: procs.Daemon) -> None:
        self._daemons.append(daemon)
        self._save()

    # ---------------------------------------------------------------- up

    def up(self, progress: Callable[[str], None] = print) -> None:
        """Start central and all nodes, wait for every chassis; SandboxError if already up.

        Leftovers of a crashed sandbox with the same state dir or prefix are cleaned first.
        If starting fails half-way, everything started is stopped again and the logs are
        kept in the state dir for reading.
        """
        t0 = time.monotonic()
        check_prerequisites(self.config)
        self._clear_leftovers(progress)
        central.check_tcp_ports_free(self.config)
        if self.config.kube:
            # Ports set to 0 become free ones now; state.json records them.
            self.config = dataclasses.replace(self.config, **kube.resolve_ports(self.config))
            self.config = dataclasses.replace(self.config, **metrics.resolve_ports(self.config))
        if self.config.runs_pods and (why := workloads.why_no_workloads()) is not None:
            raise SandboxError(f"cannot run pods: {why}; or start with --no-workloads")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / MARKER).touch()
        self._daemons, self._blackholes = [], []
        self._phase, self._started_at = "starting", time.time()
        self._save()
        try:
            self._start(progress)
        except BaseException:
            progress("up failed: stopping what was started (logs stay in the state dir)")
            self._teardown(keep_logs=True)
            raise
        self._phase = "up"
        self._save()
        progress(f"sandbox up in {time.monotonic() - t0:.1f}s")

    def _start(self, progress: Callable[[str], None]) -> None:
        # etcd and kube-apiserver boot (seconds of CPU) while OVN comes up.
        pki = kube.start_control_plane(self.config, self._record) if self.config.kube else None
        central.start_central(self.config, self._record)
        added, warnings = netns.add_blackholes(self.config.blackhole_ranges)
        self._blackholes = added
        self._save()
        for warning in warnings:
            progress(f"warning: {warning}")
        tcp = f" ({self.nb_tcp_remote})" if self.nb_tcp_remote else ""
        progress(f"central: NB {self.nb_remote}{tcp}, SB {self.sb_remote}")
        create_underlay(self.config)
        outside.create_outside(self.config)
        for node in self.nodes:
            start_node(self.config, node, self.sb_remote, self._record)
            outside.plug_node(self.config, node)
        outside.route_back(self.config, self.nodes)
        outside.start_server(self.config, self._record)
        self.wait_chassis()
        wait_tunnels(self.nodes)
        warm_underlay(self.nodes)
        for node in self.nodes:
            progress(f"{node.name}: netns {node.netns}, underlay {node.underlay_ip}, "
                     "chassis registered")
        progress(outside.describe(self.config, self.nodes))
        if pki is None:
            return
        start = None
        if self.config.runs_pods:
            def start() -> list[str]:
                return workloads.start_workloads(self.config, self.nodes, self.sb_remote,
                                                 self._record)
        kube.finish_up(kube.KubeUp(
            config=self.config, pki=pki, nodes={n.name: n.underlay_ip for n in self.nodes},
            nb_remote=self.nb_remote, record=self._record, daemons=lambda: self._daemons,
            progress=progress, start_workloads=start))
        if self.config.runs_pods and self.config.controller:
            self.wait_agents()
            progress(f"pods: node agents and kubelets ready on {len(self.nodes)} nodes "
                     f"(CNI conf {workloads.cni_conf(self.nodes[0])}, ...)")
            progress(outside.wait_gateways(self.config, self.nodes))
            progress(workloads.wait_relays(self.config, self.nodes, self._daemons))

    def wait_agents(self, timeout: float = 60) -> None:
        """Wait until every node agent serves CNI (needs a controller annotating the Nodes)."""
        workloads.wait_agents(self.nodes, self._daemons, timeout)

    def restart(self, name: str) -> procs.Daemon:
        """Stop and start again a node's agent or kubelet (`node1/agent`, `node1/kubelet`),
        or the kovn controller (`kovn-controller`, also when it was killed); what they serve
        is left as it is (pods keep running). With ovn_ha, start a stopped raft member
        again (`nb2`): it rejoins its cluster (same pidfile, so no new record)."""
        if name in central.raft_members(self.config):
            return central.restart_member(self.config, name)
        if name == kube.CONTROLLER and self.config.kube and self.config.controller:
            procs.stop_daemons([d for d in self._daemons if d.name == name], timeout=10)
            fresh: list[procs.Daemon] = []
            kube.start_controller(self.config, self.nb_remote, fresh.append)
            self._daemons = [d for d in self._daemons if d.name != name] + fresh
            self._save()
            return fresh[0]
        node_name, _, what = name.partition("/")
        if what not in ("agent", "kubelet") or not self.config.runs_pods:
            raise SandboxError(f"only a node's agent or kubelet can be restarted, not {name!r}")
        node = self.node(node_name)
        old = [d for d in self._daemons if d.name == name]
        procs.stop_daemons(old, timeout=10)
        started: list[procs.Daemon] = []
        if what == "agent":
            workloads.start_agent(self.config, node, self.sb_remote, started.append)
        else:
            workloads.start_kubelet(self.config, node, started.append)
        self._daemons = [started[0] if d.name == name else d for d in self._daemons]
        self._save()
        return started[0]

    def kubelet_states(self) -> list[Path]:
        """Every node's kubelet state dir (pod records, CNI ADD log)."""
        return [workloads.kubelet_state(n) for n in self.nodes]

    def wait_chassis(self, timeout: float = 30) -> None:
        """Wait until every node's ovn-controller has registered its chassis in the SB."""
        wanted = {n.name for n in self.nodes}
        deadline = time.monotonic() + timeout
        while True:
            out = procs.run(["ovn-sbctl", f"--db={self.sb_remote}", "--timeout=5", "--bare",
                             "--columns=name", "list", "Chassis"], check=False).stdout
            missing = wanted - set(out.split())
            if not missing:
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(self.node(n).dir / "ovnc.log") for n in sorted(missing))
                raise SandboxTimeout(
                    f"chassis {', '.join(sorted(missing))} not registered in the SB after "
                    f"{timeout:.0f}s; see {logs}")
            time.sleep(0.1)

    def node(self, name: str) -> SandboxNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r}; nodes are {', '.join(n.name for n in self.nodes)}")

    # ---------------------------------------------------------------- down

    def down(self) -> list[str]:
        """Stop the daemons (by pidfile), delete the netns and blackholes and the state dir.

        Returns one line per thing stopped or removed. Works for a crashed sandbox too.
        """
        require_root()
        if self._state_path.exists():
            return Sandbox.load(self.state_dir)._down()
        return self._down()

    def _down(self) -> list[str]:
        self._check_netns_ours()
        if not self._anything_there():
            raise SandboxError(f"nothing is up in {self.state_dir}")
        return self._teardown(keep_logs=False)

    def _anything_there(self) -> bool:
        return bool(
            (self.state_dir / MARKER).exists()
            or self._state_path.exists()
            or netns.sandbox_netns(self.config.prefix)
            or self._known_daemons_alive()
        )

    def _known_daemons(self) -> list[procs.Daemon]:
        return leftovers.known_daemons(self.state_dir, self._daemons)

    def _known_daemons_alive(self) -> list[procs.Daemon]:
        return [d for d in self._known_daemons() if procs.live_pid(d) is not None]

    def _check_netns_ours(self) -> None:
        leftovers.check_netns_ours(self.config.prefix, self.state_dir, self._known_daemons())

    def _clear_leftovers(self, progress: Callable[[str], None]) -> None:
        """Raise if this sandbox really runs; otherwise remove whatever a crash left behind."""
        found = []
        if self._state_path.exists():
            recorded = Sandbox.load(self.state_dir)
            alive = [d.name for d in recorded._daemons if procs.live_pid(d) is not None]
            if alive:
                dead = [d.name for d in recorded._daemons if d.name not in alive]
                detail = f" (stopped: {', '.join(dead)})" if dead else ""
                raise SandboxError(
                    f"already up in {self.state_dir}{detail} (run `kovn sandbox down` first)")
            recorded._check_netns_ours()
            found += recorded._teardown(keep_logs=False)
        if (self.state_dir.exists() and any(self.state_dir.iterdir())
                and not (self.state_dir / MARKER).exists()):
            raise SandboxError(
                f"{self.state_dir} exists and is not a kovn sandbox directory; "
                "choose another --state-dir or empty it")
        self._check_netns_ours()
        if self._anything_there():
            found += self._teardown(keep_logs=False)
        for line in found:
            progress(f"leftover: {line}")

    def _teardown(self, keep_logs: bool) -> list[str]:
        """Remove everything this sandbox may have created; never fails half-way."""
        # Clients of etcd and the NB first: kube-apiserver takes long to stop without etcd.
        known = self._known_daemons()
        late = {"etcd", *procs.DAEMON_BINARIES}
        done = procs.stop_daemons([d for d in known if d.binary not in late])
        done += procs.stop_daemons([d for d in known if d.binary in late])
        # Pods first, the underlay last: deleting a node netns also destroys its veth ends.
        for ns in sorted(netns.sandbox_netns(self.config.prefix), key=self._netns_order):
            try:
                if netns.netns_delete(ns):
                    done.append(f"deleted netns {ns}")
            except SandboxError as exc:
                done.append(f"could not delete netns {ns}: {exc}")
        try:  # only the name: the netns is the machine's own
            if netns.netns_delete(self.config.host_netns):
                done.append(f"removed netns name {self.config.host_netns}")
        except SandboxError as exc:
            done.append(f"could not remove netns name {self.config.host_netns}: {exc}")
        done += netns.remove_blackholes(self._blackholes)
        self._blackholes, self._daemons, self._phase = [], [], "down"
        if keep_logs:
            self._state_path.unlink(missing_ok=True)
        elif (self.state_dir / MARKER).exists() or self._state_path.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
            done.append(f"removed {self.state_dir}")
        return done

    def _netns_order(self, name: str) -> int:
        if name.startswith(self.config.pod_netns_prefix):
            return 0
        return 2 if name == self.config.underlay_netns else 1

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """What runs and where: a JSON-able dict read from state.json and /proc."""
        base = {"state_dir": str(self.state_dir), "nb_remote": self.nb_remote,
                "sb_remote": self.sb_remote, "nb_tcp_remote": self.nb_tcp_remote}
        if not self._state_path.exists():
            return {**base, "state": "down", "up": False, "daemons": [], "nodes": [],
                    "blackholes": [], "started_at": None, "prefix": self.config.prefix,
                    "metrics": {}, "kube": None}
        loaded = Sandbox.load(self.state_dir)
        daemons = []
        for d in loaded._daemons:
            pid = procs.live_pid(d)
            daemons.append({"name": d.name, "binary": d.binary, "pid": pid or d.pid,
                            "alive": pid is not None, "log": d.log, "netns": d.netns,
                            "crashes": procs.crashes_logged(d)})
        alive = sum(d["alive"] for d in daemons)
        if loaded._phase == "starting" and alive:
            state = "starting"
        elif daemons and alive == len(daemons):
            state = "up"
        else:
            state = "degraded" if alive else "crashed"
        return {
            "state_dir": str(self.state_dir),
            "state": state,
            "up": state == "up",
            "prefix": loaded.config.prefix,
            "nb_remote": loaded.nb_remote,
            "sb_remote": loaded.sb_remote,
            "nb_tcp_remote": loaded.nb_tcp_remote,
            "ovn_ha": loaded.config.ovn_ha,
            "raft": central.raft_status(loaded.config),
            "started_at": loaded._started_at,
            "daemons": daemons,
            "nodes": [_node_json(n) for n in loaded.nodes],
            "blackholes": loaded._blackholes,
            "metrics": metrics.endpoints(loaded.config),
            "kube": ({"kubeconfig": str(loaded.kubeconfig),
                      "apiserver": kube.apiserver_url(loaded.config),
                      "identities": identities.describe(loaded.config)}
                     if loaded.config.kube else None),
        }


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"{path} is unreadable ({exc}); remove {state_dir} by hand") from exc


def _node_json(node: SandboxNode) -> dict[str, str]:
    return {"name": node.name, "netns": node.netns, "dir": str(node.dir),
            "ovs_remote": node.ovs_remote, "underlay_ip": node.underlay_ip,
            "external_ip": node.external_ip}
