"""What a sandbox looks like: where its state lives, how many nodes, which names and addresses.

The config is a frozen value so that `state.json` can record it and `Sandbox.load` can rebuild
exactly the same sandbox (names, sockets, addresses) in another process.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import defaults

# The machine's own eth0 sits in 192.0.2.0/24, so the underlay uses TEST-NET-3 instead.
DEFAULT_STATE_DIR = Path("/tmp/kovn-sandbox")
STATE_DIR_ENV = "KOVN_SANDBOX_DIR"
# Node i's underlay address is host number FIRST_NODE_HOST + i of the underlay CIDR, and its
# gateway router's external address the same host number of the outside CIDR.
FIRST_NODE_HOST = 10
# The "outside" network beyond the gateway routers (sandbox/outside.py); its first address is
# the outside's router and client.
OUTSIDE_CIDR = "198.51.100.0/24"
# Members of each OVN database's raft cluster with ovn_ha (sandbox/raft.py).
RAFT_MEMBERS = 3


def default_state_dir() -> Path:
    """The state dir used when none is given: $KOVN_SANDBOX_DIR, else /tmp/kovn-sandbox."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that makes one sandbox distinct from another on the same machine.

    Two sandboxes may run side by side when their state_dir, prefix (netns names) and
    nb_tcp_port differ; the underlay addresses live inside netns and may repeat.
    """

    state_dir: Path = DEFAULT_STATE_DIR
    nodes: int = 2
    prefix: str = "kovn"
    underlay_cidr: str = "203.0.113.0/24"
    outside_cidr: str = OUTSIDE_CIDR
    nb_tcp_port: int | None = 6641
    # OVN NB and SB each as a 3-member raft cluster (sandbox/raft.py) instead of one
    # ovsdb-server each; clients get every member as a comma-separated remote. The NB's TCP
    # remote is then nb_tcp_port, +1 and +2 (one per member).
    ovn_ha: bool = False
    # The Kubernetes control plane (etcd, apiserver, controller-manager, scheduler) and the
    # node heartbeat; False starts only OVN. Ports are on 127.0.0.1; 0 picks a free one at
    # `up` (state.json records the port chosen).
    kube: bool = True
    apiserver_port: int = 6443
    etcd_port: int = 2379
    etcd_peer_port: int = 2380
    # The kovn controller as a daemon of the sandbox (needs kube); tests run their own.
    controller: bool = True
    # Pods really run (needs kube): per node a kovn node agent and a sandbox kubelet, which
    # also keeps the Node Ready. False: a heartbeat keeps the Nodes Ready and pods are only
    # scheduled. Without the controller nobody annotates the nodes, so `up` then does not
    # wait for the agents (a test running its own controller calls Sandbox.wait_agents).
    workloads: bool = True
    # Where the controller and each node's agent serve /metrics, /healthz and /readyz, on
    # 127.0.0.1 (sandbox/metrics.py); 0 and () pick free ones at `up`.
    controller_metrics_port: int = 0
    agent_metrics_ports: tuple[int, ...] = ()
    # The kovn controller and node agents run as the manifests' ServiceAccounts, with only
    # the rights manifests/rbac grants (sandbox/identities.py); False: as the admin.
    service_accounts: bool = True
    blackhole_ranges: tuple[str, ...] = (
        OUTSIDE_CIDR,
        defaults.JOIN_CIDR,
        defaults.POD_CIDR,
        defaults.SERVICE_CIDR,
    )

    def __post_init__(self) -> None:
        # Fail before any side effect: a bad value found half-way through `up` leaves debris.
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "blackhole_ranges", tuple(self.blackhole_ranges))
        object.__setattr__(self, "agent_metrics_ports", tuple(self.agent_metrics_ports))
        if self.nodes < 1:
            raise ValueError(f"a sandbox needs at least one node, got {self.nodes}")
        if not self.prefix or not self.prefix.replace("-", "").isalnum():
            raise ValueError(f"prefix must be letters, digits and dashes, got {self.prefix!r}")
        net = ipaddress.ip_network(self.underlay_cidr)
        if FIRST_NODE_HOST + self.nodes >= net.num_addresses - 1:
            raise ValueError(f"{self.underlay_cidr} is too small for {self.nodes} nodes")
        outside = ipaddress.ip_network(self.outside_cidr)
        if FIRST_NODE_HOST + self.nodes >= outside.num_addresses - 1:
            raise ValueError(f"{self.outside_cidr} is too small for {self.nodes} nodes")
        if self.nb_tcp_port is not None and not 0 < self.nb_tcp_port < 65536:
            raise ValueError(f"nb_tcp_port must be 1..65535 or None, got {self.nb_tcp_port}")
        if self.nb_tcp_ports and self.nb_tcp_ports[-1] > 65535:
            raise ValueError(f"nb_tcp_port {self.nb_tcp_port} leaves no room for the NB "
                             f"cluster's {len(self.nb_tcp_ports)} members: use a lower port")
        for cidr in self.blackhole_ranges:
            ipaddress.ip_network(cidr)
        for field in ("apiserver_port", "etcd_port", "etcd_peer_port"):
            port = getattr(self, field)
            if not 0 <= port < 65536:
                raise ValueError(f"{field} must be 0 (any free port) or 1..65535, got {port}")
        taken = [p for p in (self.apiserver_port, self.etcd_port, self.etcd_peer_port,
                             *self.nb_tcp_ports) if p]
        if len(taken) != len(set(taken)):
            raise ValueError(f"the sandbox's TCP ports must differ, got {sorted(taken)}")

    @property
    def nb_tcp_ports(self) -> tuple[int, ...]:
        """The 127.0.0.1 ports the NB serves clients on: one, or one per raft member."""
        if self.nb_tcp_port is None:
            return ()
        members = RAFT_MEMBERS if self.ovn_ha else 1
        return tuple(self.nb_tcp_port + i for i in range(members))

    def node_name(self, index: int) -> str:
        """Name of node `index` (1-based); also its OVN chassis name."""
        return f"node{index}"

    def node_netns(self, index: int) -> str:
        return f"{self.prefix}-node{index}"

    @property
    def runs_pods(self) -> bool:
        """Whether node agents and kubelets run (workloads need the control plane)."""
        return self.kube and self.workloads

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}-underlay"

    @property
    def host_netns(self) -> str:
        """A name for the machine's own (root) netns, where the API server listens."""
        return f"{self.prefix}-host"

    @property
    def pod_netns_prefix(self) -> str:
        return f"{self.prefix}-p-"

    def underlay_ip(self, index: int) -> str:
        """Node `index`'s address on the underlay (no prefix length)."""
        net = ipaddress.ip_network(self.underlay_cidr)
        return str(net.network_address + FIRST_NODE_HOST + index)

    @property
    def underlay_prefixlen(self) -> int:
        return ipaddress.ip_network(self.underlay_cidr).prefixlen

    @property
    def outside_netns(self) -> str:
        """The netns playing the internet beyond the nodes' gateway routers."""
        return f"{self.prefix}-outside"

    @property
    def outside_gateway(self) -> str:
        """The outside's own address: the gateway routers' next hop, and the client."""
        return str(ipaddress.ip_network(self.outside_cidr).network_address + 1)

    @property
    def outside_prefixlen(self) -> int:
        return ipaddress.ip_network(self.outside_cidr).prefixlen

    def external_ip(self, index: int) -> str:
        """Node `index`'s external address (owned by its gateway router; no prefix)."""
        net = ipaddress.ip_network(self.outside_cidr)
        return str(net.network_address + FIRST_NODE_HOST + index)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["blackhole_ranges"] = list(self.blackhole_ranges)
        data["agent_metrics_ports"] = list(self.agent_metrics_ports)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(**kwargs)  # __post_init__ turns the JSON str and list back into Path, tuple
