"""Pod bandwidth limits: which source wins for a pod (controller/qos.py) and QoSPolicy status.

A pod's QoS rows are part of the pod's own rows (the Pod owns them), recomputed when the pod
changes, when a QoSPolicy of its namespace that selects it (before or after) changes, and
when its Subnet's `spec.qos` default changes. A QoSPolicy owns no rows: its sync validates
it and publishes its status (a Valid condition, how many pods it selects); an invalid one
selects no pod, so it disturbs nobody's limits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from contract.podnetwork import POD_NETWORK, PodNetwork
from controller import qos
from controller.subnets import Problem
from kube.client import KubeError
from northbound import names
from northbound.rows import NbRow, Owner
from operators.cache import Dirty, Obj
from operators.selection import NAMESPACE_INDEX, matches, select
from operators.state import Batch, State
from operators.subnets import condition as make_condition

QOS_POLICIES = "qospolicies"
QOS_PATH = "/apis/kovn.io/v1/namespaces/{namespace}/qospolicies/{name}"


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def valid_policies(state: State, namespace: str) -> list[qos.QoSPolicySpec]:
    out = []
    for key in sorted(state.cache.indexed(QOS_POLICIES, NAMESPACE_INDEX, namespace)):
        obj = state.cache.get(QOS_POLICIES, key)
        if obj is not None:
            spec, problems = qos.parse_policy(obj)
            if spec is not None and not problems:
                out.append(spec)
    return out


def pod_qos(state: State, pod: Obj, subnet: str) -> qos.PodQoS:
    """The limits in force on `pod` (on `subnet`): annotation > QoSPolicy > Subnet default."""
    meta = pod["metadata"]
    labels = _labels(pod)
    chosen = [p for p in valid_policies(state, meta["namespace"])
              if matches(json.loads(p.selector), labels)]
    subnet_obj = state.cache.get("subnets", subnet) if subnet else None
    defaults: Mapping[str, qos.Bandwidth] = {}
    if subnet_obj is not None:
        defaults, problems = qos.subnet_defaults(subnet_obj)
        if problems:
            state.report(f"subnet-qos/{subnet}", subnet_obj, problems[0].reason,
                         "spec.qos: " + "; ".join(p.message for p in problems))
        else:
            state.resolved(f"subnet-qos/{subnet}")
    return qos.resolve(meta.get("annotations") or {}, chosen, subnet, defaults)


def report_pod_problems(state: State, key: str, pod: Obj, problems: tuple[Problem, ...]
                        ) -> None:
    if problems:
        state.report(f"qos/{key}", pod, problems[0].reason,
                     "; ".join(p.message for p in problems) + " (this limit is ignored)")
    else:
        state.resolved(f"qos/{key}")


def sync_qos_policy(state: State, batch: Batch, key: str) -> None:
    """Validate a QoSPolicy and publish its status; its limits act through the pods."""
    batch.rows[qos_owner(key)] = []
    obj = state.cache.get(QOS_POLICIES, key)
    if obj is None:
        state.resolved(f"qospolicy/{key}")
        return
    namespace, name = key.split("/", 1)
    spec, problems = qos.parse_policy(obj)
    pods = sum(1 for winners in state.qos_winners.values() if key in winners) \
        if spec is not None else 0
    old = (obj.get("status") or {}).get("conditions", [])
    if problems:
        message = "; ".join(p.message for p in problems)
        condition = make_condition("Valid", False, problems[0].reason, message, old)
        state.report(f"qospolicy/{key}", obj, problems[0].reason,
                     f"{message} (the policy limits no pod until fixed)")
    else:
        condition = make_condition("Valid", True, "Valid", "spec is valid", old)
        state.resolved(f"qospolicy/{key}")
    status = {"conditions": [condition], "pods": pods,
              "observedGeneration": obj["metadata"].get("generation", 0)}
    token = _status_token(status)
    if _status_token(obj.get("status") or {}) == token:  # already shown (times aside)
        state.written[(QOS_POLICIES, key)] = token
        return

    def publish() -> None:
        try:
            state.kube.merge_patch(QOS_PATH.format(namespace=namespace, name=name) + "/status",
                                   {"status": status})
        except KubeError as exc:
            if exc.status != 404:
                raise

    state.publish(batch, QOS_POLICIES, key, token, publish)


def _status_token(status: Mapping[str, Any]) -> str:
    """A status as compared: conditions without their transition times."""
    return json.dumps({"pods": status.get("pods"),
                       "observedGeneration": status.get("observedGeneration"),
                       "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                      for c in status.get("conditions") or ()]},
                      sort_keys=True)


def qos_owner(key: str) -> Owner:
    return Owner(names.OwnerType.QOS_POLICY, key)


# --- fan-out (watch threads, under the cache's lock) -------------------------------------------
def pods_follow_qos_policies(cache: Any, old: Obj | None, new: Obj | None) -> set[str]:
    """The pods of the policy's namespace that it selects before or after the change."""
    obj = new or old
    if obj is None:
        return set()
    if old is not None and new is not None and old.get("spec") == new.get("spec") and \
            _labels(old) == _labels(new) and \
            old["metadata"].get("creationTimestamp") == new["metadata"].get("creationTimestamp"):
        return set()  # a status update (ours)
    namespace = obj["metadata"]["namespace"]
    out: set[str] = set()
    for version in (old, new):
        if version is None:
            continue
        selector = (version.get("spec") or {}).get("podSelector")
        try:
            out |= select(cache, "pods", selector if selector is not None else None, namespace)
        except ValueError:
            out |= cache.indexed("pods", NAMESPACE_INDEX, namespace)
    return out


def _subnet_of(pod: Obj) -> str | None:
    text = (pod["metadata"].get("annotations") or {}).get(POD_NETWORK)
    if not text:
        return None
    try:
        return PodNetwork.decode(text).subnet
    except ValueError:
        return None


def pods_follow_subnets(cache: Any, old: Obj | None, new: Obj | None) -> list[str]:
    """A Subnet's `spec.qos` default concerns the pods holding its addresses (rare: a scan)."""
    def default(obj: Obj | None) -> Any:
        return ((obj or {}).get("spec") or {}).get("qos")

    if default(old) == default(new):
        return []
    name = (new or old or {})["metadata"]["name"]
    return [key for key, pod in cache.snapshot("pods").items() if _subnet_of(pod) == name]


def pod_qos_rows(state: State, key: str, pod: Obj) -> list[NbRow]:
    """The QoS rows of a pod that has a port (reporting a malformed annotation once)."""
    held = state.ipam.lookup(key)
    if held is None:
        forget_pod(state, key)
        return []
    subnet = held[0]
    limits = pod_qos(state, pod, subnet)
    report_pod_problems(state, key, pod, limits.problems)
    winners = frozenset(limits.policies)
    old = state.qos_winners.get(key, frozenset())
    if winners != old:
        state.qos_changed |= winners ^ old
        if winners:
            state.qos_winners[key] = winners
        else:
            state.qos_winners.pop(key, None)
    return list(qos.qos_rows(key, names.subnet_switch(subnet),
                             names.pod_port(*key.split("/", 1)), limits))


def forget_pod(state: State, key: str) -> None:
    """A pod without a port counts for no QoSPolicy."""
    old = state.qos_winners.pop(key, frozenset())
    state.qos_changed |= old


def after_pods(state: State, dirty: Dirty) -> None:
    dirty.of(QOS_POLICIES).update(state.qos_changed)
    state.qos_changed.clear()
