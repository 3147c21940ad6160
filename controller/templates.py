"""A Node's Chassis_Template_Var: what its chassis substitutes into template load balancers.

ovn-controller instantiates a template load balancer (`options:template=true`) with its own
chassis' variables, so one row per Service serves every node in that node's own way:
`^NODE_EXTERNAL_IP` is the node's external IP (node ports) and `^LOCAL_<port>` a Service
port's endpoints on this node (externalTrafficPolicy / internalTrafficPolicy Local). The
Node owns its row (the table's index is the chassis: one row each), and the row holds a
variable for every port of every Service that serves locally, empty on a node without such
endpoints: an empty template value drops the traffic (Kubernetes' rule for Local with no
local endpoint), while an undefined one would leave the VIP untranslated and the packet
routed on towards the service range. The chassis name is the node name (the agent sets
`system-id`). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.services import local_endpoints
from northbound import names
from northbound.rows import ChassisTemplateVar, Owner


def node_variables(node: str, external_ip: str | None,
                   local_services: Iterable[tuple[Mapping[str, Any],
                                                  Iterable[Mapping[str, Any]]]]
                   ) -> dict[str, str]:
    """The variables of `node`'s chassis: its external IP when it has a gateway router, and
    for each (Service, its EndpointSlices) that serves locally, every port's local backends."""
    variables = {names.NODE_EXTERNAL_IP_VAR: external_ip} if external_ip else {}
    for service, slices in local_services:
        for var, per_node in local_endpoints(service, slices).items():
            variables[var] = per_node.get(node, "")
    return variables


def template_var_row(owner: Owner, node: str, variables: Mapping[str, str]) -> ChassisTemplateVar:
    return ChassisTemplateVar(owner=owner, chassis=node, variables=dict(variables))
