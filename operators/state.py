"""What the controller knows between flushes, and the batch one flush builds.

The worker thread is the only writer of this state (IPAM included), so it needs no locks;
watch handlers only touch the ClusterCache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.config import ClusterConfig
from controller.ipam import IPAM
from controller.subnets import Binding, Problem, SubnetSpec
from northbound.rows import NbRow, Owner
from operators.burst import Burst
from operators.cache import ClusterCache
from operators.faults import Faults
from operators.kubeapi import KubeAPI

if TYPE_CHECKING:
    from operators.subnets import Verdict

JOIN_POOL = "_join"
"""IPAM pool of the nodes' join addresses. Never a Subnet name ('_' is not valid in
Kubernetes names): a Subnet named `join` once replaced it and wedged every flush."""
SUBNET_FINALIZER = "kovn.io/subnet-protection"


@dataclass(frozen=True)
class Publish:
    """An API write that must follow the NB commit (an annotation, a finalizer release).

    `token` is what it writes (e.g. the annotation value): the same token already written or
    in flight for the same object is not written again."""

    kind: str
    key: str
    token: str
    write: Callable[[], None]


@dataclass
class Batch:
    """Rows for the owners this flush touched, and API writes to do once NB has them."""

    rows: dict[Owner, list[NbRow]] = field(default_factory=dict)
    after_commit: list[Publish] = field(default_factory=list)


@dataclass
class State:
    config: ClusterConfig
    kube: KubeAPI
    cache: ClusterCache
    ipam: IPAM = field(default_factory=IPAM)
    subnets: dict[str, SubnetSpec] = field(default_factory=dict)
    """Valid subnets (they have a switch and a pool)."""
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    binding: Binding = field(default_factory=lambda: Binding(default=""))
    applied: dict[Owner, tuple[NbRow, ...]] = field(default_factory=dict)
    """Rows last written per owner: an unchanged owner costs no NB work."""
    pod_memo: dict[str, tuple[str, str, str, tuple[NbRow, ...]]] = field(default_factory=dict)
    """Per pod: (annotation, uid, node, rows) of its last sync. A pod event that changes none
    of these (status updates, our own annotation coming back) costs a dict lookup."""
    subnet_verdicts: dict[str, Verdict] = field(default_factory=dict)
    """Per Subnet: its problems and the spec it serves with (for its status)."""
    faults: Faults = field(default_factory=Faults)
    """Owners set aside because their rows could not be computed or written."""
    freed: bool = False
    """A pod released its address in this flush (waiting pods may get one)."""
    waiting: set[str] = field(default_factory=set)
    """Pods without an address (subnet not ready, exhausted...): retried when things change."""
    reported: dict[str, str] = field(default_factory=dict)
    """Last Event message per object key: the same problem is reported once, not per flush."""
    isolated: dict[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    """Per NetworkPolicy: the ports it isolates for ingress and for egress (its namespace's
    default deny is their union over the namespace's policies)."""
    isolation_changed: set[str] = field(default_factory=set)
    """Namespaces whose default deny a policy sync changed in this flush."""
    policy_peers: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per NetworkPolicy: the keys of the peer sets its ACLs name."""
    peer_users: dict[str, set[str]] = field(default_factory=dict)
    """Per peer set: the policies that use it (it goes with the last)."""
    peers_changed: set[str] = field(default_factory=set)
    """Peer sets a policy sync started or stopped using in this flush."""
    qos_winners: dict[str, frozenset[str]] = field(default_factory=dict)
    """Per pod: the QoSPolicies whose limits are in force on it (their status counts it)."""
    qos_changed: set[str] = field(default_factory=set)
    """QoSPolicies whose set of pods in force changed in this flush."""
    ports_changed: set[str] = field(default_factory=set)
    """Pods whose port came or went in this flush without an event of their own."""
    burst: Burst = field(default_factory=Burst)
    """Pods starting, and the pod annotations held while a burst of them is."""
    written: dict[tuple[str, str], str] = field(default_factory=dict)
    """Token last written (or being written) per (kind, key): publishing runs behind the
    worker, and the watch event carrying our own write may come later than the next flush."""

    def publish(self, batch: Batch, kind: str, key: str, token: str,
                write: Callable[[], None]) -> None:
        if self.written.get((kind, key)) == token:
            return
        self.written[(kind, key)] = token
        batch.after_commit.append(Publish(kind, key, token, write))

    def report(self, key: str, obj: Mapping[str, Any], reason: str, message: str,
               kind: str = "Warning") -> None:
        if self.reported.get(key) == f"{reason}: {message}":
            return
        self.reported[key] = f"{reason}: {message}"
        self.kube.event(obj, reason, message, kind)

    def resolved(self, key: str) -> None:
        self.reported.pop(key, None)
