"""The sandbox's Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler on 127.0.0.1, plus the node heartbeat where no kubelets run, started as recorded
sandbox daemons.

Upstream binaries come from `<repo>/.cache/k8s/bin` (built by sandbox/k8s/build.sh) or
$KOVN_K8S_BIN. Files in the state dir: pki/ (sandbox.kube_pki), kubeconfig (admin),
kube/<component>.kubeconfig, kube/etcd (data), <component>.log and .pid.

The Nodes are kept Ready by the sandbox kubelets when pods run (sandbox.workloads), else by
the heartbeat daemon (sandbox.heartbeat). Pods reach the API server as the `kubernetes`
Service through a relay on every node (sandbox.apirelay), which also publishes its endpoints.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contract import defaults
from kube.client import KubeClient, KubeError
from sandbox import identities, metrics, procs
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError, SandboxTimeout
from sandbox.kube_pki import Pki, create_pki, write_kubeconfig

REPO = Path(__file__).resolve().parents[1]
BIN_ENV = "KOVN_K8S_BIN"
DAEMON_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
CRD_DIR = REPO / "manifests" / "crds"
FIELD_MANAGER = "kovn-sandbox"
CONTROLLER = "kovn-controller"  # the daemon's name in state.json and status

Record = Callable[[procs.Daemon], None]
Progress = Callable[[str], None]


def bin_dir() -> Path:
    return Path(os.environ.get(BIN_ENV) or REPO / ".cache" / "k8s" / "bin")


def check_binaries() -> None:
    """Raise with what to do if a control-plane binary is missing."""
    d = bin_dir()
    missing = [b for b in DAEMON_BINARIES if not os.access(d / b, os.X_OK)]
    if missing:
        raise SandboxError(
            f"Kubernetes binaries missing in {d}: run sandbox/k8s/build.sh (~10 min cold); "
            f"or start only OVN with --no-kube (missing: {', '.join(missing)})")


def kubeconfig(config: SandboxConfig) -> Path:
    """The admin kubeconfig (user kubernetes-admin, group system:masters)."""
    return config.state_dir / "kubeconfig"


def apiserver_url(config: SandboxConfig) -> str:
    return f"https://127.0.0.1:{config.apiserver_port}"


# ------------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int, what: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SandboxError(
                f"127.0.0.1:{port} ({what}) is in use ({exc.strerror}); another sandbox? "
                f"Use {option} with another port, or 0 for any free port") from exc


PORT_FIELDS = {  # config field -> (what, CLI option)
    "apiserver_port": ("kube-apiserver", "--apiserver-port"),
    "etcd_port": ("etcd clients", "--etcd-port"),
    "etcd_peer_port": ("etcd peers", "--etcd-peer-port"),
}


def resolve_ports(config: SandboxConfig) -> dict[str, int]:
    """Check the configured ports are free; pick free ones for those set to 0."""
    chosen = {field: getattr(config, field) for field in PORT_FIELDS}
    for field, (what, option) in PORT_FIELDS.items():
        if chosen[field]:
            check_port_free(chosen[field], what, option)
            continue
        while (port := free_port()) in chosen.values() or port in config.nb_tcp_ports:
            pass
        chosen[field] = port
    return chosen


# ------------------------------------------------------------------------------- start


def start_control_plane(config: SandboxConfig, record: Record) -> Pki:
    """Write PKI and kubeconfigs, start etcd and kube-apiserver (not waiting for them)."""
    d = config.state_dir
    pki = create_pki(d / "pki")
    server = apiserver_url(config)
    write_kubeconfig(kubeconfig(config), server, pki, "admin")
    for component in ("kube-controller-manager", "kube-scheduler"):
        write_kubeconfig(_component_kubeconfig(config, component), server, pki, component)
    (d / "kube").mkdir(exist_ok=True)
    etcd = f"http://127.0.0.1:{config.etcd_port}"
    peer = f"http://127.0.0.1:{config.etcd_peer_port}"
    record(_spawn(config, "etcd", [
        f"--data-dir={d / 'kube' / 'etcd'}",
        "--name=sandbox",
        f"--listen-client-urls={etcd}", f"--advertise-client-urls={etcd}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=sandbox={peer}",
        "--unsafe-no-fsync",  # a throwaway cluster: speed over durability
        "--log-level=warn",
    ]))
    record(_spawn(config, "kube-apiserver", [
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        "--bind-address=127.0.0.1", f"--secure-port={config.apiserver_port}",
        # No endpoints of the `kubernetes` Service from the API server: 127.0.0.1 is not a
        # valid one, and any other address would be the machine's, which pods must not
        # reach. Each node's relay publishes its own instead (sandbox.apirelay).
        "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
        f"--etcd-servers={etcd}",
        f"--client-ca-file={pki.ca}",
        f"--service-cluster-ip-range={defaults.SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--profiling=false",
    ]))
    return pki


def start_managers(config: SandboxConfig, pki: Pki, record: Record) -> None:
    """Start kube-controller-manager and kube-scheduler (once the apiserver is ready)."""
    d = config.state_dir
    record(_spawn(config, "kube-controller-manager", [
        f"--kubeconfig={_component_kubeconfig(config, 'kube-controller-manager')}",
        "--secure-port=0",  # no metrics/healthz server: nothing to bind
        "--leader-elect=false",
        "--controllers=*",
        "--use-service-account-credentials",
        # Default 20/s: its start-up (a token per controller, discovery) would take seconds.
        "--kube-api-qps=200", "--kube-api-burst=400",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca}",
        f"--cluster-signing-cert-file={pki.ca}",
        f"--cluster-signing-key-file={pki.key('ca')}",
        f"--service-cluster-ip-range={defaults.SERVICE_CIDR}",
        # Else it creates /usr/libexec/kubernetes/... on the machine.
        f"--flex-volume-plugin-dir={d / 'kube' / 'flexvolume'}",
        "--profiling=false",
    ]))
    record(_spawn(config, "kube-scheduler", [
        f"--kubeconfig={_component_kubeconfig(config, 'kube-scheduler')}",
        "--secure-port=0",
        "--leader-elect=false",
        # Default 50/s, burst 100: a bind and an event per pod, so a rollout of 100 pods
        # waited seconds for the scheduler's own rate limiter before any kubelet saw one.
        "--kube-api-qps=200", "--kube-api-burst=400",
        "--profiling=false",
    ]))


def start_heartbeat(config: SandboxConfig, nodes: dict[str, str], record: Record) -> None:
    """The daemon that registers the Nodes and keeps them Ready (sandbox.heartbeat)."""
    d = config.state_dir
    pidfile = d / "heartbeat.pid"
    argv = [sys.executable, "-m", "sandbox.heartbeat", f"--pidfile={pidfile}",
            "--kubeconfig", str(kubeconfig(config))]
    for name, ip in nodes.items():
        argv += ["--node", f"{name}={ip}"]
    record(procs.spawn_daemon("heartbeat", argv, pidfile=pidfile, log=d / "heartbeat.log",
                              env=python_env(), cwd=REPO))


def start_controller(config: SandboxConfig, nb_remote: str, record: Record) -> procs.Daemon:
    """`kovn controller` against the sandbox's NB and API server."""
    d = config.state_dir
    kc = str(identities.kubeconfig_for(config, identities.CONTROLLER_SA))
    # A stable identity: a restarted controller (sandbox restart) resumes its own Lease at
    # once, as a restarted container of the same pod does.
    argv = [sys.executable, "-m", "cli.main", "controller", "--nb", nb_remote,
            "--kubeconfig", kc, "--service-dns", "--identity", f"{config.prefix}-controller",
            *metrics.controller_args(config)]
    daemon = procs.spawn_daemon(CONTROLLER, argv, pidfile=d / "controller.pid",
                                log=d / "controller.log", match=("controller", kc),
                                env=python_env(), cwd=REPO)
    record(daemon)
    return daemon


def _spawn(config: SandboxConfig, name: str, args: list[str]) -> procs.Daemon:
    # args[0] names a file of this sandbox: it identifies the process (see procs.spawn_daemon).
    d = config.state_dir
    return procs.spawn_daemon(name, [str(bin_dir() / name), *args], pidfile=d / f"{name}.pid",
                              log=d / f"{name}.log", match=(args[0],))


def _component_kubeconfig(config: SandboxConfig, component: str) -> Path:
    return config.state_dir / "kube" / f"{component}.kubeconfig"


def python_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


# ------------------------------------------------------------------------------- up


@dataclass(frozen=True)
class KubeUp:
    """What finish_up needs from the sandbox being started."""

    config: SandboxConfig
    pki: Pki
    nodes: dict[str, str]  # node name -> underlay IP (its InternalIP)
    nb_remote: str
    record: Record
    daemons: Callable[[], list[procs.Daemon]]  # all recorded so far
    progress: Progress
    # Starts the node agents and kubelets (which keep the Nodes Ready) and returns their
    # logs; None: the heartbeat keeps the Nodes Ready and pods never run.
    start_workloads: Callable[[], list[str]] | None = None


def finish_up(up: KubeUp) -> None:
    """After start_control_plane: wait for the apiserver, start the managers, apply the CRDs,
    start the kovn controller and the kubelets and agents (or the heartbeat), wait until the
    nodes are schedulable."""
    config, d = up.config, up.config.state_dir
    t0 = time.monotonic()
    wait = Waiter(config, up.daemons())
    try:
        wait.apiserver_ready()
        up.progress(f"kube: apiserver {apiserver_url(config)} ready, etcd "
                    f"127.0.0.1:{config.etcd_port} ({time.monotonic() - t0:.1f}s after OVN)")
        start_managers(config, up.pki, up.record)
        crds = apply_crds(wait.api)
        for name in crds:
            wait.until(f"CRD {name} Established", lambda n=name: crd_established(wait.api, n),
                       30, str(d / "kube-apiserver.log"))
        up.progress(f"kube: CRDs established: {', '.join(crds) or 'none'}")
        up.progress(identities.setup(config, wait.api))
        controller = None
        if config.controller:
            controller = start_controller(config, up.nb_remote, up.record)
        if up.start_workloads is not None:
            logs, keepers = up.start_workloads(), "kubelets"
        else:
            start_heartbeat(config, up.nodes, up.record)
            logs, keepers = [str(d / "heartbeat.log")], "heartbeat"
        wait.daemons = [x for x in up.daemons() if x is not controller]
        names = list(up.nodes)
        wait.until("Nodes Ready and untainted", lambda: nodes_schedulable(wait.api, names),
                   60, f"{' and '.join(logs)} and {d / 'kube-controller-manager.log'}")
        wait.until("ServiceAccount default/default",
                   lambda: wait.api.get_or_none("/api/v1/namespaces/default/serviceaccounts/"
                                                "default"),
                   30, str(d / "kube-controller-manager.log"))
        up.progress(f"kube: nodes {', '.join(names)} Ready and schedulable "
                    f"(controller-manager, scheduler, {keepers} running)")
        if controller is not None:
            state = "running" if procs.live_pid(controller) else "EXITED"
            up.progress(f"kube: kovn controller {state}, log {controller.log}")
    finally:
        wait.close()


# ------------------------------------------------------------------------------- wait


class Waiter:
    """Polls the API server with the admin kubeconfig; fails early if a daemon died."""

    def __init__(self, config: SandboxConfig, daemons: Iterable[procs.Daemon]) -> None:
        self.config = config
        self.daemons = list(daemons)
        self.api = KubeClient(kubeconfig(config), pool_size=2, timeout=5)

    def until(self, what: str, check: Callable[[], Any], timeout: float, log: str) -> Any:
        """Call check() until it returns something truthy; SandboxTimeout naming `log`."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                result = check()
                if result:
                    return result
            except KubeError as exc:
                last = f" (last error: {exc})"
            for daemon in self.daemons:
                if procs.live_pid(daemon) is None:
                    raise SandboxError(f"{daemon.name} exited while waiting for {what}; "
                                       f"see {daemon.log}")
            if time.monotonic() > deadline:
                raise SandboxTimeout(f"{what} not within {timeout:.0f}s{last}; see {log}")
            time.sleep(0.1)

    def apiserver_ready(self, timeout: float = 60) -> None:
        log = str(self.config.state_dir / "kube-apiserver.log")
        self.until("kube-apiserver /readyz", lambda: self.api.get("/readyz") == "ok",
                   timeout, log)

    def close(self) -> None:
        self.api.close()


def apply_crds(api: KubeClient, crd_dir: Path = CRD_DIR) -> list[str]:
    """Server-side apply every CustomResourceDefinition in crd_dir/*.yaml; their names."""
    names = []
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc["metadata"]["name"]
            try:
                api.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                          doc, FIELD_MANAGER)
            except KubeError as exc:
                raise SandboxError(f"the API server refused CRD {name} of {path}: {exc}") \
                    from exc
            names.append(name)
    return names


def crd_established(api: KubeClient, name: str) -> bool:
    crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return _condition(crd, "Established") == "True"


def nodes_schedulable(api: KubeClient, names: Iterable[str]) -> bool:
    """Every node exists, is Ready, has no taint and is not cordoned."""
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes").get("items", [])}
    for name in names:
        node = nodes.get(name)
        if (node is None or _condition(node, "Ready") != "True"
                or node["spec"].get("taints") or node["spec"].get("unschedulable")):
            return False
    return True


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None
