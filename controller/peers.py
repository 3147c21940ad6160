"""NetworkPolicy peers as shared address sets, and the label selectors they carry.

A peer (`podSelector`, `namespaceSelector`, both) names a set of pods; two policies with the
same peer name the same set, so the set is keyed by what selects, not by who asks: one
Address_Set per distinct (namespace scope, selectors[, named port]) however many policies
use it, and NB rows grow with policies + pods, never their product. A named port on an
egress rule is resolved on the destination pods, so the set of "pods of this peer whose
`web`/TCP is 8080" is a peer of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from northbound import names
from northbound.rows import AddressSet, Owner

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
NODES_PEER = "nodes"
"""Key of the peer set of the nodes' management addresses (names.NODES_ADDRESS_SET)."""


def canonical_selector(selector: Mapping[str, Any] | None) -> str | None:
    """One spelling per meaning: `{}` and `{matchLabels: {}}` alike, expressions sorted.
    None (no selector given) stays None. Bad operators raise ValueError here, so a policy
    with one is refused as a whole instead of selecting the wrong pods."""
    if selector is None:
        return None
    labels = dict(sorted((selector.get("matchLabels") or {}).items()))
    exprs = []
    for expr in selector.get("matchExpressions") or ():
        op = expr.get("operator", "")
        if op not in OPERATORS:
            raise ValueError(f"label selector operator {op!r} is not one of "
                             f"{', '.join(OPERATORS)}")
        values = sorted(expr.get("values") or [])
        if op in ("In", "NotIn") and not values:
            raise ValueError(f"label selector {expr.get('key')!r} {op} needs values")
        exprs.append({"key": expr.get("key", ""), "operator": op, "values": values})
    exprs.sort(key=lambda e: (e["key"], e["operator"], e["values"]))
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = labels
    if exprs:
        out["matchExpressions"] = exprs
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PeerSpec:
    """The pods of a peer: in `namespace` (podSelector alone) or in the namespaces that
    `namespace_selector` picks, matching `pod_selector`; with `port`, only those whose
    container port named port[1] on protocol port[0] is port[2]."""

    namespace: str = ""
    namespace_selector: str | None = None
    pod_selector: str = "{}"
    port: tuple[str, str, int] | None = None

    @property
    def key(self) -> str:
        text = json.dumps([self.namespace, self.namespace_selector, self.pod_selector,
                           self.port], separators=(",", ":"))
        return f"{self.namespace or '*'}/{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    @property
    def address_set(self) -> str:
        return names.peer_address_set(self.namespace, self.key.rsplit("/", 1)[1])

    def without_port(self) -> PeerSpec:
        return PeerSpec(self.namespace, self.namespace_selector, self.pod_selector)

    def selectors(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(namespace selector or None for the fixed namespace, pod selector) as dicts."""
        ns = json.loads(self.namespace_selector) if self.namespace_selector is not None else None
        return ns, json.loads(self.pod_selector)

    def to_object(self) -> dict[str, Any]:
        """The cache's view of a peer set (operators keep one per key while it is used)."""
        return {"metadata": {"name": self.key},
                "spec": {"namespace": self.namespace,
                         "namespaceSelector": self.namespace_selector,
                         "podSelector": self.pod_selector,
                         "port": list(self.port) if self.port else None}}

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> PeerSpec:
        spec = obj["spec"]
        port = spec.get("port")
        return cls(spec["namespace"], spec["namespaceSelector"], spec["podSelector"],
                   (port[0], port[1], int(port[2])) if port else None)


def peer_of(namespace: str, peer: Mapping[str, Any]) -> PeerSpec | None:
    """The pod peer a NetworkPolicyPeer names (None for an ipBlock peer)."""
    if "ipBlock" in peer and peer["ipBlock"] is not None:
        return None
    pods = canonical_selector(peer.get("podSelector")) or "{}"
    if peer.get("namespaceSelector") is not None:
        return PeerSpec("", canonical_selector(peer["namespaceSelector"]), pods)
    return PeerSpec(namespace, None, pods)


ALL_PODS = PeerSpec("", "{}", "{}")
"""Every pod of every namespace: where an egress rule by port name goes when it has no
`to` (any destination that has the port)."""


def owner_of(key: str) -> Owner:
    return Owner(names.OwnerType.PEER_SET, key)


def address_set_row(key: str, name: str, addresses: Iterable[str]) -> AddressSet:
    return AddressSet(owner=owner_of(key), name=name, addresses=tuple(sorted(set(addresses))))
