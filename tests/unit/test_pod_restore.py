"""A restarted controller keeps every address a pod may already use: the annotation's, and,
when the annotation never got out (stopped between the NB commit and the PATCH), the one its
port in NB records, which the node agent may have read from the southbound Port_Binding."""

from __future__ import annotations

from collections.abc import Collection

from contract.podnetwork import POD_NETWORK, PodNetwork
from controller import topology
from controller.config import ClusterConfig
from controller.subnets import SubnetSpec
from northbound.rows import NbRow, Owner
from operators import pods
from operators.state import Batch, State
from tests.unit.worker_state import worker_state

CONFIG = ClusterConfig()
DEFAULT = SubnetSpec(name="ovn-default", cidr="10.16.0.0/16", gateway="10.16.0.1")


def _state(*objs: dict) -> State:
    return worker_state(CONFIG, [DEFAULT], [("pods", obj) for obj in objs],
                        default_subnet=DEFAULT.name, pools=True)


def _pod(name: str, uid: str, annotations: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": uid,
                         "annotations": dict(annotations or {})},
            "spec": {"nodeName": "node1"}, "status": {"phase": "Pending"}}


def _nb_with(*rows: NbRow):
    asked: list[set[Owner]] = []

    def observe(owners: Collection[Owner]) -> list[NbRow]:
        asked.append(set(owners))
        return [r for r in rows if r.owner in owners]
    return observe, asked


def _port(key: str, ip: str, uid: str) -> tuple[NbRow, PodNetwork]:
    network = topology.pod_network(key, ip, None, DEFAULT, CONFIG)
    return topology.pod_rows(key, network, "node1", uid)[0], network


def test_an_address_only_nb_records_is_kept_and_then_published() -> None:
    port, network = _port("ns/a", "10.16.0.77", "uid-a")
    state = _state(_pod("a", "uid-a"))
    observe, asked = _nb_with(port)
    pods.restore_from_nb(state, observe)
    assert asked == [{topology.pod_owner("ns/a")}]  # only the unannotated pods' rows
    batch = Batch()
    pods.sync_pod(state, batch, "ns/a")
    assert [p.token for p in batch.after_commit] == [network.encode()]
    assert batch.rows[topology.pod_owner("ns/a")] == [port]
    # Not handed to another pod.
    other = Batch()
    state.cache.store("pods", _pod("b", "uid-b"))
    pods.sync_pod(state, other, "ns/b")
    assert PodNetwork.decode(other.after_commit[0].token).address != "10.16.0.77"


def test_a_port_of_an_older_pod_of_the_same_name_is_not_restored() -> None:
    port, _ = _port("ns/a", "10.16.0.77", "uid-old")
    state = _state(_pod("a", "uid-new"))
    pods.restore_from_nb(state, _nb_with(port)[0])
    assert state.ipam.lookup("ns/a") is None


def test_annotated_pods_are_not_read_from_nb() -> None:
    port, network = _port("ns/a", "10.16.0.77", "uid-a")
    state = _state(_pod("a", "uid-a", {POD_NETWORK: network.encode()}))
    observe, asked = _nb_with(port)
    pods.restore_from_nb(state, observe)
    assert asked == [] and state.ipam.lookup("ns/a") is None  # `restore` covers these


def test_an_address_held_by_another_pod_is_reported() -> None:
    port, network = _port("ns/a", "10.16.0.77", "uid-a")
    state = _state(_pod("a", "uid-a"), _pod("b", "uid-b", {POD_NETWORK: network.encode()}))
    pods.restore(state, "ns/b", state.cache.get("pods", "ns/b"))
    pods.restore_from_nb(state, _nb_with(port)[0])
    assert state.ipam.lookup("ns/a") is None
    assert [reason for reason, _ in state.kube.events] == ["IPConflict"]  # type: ignore[attr-defined]
