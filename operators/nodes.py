"""Nodes: a management port on the join switch per node, its address in an annotation."""

from __future__ import annotations

import logging

from contract.podnetwork import NODE_NETWORK, NodeNetwork
from controller import topology
from controller.ipam import IPAMError
from operators.kubeapi import KubeError, node_path
from operators.state import JOIN_POOL, Batch, State

LOG = logging.getLogger(__name__)


def ensure_join_pool(state: State) -> None:
    if JOIN_POOL not in state.ipam.pools:
        config = state.config
        state.ipam.set_pool(JOIN_POOL, config.join_cidr, config.join_gateway)


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
    """At start: re-take the join address a Node's annotation records."""
    ensure_join_pool(state)
    previous = recorded(obj)
    if previous:
        try:
            state.ipam.pool(JOIN_POOL).restore(name, previous.address)
        except IPAMError as exc:  # the node gets a fresh address in its sync
            LOG.warning("node %s: %s", name, exc)


def sync_node(state: State, batch: Batch, name: str) -> None:
    ensure_join_pool(state)
    pool = state.ipam.pool(JOIN_POOL)
    owner = topology.node_owner(name)
    obj = state.cache.get("nodes", name)
    if obj is None:
        state.written.pop(("nodes", name), None)
        pool.release(name)
        batch.rows[owner] = []
        return
    previous = recorded(obj)
    try:
        ip = pool.allocate(name, previous.address if previous else None)
    except IPAMError:
        ip = pool.allocate(name)  # the recorded one is taken or gone: a fresh one
    subnets = tuple(sorted(s.cidr for s in state.subnets.values()))
    network = topology.node_network(name, ip, state.config, subnets)
    batch.rows[owner] = topology.node_rows(name, network)
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
