"""`kovn show`: the NB as a tree, like `ovn-nbctl show`, with each row's Kubernetes owner.

Every kovn row is suffixed with `[Kind ns/name]`, so "why does this port exist?" has its
answer on the same line; hand-made rows carry no suffix. With an owner filter only that
object's rows are printed, under the headers of the rows that contain them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from northbound import names
from northbound.apply import PlanCommand
from northbound.connection import NbConnection
from northbound.observe import owner_of
from northbound.plan import Plan
from northbound.rows import Owner

INDENT = "    "


def _owner_tag(table: str, row: Any) -> str:
    owner = owner_of(table, row)
    return f"  [{owner}]" if owner else ""


def _opt(value: list[Any]) -> Any:
    return value[0] if value else None


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f'"{i}"' for i in sorted(items))


class _Tree:
    """Collects lines; a header is printed only if something under it (or itself) matches."""

    def __init__(self, matches: Callable[[str, Any], bool]) -> None:
        self.lines: list[str] = []
        self.matches = matches

    def block(self, depth: int, table: str, row: Any, head: str, body: list[str],
              children: list[tuple[str, Any, str, list[str]]]) -> None:
        own = self.matches(table, row)
        shown = [c for c in children if own or self.matches(c[0], c[1])]
        if not (own or shown):
            return
        pad = INDENT * depth
        self.lines.append(f"{pad}{head}{_owner_tag(table, row)}")
        if own:
            self.lines.extend(f"{pad}{INDENT}{line}" for line in body)
        for child_table, child, child_head, child_body in shown:
            self.lines.append(f"{pad}{INDENT}{child_head}{_owner_tag(child_table, child)}")
            self.lines.extend(f"{pad}{INDENT * 2}{line}" for line in child_body)


def _lsp(port: Any) -> tuple[str, Any, str, list[str]]:
    body = []
    if port.type:
        body.append(f"type: {port.type}")
    if port.type == "router" and "router-port" in port.options:
        body.append(f"router-port: {port.options['router-port']}")
    if port.addresses and port.type != "router":
        body.append(f"addresses: [{_quoted(port.addresses)}]")
    if port.port_security:
        body.append(f"port_security: [{_quoted(port.port_security)}]")
    chassis = port.options.get("requested-chassis")
    if chassis:
        body.append(f"requested-chassis: {chassis}")
    if port.up:
        body.append(f"up: {str(port.up[0]).lower()}")
    return ("Logical_Switch_Port", port, f"port {port.name}", body)


def _acl(acl: Any) -> tuple[str, Any, str, list[str]]:
    head = f'acl {acl.direction} {acl.priority} "{acl.match}" {acl.action}'
    return ("ACL", acl, head, [])


def _lb_names(row: Any) -> list[str]:
    lines = []
    if row.load_balancer:
        lines.append("load balancers: " + ", ".join(sorted(lb.name for lb in row.load_balancer)))
    if row.load_balancer_group:
        lines.append("load balancer groups: "
                     + ", ".join(sorted(g.name for g in row.load_balancer_group)))
    return lines


def _qos_source(row: Any) -> str:
    """Where a pod's limit came from (controller/qos.py records it)."""
    source = dict(row.external_ids).get(names.QOS_SOURCE_KEY)
    direction = dict(row.external_ids).get(names.DIRECTION_KEY)
    return f" ({direction} of the pod, from {source})" if source else ""


def _switches(tree: _Tree, tables: dict[str, Any]) -> None:
    for ls in sorted(tables["Logical_Switch"].rows.values(), key=lambda r: r.name):
        children = [_lsp(p) for p in sorted(ls.ports, key=lambda p: p.name)]
        children += [_acl(a) for a in sorted(ls.acls, key=lambda a: (-a.priority, a.match))]
        children += [
            ("QoS", q, f'qos {q.direction} {q.priority} "{q.match}" '
                       f"{dict(q.bandwidth) or dict(q.action)}{_qos_source(q)}", [])
            for q in sorted(ls.qos_rules, key=lambda q: (-q.priority, q.match))
        ]
        body = [f"{k}: {v}" for k, v in sorted(ls.other_config.items())] + _lb_names(ls)
        tree.block(0, "Logical_Switch", ls, f"switch {ls.name}", body, children)


def _routers(tree: _Tree, tables: dict[str, Any]) -> None:
    for lr in sorted(tables["Logical_Router"].rows.values(), key=lambda r: r.name):
        children = []
        for port in sorted(lr.ports, key=lambda p: p.name):
            body = [f'mac: "{port.mac}"', f"networks: [{_quoted(port.networks)}]"]
            if port.peer:
                body.append(f"peer: {port.peer[0]}")
            chassis = ", ".join(sorted(g.chassis_name for g in port.gateway_chassis))
            if chassis:
                body.append(f"gateway chassis: [{chassis}]")
            children.append(("Logical_Router_Port", port, f"port {port.name}", body))
        for route in sorted(lr.static_routes, key=lambda r: (r.ip_prefix, r.nexthop)):
            policy = _opt(route.policy) or "dst-ip"
            table = f" table {route.route_table}" if route.route_table else ""
            head = f"route {route.ip_prefix} via {route.nexthop} ({policy}){table}"
            children.append(("Logical_Router_Static_Route", route, head, []))
        for policy in sorted(lr.policies, key=lambda p: (-p.priority, p.match)):
            hops = f" {', '.join(sorted(policy.nexthops))}" if policy.nexthops else ""
            head = f'policy {policy.priority} "{policy.match}" {policy.action}{hops}'
            children.append(("Logical_Router_Policy", policy, head, []))
        for nat in sorted(lr.nat, key=lambda n: (n.type, n.logical_ip)):
            head = f"nat {nat.type} {nat.external_ip} <-> {nat.logical_ip}"
            children.append(("NAT", nat, head, []))
        body = [f"{k}: {v}" for k, v in sorted(lr.options.items())] + _lb_names(lr)
        tree.block(0, "Logical_Router", lr, f"router {lr.name}", body, children)


def _attachments(tables: dict[str, Any]) -> dict[Any, list[str]]:
    """Load balancer (or group) uuid -> where it is attached: a Service's VIPs are served
    wherever its load balancer, or a group holding it, is referenced."""
    held: dict[Any, list[str]] = {}
    for table, what in (("Logical_Switch", "switch"), ("Logical_Router", "router")):
        for row in tables[table].rows.values():
            for lb in row.load_balancer:
                held.setdefault(lb.uuid, []).append(f"{what} {row.name}")
            for group in row.load_balancer_group:
                held.setdefault(group.uuid, []).append(f"{what} {row.name}")
    for group in tables["Load_Balancer_Group"].rows.values():
        users = len(held.get(group.uuid, ()))
        for lb in group.load_balancer:
            held.setdefault(lb.uuid, []).append(f"group {group.name} (on {users} datapaths)")
    return held


_TEMPLATE_VAR = re.compile(r"\^([A-Za-z0-9_]+)")


def _expand(text: str, variables: dict[str, str]) -> str | None:
    """`text` with its `^NAME`s substituted; None when one is not set."""
    if any(name not in variables for name in _TEMPLATE_VAR.findall(text)):
        return None
    return _TEMPLATE_VAR.sub(lambda m: variables[m[1]], text)


def _instances(lb: Any, tables: dict[str, Any]) -> list[str]:
    """What each chassis makes of a template load balancer: its VIPs with that chassis'
    variables substituted, as ovn-controller does there."""
    lines = []
    for row in sorted(tables["Chassis_Template_Var"].rows.values(), key=lambda r: r.chassis):
        variables = dict(row.variables)
        for vip, backends in sorted(lb.vips.items()):
            key, value = _expand(vip, variables), _expand(backends, variables)
            if key is None or value is None:
                lines.append(f"on {row.chassis}: {vip} not served (a variable is not set)")
            else:
                lines.append(f"on {row.chassis}: {key} -> {value or '(none here: dropped)'}")
    return lines


def _load_balancers(tree: _Tree, tables: dict[str, Any]) -> None:
    attached = _attachments(tables)
    for lb in sorted(tables["Load_Balancer"].rows.values(), key=lambda r: r.name):
        proto = _opt(lb.protocol) or "tcp"
        body = [f"{vip} -> {backends or '(no backends: rejected)'}" for vip, backends in
                sorted(lb.vips.items())]
        body += [f"{k}: {v}" for k, v in sorted(lb.options.items())]
        if lb.selection_fields:
            body.append(f"selection_fields: {' '.join(sorted(lb.selection_fields))}")
        body.append("attached to: " + (", ".join(sorted(attached.get(lb.uuid, ()))) or
                                       "nothing (its VIPs answer nowhere)"))
        left_out = lb.external_ids.get(names.LEFT_OUT_KEY)
        if left_out:
            body.append(f"left out: {left_out}")
        if lb.options.get("template") == "true":
            body += _instances(lb, tables)
        tree.block(0, "Load_Balancer", lb, f"load balancer {lb.name} ({proto})", body, [])
    for group in sorted(tables["Load_Balancer_Group"].rows.values(), key=lambda r: r.name):
        body = [f"members: {len(group.load_balancer)}",
                "on: " + (", ".join(sorted(attached.get(group.uuid, ()))) or "nothing")]
        tree.block(0, "Load_Balancer_Group", group, f"load balancer group {group.name}", body,
                   [])
    for row in sorted(tables["Chassis_Template_Var"].rows.values(), key=lambda r: r.chassis):
        body = [f"{k} = {v!r}" for k, v in sorted(row.variables.items())] or ["no variables"]
        tree.block(0, "Chassis_Template_Var", row, f"template variables of chassis {row.chassis}",
                   body, [])
    on_switch: dict[Any, list[str]] = {}
    for ls in tables["Logical_Switch"].rows.values():
        for record in ls.dns_records:
            on_switch.setdefault(record.uuid, []).append(ls.name)
    for dns in sorted(tables["DNS"].rows.values(),
                      key=lambda r: r.external_ids.get(names.ROW_KEY, str(r.uuid))):
        body = [f"{name} -> {address}" for name, address in sorted(dns.records.items())]
        body.append("answered on switches: " + (", ".join(sorted(on_switch.get(dns.uuid, ())))
                                                or "none"))
        tree.block(0, "DNS", dns, "dns records", body, [])


def _policy(tree: _Tree, tables: dict[str, Any]) -> None:
    for pg in sorted(tables["Port_Group"].rows.values(), key=lambda r: r.name):
        ports = sorted(p.name for p in pg.ports)
        body = [f"ports ({len(ports)}): " + ", ".join(ports)] if ports else ["ports: none"]
        children = [_acl(a) for a in sorted(pg.acls, key=lambda a: (-a.priority, a.match))]
        tree.block(0, "Port_Group", pg, f"port group {pg.name}", body, children)
    for aset in sorted(tables["Address_Set"].rows.values(), key=lambda r: r.name):
        body = [f"addresses: {', '.join(sorted(aset.addresses)) or 'none'}"]
        tree.block(0, "Address_Set", aset, f"address set {aset.name}", body, [])


def render(tables: dict[str, Any], owner: Owner | None = None) -> str:
    """The tree of `tables` (IDL tables), all rows or only those owned by `owner`."""

    def matches(table: str, row: Any) -> bool:
        return owner is None or owner_of(table, row) == owner

    tree = _Tree(matches)
    for section in (_switches, _routers, _load_balancers, _policy):
        section(tree, tables)
    return "\n".join(tree.lines)


def show_text(nb: NbConnection, owner: Owner | None = None) -> str:
    """render() of a consistent snapshot, read in the connection thread."""
    text: list[str] = []

    def snapshot(tables: dict[str, Any]) -> Plan:
        text.append(render(tables, owner))
        return Plan()

    nb.execute(PlanCommand(nb.api, snapshot))
    return text[0]
