"""Desired NB rows of a node's gateway: pods reach the outside through their own node. Pure.

    pods ── <subnet> ── ovn-cluster ── join ── rtoj-GR_<node> ┐
                          │  policy: from a pod on <node>      GR_<node>  (options:chassis=<node>)
                          │  -> reroute to GR_<node>           rtoe-GR_<node> (external IP)
                                                               └── ext_<node> ── ln-ext_<node>
                                                                   (localnet, network physnet)

Per node (owner: the Node): the gateway router `GR_<node>` bound to the node's chassis, with
`lb_force_snat_ip=router_ip` (a NodePort connection it balances to another node's pod comes
back through it) and the cluster LB group; its join link (address from the join pool,
recorded in the Node's `kovn.io/node-network`); the external switch with its localnet port;
routes on the GR (each serving Subnet via the cluster router's join address, 0.0.0.0/0 via
the external next hop, the service range to `discard`: what the GR did not balance; the join
range needs none, it is the GR's own connected network);
a SNAT row per `natOutgoing` Subnet (pods of the other Subnets leave with their pod IP); and
on `ovn-cluster` one default route and one reroute policy. Rows per node: 11 + S + N for S
serving Subnets of which N NAT, plus the management port (14 with only `ovn-default`, NAT
on) and the Node's Chassis_Template_Var (controller/templates.py: its external IP, which
the node-port template load balancers use). Beside them each Subnet owns one `allow` policy
for its range, the Cluster one for the join range and a `drop` for the service range
(service_range_policy).

The routing scheme, chosen with real packets on OVN 23.03 (2 nodes, a NAT and a routed
Subnet, pods on both nodes; shell first, as ../shared/sandbox-recipe.sh, then the e2e tests):
- Subnets span nodes, so a pod's node is not in its address: ovn-kubernetes' per-node
  `src-ip` routes need node-local pod subnets, and Kube-OVN's distributed gateway keeps a
  per-node address set of the pod IPs on each node (O(pods) elements, rewritten at every pod
  start). Neither fits.
- ECMP `0.0.0.0/0` routes to every GR alone: a pod leaves through any node. Measured: a
  node1 pod was seen as node2's external IP in 2 of 3 connections.
- What works: one reroute policy per node on ovn-cluster, `ip4 &&
  is_chassis_resident("rtoj-GR_<node>")`, below the `allow` policies of the cluster ranges.
  ovn-cluster is distributed, so its pipeline runs on the chassis where the packet entered,
  the pod's; ovn-controller evaluates is_chassis_resident there, true only on the chassis
  the GR is bound to (so each chassis installs one flow of it). O(nodes) rows, nothing per
  pod, no churn at pod start or Subnet change, and the condition depends only on the Node's
  own GR (not on the agent's management port being up). Measured: 20/20 pings of a node2
  pod in the routed Subnet left through node2's external link, 0 through node1's (interface
  counters of the outside); in tests/e2e/test_gateway.py 40/40 TCP connections and UDP
  datagrams of NAT pods were seen as their own node's external IP.
- The cluster ranges are excluded by positive `allow` matches above, not by `ip4.dst !=
  {ranges}` in the reroute policy: ovn-controller expands a negated prefix bit by bit and
  multiplies the terms out, 212,348 OpenFlow flows in the policy table for 7 ranges
  (measured), seconds of ovn-controller CPU at each Subnet change and pods waiting 14 s for
  their port to be installed. With the allows: 8 flows per chassis (7 ranges + its own
  reroute; the other nodes' are not installed), 906 flows per node in all with the demo.
- Policies run after the routing stage, which drops a packet no route matches (ovn-trace:
  lr_in_ip_routing priority 0 `drop`), so each Node also adds `0.0.0.0/0` via its GR on
  ovn-cluster: together they are an ECMP default that the policy overrides, and that still
  carries the pods of a node without a gateway (through the others).
Replies: NAT ones come back to the GR that translated them; routed ones may come back
through any GR (the outside router's choice), which forwards them without state. The pod
switch's conntrack (private Subnet ACLs) runs on the pod's chassis either way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from contract.gateway import PHYSICAL_NETWORK, ExternalNetwork
from contract.podnetwork import mac_from_ip
from controller.config import ClusterConfig
from controller.subnets import SubnetSpec
from northbound import names
from northbound.rows import (
    NAT,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    NbRow,
    Owner,
    RouterPolicy,
    StaticRoute,
)

EGRESS_POLICY_PRIORITY = 1000
"""Priority of the per-node reroute policies on ovn-cluster (0..32767)."""
CLUSTER_POLICY_PRIORITY = 1001
"""Above them: traffic to a cluster range keeps the routing decision (`allow`)."""
DEFAULT_ROUTE = "0.0.0.0/0"


@dataclass(frozen=True)
class Gateway:
    """Everything one node's gateway rows depend on."""

    node: str
    join_ip: str
    """The GR's address on the join switch (no prefix length)."""
    external: ExternalNetwork
    subnets: tuple[SubnetSpec, ...]
    """The serving Subnets (routes back to them, SNAT for the natOutgoing ones)."""


def check(node: str, external: ExternalNetwork, subnets: Iterable[SubnetSpec],
          config: ClusterConfig) -> None:
    """ValueError when the node's external network overlaps a cluster range: the GR would
    route that range two ways."""
    network = external.network
    ranges = {"join range": config.join_cidr, "service range": config.service_cidr,
              **{f"subnet {s.name}": s.cidr for s in subnets}}
    for what, cidr in sorted(ranges.items()):
        if network.overlaps(ipaddress.IPv4Network(cidr)):
            raise ValueError(f"the external network {network} of node {node} overlaps the "
                             f"{what} {cidr}")


def egress_match(node: str) -> str:
    """Traffic on this node's chassis that no cluster-range `allow` above it kept."""
    return f'ip4 && is_chassis_resident("{names.gateway_join_port(node)}")'


def allow_policy(owner: Owner, cidrs: Iterable[str]) -> RouterPolicy:
    """Traffic to these cluster ranges keeps the routing stage's decision, never goes to a
    gateway: each Subnet owns the one for its range, the Cluster the join and service
    ranges'. One flow per range (see the module docstring for the negated form's cost)."""
    ranges = sorted(set(cidrs))
    match = f"ip4.dst == {ranges[0]}" if len(ranges) == 1 else \
        f"ip4.dst == {{{', '.join(ranges)}}}"
    return RouterPolicy(owner=owner, router=names.CLUSTER_ROUTER,
                        priority=CLUSTER_POLICY_PRIORITY, match=match, action="allow")


def service_range_policy(owner: Owner, service_cidr: str) -> RouterPolicy:
    """A packet still addressed to the service range when it reaches the cluster router was
    not balanced at its switch: a cluster IP port nobody serves, or internalTrafficPolicy
    Local on a node without a local endpoint. Dropped, as Kubernetes says, rather than
    routed on to some gateway router, whose own copy of the load balancer (instantiated for
    its chassis) would hand it to another node's endpoint (seen: a UDP datagram did)."""
    return RouterPolicy(owner=owner, router=names.CLUSTER_ROUTER,
                        priority=CLUSTER_POLICY_PRIORITY, match=f"ip4.dst == {service_cidr}",
                        action="drop")


def _link(owner: Owner, router: str, router_port: str, switch: str, switch_port: str,
          ip: str, prefixlen: int) -> list[NbRow]:
    return [
        LogicalRouterPort(owner=owner, name=router_port, router=router, mac=mac_from_ip(ip),
                          networks=(f"{ip}/{prefixlen}",)),
        LogicalSwitchPort(owner=owner, name=switch_port, switch=switch, type="router",
                          addresses=("router",), options={"router-port": router_port}),
    ]


def gateway_rows(gateway: Gateway, config: ClusterConfig) -> list[NbRow]:
    """The node's gateway router, its links and routes, its SNAT rows and its egress policy
    on the cluster router (see the module docstring)."""
    node, external = gateway.node, gateway.external
    check(node, external, gateway.subnets, config)
    owner = Owner(names.OwnerType.NODE, node)
    gr, ext = names.gateway_router(node), names.external_switch(node)
    rows: list[NbRow] = [
        LogicalRouter(owner=owner, name=gr,
                      options={"chassis": node, "lb_force_snat_ip": "router_ip"},
                      load_balancer_groups=frozenset({names.CLUSTER_LB_GROUP})),
        *_link(owner, gr, names.gateway_join_port(node), names.JOIN_SWITCH,
               names.join_gateway_port(node), gateway.join_ip, config.join_prefixlen),
        LogicalSwitch(owner=owner, name=ext),
        *_link(owner, gr, names.gateway_external_port(node), ext,
               names.external_gateway_port(node), external.address,
               external.network.prefixlen),
        LogicalSwitchPort(owner=owner, name=names.localnet_port(node), switch=ext,
                          type="localnet", addresses=("unknown",),
                          options={"network_name": PHYSICAL_NETWORK}),
        StaticRoute(owner=owner, router=gr, ip_prefix=DEFAULT_ROUTE, nexthop=external.gateway),
        # The GR balances the service range for its node (the agent routes it there); what
        # it did not balance (a port nobody serves, internalTrafficPolicy Local without a
        # local endpoint) is dropped, not sent to the default route's outside router.
        StaticRoute(owner=owner, router=gr, ip_prefix=config.service_cidr, nexthop="discard"),
        StaticRoute(owner=owner, router=names.CLUSTER_ROUTER, ip_prefix=DEFAULT_ROUTE,
                    nexthop=gateway.join_ip),
        RouterPolicy(owner=owner, router=names.CLUSTER_ROUTER, priority=EGRESS_POLICY_PRIORITY,
                     match=egress_match(node), action="reroute", nexthops=(gateway.join_ip,)),
    ]
    for spec in sorted(gateway.subnets, key=lambda s: s.cidr):
        rows.append(StaticRoute(owner=owner, router=gr, ip_prefix=spec.cidr,
                                nexthop=config.join_gateway))
        if spec.nat_outgoing:
            rows.append(NAT(owner=owner, router=gr, type="snat", external_ip=external.address,
                            logical_ip=spec.cidr))
    return rows
