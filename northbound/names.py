"""Every OVN NB entity name and every external_ids key kovn uses, in one place.

Names are part of kovn's contract with OVN, with the node agent and with people reading
`ovn-nbctl show`: the node agent sets `iface-id` to `pod_port(ns, pod)`, tests look rows up by
these names, and a rename here is a migration. Nothing else in the code base spells a name out.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

# --- external_ids keys -------------------------------------------------------------------------
OWNER_TYPE_KEY = "kovn.io/owner-type"
"""Kind of the Kubernetes object a row exists for (see OwnerType)."""
OWNER_KEY = "kovn.io/owner"
"""`namespace/name` of that object, or `name` for cluster-scoped ones."""
ROW_KEY = "kovn.io/key"
"""Identity of a row inside its table for rows OVN does not name (ACL, NAT, QoS, routes)."""
POD_UID_KEY = "kovn.io/pod-uid"
"""UID of the pod a port belongs to, so a re-created pod of the same name is a new port."""
LEFT_OUT_KEY = "kovn.io/left-out"
"""On a Service's load balancers: endpoints that are not backends, and why (`kovn show`)."""
QOS_SOURCE_KEY = "kovn.io/qos-source"
"""On a pod's QoS row: where its limit came from (an annotation, a QoSPolicy, a Subnet)."""
# What an ACL is for, so Events, log lines and `kovn trace` can say which policy decided.
ACL_ROLE_KEY = "kovn.io/acl"
"""`policy` (a NetworkPolicy rule), `default-deny` (a namespace's isolation) or `always`
(what isolation still lets through: ARP/ND, the nodes, hairpin); see AclRole."""
POLICY_KEY = "kovn.io/policy"
"""`ns/name` of the NetworkPolicy of a policy ACL; the namespace for the other roles."""
DIRECTION_KEY = "kovn.io/direction"
"""`ingress` or `egress` (Kubernetes' terms, not OVN's from-lport/to-lport)."""
RULE_KEY = "kovn.io/rule"
"""Index of the rule in the policy's spec.ingress / spec.egress; for `always`: what it lets
through (arp-nd, nodes, hairpin)."""
OWNED_KEYS = (OWNER_TYPE_KEY, OWNER_KEY)


class AclRole(StrEnum):
    POLICY = "policy"
    DEFAULT_DENY = "default-deny"
    ALWAYS = "always"


class OwnerType(StrEnum):
    """The kinds of object a kovn NB row can belong to."""

    POD = "Pod"
    SERVICE = "Service"
    NETWORK_POLICY = "NetworkPolicy"
    NODE = "Node"
    SUBNET = "Subnet"
    NAMESPACE = "Namespace"
    QOS_POLICY = "QoSPolicy"
    PEER_SET = "PeerSet"
    """A NetworkPolicy peer's pods (an Address_Set), shared by every policy with the same
    (namespace, selectors): no Kubernetes object of its own, it lives while a policy uses it."""
    CLUSTER = "Cluster"


# --- cluster-wide topology ---------------------------------------------------------------------
CLUSTER_ROUTER = "ovn-cluster"
JOIN_SWITCH = "join"
DEFAULT_SUBNET = "ovn-default"
CLUSTER_OWNER = "cluster"
"""Owner name of rows that belong to the cluster as a whole (router, join switch, LB group)."""


# --- load balancer groups ----------------------------------------------------------------------
# Load_Balancer_Group has no external_ids in NB schema 7.0.0, so a group's name is its only
# ownership mark: every group name kovn builds comes from here, and lb_group_owner() reads the
# owner back out of it. observe/owner_index use only that parse, so a new kind of group is a new
# builder plus a branch in the parse, never a list of names to keep in step. The price: a group
# made by hand under one of these names is taken for kovn's.
CLUSTER_LB_GROUP = "clusterLBGroup"
"""The group of every Service load balancer, used by every pod switch and gateway router."""
_NODE_LB_GROUP_PREFIX = "nodeLBGroup_"


def node_lb_group(node: str) -> str:
    """Per-node group (e.g. the load balancers of `GR_<node>`), owned by that Node."""
    if not node:
        raise ValueError("a per-node LB group needs a node name")
    return f"{_NODE_LB_GROUP_PREFIX}{node}"


def lb_group_owner(name: str) -> tuple[OwnerType, str] | None:
    """(owner type, owner name) of a kovn LB group name, or None for any other name.

    The inverse of the builders above: lb_group_owner(node_lb_group(n)) == (NODE, n).
    """
    if name == CLUSTER_LB_GROUP:
        return (OwnerType.CLUSTER, CLUSTER_OWNER)
    node = name.removeprefix(_NODE_LB_GROUP_PREFIX)
    if node != name and node:
        return (OwnerType.NODE, node)
    return None


class _KovnLbGroupNames:
    """`name in OWNED_LB_GROUPS` is `lb_group_owner(name) is not None`: the names kovn builds
    form a pattern, not a list (kept for callers written when they were a fixed set)."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and lb_group_owner(name) is not None


OWNED_LB_GROUPS = _KovnLbGroupNames()


def subnet_switch(subnet: str) -> str:
    """The Logical_Switch of a Subnet carries the Subnet's name."""
    return subnet


def router_port(router: str, switch: str) -> str:
    """Router side of a router<->switch link: `ovn-cluster-<switch>`."""
    return f"{router}-{switch}"


def switch_router_port(switch: str, router: str) -> str:
    """Switch side of a router<->switch link: `<switch>-ovn-cluster`."""
    return f"{switch}-{router}"


def pod_port(namespace: str, pod: str) -> str:
    """Logical_Switch_Port of a pod; the node agent sets OVS `iface-id` to exactly this."""
    return f"{namespace}_{pod}"


def node_port(node: str) -> str:
    """Management port of a node on the join switch (OVS interface `ovn0` on that node)."""
    return f"node-{node}"


def gateway_router(node: str) -> str:
    """Per-node gateway router that carries NodePort/ExternalIP VIPs and SNAT."""
    return f"GR_{node}"


def external_switch(node: str) -> str:
    """Per-node switch between the gateway router and the node's physical network."""
    return f"ext_{node}"


# The gateway router's links, named as ovn-kubernetes names them (rtoj = router to join...).
def gateway_join_port(node: str) -> str:
    """`GR_<node>`'s router port on the join switch: `rtoj-GR_<node>`."""
    return f"rtoj-{gateway_router(node)}"


def join_gateway_port(node: str) -> str:
    """The join switch's port facing `GR_<node>`: `jtor-GR_<node>`."""
    return f"jtor-{gateway_router(node)}"


def gateway_external_port(node: str) -> str:
    """`GR_<node>`'s router port on its external switch, carrying the node's external IP."""
    return f"rtoe-{gateway_router(node)}"


def external_gateway_port(node: str) -> str:
    """The external switch's port facing `GR_<node>`: `etor-GR_<node>`."""
    return f"etor-{gateway_router(node)}"


def localnet_port(node: str) -> str:
    """The external switch's localnet port to the node's physical network: `ln-ext_<node>`."""
    return f"ln-{external_switch(node)}"


def load_balancer(namespace: str, service: str, protocol: str) -> str:
    """One Load_Balancer per (Service, protocol): `Service_<ns>/<name>_<PROTO>`."""
    return f"Service_{namespace}/{service}_{protocol.upper()}"


def node_port_load_balancer(namespace: str, service: str, protocol: str) -> str:
    """The Service's template load balancer for what each node serves in its own way: node
    ports on `^NODE_EXTERNAL_IP` and, with internalTrafficPolicy Local, its cluster IPs to
    the node's own endpoints: `Service_<ns>/<name>_<PROTO>_node`."""
    return f"{load_balancer(namespace, service, protocol)}_node"


def local_load_balancer(namespace: str, service: str, protocol: str) -> str:
    """The template load balancer of externalTrafficPolicy Local (node ports and external
    IPs to the node's own endpoints, `skip_snat`): `Service_<ns>/<name>_<PROTO>_local`."""
    return f"{load_balancer(namespace, service, protocol)}_local"


def local_node_load_balancer(namespace: str, service: str, protocol: str, node: str) -> str:
    """externalTrafficPolicy Local's external IPs on one serving node's gateway router:
    `Service_<ns>/<name>_<PROTO>_local_<node>`."""
    return f"{local_load_balancer(namespace, service, protocol)}_{node}"


NODE_EXTERNAL_IP_VAR = "NODE_EXTERNAL_IP"
"""Template variable: the node's external IP (its gateway router's), on its chassis."""


def local_endpoints_var(namespace: str, service: str, protocol: str, port: str) -> str:
    """Template variable: a Service port's endpoints on the chassis' own node
    (`LOCAL_<readable>_<hash>`; template names take only [A-Za-z0-9_])."""
    return "LOCAL_" + _ovn_safe(namespace, service, protocol.upper(), port)


def _ovn_safe(*parts: str) -> str:
    """A Port_Group / Address_Set name for a tuple of Kubernetes names.

    These names end up in ACL match strings as `@name` / `$name`, where only [A-Za-z0-9_] is
    valid, but Kubernetes names contain '-' and '.'. Mapping both to '_' alone would let
    ("a-b", "c") and ("a", "b-c") collide, so a short hash of the exact parts follows the
    readable form (as ovn-kubernetes does for its hashed names).
    """
    readable = "_".join(parts)
    readable = "".join(c if c.isascii() and c.isalnum() else "_" for c in readable)
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]
    return f"{readable}_{digest}"


def policy_port_group(namespace: str, policy: str) -> str:
    """Port group of the pods a NetworkPolicy selects."""
    return _ovn_safe("kovn_np", namespace, policy)


def default_deny_port_group(namespace: str, direction: str) -> str:
    """Port group of the isolated pods of a namespace for one direction (ingress|egress)."""
    return _ovn_safe("kovn_deny", namespace, direction)


def named_port_group(namespace: str, policy: str, protocol: str, port: str, number: int) -> str:
    """Port group of the pods a NetworkPolicy selects whose container port `port` (a name)
    on `protocol` is `number`: an ingress rule by port name allows each pod its own number."""
    return _ovn_safe("kovn_np", namespace, policy, protocol.upper(), port, str(number))


def peer_address_set(scope: str, digest: str) -> str:
    """Address set of a peer's pods, shared by every policy with the same peer: `scope` is
    the namespace of a podSelector-only peer ('' for namespaceSelector peers), `digest` a
    hash of the selectors (and of a named port's resolution, for egress by port name)."""
    return _ovn_safe("kovn_peer", scope or "all", digest)


NODES_ADDRESS_SET = "kovn_nodes"
"""Address set of the nodes' management port addresses: isolated pods still accept them
(kubelet probes, host-network pods)."""
ACL_LOG_METER = "kovn-acl-logging"
"""The Meter that rate-limits the log lines of ACLs with logging on (a namespace's
kovn.io/acl-logging annotation)."""
ACL_NAME_MAX = 63
"""NB schema: ACL.name is at most 63 characters; it is what OVN's ACL log lines print."""


def policy_acl_name(namespace: str, policy: str, direction: str, rule: int | str) -> str:
    """`<ns>/<policy>:<ingress|egress>:<rule>`, shortened (with a hash) to fit 63 chars."""
    return _fit_acl_name(f"{namespace}/{policy}:{direction}:{rule}")


def default_deny_acl_name(namespace: str, direction: str) -> str:
    """`<ns>:default-deny:<ingress|egress>`."""
    return _fit_acl_name(f"{namespace}:default-deny:{direction}")


def _fit_acl_name(text: str) -> str:
    if len(text) <= ACL_NAME_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[:ACL_NAME_MAX - 10]}~{digest}"


def owner_ids(owner_type: OwnerType | str, owner: str) -> dict[str, str]:
    """The external_ids that mark a row as kovn's, built in this one place."""
    return {OWNER_TYPE_KEY: str(owner_type), OWNER_KEY: owner}


def is_owned(external_ids: dict[str, str]) -> bool:
    """A row is kovn's only if it carries both ownership keys; all others are left alone."""
    return OWNER_TYPE_KEY in external_ids and OWNER_KEY in external_ids
