"""Desired NB rows of the cluster topology, subnets, nodes and pods. Pure functions.

    ovn-cluster (router) ── join (100.64.0.0/16) ── node-<node> ports (ovn0 on each node)
          │
          ├── <subnet> switches, one per valid Subnet, each in the cluster LB group
          │      └── <ns>_<pod> ports

Every row names its Kubernetes owner, so `kovn show pod ns/name` finds it and the reconciler
can scope a change to the objects that changed.
"""

from __future__ import annotations

import ipaddress

from contract.podnetwork import POD_NETWORK, NodeNetwork, PodNetwork, mac_from_ip
from controller import aclorder, gateway
from controller.config import ClusterConfig
from controller.services import HAIRPIN_SNAT_IP
from controller.subnets import SubnetSpec
from northbound import names
from northbound.rows import (
    CLUSTER,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    NbRow,
    Owner,
    SwitchACL,
)


def subnet_owner(subnet: str) -> Owner:
    return Owner(names.OwnerType.SUBNET, subnet)


def node_owner(node: str) -> Owner:
    return Owner(names.OwnerType.NODE, node)


def pod_owner(pod_key: str) -> Owner:
    """`pod_key` is `namespace/name`."""
    return Owner(names.OwnerType.POD, pod_key)


def _router_link(owner: Owner, switch: str, gateway: str, prefixlen: int) -> list[NbRow]:
    """Router port `ovn-cluster-<switch>` + switch port `<switch>-ovn-cluster`."""
    lrp = names.router_port(names.CLUSTER_ROUTER, switch)
    return [
        LogicalRouterPort(owner=owner, name=lrp, router=names.CLUSTER_ROUTER,
                          mac=mac_from_ip(gateway), networks=(f"{gateway}/{prefixlen}",)),
        LogicalSwitchPort(owner=owner, name=names.switch_router_port(switch, names.CLUSTER_ROUTER),
                          switch=switch, type="router", addresses=("router",),
                          options={"router-port": lrp}),
    ]


ACL_LOG_RATE = 20
"""Log lines per second per logging ACL (`fair`: each ACL gets its own share), so a flood of
denied packets cannot flood ovn-controller's log."""


def cluster_rows(config: ClusterConfig) -> list[NbRow]:
    """The cluster router, the join switch linked to it, the cluster LB group, the policy
    keeping traffic to the join range off the gateways and the one dropping what is still
    addressed to the service range there (gateway.service_range_policy)."""
    return [
        gateway.allow_policy(CLUSTER, (config.join_cidr,)),
        gateway.service_range_policy(CLUSTER, config.service_cidr),
        LogicalRouter(owner=CLUSTER, name=names.CLUSTER_ROUTER),
        LogicalSwitch(owner=CLUSTER, name=names.JOIN_SWITCH,
                      other_config={"subnet": config.join_cidr}),
        *_router_link(CLUSTER, names.JOIN_SWITCH, config.join_gateway, config.join_prefixlen),
        LoadBalancerGroup(name=names.CLUSTER_LB_GROUP),
        Meter(owner=CLUSTER, name=names.ACL_LOG_METER, fair=True),
        MeterBand(owner=CLUSTER, meter=names.ACL_LOG_METER, rate=ACL_LOG_RATE),
    ]


def subnet_rows(spec: SubnetSpec, config: ClusterConfig | None = None) -> list[NbRow]:
    """A valid Subnet's switch, linked to the cluster router (and isolated when private)."""
    owner = subnet_owner(spec.name)
    other_config = {"subnet": spec.cidr}
    if spec.exclude_ips:
        other_config["exclude_ips"] = " ".join(spec.exclude_ips)
    switch = LogicalSwitch(owner=owner, name=names.subnet_switch(spec.name),
                           other_config=other_config,
                           load_balancer_groups=frozenset({names.CLUSTER_LB_GROUP}))
    rows = [switch, *_router_link(owner, switch.name, spec.gateway, spec.prefixlen),
            gateway.allow_policy(owner, (spec.cidr,))]  # pod to pod: never via a gateway
    if spec.private:
        rows += private_acls(spec, config or ClusterConfig())
    return rows


def private_acls(spec: SubnetSpec, config: ClusterConfig) -> list[NbRow]:
    """`private: true`: only the subnet itself, the nodes (join), hairpin traffic and
    `allowSubnets` may open connections to its pods, whatever a NetworkPolicy allows (a drop
    above the policies' priorities: controller/aclorder.py). Its own traffic out is committed
    to conntrack (allow-related), so replies to connections its pods open still come back."""
    owner = subnet_owner(spec.name)
    switch = names.subnet_switch(spec.name)
    allowed = ", ".join(dict.fromkeys([spec.cidr, config.join_cidr, HAIRPIN_SNAT_IP,
                                       *spec.allow_subnets]))
    return [
        SwitchACL(owner=owner, switch=switch, direction="from-lport",
                  priority=aclorder.PRIVATE_COMMIT, match=f"ip4.src == {spec.cidr}",
                  action="allow-related"),
        SwitchACL(owner=owner, switch=switch, direction="to-lport",
                  priority=aclorder.PRIVATE_DROP,
                  match=f"ip4.dst == {spec.cidr} && ip4.src != {{{allowed}}}", action="drop"),
    ]


def node_rows(node: str, network: NodeNetwork) -> list[NbRow]:
    """The node's management port on the join switch."""
    address = f"{network.mac} {network.address}"
    return [LogicalSwitchPort(owner=node_owner(node), name=names.node_port(node),
                              switch=names.JOIN_SWITCH, addresses=(address,),
                              options={"requested-chassis": node})]


def pod_rows(pod_key: str, network: PodNetwork, node: str, uid: str,
             encoded: str | None = None) -> list[NbRow]:
    """The pod's port: addresses and port security pin its MAC and IP; requested-chassis and
    iface-id-ver make only this incarnation of the pod, on its node, able to claim it.

    Its external_ids carry the pod's uid and its network as the annotation says it
    (`encoded`, else encoded here): ovn-northd copies them to the southbound Port_Binding,
    where the node agent finds them as soon as NB has the port, without waiting for the
    annotation to go through the API server (node/southbound.py); and a restarted
    controller re-takes an address NB holds whose annotation never got out."""
    address = f"{network.mac} {network.address}"
    options = {"iface-id-ver": uid}
    if node:
        options["requested-chassis"] = node
    return [LogicalSwitchPort(owner=pod_owner(pod_key), name=network.logical_switch_port,
                              switch=names.subnet_switch(network.subnet), addresses=(address,),
                              port_security=(address,), options=options,
                              extra_ids={names.POD_UID_KEY: uid,
                                         POD_NETWORK: encoded or network.encode()})]


def node_network(node: str, ip: str, config: ClusterConfig,
                 pod_subnets: tuple[str, ...], gateway_router_ip: str = "") -> NodeNetwork:
    """The node's join addresses: its management port's and (with a gateway) its GR's."""
    return NodeNetwork(ip=f"{ip}/{config.join_prefixlen}", mac=mac_from_ip(ip),
                       gateway=config.join_gateway, logical_switch_port=names.node_port(node),
                       pod_subnets=pod_subnets, mtu=config.mtu,
                       gateway_router_ip=gateway_router_ip)


def pod_network(pod_key: str, ip: str, mac: str | None, spec: SubnetSpec,
                config: ClusterConfig) -> PodNetwork:
    namespace, name = pod_key.split("/", 1)
    return PodNetwork(ip=f"{ip}/{spec.prefixlen}", mac=mac or mac_from_ip(ip),
                      gateway=spec.gateway, subnet=spec.name,
                      logical_switch_port=names.pod_port(namespace, name), mtu=config.mtu)


def default_subnet_object(config: ClusterConfig) -> dict:
    """The Subnet custom resource the controller creates at start when it is missing.

    `natOutgoing: true`, as Kube-OVN's default subnet: pod addresses are private to the
    cluster, so pods reach the outside as their node's external IP unless a Subnet says
    its range is routed."""
    network = ipaddress.IPv4Network(config.default_cidr)
    return {
        "apiVersion": "kovn.io/v1", "kind": "Subnet",
        "metadata": {"name": config.default_subnet},
        "spec": {"cidrBlock": str(network), "gateway": str(network[1]), "default": True,
                 "natOutgoing": True},
    }
