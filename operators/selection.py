"""Label selectors over the cache's indexes: which objects a selector picks, cheaply.

`matchLabels` are answered from the label index (an intersection of small sets), and only
the survivors are checked against `matchExpressions`, so selecting the pods of one policy
costs what it selects, not every pod of the cluster.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from operators.cache import ClusterCache

LABEL_INDEX = "label"
NAMESPACE_INDEX = "namespace"
SERVICE_INDEX = "service"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def label_keys(obj: Mapping[str, Any]) -> Iterable[Hashable]:
    """Index keys of an object's labels: one (key, value) pair per label."""
    return tuple((obj.get("metadata") or {}).get("labels", {}).items())


def namespace_keys(obj: Mapping[str, Any]) -> Iterable[Hashable]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return (namespace,) if namespace else ()


def service_keys(obj: Mapping[str, Any]) -> Iterable[Hashable]:
    """An EndpointSlice's Service (`ns/name`, from the label the EndpointSlice controller
    sets), so a Service's translator finds its slices without scanning them all."""
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return (f"{meta.get('namespace')}/{service}",) if service else ()


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: {} selects everything, None selects nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"label selector operator {op!r} is not In, NotIn, Exists or "
                             "DoesNotExist")
    return True


def select(cache: ClusterCache, kind: str, selector: Mapping[str, Any] | None,
           namespace: str | None = None) -> set[str]:
    """Keys of the objects of `kind` (in `namespace`, if given) that `selector` picks."""
    if selector is None:
        return set()
    candidates: set[str] | None = None
    if namespace is not None:
        candidates = cache.indexed(kind, NAMESPACE_INDEX, namespace)
    for pair in (selector.get("matchLabels") or {}).items():
        found = cache.indexed(kind, LABEL_INDEX, pair)
        candidates = found if candidates is None else candidates & found
        if not candidates:
            return set()
    if candidates is None:
        candidates = set(cache.snapshot(kind))
    if not selector.get("matchExpressions"):
        return candidates
    picked = set()
    for key in candidates:
        obj = cache.get(kind, key)
        if obj is not None and matches(selector, (obj.get("metadata") or {}).get("labels", {})):
            picked.add(key)
    return picked
