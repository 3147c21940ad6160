"""A Node's Chassis_Template_Var: what its chassis substitutes into template load balancers.

ovn-controller instantiates a template load balancer (`options:template=true`) with its own
chassis' variables, so one row per Service serves every node in that node's own way:
`^NODE_EXTERNAL_IP` is the node's external IP (node ports) and `^LOCAL_<port>` a Service
port's endpoints on this node (externalTrafficPolicy / internalTrafficPolicy Local). The
Node owns its row (the table's index is the chassis: one row each), and the row holds a
variable for every port of every Service that serves locally, empty on a node without such
endpoints (so every chassis parses every template). There the VIP is not balanced, and the
packet, still addressed to the service range, meets the drop policy on ovn-cluster or the
discard route on the gateway router (controller/gateway.py): Kubernetes' rule for Local
with no local endpoint. The chassis name is the node name (the agent sets `system-id`).
Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.services import local_endpoints
from northbound import names


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

