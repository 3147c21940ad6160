"""Every kind the controller watches, one declaration each.

An entry says where the kind lives in the API, which fields the cache keeps (10,000 full
pods would cost ~100 MB), how it is watched (the generic list+watch of kube/listwatch.py
for high-churn kinds, kopf for the rest), its indexes, which other kinds' changes dirty
which of its keys, the NB owner type of its rows, and the functions that turn one object
(or, for kinds validated together like Subnets, all of them) into rows. The worker, the
cache and the watches are generic over this table: adding Services or NetworkPolicies is
one entry here, one translator module in controller/ and one module in operators/.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.gateway import EXTERNAL_IP
from contract.podnetwork import LOGICAL_SWITCH
from northbound import names
from northbound.rows import NbRow, Owner
from operators import endpoints, nodes, pods, policies, qos, services, subnets
from operators.cache import CacheKind, Dirty, Fanout, IndexSpec, Obj
from operators.selection import (
    LABEL_INDEX,
    NAMESPACE_INDEX,
    SERVICE_INDEX,
    label_keys,
    namespace_keys,
    service_keys,
)
from operators.state import Batch, State

Observe = Callable[[Collection[Owner]], list[NbRow]]
KOPF, LISTWATCH, DERIVED = "kopf", "listwatch", "derived"
"""How a kind is fed: kopf's watch, the generic list+watch, or not from the API at all (the
worker stores derived objects, e.g. the peer sets NetworkPolicies share)."""
META_FIELDS = ("name", "namespace", "uid", "annotations", "deletionTimestamp",
               "creationTimestamp", "finalizers", "resourceVersion", "generation", "labels")


@dataclass(frozen=True)
class Kind:
    name: str
    """Cache key and plural: `pods`."""
    kind: str
    api_version: str
    path: str
    """Cluster-wide collection path, for lists and watches."""
    spec: tuple[str, ...] | None = ()
    """spec fields kept (None: all of it)."""
    status: tuple[str, ...] | None = ()
    """status fields kept (None: all of it)."""
    top: tuple[str, ...] = ()
    """Other top-level fields kept (an EndpointSlice's `endpoints`, a ConfigMap's `data`)."""
    reduce: Callable[[Mapping[str, Any], Obj], None] | None = None
    """Keeps a part of the full object that the field lists cannot say (a pod's container
    ports, not its containers), writing it into the slim object."""
    watch: str = KOPF
    owner_type: str | None = None
    """OwnerType of its NB rows (owner name = cache key): Events and retries find it."""
    indexes: tuple[IndexSpec, ...] = ()
    follows: Mapping[str, Fanout] = field(default_factory=dict)
    sync_one: Callable[[State, Batch, str], None] | None = None
    """Rows of one object (a failure sets just that owner aside)."""
    sync_all: Callable[[State, Batch, Dirty, bool], None] | None = None
    """Rows of every object at once, when any is dirty (or in a full flush); may dirty keys
    of later kinds."""
    after: Callable[[State, Batch, Dirty, set[str]], None] | None = None
    """Runs after sync_one over the dirty keys (e.g. wake pods waiting for an address)."""
    restore: Callable[[State, str, Obj], None] | None = None
    """At start, before the first full flush: re-take what an object's annotations record
    (addresses), so nothing is handed out twice."""
    restore_from_nb: Callable[[State, Observe], None] | None = None
    """At start, after every `restore`: re-take what only NB records (given a function that
    reads the rows of some owners)."""

    @property
    def group_version(self) -> tuple[str, str]:
        group, _, version = self.api_version.rpartition("/")
        return group, version

    def slim(self, obj: Mapping[str, Any]) -> Obj:
        """Only the fields the controller reads; list items lack kind/apiVersion, which
        Events need, so they are set here."""
        meta = obj.get("metadata") or {}
        out: Obj = {"apiVersion": self.api_version, "kind": self.kind,
                    "metadata": {k: meta[k] for k in META_FIELDS if k in meta}}
        for part, keep in (("spec", self.spec), ("status", self.status)):
            value = obj.get(part) or {}
            if keep is None:
                out[part] = value
            elif keep:
                out[part] = {k: value[k] for k in keep if k in value}
        for name in self.top:
            if name in obj:
                out[name] = obj[name]
        if self.reduce is not None:
            self.reduce(obj, out)
        return out

    def cache_kind(self) -> CacheKind:
        return CacheKind(self.name, self.indexes, self.follows)


def _switch_annotation(obj: Obj | None) -> str | None:
    if obj is None:
        return None
    return (obj["metadata"].get("annotations") or {}).get(LOGICAL_SWITCH, "")


def subnets_follow_namespaces(_cache: Any, old: Obj | None, new: Obj | None) -> list[str]:
    """A namespace's `ovn.kubernetes.io/logical_switch` annotation is part of the subnet
    binding; other namespace changes (labels) do not concern subnets."""
    if _switch_annotation(old) == _switch_annotation(new):
        return []
    return [(new or old or {})["metadata"]["name"]]


def subnets_follow_nodes(_cache: Any, old: Obj | None, new: Obj | None) -> list[str]:
    """Node addresses and external networks are reserved ranges for Subnet validation."""
    def addresses(obj: Obj | None) -> Any:
        if obj is None:
            return None
        notes = obj["metadata"].get("annotations") or {}
        return (obj.get("status") or {}).get("addresses"), notes.get(EXTERNAL_IP)

    return [] if addresses(old) == addresses(new) else [(new or old or {})["metadata"]["name"]]


def services_follow_slices(_cache: Any, old: Obj | None, new: Obj | None) -> set[str]:
    """An EndpointSlice change concerns the Service it belongs to (before and after)."""
    return {k for obj in (old, new) if obj is not None for k in service_keys(obj)}


def container_ports(obj: Mapping[str, Any], out: Obj) -> None:
    """A pod's containers shrink to their ports (NetworkPolicy resolves port names)."""
    ports = [{"ports": c["ports"]} for c in (obj.get("spec") or {}).get("containers") or ()
             if c.get("ports")]
    if ports:
        out.setdefault("spec", {})["containers"] = ports


KINDS: tuple[Kind, ...] = (
    Kind("subnets", "Subnet", "kovn.io/v1", "/apis/kovn.io/v1/subnets", spec=None, status=None,
         owner_type=names.OwnerType.SUBNET,
         follows={"namespaces": subnets_follow_namespaces, "nodes": subnets_follow_nodes},
         sync_all=subnets.sync_kind),
    Kind("nodes", "Node", "v1", "/api/v1/nodes", status=("addresses",),
         owner_type=names.OwnerType.NODE,
         follows={"services": endpoints.nodes_follow_services,
                  "endpointslices": endpoints.nodes_follow_slices},
         sync_one=nodes.sync_node, restore=nodes.restore),
    Kind("pods", "Pod", "v1", "/api/v1/pods", spec=("nodeName", "hostNetwork"),
         status=("phase", "podIP"), watch=LISTWATCH, owner_type=names.OwnerType.POD,
         reduce=container_ports,
         follows={qos.QOS_POLICIES: qos.pods_follow_qos_policies,
                  "subnets": qos.pods_follow_subnets},
         indexes=(IndexSpec(NAMESPACE_INDEX, namespace_keys), IndexSpec(LABEL_INDEX, label_keys)),
         sync_one=policies.sync_pod, after=policies.after_pods, restore=pods.restore,
         restore_from_nb=pods.restore_from_nb),
    Kind(qos.QOS_POLICIES, "QoSPolicy", "kovn.io/v1", "/apis/kovn.io/v1/qospolicies",
         spec=None, status=None, owner_type=names.OwnerType.QOS_POLICY,
         indexes=(IndexSpec(NAMESPACE_INDEX, namespace_keys),),
         sync_one=qos.sync_qos_policy),
    Kind("endpointslices", "EndpointSlice", "discovery.k8s.io/v1",
         "/apis/discovery.k8s.io/v1/endpointslices", top=("addressType", "endpoints", "ports"),
         watch=LISTWATCH, indexes=(IndexSpec(SERVICE_INDEX, service_keys),)),
    Kind("services", "Service", "v1", "/api/v1/services", spec=None, status=("loadBalancer",),
         watch=LISTWATCH, owner_type=names.OwnerType.SERVICE,
         indexes=(IndexSpec(endpoints.LOCAL_INDEX, endpoints.local_keys),),
         follows={"endpointslices": services_follow_slices, "nodes": services.follow_nodes},
         sync_one=services.sync_service),
    # NetworkPolicy, then the namespaces' default deny and the peer sets the policies
    # named: each reads what the previous synced in the same flush (operators/policies.py).
    Kind(policies.POLICIES, "NetworkPolicy", "networking.k8s.io/v1",
         "/apis/networking.k8s.io/v1/networkpolicies", spec=None, watch=LISTWATCH,
         owner_type=names.OwnerType.NETWORK_POLICY,
         indexes=(IndexSpec(NAMESPACE_INDEX, namespace_keys),
                  IndexSpec(policies.EGRESS_NAMED_INDEX, policies.egress_named_keys)),
         follows={"pods": policies.policies_follow_pods,
                  "namespaces": policies.policies_follow_namespaces},
         sync_one=policies.sync_policy, after=policies.after_policies),
    Kind("namespaces", "Namespace", "v1", "/api/v1/namespaces",
         owner_type=names.OwnerType.NAMESPACE,
         indexes=(IndexSpec(LABEL_INDEX, label_keys),),
         follows={policies.POLICIES: policies.namespaces_follow_policies},
         sync_one=policies.sync_namespace),
    Kind(policies.PEERS, "PeerSet", "kovn.io/v1", "", spec=None, watch=DERIVED,
         owner_type=names.OwnerType.PEER_SET,
         indexes=(IndexSpec(policies.SCOPE_INDEX, policies.scope_keys),),
         follows={"pods": policies.peers_follow_pods,
                  "namespaces": policies.peers_follow_namespaces,
                  "nodes": policies.peers_follow_nodes},
         sync_one=policies.sync_peer_set),
)
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
BY_OWNER_TYPE: dict[str, Kind] = {str(k.owner_type): k for k in KINDS if k.owner_type}
