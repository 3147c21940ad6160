"""NetworkPolicies, their namespaces' default deny and their shared peer sets.

Three owners, synced in this order within one flush (operators/kinds.py), so that every row
an ACL names exists in the transaction that writes the ACL:
- a NetworkPolicy (sync_policy): its Port_Group and ACLs (controller/policies.py). It records
  which peer sets it uses and which ports it isolates;
- a Namespace (sync_namespace): its default-deny groups over what its policies isolate
  (controller/isolation.py);
- a peer set (sync_peer_set): the addresses of a peer's pods (controller/peers.py), shared
  by every policy with that peer, alive while one uses it. Peer sets have no API object:
  the cache holds a derived one per key (operators.kinds DERIVED), so watches can fan pod
  and namespace changes out to exactly the sets they concern.

A pod counts once it has a port (the pods kind synced it earlier in the flush): pods
waiting for an address, host-network pods and finished pods are never selected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from controller import isolation, policies
from controller.peers import NODES_PEER, PeerSpec, address_set_row, owner_of
from controller.topology import pod_owner
from northbound import names
from northbound.rows import AddressSet
from operators import pods
from operators import qos as qos_ops
from operators.cache import Dirty, Obj
from operators.nodes import gateway_key
from operators.selection import NAMESPACE_INDEX, matches, select
from operators.state import JOIN_POOL, Batch, State

LOG = logging.getLogger(__name__)
POLICIES, PEERS = "networkpolicies", "peersets"
SCOPE_INDEX = "scope"
"""Peer sets by the namespace whose pods they may hold ('*': namespaceSelector sets)."""
EGRESS_NAMED_INDEX = "egress-named"
"""Policies with an egress port by name: new pods may give that name a new number."""


# --- pods as policies see them -----------------------------------------------------------------
def named_ports(pod: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """(PROTOCOL, name) -> containerPort of a pod (the cache keeps only container ports)."""
    found: dict[tuple[str, str], int] = {}
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") and port.get("containerPort"):
                found.setdefault(((port.get("protocol") or "TCP").upper(), port["name"]),
                                 int(port["containerPort"]))
    return found


def has_port(state: State, key: str) -> bool:
    return key in state.pod_memo


def selected_pods(state: State, namespace: str, selector: Mapping[str, Any] | None
                  ) -> list[policies.SelectedPod]:
    out = []
    for key in sorted(select(state.cache, "pods", selector or {}, namespace)):
        pod = state.cache.get("pods", key)
        if pod is not None and has_port(state, key):
            out.append(policies.SelectedPod(names.pod_port(*key.split("/", 1)),
                                            named_ports(pod)))
    return out


def peer_pods(state: State, peer: PeerSpec) -> list[str]:
    """Keys of the pods (with a port) a peer holds."""
    ns_selector, pod_selector = peer.selectors()
    namespaces = [peer.namespace] if ns_selector is None else \
        sorted(select(state.cache, "namespaces", ns_selector))
    keys = [k for ns in namespaces for k in select(state.cache, "pods", pod_selector, ns)]
    if peer.port is not None:
        proto, name, number = peer.port
        keys = [k for k in keys if (pod := state.cache.get("pods", k)) is not None
                and named_ports(pod).get((proto, name)) == number]
    return [k for k in keys if has_port(state, k)]


def resolver(state: State) -> policies.EgressResolver:
    def resolve(peer: PeerSpec, proto: str, name: str) -> set[int]:
        numbers = set()
        for key in peer_pods(state, peer):
            pod = state.cache.get("pods", key)
            if pod is not None and (n := named_ports(pod).get((proto, name))) is not None:
                numbers.add(n)
        return numbers
    return resolve


def sync_pod(state: State, batch: Batch, key: str) -> None:
    """The pods kind's sync: the pod's port (operators/pods.py) and its QoS rows
    (operators/qos.py), noting pods whose port came or went for another reason than an
    event of their own (an address freed, a subnet ready): policies and peer sets follow
    pod events, and these need the same fan-out."""
    had = key in state.pod_memo
    pods.sync_pod(state, batch, key)
    has = key in state.pod_memo
    if had != has:
        state.ports_changed.add(key)
    owner = pod_owner(key)
    pod = state.cache.get("pods", key)
    if has and pod is not None and batch.rows.get(owner):
        batch.rows[owner] = [*batch.rows[owner], *qos_ops.pod_qos_rows(state, key, pod)]
    elif not has:
        qos_ops.forget_pod(state, key)


def after_pods(state: State, batch: Batch, dirty: Dirty, keys: set[str]) -> None:
    pods.wake_waiting(state, batch, dirty, keys)
    qos_ops.after_pods(state, dirty)
    for key in state.ports_changed:
        pod = state.cache.get("pods", key)
        dirty.of(POLICIES).update(policies_follow_pods(state.cache, None, pod))
        dirty.of(PEERS).update(peers_follow_pods(state.cache, None, pod))
    state.ports_changed.clear()


# --- syncs -------------------------------------------------------------------------------------
def _logging(state: State, namespace: str) -> policies.Logging:
    try:
        return isolation.logging_of(state.cache.get("namespaces", namespace))
    except ValueError:
        return policies.Logging()  # the namespace's own sync reports it


def sync_policy(state: State, batch: Batch, key: str) -> None:
    owner = policies.policy_owner(key)
    obj = state.cache.get(POLICIES, key)
    namespace = key.split("/", 1)[0]
    if obj is None:
        batch.rows[owner] = []
        _use_peers(state, key, set())
        state.isolated.pop(key, None)
        state.isolation_changed.add(namespace)
        return
    spec = obj.get("spec") or {}
    selected = selected_pods(state, namespace, spec.get("podSelector") or {})
    result = policies.policy_rows(obj, selected, resolver(state), _logging(state, namespace))
    batch.rows[owner] = result.rows
    _use_peers(state, key, {p.key for p in result.peers}, result.peers)
    ports = frozenset(p.port for p in selected)
    isolated = (ports if result.ingress else frozenset(), ports if result.egress else frozenset())
    if state.isolated.get(key) != isolated:
        state.isolated[key] = isolated
        state.isolation_changed.add(namespace)


def _use_peers(state: State, policy: str, keys: set[str],
               specs: set[PeerSpec] | frozenset[PeerSpec] = frozenset()) -> None:
    old = state.policy_peers.get(policy, frozenset())
    for spec in specs:
        if spec.key not in old and state.cache.get(PEERS, spec.key) is None:
            state.cache.store(PEERS, spec.to_object(), quiet=True)
    for gone in old - keys:
        users = state.peer_users.get(gone, set())
        users.discard(policy)
        if not users:
            state.peer_users.pop(gone, None)
        state.peers_changed.add(gone)
    for new in keys - old:
        state.peer_users.setdefault(new, set()).add(policy)
        state.peers_changed.add(new)
    if keys:
        state.policy_peers[policy] = frozenset(keys)
    else:
        state.policy_peers.pop(policy, None)


def after_policies(state: State, batch: Batch, dirty: Dirty, keys: set[str]) -> None:
    """Hand what the policies changed to the kinds synced after them in this flush."""
    if state.cache.get(PEERS, NODES_PEER) is None:
        state.cache.store(PEERS, {"metadata": {"name": NODES_PEER}, "spec": {}}, quiet=True)
        state.peers_changed.add(NODES_PEER)
    dirty.of(PEERS).update(state.peers_changed)
    dirty.of("namespaces").update(state.isolation_changed)
    state.peers_changed.clear()
    state.isolation_changed.clear()


def sync_namespace(state: State, batch: Batch, namespace: str) -> None:
    owner = isolation.namespace_owner(namespace)
    ingress: set[str] = set()
    egress: set[str] = set()
    for key in state.cache.indexed(POLICIES, NAMESPACE_INDEX, namespace):
        ports_in, ports_out = state.isolated.get(key, (frozenset(), frozenset()))
        ingress |= ports_in
        egress |= ports_out
    obj = state.cache.get("namespaces", namespace)
    try:
        logging_ = isolation.logging_of(obj)
        state.resolved(f"acl-logging/{namespace}")
    except ValueError as exc:
        logging_ = policies.Logging()
        if obj is not None:
            state.report(f"acl-logging/{namespace}", obj, "InvalidACLLogging", str(exc))
    batch.rows[owner] = isolation.namespace_rows(namespace, ingress, egress, logging_)


def sync_peer_set(state: State, batch: Batch, key: str) -> None:
    owner = owner_of(key)
    if key == NODES_PEER:
        pool = state.ipam.pools.get(JOIN_POOL)
        nodes = set(state.cache.snapshot("nodes"))
        addresses = [ip for who, ip in (pool.owners() if pool else {}).items()
                     if who in nodes and who != gateway_key(who)]
        batch.rows[owner] = [AddressSet(owner=owner, name=names.NODES_ADDRESS_SET,
                                        addresses=tuple(sorted(addresses)))]
        return
    obj = state.cache.get(PEERS, key)
    if obj is None or not state.peer_users.get(key):
        if obj is not None:
            state.cache.forget(PEERS, obj, quiet=True)
        batch.rows[owner] = []
        return
    spec = PeerSpec.from_object(obj)
    addresses = []
    for pod in peer_pods(state, spec):
        held = state.ipam.lookup(pod)
        if held is not None:
            addresses.append(held[1])
    batch.rows[owner] = [address_set_row(key, spec.address_set, addresses)]


# --- fan-out (watch threads, under the cache's lock) -------------------------------------------
def _relevant(pod: Obj | None) -> Any:
    """What of a pod policies read: its labels, and whether it has (or may have) a port."""
    if pod is None:
        return None
    spec = pod.get("spec") or {}
    return (pod["metadata"].get("labels") or {}, spec.get("hostNetwork"),
            (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
            pod["metadata"].get("annotations", {}).get("kovn.io/pod-network"))


def _labels(obj: Obj | None) -> Mapping[str, str]:
    return (obj or {}).get("metadata", {}).get("labels") or {}


def policies_follow_pods(cache: Any, old: Obj | None, new: Obj | None) -> set[str]:
    """A pod's change concerns the policies of its namespace that select it (before or
    after), and every policy with an egress port by name when a pod comes or goes."""
    pod = new or old
    if pod is None or _relevant(old) == _relevant(new):
        return set()
    namespace = pod["metadata"]["namespace"]
    out = set()
    for key in cache.indexed(POLICIES, NAMESPACE_INDEX, namespace):
        policy = cache.get(POLICIES, key)
        selector = ((policy or {}).get("spec") or {}).get("podSelector") or {}
        try:
            if any(o is not None and matches(selector, _labels(o)) for o in (old, new)):
                out.add(key)
        except ValueError:
            out.add(key)
    if named_ports(pod):
        out |= cache.indexed(POLICIES, EGRESS_NAMED_INDEX, True)
    return out


def egress_named_keys(policy: Mapping[str, Any]) -> tuple[bool, ...]:
    for rule in (policy.get("spec") or {}).get("egress") or ():
        for port in (rule or {}).get("ports") or ():
            value = port.get("port")
            if isinstance(value, str) and not value.isdigit():
                return (True,)
    return ()


def scope_keys(peer: Mapping[str, Any]) -> tuple[str, ...]:
    spec = peer.get("spec") or {}
    if "namespace" not in spec:
        return ()  # the nodes' set
    return (spec["namespace"] or "*",)


def _holds(cache: Any, peer: Obj, pod: Obj) -> bool:
    spec = PeerSpec.from_object(peer)
    ns_selector, pod_selector = spec.selectors()
    namespace = pod["metadata"]["namespace"]
    if ns_selector is None:
        if namespace != spec.namespace:
            return False
    elif not matches(ns_selector, _labels(cache.get("namespaces", namespace))):
        return False
    return matches(pod_selector, _labels(pod))


def peers_follow_pods(cache: Any, old: Obj | None, new: Obj | None) -> set[str]:
    """The peer sets that hold the pod before or after its change."""
    pod = new or old
    if pod is None or _relevant(old) == _relevant(new):
        return set()
    out = set()
    for key in cache.indexed(PEERS, SCOPE_INDEX, pod["metadata"]["namespace"]) | \
            cache.indexed(PEERS, SCOPE_INDEX, "*"):
        peer = cache.get(PEERS, key)
        if peer is not None and any(o is not None and _holds(cache, peer, o)
                                    for o in (old, new)):
            out.add(key)
    return out


def peers_follow_namespaces(cache: Any, old: Obj | None, new: Obj | None) -> set[str]:
    """A namespace's labels concern the namespaceSelector sets that pick it before or after."""
    if _labels(old) == _labels(new):
        return set()
    out = set()
    for key in cache.indexed(PEERS, SCOPE_INDEX, "*"):
        peer = cache.get(PEERS, key)
        if peer is None:
            continue
        ns_selector = PeerSpec.from_object(peer).selectors()[0]
        if any(o is not None and matches(ns_selector, _labels(o)) for o in (old, new)):
            out.add(key)
    return out


def peers_follow_nodes(_cache: Any, old: Obj | None, new: Obj | None) -> list[str]:
    """Nodes come and go (their management addresses): the nodes' set."""
    return [] if (old is None) == (new is None) else [NODES_PEER]


def namespaces_follow_policies(_cache: Any, old: Obj | None, new: Obj | None) -> list[str]:
    return [(new or old or {})["metadata"]["namespace"]]


def policies_follow_namespaces(cache: Any, old: Obj | None, new: Obj | None) -> set[str]:
    """ACL logging is the namespace's annotation; it is on every policy ACL there."""
    def level(obj: Obj | None) -> Any:
        return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(
            isolation.ACL_LOGGING)

    if level(old) == level(new):
        return set()
    return cache.indexed(POLICIES, NAMESPACE_INDEX, (new or old or {})["metadata"]["name"])
