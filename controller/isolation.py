"""A namespace's default deny: the pods its NetworkPolicies isolate, per direction.

A pod selected by any policy of type Ingress (Egress) accepts (sends) only what some policy
allows. Its namespace owns one Port_Group per direction holding every such pod, with a drop
ACL below the policies' allows and, above it, what isolation must still let through
(controller/aclorder.py): ARP/ND both ways, and for ingress the nodes' management addresses
(kubelet probes, host-network pods) and the hairpin source (a pod reaching itself through
its own Service). A namespace without policies owns no rows at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from controller import aclorder
from controller.policies import AFTER_LB, EGRESS, INGRESS, Logging
from controller.services import HAIRPIN_SNAT_IP
from northbound import names
from northbound.rows import ACL, NbRow, Owner, PortGroup

ACL_LOGGING = "kovn.io/acl-logging"
"""Namespace annotation: `{"deny": "info", "allow": "off"}` logs the namespace's dropped
(default deny) and/or allowed (policy rule) packets at that syslog severity."""
SEVERITIES = ("alert", "warning", "notice", "info", "debug")


def namespace_owner(namespace: str) -> Owner:
    return Owner(names.OwnerType.NAMESPACE, namespace)


def logging_of(namespace: Mapping[str, Any] | None) -> Logging:
    """The namespace's ACL logging (ValueError on a malformed annotation)."""
    if namespace is None:
        return Logging()
    text = (namespace.get("metadata", {}).get("annotations") or {}).get(ACL_LOGGING)
    if not text:
        return Logging()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"annotation {ACL_LOGGING} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"annotation {ACL_LOGGING} must be an object like "
                         '{"deny": "info", "allow": "off"}')
    levels: dict[str, str | None] = {}
    for what in ("deny", "allow"):
        level = str(value.get(what, "off")).lower()
        if level not in (*SEVERITIES, "off"):
            raise ValueError(f"annotation {ACL_LOGGING}: {what} {level!r} is not one of "
                             f"{', '.join(SEVERITIES)} or off")
        levels[what] = None if level == "off" else level
    return Logging(deny=levels["deny"], allow=levels["allow"])


def _acl(owner: Owner, group: str, direction: str, priority: int, match: str, action: str,
         role: names.AclRole, rule: str = "", severity: str | None = None) -> ACL:
    ids = {names.ACL_ROLE_KEY: str(role), names.POLICY_KEY: owner.name,
           names.DIRECTION_KEY: direction}
    if rule:
        ids[names.RULE_KEY] = rule
    return ACL(owner=owner, port_group=group, extra_ids=ids,
               direction="to-lport" if direction == INGRESS else "from-lport",
               priority=priority, match=match, action=action,
               name=names.default_deny_acl_name(owner.name, direction)
               if role == names.AclRole.DEFAULT_DENY else None,
               log=severity is not None, severity=severity,
               meter=names.ACL_LOG_METER if severity is not None else None,
               options=AFTER_LB if direction == EGRESS else {})


def namespace_rows(namespace: str, ingress_ports: Iterable[str], egress_ports: Iterable[str],
                   logging: Logging = Logging()) -> list[NbRow]:  # noqa: B008
    """The default-deny rows of a namespace whose policies isolate these pods' ports."""
    owner = namespace_owner(namespace)
    rows: list[NbRow] = []
    for direction, ports in ((INGRESS, frozenset(ingress_ports)),
                             (EGRESS, frozenset(egress_ports))):
        if not ports:
            continue
        group = names.default_deny_port_group(namespace, direction)
        pod = f"outport == @{group}" if direction == INGRESS else f"inport == @{group}"
        rows += [
            PortGroup(owner=owner, name=group, ports=ports),
            _acl(owner, group, direction, aclorder.DEFAULT_DENY, pod, "drop",
                 names.AclRole.DEFAULT_DENY, severity=logging.deny),
            _acl(owner, group, direction, aclorder.ALWAYS_ALLOW, f"{pod} && (arp || nd)",
                 "allow", names.AclRole.ALWAYS, "arp-nd"),
        ]
        if direction == INGRESS:
            rows += [
                _acl(owner, group, direction, aclorder.ALWAYS_ALLOW,
                     f"{pod} && ip4.src == ${names.NODES_ADDRESS_SET}", "allow-related",
                     names.AclRole.ALWAYS, "nodes"),
                _acl(owner, group, direction, aclorder.ALWAYS_ALLOW,
                     f"{pod} && ip4.src == {HAIRPIN_SNAT_IP}", "allow-related",
                     names.AclRole.ALWAYS, "hairpin"),
            ]
    return rows
