"""Membership of a row in a container another owner may own, declared by the member.

A Service's Load_Balancer belongs in the cluster's Load_Balancer_Group `clusterLBGroup` and in
gateway routers `GR_<node>` that the Cluster and Node owners create. If the container row
listed its members (a "ref" field on the container), every new Service would recompute and
rewrite the Cluster owner's rows, and two owners would fight over one column. Instead the
member says where it belongs (`NbRow.member_of`), and the reconciler writes exactly that
membership with an OVSDB mutate insert/delete on the container's column: other members, made
by kovn for other owners or by hand, are never read or rewritten, a new Service costs one
mutation, and a membership goes when its owner stops declaring it or its row goes.

Each reference column is managed from one side only, fixed in this module's table:

- member side (`MEMBER_SIDE`): the member declares `member_of`; the container's row class has
  no field for the column. Load_Balancer_Group.load_balancer and Logical_Router.load_balancer:
  Services put their load balancers in the cluster group and on gateway routers.
  Logical_Switch.dns_records: a Service's DNS row (its names) joins every pod switch.
- container side (a "ref" field of the container row class): the container lists its kovn
  members and owns the column's kovn part. Port_Group.ports (a NetworkPolicy computes the pods
  it selects), Logical_Switch/Logical_Router.load_balancer_group (a Subnet's switch and a
  node's gateway router use the cluster group), Logical_Switch.load_balancer (no kovn row puts
  a load balancer on a switch directly: switches are per Subnet and span nodes, so Services
  reach them through `clusterLBGroup`; flipping it to member side is one line here once a
  translator needs it, and the check below then demands the container field go).
- containment ("parent" fields): a child row (port, ACL, route, NAT, QoS) names the one
  container that holds it; also declared by the member, through its parent field.

`check_one_side` enforces at import of northbound.rows that no column is on two sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MEMBER_SIDE: Mapping[tuple[str, str], str] = {
    ("Load_Balancer_Group", "load_balancer"): "Load_Balancer",
    ("Logical_Router", "load_balancer"): "Load_Balancer",
    ("Logical_Switch", "dns_records"): "DNS",
}
"""(container table, reference column) -> member table, for columns members declare.
Every container table here must be an OVN-named table: apply() finds containers by name."""


@dataclass(frozen=True, order=True)
class Membership:
    """"The row declaring this is held in column `column` of the `table` row named `name`."

    Build it with the container's row class, which knows the column when there is one:
    `LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP)`.
    """

    table: str
    name: str
    column: str

    def __post_init__(self) -> None:
        if (self.table, self.column) not in MEMBER_SIDE:
            allowed = ", ".join(f"{t}.{c}" for t, c in sorted(MEMBER_SIDE))
            raise ValueError(
                f"{self.table}.{self.column} is not a member-side column (members may only "
                f"declare {allowed}; other reference columns are set on the container row)"
            )
        if not self.name:
            raise ValueError(f"membership in {self.table}.{self.column} names no container")

    @property
    def member_table(self) -> str:
        return MEMBER_SIDE[(self.table, self.column)]

    def __str__(self) -> str:
        return f"{self.table} {self.name!r} .{self.column}"


def member_columns(table: str) -> tuple[str, ...]:
    """The member-side columns of container table `table` (sorted)."""
    return tuple(sorted(c for t, c in MEMBER_SIDE if t == table))


def check_one_side(
    container_side: Mapping[tuple[str, str], str],
    containment: Mapping[tuple[str, str], str],
    member_side: Mapping[tuple[str, str], str] = MEMBER_SIDE,
) -> None:
    """Raise TypeError when a (table, column) is managed from more than one side.

    `container_side`: (container table, column) of every "ref" field of the row classes;
    `containment`: (container table, column) of every "parent" field. Each maps to the table
    of the rows held. Two sides writing one column would undo each other on every reconcile
    (the container rewriting what the members declared, or the reverse).
    """
    sides = {"member side (member_of)": member_side,
             "container side (a ref field)": container_side,
             "containment (a parent field)": containment}
    seen: dict[tuple[str, str], str] = {}
    for side, columns in sides.items():
        for key in columns:
            if key in seen:
                raise TypeError(
                    f"{key[0]}.{key[1]} is managed both from the {seen[key]} and from the "
                    f"{side}: pick one (see northbound.membership)"
                )
            seen[key] = side
