"""Nodes: a management port on the join switch per node and, for a node that publishes its
external network, a gateway router (controller/gateway.py); both join addresses recorded in
the Node's `kovn.io/node-network` annotation.

The node's rows depend on the serving Subnets (routes, SNAT, the egress policy's match), so
operators/subnets.py dirties every node when their CIDRs or natOutgoing flags change. The
external network comes from the Node's `kovn.io/external-ip` / `kovn.io/external-gateway`
annotations (contract/gateway.py), which the node agent writes. A malformed or overlapping
one is reported as an Event on the Node, and the node is served without a gateway router:
its management port stays, and its pods leave through the other nodes' gateways (the ECMP
default route on ovn-cluster), rather than the whole node being set aside for an optional
feature. Its Chassis_Template_Var (controller/templates.py) holds the node's external IP
and its own endpoints of the Services that serve locally, so the Node follows those
Services and their EndpointSlices (operators/endpoints.py).

Ordering, as for pods: the rows are committed first, the annotation written after, so a
recorded address is always one NB has. A crash in between leaves rows with an address no
annotation records; the restarted controller allocates again and its full reconcile
rewrites those rows.
"""

from __future__ import annotations

import logging

from contract import gateway as external_network
from contract.podnetwork import NODE_NETWORK, NodeNetwork
from controller import gateway, templates, topology
from controller.ipam import IPAMError, Pool
from northbound import names
from northbound.rows import ChassisTemplateVar
from operators.endpoints import local_services
from operators.kubeapi import KubeError, node_path
from operators.state import JOIN_POOL, Batch, State

LOG = logging.getLogger(__name__)


def ensure_join_pool(state: State) -> None:
    if JOIN_POOL not in state.ipam.pools:
        config = state.config
        state.ipam.set_pool(JOIN_POOL, config.join_cidr, config.join_gateway)


def gateway_key(node: str) -> str:
    """The join pool owner of a node's GR address: `GR_<node>`, which no node name can be
    ('_' and capitals are not valid in Kubernetes names)."""
    return names.gateway_router(node)


def recorded(obj: dict) -> NodeNetwork | None:
    text = obj["metadata"].get("annotations", {}).get(NODE_NETWORK)
    if not text:
        return None
    try:
        return NodeNetwork.decode(text)
    except ValueError as exc:
        LOG.warning("node %s: ignoring %s", obj["metadata"]["name"], exc)
        return None


def restore(state: State, name: str, obj: dict) -> None:
    """At start: re-take the join addresses a Node's annotation records."""
    ensure_join_pool(state)
    previous = recorded(obj)
    if previous is None:
        return
    for owner, ip in ((name, previous.address), (gateway_key(name), previous.gateway_router_ip)):
        if not ip:
            continue
        try:
            state.ipam.pool(JOIN_POOL).restore(owner, ip)
        except IPAMError as exc:  # the node gets a fresh address in its sync
            LOG.warning("node %s: %s", name, exc)


def _allocate(pool: Pool, owner: str, previous: str) -> str:
    try:
        return pool.allocate(owner, previous or None)
    except IPAMError:
        return pool.allocate(owner)  # the recorded one is taken or gone: a fresh one


def external_network_of(state: State, name: str,
                        obj: dict) -> external_network.ExternalNetwork | None:
    """The node's external network, or None (none published, or unusable: reported); the
    node has a gateway router exactly when this is not None."""
    key = f"node/{name}/gateway"
    try:
        found = external_network.from_annotations(obj["metadata"].get("annotations") or {})
        if found is not None:
            gateway.check(name, found, state.subnets.values(), state.config)
    except ValueError as exc:
        state.report(key, obj, "InvalidExternalNetwork",
                     f"no gateway router for this node: {exc} (its pods leave through the "
                     "other nodes' gateways)")
        return None
    state.resolved(key)
    return found


def sync_node(state: State, batch: Batch, name: str) -> None:
    ensure_join_pool(state)
    pool = state.ipam.pool(JOIN_POOL)
    owner = topology.node_owner(name)
    obj = state.cache.get("nodes", name)
    if obj is None:
        state.written.pop(("nodes", name), None)
        pool.release(name)
        pool.release(gateway_key(name))
        batch.rows[owner] = []
        return
    previous = recorded(obj)
    ip = _allocate(pool, name, previous.address if previous else "")
    external = external_network_of(state, name, obj)
    gr_ip = ""
    if external is None:
        pool.release(gateway_key(name))
    else:
        gr_ip = _allocate(pool, gateway_key(name), previous.gateway_router_ip if previous else "")
    serving = tuple(state.subnets.values())
    subnets = tuple(sorted(s.cidr for s in serving))
    network = topology.node_network(name, ip, state.config, subnets, gr_ip)
    rows = topology.node_rows(name, network)
    if external is not None:
        rows += gateway.gateway_rows(gateway.Gateway(name, gr_ip, external, serving),
                                     state.config)
    variables = templates.node_variables(name, external.address if external else None,
                                         local_services(state))
    rows.append(ChassisTemplateVar(owner=owner, chassis=name, variables=variables))
    batch.rows[owner] = rows
    encoded = network.encode()
    if obj["metadata"].get("annotations", {}).get(NODE_NETWORK) == encoded:
        return

    def publish() -> None:
        try:
            state.kube.merge_patch(node_path(name),
                                   {"metadata": {"annotations": {NODE_NETWORK: encoded}}})
        except KubeError as exc:
            if exc.status != 404:
                raise

    state.publish(batch, "nodes", name, encoded, publish)
