"""NodePorts on the node's own addresses, and the node's own connections to Services: the
host half of kube-proxy.

The controller serves every node port on each node's external IP (the gateway router's). A
connection to one of the node's *own* addresses (its InternalIP on the underlay, its ovn0
join address) arrives in the node's kernel, which OVN never sees. So the agent keeps one
nftables table, `ip kovn`, in the node's network namespace:

    prerouting/output (nat, dstnat): to a local address (fib daddr type local, not
        127/8), TCP or UDP dport one of the node ports -> DNAT to the external IP of the
        node's gateway router, which serves every node port there; the agent routes that
        one address into ovn0 via the router's join address (`gateway_router_ip` of
        kovn.io/node-network), so the connection enters the router from the join side;
    postrouting (nat, srcnat): DNATed connections leaving through ovn0 are masqueraded to
        ovn0's address, so the router's reply comes back the same way to be un-NATed
        (kube-proxy masquerades NodePort traffic for the same reason).

Measured alternatives that failed on OVN 23.03 + the userspace datapath: the Service's
load balancers on the join switch (DNAT to the cluster IP) made OVS 3.1.0's conntrack abort
(conntrack.c:1063) four times in one test session instead of about once in four runs; a
VIP on the router's join address itself answered only from backends on other nodes (4 of
10). The external IP over the join side: 10 of 10, backends on both nodes.

Connections from other hosts are forwarded (in through the node's interface, out through
ovn0), so the table needs `net.ipv4.ip_forward=1` in the node's namespace, as kube-proxy's
NodePorts do; the agent sets it with the first table.

The node's own connections to a ClusterIP (host-network pods, the kubelet, anything on
the node) take the same way: the agent routes the service range into ovn0 via the same join
address, and the router, which holds every Service's load balancer (clusterLBGroup),
balances them and SNATs to its join address (`lb_force_snat_ip=router_ip`), so replies
return to it. A node without a gateway router gets neither route.

The whole table is rewritten in one `nft -f` transaction when the set of node ports changes
(they change when Services do, rarely), so there is never a half-written table; an
unchanged set costs nothing. externalTrafficPolicy is not applied here (every endpoint
serves, as with policy Cluster); the gateway routers apply it for the external IPs.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kube.listwatch import Mirror
from node.plumbing import PlumbingError, sync_link_routes

LOG = logging.getLogger(__name__)
TABLE = "kovn"
PROTOCOLS = ("tcp", "udp")  # no SCTP: nftables needs the kernel's SCTP support for it


@dataclass(frozen=True, order=True)
class NodePort:
    protocol: str
    node_port: int


def node_ports(services: Iterable[Mapping[str, Any]]) -> list[NodePort]:
    """Every (protocol, nodePort) of the NodePort and LoadBalancer Services with a cluster
    IP, sorted; ports without a nodePort are skipped."""
    found = set()
    for svc in services:
        spec = svc.get("spec") or {}
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            continue
        try:
            ipaddress.ip_address(spec.get("clusterIP") or "")
        except ValueError:
            continue  # headless: nothing to balance
        for port in spec.get("ports") or ():
            protocol = (port.get("protocol") or "TCP").lower()
            if port.get("nodePort") and protocol in PROTOCOLS:
                found.add(NodePort(protocol, int(port["nodePort"])))
    return sorted(found)


def ruleset(ports: Iterable[NodePort], target: str, ifname: str = "ovn0") -> str:
    """The `nft -f` input that replaces table ip kovn (pure): node ports DNATed to
    `target`, the external IP of the node's gateway router."""
    ports = list(ports)
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    for protocol in PROTOCOLS:
        elements = ", ".join(str(p.node_port) for p in ports if p.protocol == protocol)
        lines += [f"  set nodeports_{protocol} {{", "    type inet_service"]
        if elements:
            lines.append(f"    elements = {{ {elements} }}")
        lines.append("  }")
    dnat = [f"    fib daddr type local ip daddr != 127.0.0.0/8 {p} dport @nodeports_{p} "
            f"dnat ip to {target}" for p in PROTOCOLS]
    for hook in ("prerouting", "output"):  # output: the node's own connections
        lines += [f"  chain {hook} {{",  # -100: dstnat (the name is prerouting's only)
                  f"    type nat hook {hook} priority -100; policy accept;", *dnat, "  }"]
    lines += ["  chain postrouting {",
              "    type nat hook postrouting priority srcnat; policy accept;",
              f'    oifname "{ifname}" ct status dnat masquerade', "  }", "}"]
    return "\n".join(lines) + "\n"


FORWARDING = "/proc/sys/net/ipv4/ip_forward"


def _enable_forwarding() -> None:
    try:
        with open(FORWARDING) as current:
            if current.read().strip() == "1":
                return
        with open(FORWARDING, "w") as sysctl:
            sysctl.write("1\n")
        LOG.info("net.ipv4.ip_forward=1: other hosts reach this node's node ports")
    except OSError as exc:
        LOG.warning("cannot set net.ipv4.ip_forward=1 (%s): only this node itself reaches "
                    "node ports on its own addresses", exc)


class NodePortTable:
    """The agent's side: Services in (from a list+watch), table ip kovn out."""

    def __init__(self, ifname: str = "ovn0", service_cidrs: tuple[str, ...] = ()) -> None:
        self.ifname = ifname
        self.service_cidrs = service_cidrs
        self.services = Mirror(self.sync)
        """Every Service, kept by the agent's list+watch; each change re-renders."""
        self.target = ""
        """The node's gateway router's external IP; none yet: no table."""
        self.applied: tuple[str, list[NodePort]] | None = None
        self._routed: tuple[str, str] | None = None
        self.lock = threading.Lock()
        self.nft = shutil.which("nft")
        if self.nft is None:
            LOG.warning("nft not found: node ports are served on the gateway routers' "
                        "external IPs only, not on this node's own addresses "
                        "(install nftables)")

    def point_at(self, external_ip: str, router_join_ip: str) -> None:
        """Where node ports go: the node's gateway router's external IP, routed into ovn0
        via the router's join address (from the Node's kovn.io/node-network; "" while the
        node has no gateway router), with the service range. Cheap when nothing changed:
        called at every poll."""
        target = external_ip if external_ip and router_join_ip else ""
        if target and (target, router_join_ip) != self._routed:
            try:
                sync_link_routes(self.ifname, router_join_ip,
                                 [f"{target}/32", *self.service_cidrs])
            except (PlumbingError, OSError) as exc:
                LOG.warning("route %s via %s on %s: %s (retried at the next poll)", target,
                            router_join_ip, self.ifname, exc)
                return
            self._routed = (target, router_join_ip)
        with self.lock:
            changed, self.target = target != self.target, target
        if changed:
            self.sync()

    def sync(self) -> None:
        with self.lock:
            ports = node_ports(self.services.snapshot().values())
            if not self.target or (self.target, ports) == self.applied or self.nft is None:
                return
            done = subprocess.run([self.nft, "-f", "-"],
                                  input=ruleset(ports, self.target, self.ifname),
                                  capture_output=True, text=True, timeout=10)
            if done.returncode != 0:
                LOG.warning("nft refused table ip %s: %s (retried at the next change)",
                            TABLE, done.stderr.strip())
                return
            if self.applied is None:
                _enable_forwarding()
            self.applied = (self.target, ports)
        LOG.info("node ports on this node's addresses, to %s: %d (%s)", self.target,
                 len(ports), ", ".join(f"{p.protocol}/{p.node_port}" for p in ports[:8])
                 + (", ..." if len(ports) > 8 else ""))

    def remove(self) -> None:
        """Drop the table (the agent stops serving node ports)."""
        if self.nft is not None:
            subprocess.run([self.nft, "delete", "table", "ip", TABLE], capture_output=True,
                           timeout=10)
