"""Subnets: validate them all together, keep pools and switches, report status and Events,
and refuse deletion (finalizer) while pods still use a subnet.

Three rules keep one bad Subnet from hurting anything else:
- A Subnet is validated (its own spec, reserved names and ranges, the other Subnets, the
  Nodes' addresses) before any row or pool exists for it; an invalid one gets
  `Validated=False` with a reason and an Event, and nothing else.
- A Subnet that becomes invalid while pods use it keeps serving them with its last valid
  spec (recorded in `status.appliedSpec`, so a restarted controller keeps it too): its
  switch, pool and pods stay; the condition says what to fix.
- The finalizer protects only Subnets that have a switch: an invalid Subnet nobody uses is
  deletable at once, whatever its spec. One that pods use refuses deletion and names them.

Statuses are published after the NB commit (`publish_statuses`), so `Ready=True` means the
switch really is in NB.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from contract.gateway import from_annotations
from controller import topology
from controller.subnets import (
    Problem,
    SpecError,
    SubnetSpec,
    binding,
    parse_subnet,
    validate,
)
from northbound import names
from operators import services
from operators.cache import Dirty
from operators.kubeapi import KubeError, now_rfc3339, subnet_path
from operators.pods import recorded, wants_port
from operators.state import SUBNET_FINALIZER, Batch, State

LOG = logging.getLogger(__name__)
APPLIED_FIELDS = ("cidrBlock", "gateway", "excludeIps", "namespaces", "private",
                  "allowSubnets", "natOutgoing", "gatewayType", "default")


@dataclass(frozen=True)
class Verdict:
    """What the last sync decided for one Subnet."""

    problems: tuple[Problem, ...] = ()
    serving: SubnetSpec | None = None
    """The spec its switch and pool follow: its own, or its last valid one while in use."""


def reserved(state: State) -> dict[str, str]:
    """Ranges no Subnet may overlap: the cluster's, the address of every Node, and every
    Node's external network (its gateway router's side of the outside: a Subnet there would
    be routed two ways)."""
    ranges = dict(state.config.reserved_ranges())
    for name, obj in state.cache.snapshot("nodes").items():
        for address in (obj.get("status") or {}).get("addresses", []):
            if address.get("type") in ("InternalIP", "ExternalIP") and \
                    ":" not in address.get("address", ":"):
                ranges[f"address of node {name}"] = f"{address['address']}/32"
        try:
            external = from_annotations(obj["metadata"].get("annotations") or {})
        except ValueError:
            continue  # reported on the Node; it gets no gateway router
        if external is not None:
            ranges[f"external network of node {name}"] = str(external.network)
    return ranges


def users(state: State, subnet: str) -> list[str]:
    """Keys of the pods holding an address of `subnet` (from its pool, or, when it has none,
    as after a restart, from the pods' annotations)."""
    pool = state.ipam.pools.get(subnet)
    if pool is not None:
        return sorted(pool.owner_keys())
    found = []
    for key, obj in state.cache.snapshot("pods").items():
        network = recorded(obj) if wants_port(obj) else None
        if network is not None and network.subnet == subnet:
            found.append(key)
    return sorted(found)


def applied_spec(obj: dict[str, Any]) -> SubnetSpec | None:
    """The last valid spec the controller applied, as recorded in the status."""
    applied = (obj.get("status") or {}).get("appliedSpec")
    if not applied:
        return None
    try:
        return parse_subnet({"metadata": obj["metadata"], "spec": applied})
    except SpecError:
        return None


def _spec_of(spec: SubnetSpec) -> dict[str, Any]:
    return {"cidrBlock": spec.cidr, "gateway": spec.gateway,
            "excludeIps": list(spec.exclude_ips), "namespaces": list(spec.namespaces),
            "private": spec.private, "allowSubnets": list(spec.allow_subnets),
            "natOutgoing": spec.nat_outgoing, "gatewayType": spec.gateway_type,
            "default": spec.default}


def sync_subnets(state: State, batch: Batch) -> bool:
    """Recompute every subnet; True when the set of serving subnets (or their CIDRs) changed."""
    objects = state.cache.snapshot("subnets")
    specs: dict[str, SubnetSpec] = {}
    problems: dict[str, list[Problem]] = {}
    for name, obj in objects.items():
        try:
            specs[name] = parse_subnet(obj)
        except SpecError as exc:
            problems[name] = [exc.problem]
    ranges = reserved(state)
    problems.update(validate(specs.values(), ranges))
    # Subnets in use whose spec went bad keep serving with their last valid spec; the others
    # are validated again beside those, so none can take a range a kept one still serves.
    serving = {n: s for n, s in specs.items() if not problems.get(n)}
    kept: set[str] = set()
    for name, obj in objects.items():
        if problems.get(name) and users(state, name):
            last = state.subnets.get(name) or applied_spec(obj)
            if last is not None:
                serving[name] = last
                kept.add(name)
    second = validate(serving.values(), ranges)
    for name, found in second.items():
        if found and name not in kept:
            problems.setdefault(name, []).extend(p for p in found if p not in problems[name])
            serving.pop(name, None)

    before = dict(state.subnets)
    verdicts: dict[str, Verdict] = {}
    for name, obj in objects.items():
        spec = serving.get(name)
        if obj["metadata"].get("deletionTimestamp") and not users(state, name):
            _finish_deletion(state, batch, obj)
            spec = None
        verdicts[name] = Verdict(tuple(problems.get(name, ())), spec)
    valid = {name: v.serving for name, v in verdicts.items() if v.serving is not None}
    for name in set(before) - set(valid):
        if not users(state, name):
            state.ipam.remove_pool(name)
        batch.rows[topology.subnet_owner(name)] = []
    for name in set(objects) - set(valid):
        batch.rows[topology.subnet_owner(name)] = []
    for name, spec in valid.items():
        state.ipam.set_pool(name, spec.cidr, spec.gateway, spec.exclude_ips)
        batch.rows[topology.subnet_owner(name)] = topology.subnet_rows(spec, state.config)
    state.subnets = valid
    state.problems = {n: list(v.problems) for n, v in verdicts.items() if v.problems}
    state.subnet_verdicts = verdicts
    annotations = {
        ns: obj["metadata"].get("annotations", {}).get("ovn.kubernetes.io/logical_switch", "")
        for ns, obj in state.cache.snapshot("namespaces").items()
    }
    default = next((s.name for s in valid.values() if s.name == state.config.default_subnet),
                   next((s.name for s in valid.values() if s.default), ""))
    state.binding = binding(valid.values(), default, {k: v for k, v in annotations.items() if v})
    # Namespaces that only an invalid Subnet claims wait for it (their pods say why) rather
    # than take addresses from the default subnet that they would keep after the fix.
    for name, obj in objects.items():
        if name not in valid:
            for ns in (obj.get("spec") or {}).get("namespaces") or ():
                state.binding.by_namespace.setdefault(ns, name)
    return {n: s.cidr for n, s in before.items()} != {n: s.cidr for n, s in valid.items()}


def sync_kind(state: State, batch: Batch, dirty: Dirty, full: bool) -> None:
    """The registry's hook: Subnets are validated together, so any change recomputes all;
    a change of the serving set moves the nodes' routes and may free waiting pods."""
    if not (dirty.get("subnets") or full):
        return
    nat = _nat_outgoing(state)
    if sync_subnets(state, batch):
        state.pod_memo.clear()  # pools may have moved under the pods
        dirty.of("nodes").update(state.cache.snapshot("nodes"))  # their routes list subnets
        services.follow_subnets(state, dirty)
    if _nat_outgoing(state) != nat:  # the gateway routers' SNAT rows follow natOutgoing
        dirty.of("nodes").update(state.cache.snapshot("nodes"))
    dirty.of("pods").update(state.waiting)


def _nat_outgoing(state: State) -> frozenset[str]:
    return frozenset(n for n, s in state.subnets.items() if s.nat_outgoing)


def _finish_deletion(state: State, batch: Batch, obj: dict[str, Any]) -> None:
    name = obj["metadata"]["name"]
    batch.rows[topology.subnet_owner(name)] = []
    state.ipam.remove_pool(name)
    if SUBNET_FINALIZER not in obj["metadata"].get("finalizers", []):
        return
    finalizers = [f for f in obj["metadata"].get("finalizers", []) if f != SUBNET_FINALIZER]

    def release() -> None:
        try:
            state.kube.merge_patch(subnet_path(name), {"metadata": {"finalizers": finalizers}})
        except KubeError as exc:
            if exc.status != 404:
                raise

    state.publish(batch, "subnets", name, "released", release)


def condition(kind: str, ok: bool, reason: str, message: str,
               old: list[dict[str, Any]]) -> dict[str, Any]:
    status = "True" if ok else "False"
    previous = next((c for c in old if c.get("type") == kind), {})
    since = previous.get("lastTransitionTime") if previous.get("status") == status else None
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or now_rfc3339()}


def _named(pods: list[str], limit: int = 5) -> str:
    shown = ", ".join(pods[:limit])
    return f"{len(pods)} pods ({shown}{', ...' if len(pods) > limit else ''})"


def subnet_status(state: State, obj: dict[str, Any], verdict: Verdict,
                  write_error: str = "") -> dict[str, Any]:
    """The status the Subnet should show, from the last sync's verdict and the NB commit."""
    name = obj["metadata"]["name"]
    old = (obj.get("status") or {}).get("conditions", [])
    using = users(state, name)
    spec = verdict.serving
    if verdict.problems:
        first = verdict.problems[0]
        message = "; ".join(p.message for p in verdict.problems)
        if spec is not None:
            message += (f". Until it is fixed the switch keeps its last valid spec "
                        f"({spec.cidr}, gateway {spec.gateway}) for its {_named(using)}")
        validated = condition("Validated", False, first.reason, message, old)
    else:
        validated = condition("Validated", True, "Valid", "spec is valid", old)
    if obj["metadata"].get("deletionTimestamp"):
        ready = condition("Ready", False, "InUse", f"deletion waits for {_named(using)} "
                           "using this subnet: delete them (or move their namespace to "
                           "another subnet and re-create them)", old)
    elif spec is None:
        ready = condition("Ready", False, verdict.problems[0].reason if verdict.problems
                           else "NotValidated", "no switch: the spec is not valid", old)
    elif write_error:
        ready = condition("Ready", False, "NorthboundWriteFailed",
                           f"writing the switch to OVN NB failed (retrying): {write_error}",
                           old)
    elif verdict.problems:
        ready = condition("Ready", True, "ServingLastValidSpec",
                           f"logical switch {names.subnet_switch(name)} serves its pods with "
                           f"the last valid spec {spec.cidr}", old)
    else:
        ready = condition("Ready", True, "SwitchReady",
                           f"logical switch {names.subnet_switch(name)} is ready", old)
    pool = state.ipam.pools.get(name)
    status: dict[str, Any] = {"conditions": [validated, ready], "usingIPs": len(using),
                              "availableIPs": pool.available if pool else 0}
    if spec is not None:
        status["appliedSpec"] = _spec_of(spec)
    return status


def _publish_status(state: State, obj: dict[str, Any], verdict: Verdict,
                    write_error: str, usage: bool) -> None:
    meta = obj["metadata"]
    name = meta["name"]
    status = subnet_status(state, obj, verdict, write_error)
    old = obj.get("status") or {}
    needs_finalizer = verdict.serving is not None and not meta.get("deletionTimestamp") and \
        SUBNET_FINALIZER not in meta.get("finalizers", [])
    if verdict.problems:
        state.report(f"subnet/{name}", obj, verdict.problems[0].reason,
                     "; ".join(p.message for p in verdict.problems))
    else:
        state.resolved(f"subnet/{name}")
    if _same_status(old, status, usage) and not needs_finalizer:
        return
    obj["status"] = status  # so the next flush compares against what it wrote
    try:
        state.kube.merge_patch(f"{subnet_path(name)}/status", {"status": status})
        if needs_finalizer:
            finalizers = [*meta.get("finalizers", []), SUBNET_FINALIZER]
            state.kube.merge_patch(subnet_path(name), {"metadata": {"finalizers": finalizers}})
            meta["finalizers"] = finalizers
    except KubeError as exc:
        if exc.status != 404:
            LOG.warning("could not update subnet %s: %s", name, exc)


def _same_status(old: dict[str, Any], new: dict[str, Any], usage: bool = True) -> bool:
    """Whether `new` says nothing `old` does not (`usage`: the address counts included)."""
    def strip(status: dict[str, Any]) -> Any:
        conds = sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                       for c in status.get("conditions", []))
        counts = (status.get("usingIPs"), status.get("availableIPs")) if usage else ()
        return conds, counts, status.get("appliedSpec")

    return strip(old) == strip(new)


def publish_statuses(state: State, usage: bool = True) -> None:
    """Publish every Subnet's status whose content moved. After each commit `usage` is
    False: only a change of conditions or applied spec is written then, since the address
    counts move with every pod of a burst and each write is a synchronous round trip on
    the worker's path (~13 ms of API server CPU, 0.1-0.5 s under load); the counts follow
    within 2 s (the worker's throttled call)."""
    for name, obj in state.cache.snapshot("subnets").items():
        verdict = state.subnet_verdicts.get(name)
        if verdict is None:
            continue
        failure = state.faults.get(topology.subnet_owner(name))
        _publish_status(state, obj, verdict, failure.message if failure else "", usage)
