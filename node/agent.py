"""`kovn node`: set the node's OVS up for OVN, keep the management port, serve the CNI.

Start-up order: Open_vSwitch (chassis external_ids, br-int), then the restart reconcile (stale
pod ports removed, live ones untouched), then the CNI socket appears; from then on the Node's
`kovn.io/node-network` annotation is polled and the management port kept in line with it.
Stopping removes the socket and leaves every pod's port and veth as they are.

With `--external-ip/--external-gateway` the agent also maps the physical network `physnet` to
the external bridge (`ovn-bridge-mappings=physnet:br-ex`; the bridge and its uplink are the
host's, set up like any OVS bridge) and publishes both values on its Node
(contract/gateway.py), from which the controller builds the node's gateway router. Only the
node knows its external address, as with ovn-kubernetes' node-side gateway annotation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from contract import gateway
from contract.defaults import SERVICE_CIDR
from contract.podnetwork import NODE_NETWORK, NodeNetwork
from kube.client import KubeClient, KubeError, annotations, node_path
from kube.listwatch import ListWatch
from node import metrics
from node.attach import Attachments, AttachSettings
from node.cni_protocol import DEFAULT_SOCKET, CniError, CniRequest, Code
from node.cni_server import CniServer
from node.mgmt import ManagementPort
from node.nodeports import NodePortTable
from node.ovs import Ovs
from node.plumbing import NetnsMissing, enter_netns, open_netns
from node.podwatch import NodePods
from node.southbound import PortBindings
from telemetry.server import TelemetryServer

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    node: str
    kubeconfig: str | None
    ovs_db: str
    sb_remote: str
    encap_ip: str
    datapath_type: str = "system"
    socket: str = DEFAULT_SOCKET
    annotation_timeout: float = 30.0
    bridge: str = "br-int"
    kube_netns: str | None = None
    install_timeout: float = 30.0
    node_poll: float = 3.0
    external: gateway.ExternalNetwork | None = None
    """The node's external network, published on its Node for its gateway router."""
    external_bridge: str = gateway.DEFAULT_EXTERNAL_BRIDGE
    service_cidr: str = SERVICE_CIDR
    """Routed to the node's gateway router, which balances the node's own connections."""
    metrics_address: str = "off"
    """Where /metrics, /healthz and /readyz are served (node/metrics.py), or `off`."""
    metrics_netns: str | None = None
    """The netns to listen in (None: the agent's own)."""
    southbound_networks: bool = True
    """ADDs also read the pods' networks from their southbound Port_Bindings
    (node/southbound.py) instead of waiting for the annotation alone."""

    @property
    def tx_off(self) -> bool:
        """Only the userspace datapath needs tx checksum offload off on veths."""
        return self.datapath_type == "netdev"

    def chassis_ids(self) -> dict[str, str]:
        ids = {"system-id": self.node, "ovn-remote": self.sb_remote,
               "ovn-encap-type": "geneve", "ovn-encap-ip": self.encap_ip,
               "ovn-bridge-datapath-type": self.datapath_type}
        if self.external is not None:  # else any mappings set by hand stay as they are
            ids["ovn-bridge-mappings"] = gateway.bridge_mappings(self.external_bridge)
        return ids


def connect_kube(kubeconfig: str | None, kube_netns: str | None = None) -> KubeClient:
    """The agent's API client: kovn's one client, its requests made from `kube_netns` if set.

    The agent runs in the node's host netns; in the sandbox that netns cannot reach the API
    server on the machine's loopback, so a small pool of threads enters `kube_netns` once and
    every request runs there, while everything else the agent does stays in the node's netns.
    """
    if kube_netns:
        try:
            os.close(open_netns(kube_netns))
        except (NetnsMissing, OSError) as exc:
            raise KubeError(0, f"--kube-netns {kube_netns}: {exc}") from exc
    return KubeClient(kubeconfig, pool_size=8, timeout=15.0, api_netns=kube_netns,
                      enter_netns=enter_netns,
                      unreachable_hint="" if kube_netns else
                      "if only another netns reaches it, pass --kube-netns")


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.ovs: Ovs | None = None
        self.kube: KubeClient | None = None
        self.attachments: Attachments | None = None
        self.server: CniServer | None = None
        self.mgmt: ManagementPort | None = None
        self.node_ports: NodePortTable | None = None
        self.pods: NodePods | None = None
        self.bindings: PortBindings | None = None
        self._services: ListWatch | None = None
        self._last_mgmt_error = ""
        self.metrics = metrics.NodeMetrics()
        self.telemetry: TelemetryServer | None = None
        self.started = False
        """start() has finished: the CNI is served."""

    def start(self) -> None:
        t0 = time.monotonic()
        config = self.config
        # First, so /healthz answers (and /readyz says why not yet) while the rest starts.
        self.telemetry = metrics.serve(self, config.metrics_address, config.metrics_netns)
        self.ovs = Ovs(config.ovs_db).start()
        self.ovs.configure_chassis(config.chassis_ids())
        self.ovs.ensure_bridge(config.bridge, config.datapath_type)
        LOG.info("Open_vSwitch %s: system-id=%s ovn-remote=%s encap geneve/%s, %s datapath "
                 "%s", config.ovs_db, config.node, config.sb_remote, config.encap_ip,
                 config.bridge, config.datapath_type)
        self.kube = connect_kube(config.kubeconfig, config.kube_netns)
        self.pods = NodePods(self.kube, config.node).start()
        if config.southbound_networks:
            self.bindings = PortBindings(config.sb_remote, on_change=self.pods.poke).start()
        self.attachments = Attachments(
            AttachSettings(node=config.node, bridge=config.bridge,
                           annotation_timeout=config.annotation_timeout,
                           install_timeout=config.install_timeout, tx_off=config.tx_off),
            self.ovs, self.kube, self.pods, on_added=self.metrics.pod_added,
            bindings=self.bindings)
        self.attachments.reconcile()
        self.mgmt = ManagementPort(self.ovs, config.bridge, tx_off=config.tx_off)
        self.server = CniServer(config.socket, self.dispatch,
                                observe=self.metrics.cni_request).start()
        self.serve_node_ports()
        self.started = True
        LOG.info("kovn node %s ready: serving CNI on %s (%.2fs)", config.node, config.socket,
                 time.monotonic() - t0)

    def serve_node_ports(self) -> None:
        """Node ports on this node's own addresses (node/nodeports.py), from a watch of the
        Services; a watch that cannot start yet keeps retrying in its thread."""
        assert self.kube is not None
        table = self.node_ports = NodePortTable(service_cidrs=(self.config.service_cidr,))
        if table.nft is None:
            return
        self._services = ListWatch(self.kube, "/api/v1/services", table.services,
                                   name="services")
        self._services.start(list_first=False)

    def dispatch(self, request: CniRequest) -> dict[str, Any] | None:
        attachments = self.attachments
        assert attachments is not None
        if request.command == "ADD":
            return attachments.add(request)
        if request.command == "DEL":
            attachments.delete(request)
        elif request.command == "CHECK":
            attachments.check(request)
        elif request.command == "GC":
            attachments.gc(request)
        elif request.command == "STATUS":
            attachments.status()
        else:
            raise CniError(Code.INVALID_ENVIRONMENT, f"the agent does not do {request.command}")
        return None

    def sync_management_port(self) -> None:
        """One pass: read the Node, apply its node-network annotation to ovn0."""
        assert self.kube is not None and self.mgmt is not None
        try:
            node = self.kube.get_or_none(node_path(self.config.node))
            if node is None:
                self._mgmt_problem(f"Node {self.config.node} does not exist (yet)")
                return
            self.publish_external(node)
            text = annotations(node).get(NODE_NETWORK)
            if not text:
                self._mgmt_problem(f"Node {self.config.node} has no {NODE_NETWORK} annotation "
                                   "yet (written by `kovn controller`)")
                return
            network = NodeNetwork.decode(text)
            self.mgmt.sync(network)
            if self.node_ports is not None:
                external = self.config.external.address if self.config.external else ""
                self.node_ports.point_at(external, network.gateway_router_ip)
            self._last_mgmt_error = ""
        except (KubeError, ValueError, RuntimeError, OSError) as exc:
            self._mgmt_problem(f"management port: {exc}")

    def publish_external(self, node: dict[str, Any]) -> None:
        """Write the node's external network on its Node when the annotations differ."""
        assert self.kube is not None
        wanted = self.config.external.annotations() if self.config.external else {}
        current = annotations(node)
        if all(current.get(k) == v for k, v in wanted.items()):
            return
        try:
            self.kube.merge_patch(node_path(self.config.node),
                                  {"metadata": {"annotations": wanted}})
        except KubeError as exc:  # the next poll tries again; the CNI keeps serving
            self._mgmt_problem(f"publishing the external network on Node "
                               f"{self.config.node}: {exc}")
            return
        LOG.info("published the external network on Node %s: %s", self.config.node,
                 ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())))

    def _mgmt_problem(self, message: str) -> None:
        if message != self._last_mgmt_error:  # say it once, not every poll
            LOG.warning("%s", message)
            self._last_mgmt_error = message

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: keep the management port in line with the Node."""
        while not stop.is_set():
            self.sync_management_port()
            stop.wait(self.config.node_poll if self.mgmt and self.mgmt.applied else 1.0)

    def close(self) -> None:
        started = self.server is not None
        if self._services is not None:
            self._services.stop()  # the table stays: node ports keep working while we restart
            self._services = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.bindings is not None:
            self.bindings.close()
            self.bindings = None
        if self.pods is not None:
            self.pods.stop()
            self.pods = None
        if self.kube is not None:
            self.kube.close()
            self.kube = None
        if self.ovs is not None:
            self.ovs.close()
            self.ovs = None
        if self.telemetry is not None:
            self.telemetry.stop()
            self.telemetry = None
        if started:
            LOG.info("kovn node %s stopped (pod ports and veths left as they are)",
                     self.config.node)
