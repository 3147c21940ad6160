"""Pods: an address from their subnet's pool, a logical switch port, and the
`kovn.io/pod-network` annotation that tells the node agent how to plumb them.

Order matters for a crash at any point: the port is written to NB first, the annotation is
published after the NB commit. A restarted controller re-takes every address an annotation
records and, for a pod whose annotation never got out, the address its port in NB records
(the node agent may already use it: it reads the network from the southbound Port_Binding
too), so no address is ever handed to a second pod, nor a pod readdressed.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Collection
from typing import Any

from contract.podnetwork import POD_NETWORK, STATIC_IP, STATIC_MAC, PodNetwork
from controller import topology
from controller.ipam import IPAMError
from northbound import names
from northbound.rows import LogicalSwitchPort, NbRow, Owner
from operators.cache import Dirty
from operators.kubeapi import KubeError, pod_path
from operators.state import Batch, State

LOG = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")


def wants_port(obj: dict[str, Any] | None) -> bool:
    """Pods that need a port: not host-network, not finished."""
    if obj is None:
        return False
    if obj.get("spec", {}).get("hostNetwork"):
        return False
    return obj.get("status", {}).get("phase") not in TERMINAL


def recorded(obj: dict[str, Any]) -> PodNetwork | None:
    text = obj["metadata"].get("annotations", {}).get(POD_NETWORK)
    if not text:
        return None
    try:
        return PodNetwork.decode(text)
    except ValueError as exc:
        LOG.warning("pod %s: ignoring %s", obj["metadata"].get("name"), exc)
        return None


def restore(state: State, key: str, obj: dict[str, Any]) -> None:
    """At start: re-take the address a live pod's annotation records."""
    network = recorded(obj)
    if network is None or not wants_port(obj):
        return
    pool = state.ipam.pools.get(network.subnet)
    if pool is None:
        return
    try:
        pool.restore(key, network.address)
    except IPAMError as exc:
        state.report(key, obj, "IPConflict", f"cannot keep {network.address}: {exc}")


def restore_from_nb(state: State,
                    observe: Callable[[Collection[Owner]], list[NbRow]]) -> None:
    """At start, after `restore`: re-take the address NB holds for a live pod that has no
    annotation (the controller stopped between the NB commit and the PATCH), if the port is
    this very pod's (same uid). Its sync then finds the address held and publishes it."""
    unrecorded = {key: obj for key, obj in state.cache.snapshot("pods").items()
                  if wants_port(obj) and recorded(obj) is None}
    if not unrecorded:
        return
    for row in observe([topology.pod_owner(key) for key in unrecorded]):
        obj = unrecorded.get(row.owner.name)
        text = row.extra_ids.get(POD_NETWORK)
        if not isinstance(row, LogicalSwitchPort) or obj is None or not text or \
                row.extra_ids.get(names.POD_UID_KEY) != obj["metadata"].get("uid"):
            continue
        try:
            network = PodNetwork.decode(text)
        except ValueError:
            continue
        pool = state.ipam.pools.get(network.subnet)
        if pool is None:
            continue
        try:
            pool.restore(row.owner.name, network.address)
        except IPAMError as exc:
            state.report(row.owner.name, obj, "IPConflict", f"cannot keep {network.address} "
                         f"(recorded in NB only): {exc}")


def _static_ip(value: str) -> str:
    """The Kube-OVN annotation may carry a prefix length or a dual-stack list."""
    first = value.split(",")[0].strip()
    return str(ipaddress.ip_interface(first).ip)


def wake_waiting(state: State, batch: Batch, dirty: Dirty, keys: set[str]) -> None:
    """Addresses were freed: the pods waiting for one (exhausted pool) try again."""
    if state.freed and state.waiting:
        state.cache.mark("pods", set(state.waiting) - keys)
    state.freed = False


def sync_pod(state: State, batch: Batch, key: str) -> None:
    owner = topology.pod_owner(key)
    obj = state.cache.get("pods", key)
    state.burst.observe(key, obj)
    if not wants_port(obj):
        state.burst.forget(key)
        state.pod_memo.pop(key, None)
        state.written.pop(("pods", key), None)
        if state.ipam.lookup(key) is not None:
            state.ipam.release(key)
            state.freed = True
        state.waiting.discard(key)
        state.resolved(key)
        batch.rows[owner] = []
        return
    assert obj is not None
    meta = obj["metadata"]
    annotations = meta.get("annotations", {})
    node = obj.get("spec", {}).get("nodeName", "")
    memo = state.pod_memo.get(key)
    if memo is not None and memo[:3] == (annotations.get(POD_NETWORK), meta.get("uid", ""),
                                         node):
        batch.rows[owner] = list(memo[3])
        return
    network = recorded(obj)
    if network is not None and network.subnet not in state.subnets:
        # Pods never move: wait for their subnet to be valid again rather than readdress.
        state.waiting.add(key)
        state.report(key, obj, "SubnetNotReady", f"subnet {network.subnet!r} of this pod's "
                     f"address {network.address} is not ready")
        return
    if network is not None:
        spec = state.subnets[network.subnet]
        ip, mac = network.address, network.mac
        try:
            state.ipam.pool(spec.name).allocate(key, ip)
        except IPAMError as exc:
            state.report(key, obj, "IPConflict", str(exc))
            return
    else:
        subnet = state.binding.subnet_for(meta["namespace"], annotations)
        spec = state.subnets.get(subnet)
        if spec is None:
            state.waiting.add(key)
            reason = "; ".join(p.message for p in state.problems.get(subnet, [])) or \
                "it does not exist"
            state.report(key, obj, "SubnetNotReady",
                         f"subnet {subnet!r} cannot serve this pod yet: {reason}")
            return
        try:
            requested = _static_ip(annotations[STATIC_IP]) if STATIC_IP in annotations else None
            held = state.ipam.lookup(key)
            if held and held[0] != spec.name:
                state.ipam.release(key)  # the pod's subnet changed before it was annotated
            ip = state.ipam.pool(spec.name).allocate(key, requested)
        except (IPAMError, ValueError) as exc:
            state.waiting.add(key)
            state.report(key, obj, "IPAllocationFailed", str(exc))
            batch.rows[owner] = []
            return
        mac = annotations.get(STATIC_MAC)
    try:
        network = topology.pod_network(key, ip, mac, spec, state.config)
    except ValueError as exc:  # e.g. a malformed ovn.kubernetes.io/mac_address
        state.ipam.release(key)
        state.waiting.add(key)
        state.report(key, obj, "InvalidPodNetwork", str(exc))
        batch.rows[owner] = []
        return
    state.waiting.discard(key)
    state.resolved(key)
    encoded = network.encode()
    rows = topology.pod_rows(key, network, node, meta.get("uid", ""), encoded)
    batch.rows[owner] = rows
    state.pod_memo[key] = (encoded, meta.get("uid", ""), node, tuple(rows))
    if annotations.get(POD_NETWORK) == encoded:
        return
    namespace, name = key.split("/", 1)

    def publish() -> None:
        try:
            state.kube.merge_patch(pod_path(namespace, name),
                                   {"metadata": {"annotations": {POD_NETWORK: encoded}}})
        except KubeError as exc:
            if exc.status != 404:  # a pod deleted meanwhile needs no annotation
                raise

    state.publish(batch, "pods", key, encoded, publish)
