"""Subnets: validate them all together, keep pools and switches, report status and Events,
and refuse deletion (finalizer) while pods still use a subnet."""

from __future__ import annotations

import logging
from typing import Any

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
from operators.kubeapi import KubeError, now_rfc3339, subnet_path
from operators.state import SUBNET_FINALIZER, Batch, State

LOG = logging.getLogger(__name__)


def sync_subnets(state: State, batch: Batch) -> bool:
    """Recompute every subnet; True when the set of valid subnets changed."""
    objects = state.cache.snapshot("subnets")
    specs: dict[str, SubnetSpec] = {}
    problems: dict[str, list[Problem]] = {}
    for name, obj in objects.items():
        try:
            specs[name] = parse_subnet(obj)
        except SpecError as exc:
            problems[name] = [exc.problem]
    problems.update(validate(specs.values(), state.config.reserved_ranges()))
    before = dict(state.subnets)
    valid: dict[str, SubnetSpec] = {}
    for name, spec in specs.items():
        if problems.get(name):
            continue
        if spec.deleting and not _in_use(state, name):
            _finish_deletion(state, batch, objects[name])
            continue
        valid[name] = spec
    for name in set(before) - set(valid):
        if name not in valid and not _in_use(state, name):
            state.ipam.remove_pool(name)
        batch.rows[topology.subnet_owner(name)] = []
    for name, spec in valid.items():
        state.ipam.set_pool(name, spec.cidr, spec.gateway, spec.exclude_ips)
        batch.rows[topology.subnet_owner(name)] = topology.subnet_rows(spec, state.config)
    for name in problems:
        if problems[name]:
            batch.rows[topology.subnet_owner(name)] = []
    state.subnets, state.problems = valid, problems
    annotations = {
        ns: obj["metadata"].get("annotations", {}).get("ovn.kubernetes.io/logical_switch", "")
        for ns, obj in state.cache.snapshot("namespaces").items()
    }
    default = next((s.name for s in valid.values() if s.name == state.config.default_subnet),
                   next((s.name for s in valid.values() if s.default), ""))
    state.binding = binding(valid.values(), default, {k: v for k, v in annotations.items() if v})
    for name, obj in objects.items():
        _publish_status(state, obj, problems.get(name, []))
    return {n: s.cidr for n, s in before.items()} != {n: s.cidr for n, s in valid.items()}


def _in_use(state: State, subnet: str) -> int:
    pool = state.ipam.pools.get(subnet)
    return pool.used if pool else 0


def _finish_deletion(state: State, batch: Batch, obj: dict[str, Any]) -> None:
    name = obj["metadata"]["name"]
    batch.rows[topology.subnet_owner(name)] = []
    state.ipam.remove_pool(name)
    finalizers = [f for f in obj["metadata"].get("finalizers", []) if f != SUBNET_FINALIZER]

    def release() -> None:
        try:
            state.kube.merge_patch(subnet_path(name), {"metadata": {"finalizers": finalizers}})
        except KubeError as exc:
            if exc.status != 404:
                raise

    state.publish(batch, "subnets", name, "released", release)


def _condition(kind: str, ok: bool, reason: str, message: str,
               old: list[dict[str, Any]]) -> dict[str, Any]:
    status = "True" if ok else "False"
    previous = next((c for c in old if c.get("type") == kind), {})
    since = previous.get("lastTransitionTime") if previous.get("status") == status else None
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or now_rfc3339()}


def subnet_status(state: State, obj: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    old = (obj.get("status") or {}).get("conditions", [])
    in_use = _in_use(state, name)
    if problems:
        first = problems[0]
        message = "; ".join(p.message for p in problems)
        conditions = [_condition("Validated", False, first.reason, message, old),
                      _condition("Ready", False, first.reason, "not validated", old)]
    elif obj["metadata"].get("deletionTimestamp"):
        conditions = [_condition("Validated", True, "Valid", "spec is valid", old),
                      _condition("Ready", False, "InUse", f"deletion waits for {in_use} pods "
                                 "using this subnet to go", old)]
    else:
        conditions = [_condition("Validated", True, "Valid", "spec is valid", old),
                      _condition("Ready", True, "SwitchReady",
                                 f"logical switch {names.subnet_switch(name)} is ready", old)]
    pool = state.ipam.pools.get(name)
    return {"conditions": conditions, "usingIPs": in_use,
            "availableIPs": pool.available if pool else 0}


def _publish_status(state: State, obj: dict[str, Any], problems: list[Problem]) -> None:
    meta = obj["metadata"]
    name = meta["name"]
    status = subnet_status(state, obj, problems)
    old = obj.get("status") or {}
    needs_finalizer = not meta.get("deletionTimestamp") and \
        SUBNET_FINALIZER not in meta.get("finalizers", [])
    if problems:
        state.report(f"subnet/{name}", obj, problems[0].reason,
                     "; ".join(p.message for p in problems))
    else:
        state.resolved(f"subnet/{name}")
    if _same_status(old, status) and not needs_finalizer:
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


def _same_status(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def strip(status: dict[str, Any]) -> Any:
        conds = sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                       for c in status.get("conditions", []))
        return conds, status.get("usingIPs"), status.get("availableIPs")

    return strip(old) == strip(new)


def refresh_usage(state: State) -> None:
    """Publish usingIPs/availableIPs of subnets whose counts moved (throttled by the caller)."""
    for name, obj in state.cache.snapshot("subnets").items():
        _publish_status(state, obj, state.problems.get(name, []))
