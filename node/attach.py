"""Pod attachments: what ADD, DEL, CHECK and GC do on the node, and the restart reconcile.

An attachment is a veth pair (host end `veth<hash of container id>` in the node's netns, pod
end CNI_IFNAME in the pod's netns) and an OVS port on br-int whose Interface carries
`iface-id=<ns>_<pod>` (the logical switch port), `iface-id-ver=<pod uid>`, `attached_mac`,
`sandbox=<container id>` and kovn's own keys (netns, ifname, pod, network), so that DEL, GC
and the restart reconcile find everything from OVS alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contract.podnetwork import POD_NETWORK, PodNetwork
from kube.client import KubeClient, KubeError, annotations, pod_path
from node import plumbing
from node.cni_protocol import (
    AddOutcome,
    Attachment,
    CniError,
    CniRequest,
    Code,
    add_result,
    default_routes,
)
from node.ovs import (
    ATTACHED_MAC,
    IFACE_ID,
    IFACE_ID_VER,
    IFNAME_KEY,
    NETNS_KEY,
    NETWORK_KEY,
    OVN_INSTALLED,
    POD_KEY,
    SANDBOX,
    Iface,
    Ovs,
    OvsError,
)
from node.podwatch import NodePods
from node.southbound import PortBindings
from northbound import names

LOG = logging.getLogger(__name__)
API_RECHECK = 2.0  # seconds between reads of a Pod the watch shows unannotated
FoundNetwork = tuple[dict[str, Any], PodNetwork, str]
"""The pod (or, from the Port_Binding, just its metadata's uid), its network and where it
was found: `annotation` or `southbound`."""


@dataclass(frozen=True)
class AttachSettings:
    node: str
    bridge: str = "br-int"
    annotation_timeout: float = 30.0
    install_timeout: float = 30.0
    tx_off: bool = True


@dataclass(frozen=True)
class AddTimings:
    """Where one successful ADD's time went, in seconds: waiting for the controller's
    annotation, the veth, the OVS port, waiting for ovn-controller's ovn-installed."""

    annotation: float
    veth: float
    ovs: float
    ovn_installed: float
    total: float
    since_creation: float | None
    """From the pod's creationTimestamp (the API server's clock, whole seconds) to
    ovn-installed: what a user waits for, scheduling and the runtime included."""
    network_from: str = "annotation"
    """Where the ADD found the pod's network first: `annotation` or `southbound` (the
    Port_Binding, node/southbound.py)."""


def seconds_since(timestamp: str | None) -> float | None:
    """Seconds from an API timestamp (`2026-12-01T20:15:25Z`) to now; None if unreadable."""
    if not timestamp:
        return None
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, time.time() - then.timestamp())


class KeyedLocks:
    """One lock per container id: the runtime may run different containers in parallel."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str, blocking: bool = True) -> Iterator[bool]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        acquired = lock.acquire(blocking)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def pods_on_node(kube: KubeClient, node: str) -> list[dict[str, Any]]:
    """Every Pod bound to `node` (KubeError if the API cannot tell)."""
    return list(kube.list("/api/v1/pods", fields=f"spec.nodeName={node}"))


def _attachment(iface: Iface) -> Attachment:
    return Attachment(iface.external_ids.get(SANDBOX, ""),
                      iface.external_ids.get(IFNAME_KEY, "eth0"))


class Attachments:
    def __init__(self, settings: AttachSettings, ovs: Ovs, kube: KubeClient,
                 pods: NodePods | None = None,
                 on_added: Callable[[AddTimings], None] | None = None,
                 bindings: PortBindings | None = None) -> None:
        self.settings = settings
        self.ovs = ovs
        self.kube = kube
        self.pods = pods  # this node's Pods, watched; None: ADD polls the API
        self.bindings = bindings
        """The pods' networks from the southbound Port_Bindings (poking `pods` when they
        change); None: ADD waits for the annotation only."""
        self.locks = KeyedLocks()
        self.on_added = on_added
        """Told of every successful ADD (the agent's metrics)."""

    # ------------------------------------------------------------------ ADD

    def add(self, req: CniRequest) -> dict[str, Any]:
        with self.locks.hold(req.container_id):
            return self._add(req)

    def _add(self, req: CniRequest) -> dict[str, Any]:
        t0 = time.monotonic()
        pod, network, network_from = self._wait_network(req)
        t_annotation = time.monotonic()
        uid = pod["metadata"]["uid"]
        host_if = plumbing.host_veth_name(req.container_id, req.ifname)
        routes = default_routes(network.gateway, [(r.dest, r.next_hop) for r in network.routes])
        pod_if = plumbing.PodInterface(req.ifname, network.mac, network.ip, network.gateway,
                                       network.mtu, routes)
        try:
            host_mac = plumbing.plumb(req.netns, host_if, pod_if, self.settings.tx_off)
        except plumbing.NetnsMissing as exc:
            raise CniError(Code.UNKNOWN_CONTAINER, str(exc)) from exc
        except (plumbing.PlumbingError, OSError) as exc:
            raise CniError(Code.PLUMBING_FAILED, f"cannot plumb {req.ifname}: {exc}") from exc
        t_plumb = time.monotonic()
        lsp = network.logical_switch_port
        stale = [i.name for i in self.ovs.interfaces_with(IFACE_ID, lsp) if i.name != host_if]
        external_ids = {
            IFACE_ID: lsp, IFACE_ID_VER: uid, ATTACHED_MAC: network.mac,
            SANDBOX: req.container_id, NETNS_KEY: req.netns, IFNAME_KEY: req.ifname,
            POD_KEY: f"{req.pod_namespace}/{req.pod_name}", NETWORK_KEY: req.network,
        }
        try:
            self.ovs.replace_port(self.settings.bridge, host_if, external_ids, stale)
        except OvsError as exc:
            plumbing.delete_link(host_if)
            raise CniError(Code.OVS_FAILURE, f"cannot add {host_if} to "
                           f"{self.settings.bridge}: {exc}") from exc
        for name in stale:
            try:
                plumbing.delete_link(name)
            except plumbing.PlumbingError as exc:
                LOG.warning("ADD %s/%s: %s", req.pod_namespace, req.pod_name, exc)
            LOG.info("ADD %s/%s: removed stale port %s with iface-id %s", req.pod_namespace,
                     req.pod_name, name, lsp)
        t_ovs = time.monotonic()
        try:
            installed = self.ovs.wait_installed(host_if, self.settings.install_timeout)
        except OvsError as exc:
            self._remove([host_if])
            raise CniError(Code.OVS_FAILURE, str(exc)) from exc
        if not installed:
            self._remove([host_if])
            raise CniError(Code.TRY_AGAIN_LATER,
                           f"ovn-controller did not install port {lsp} ({host_if}) within "
                           f"{self.settings.install_timeout:.0f}s: is ovn-controller running "
                           "on this node and connected to the southbound database, and does "
                           f"the logical switch port {lsp} exist with requested-chassis="
                           f"{self.settings.node}?")
        done = time.monotonic()
        LOG.info("ADD %s/%s %s %s on %s: %.3fs (annotation %.3f, veth %.3f, ovs %.3f, "
                 "ovn-installed %.3f)", req.pod_namespace, req.pod_name, network.ip,
                 network.mac, host_if, done - t0, t_annotation - t0, t_plumb - t_annotation,
                 t_ovs - t_plumb, done - t_ovs)
        if self.on_added is not None:
            self.on_added(AddTimings(
                annotation=t_annotation - t0, veth=t_plumb - t_annotation, ovs=t_ovs - t_plumb,
                ovn_installed=done - t_ovs, total=done - t0,
                since_creation=seconds_since(pod["metadata"].get("creationTimestamp")),
                network_from=network_from))
        return add_result(req.cni_version, AddOutcome(
            host_ifname=host_if, host_mac=host_mac, ifname=req.ifname, mac=network.mac,
            sandbox=req.netns, ip=network.ip, gateway=network.gateway, mtu=network.mtu,
            routes=routes))

    def _wait_network(self, req: CniRequest) -> FoundNetwork:
        """The pod and its network, waiting (bounded) for the controller: from the pod's
        kovn.io/pod-network annotation or its southbound Port_Binding, whichever has it first.

        The node's pod watch (node.podwatch) answers and wakes this as soon as the controller
        writes the annotation, and node.southbound pokes it when the Port_Binding (monitored
        while this waits) changes; the API is read up front only when the watch does not show
        this pod (uid) yet (that read also tells a deleted or re-created pod), then every
        API_RECHECK seconds in case the watch lags. Without a watch: polled, annotation only.
        The Port_Binding is taken only for K8S_POD_UID's pod; then the returned pod is the
        watched one if it has that uid, else a stand-in with only the uid.
        """
        if self.bindings is None or self.pods is None or not req.pod_uid:
            return self._wait_either(req)
        with self.bindings.wanted(names.pod_port(req.pod_namespace, req.pod_name)):
            return self._wait_either(req)

    def _from_southbound(self, req: CniRequest, cached: dict[str, Any] | None
                         ) -> FoundNetwork | None:
        """The network the Port_Binding of this very pod (K8S_POD_UID) carries, if any."""
        if self.bindings is None or not req.pod_uid:
            return None
        text = self.bindings.network(names.pod_port(req.pod_namespace, req.pod_name),
                                     req.pod_uid)
        if not text:
            return None
        try:
            network = PodNetwork.decode(text)
        except ValueError:
            return None  # the annotation will say what is wrong
        if cached is None or cached["metadata"].get("uid") != req.pod_uid:
            cached = {"metadata": {"uid": req.pod_uid}}
        return cached, network, "southbound"

    def _wait_either(self, req: CniRequest) -> FoundNetwork:
        timeout = req.annotation_timeout or self.settings.annotation_timeout
        deadline = time.monotonic() + timeout
        who = f"{req.pod_namespace}/{req.pod_name}"
        delay = 0.05
        cached = self.pods.get(req.pod_namespace, req.pod_name) if self.pods else None
        known = cached is not None and cached["metadata"].get("uid") == (
            req.pod_uid or cached["metadata"].get("uid"))
        # The watch already shows this very pod (only its annotation is missing): no read.
        next_read = time.monotonic() + (API_RECHECK if known else 0.0)
        while True:
            if cached is not None and (found := self._network(req, cached, trusted=False)):
                return (*found, "annotation")
            if from_port := self._from_southbound(req, cached):
                return from_port
            if time.monotonic() >= next_read:
                try:
                    pod = self.kube.get_or_none(pod_path(req.pod_namespace, req.pod_name))
                except KubeError as exc:
                    if time.monotonic() > deadline:
                        raise CniError(Code.TRY_AGAIN_LATER, f"cannot read pod {who} from the "
                                       f"API server: {exc}") from exc
                    pod = {}
                if pod is None:
                    raise CniError(Code.POD_NOT_FOUND, f"pod {who} does not exist")
                if pod and (found := self._network(req, pod, trusted=True)):
                    return (*found, "annotation")
                next_read = time.monotonic() + (API_RECHECK if self.pods else delay)
                delay = min(delay * 2, 0.5)
            if time.monotonic() > deadline:
                raise CniError(Code.TRY_AGAIN_LATER,
                               f"pod {who} has no {POD_NETWORK} annotation after {timeout:g}s: "
                               "is `kovn controller` running? (`kubectl describe pod` shows "
                               "its events, e.g. IPAllocationFailed)")
            pause = max(0.0, min(next_read, deadline) - time.monotonic())
            if self.pods is None:
                time.sleep(pause)
            else:
                cached = self.pods.wait(req.pod_namespace, req.pod_name, cached, pause)

    @staticmethod
    def _network(req: CniRequest, pod: dict[str, Any], trusted: bool
                 ) -> tuple[dict[str, Any], PodNetwork] | None:
        """The pod's network if its annotation is there. Only a `trusted` (just read) pod
        may refuse the ADD: a cached one may be an older pod of the same name."""
        uid = pod["metadata"].get("uid", "")
        if req.pod_uid and uid != req.pod_uid:
            if not trusted:
                return None
            who = f"{req.pod_namespace}/{req.pod_name}"
            raise CniError(Code.POD_MISMATCH,
                           f"pod {who} has uid {uid}, not K8S_POD_UID={req.pod_uid}: it was "
                           "deleted and re-created; this sandbox is the old pod's")
        text = annotations(pod).get(POD_NETWORK)
        if not text:
            return None
        try:
            return pod, PodNetwork.decode(text)
        except ValueError as exc:
            raise CniError(Code.BAD_ANNOTATION, str(exc)) from exc

    # ------------------------------------------------------------------ DEL, GC

    def delete(self, req: CniRequest) -> None:
        """Remove the attachment; whatever is already gone is fine."""
        with self.locks.hold(req.container_id):
            host_if = plumbing.host_veth_name(req.container_id, req.ifname)
            wanted = Attachment(req.container_id, req.ifname)
            names = {i.name for i in self.ovs.interfaces_with(SANDBOX, req.container_id)
                     if _attachment(i) == wanted}
            self._remove(names | {host_if})
            LOG.info("DEL %s %s: removed port %s", req.container_id[:12], req.ifname,
                     ", ".join(sorted(names)) or "none (already gone)")

    def gc(self, req: CniRequest) -> None:
        """Remove every attachment of this network that the runtime no longer knows."""
        valid = req.valid_attachments
        doomed = [i for i in self.ovs.interfaces(lambda i: POD_KEY in i.external_ids)
                  if i.external_ids.get(NETWORK_KEY, req.network) == req.network
                  and _attachment(i) not in valid]
        removed = []
        for iface in doomed:
            with self.locks.hold(_attachment(iface).container_id, blocking=False) as free:
                if free:  # a busy container is being added or deleted right now: skip it
                    self._remove([iface.name])
                    removed.append(iface.name)
        LOG.info("GC: %d valid attachments, removed %d: %s", len(valid), len(removed),
                 ", ".join(removed) or "-")

    def _remove(self, ports: Iterable[str]) -> None:
        names = sorted(set(ports))
        try:
            self.ovs.del_ports(names)
        except OvsError as exc:
            raise CniError(Code.OVS_FAILURE, f"cannot remove port(s) {names}: {exc}") from exc
        for name in names:
            try:
                plumbing.delete_link(name)
            except plumbing.PlumbingError as exc:
                raise CniError(Code.PLUMBING_FAILED, str(exc)) from exc

    # ------------------------------------------------------------------ CHECK, STATUS

    def check(self, req: CniRequest) -> None:
        with self.locks.hold(req.container_id):
            self._check(req)

    def _check(self, req: CniRequest) -> None:
        def fail(what: str) -> CniError:
            return CniError(Code.CHECK_FAILED, f"CHECK {req.pod_namespace}/{req.pod_name}: {what}")

        host_if = plumbing.host_veth_name(req.container_id, req.ifname)
        iface = self.ovs.wait_interface(
            host_if, lambda i: i.external_ids.get(OVN_INSTALLED) == "true",
            min(5.0, self.settings.install_timeout))
        if iface is None:
            raise fail(f"OVS port {host_if} is missing or not ovn-installed")
        if _attachment(iface) != Attachment(req.container_id, req.ifname):
            raise fail(f"OVS port {host_if} belongs to {iface.external_ids.get(SANDBOX)}")
        if not plumbing.link_exists(host_if):
            raise fail(f"host veth {host_if} is missing")
        try:
            state = plumbing.inspect_pod_link(req.netns, req.ifname)
        except plumbing.NetnsMissing as exc:
            raise fail(str(exc)) from exc
        if state is None:
            raise fail(f"{req.ifname} is missing in {req.netns}")
        if not state.up:
            raise fail(f"{req.ifname} is down")
        prev = req.prev_result
        interfaces = prev.get("interfaces") or []
        for index, item in enumerate(interfaces):
            if item.get("sandbox") and item.get("name") == req.ifname:
                if item.get("mac") and item["mac"].lower() != state.mac.lower():
                    raise fail(f"{req.ifname} has MAC {state.mac}, expected {item['mac']}")
                for ip in prev.get("ips") or []:
                    if ip.get("interface") == index and ip.get("address") not in state.addresses:
                        raise fail(f"{req.ifname} lacks address {ip.get('address')}")
        if iface.external_ids.get(ATTACHED_MAC, state.mac).lower() != state.mac.lower():
            raise fail(f"{req.ifname} MAC {state.mac} differs from the port's attached_mac")

    def status(self) -> None:
        if not self.ovs.connected():
            raise CniError(Code.NOT_AVAILABLE,
                           f"the agent lost its Open_vSwitch database {self.ovs.remote}")
        if not self.ovs.bridge_ports(self.settings.bridge):
            raise CniError(Code.NOT_AVAILABLE, f"bridge {self.settings.bridge} is missing")

    # ------------------------------------------------------------------ restart

    def reconcile(self) -> tuple[int, int]:
        """Remove pod ports whose veth, netns or pod is gone; keep live ones untouched.

        Returns (kept, removed). If the API is unreachable, only ports whose veth or netns is
        gone are removed: a pod is never unplugged on a guess.
        """
        ports = self.ovs.interfaces(lambda i: POD_KEY in i.external_ids)
        live: dict[str, str] | None
        try:
            live = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"]["uid"]
                    for p in pods_on_node(self.kube, self.settings.node)}
        except KubeError as exc:
            LOG.warning("reconcile: cannot list the pods of %s (%s); only ports whose veth or "
                        "netns is gone are removed", self.settings.node, exc)
            live = None
        removed = 0
        for iface in ports:
            ids = iface.external_ids
            netns = ids.get(NETNS_KEY, "")
            reason = ""
            if not plumbing.link_exists(iface.name):
                reason = "its veth is gone"
            elif netns and not os.path.exists(netns):
                reason = f"its netns {netns} is gone"
            elif live is not None and ids[POD_KEY] not in live:
                reason = f"pod {ids[POD_KEY]} is gone"
            elif live is not None and live[ids[POD_KEY]] != ids.get(IFACE_ID_VER):
                reason = f"pod {ids[POD_KEY]} was re-created"
            if reason:
                self._remove([iface.name])
                removed += 1
                LOG.info("reconcile: removed %s (%s): %s", iface.name, ids.get(IFACE_ID), reason)
        LOG.info("reconcile: %d pod ports kept, %d removed", len(ports) - removed, removed)
        return len(ports) - removed, removed
