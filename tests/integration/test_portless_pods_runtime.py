"""The sandbox kubelet's runtime with pods that declare no containerPort, in a real netns.

A pod's "containers" are started once its network is up and its servers (possibly none) are
listening: a pod without ports has no server, and must count as started all the same (it
used to stay Pending forever: "started" was "owns a listening socket"). Host-network pods
keep CNI out of the way; the netns is a real one (`ip netns`), so this needs root.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.netns import netns_add, netns_delete
from sandbox.podruntime import PodStore, Runtime, RuntimeConfig
from sandbox.probe import probe

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@pytest.fixture
def node_netns() -> Iterator[str]:
    name = f"kvp-{uuid.uuid4().hex[:8]}"
    netns_add(name)
    try:
        yield name
    finally:
        netns_delete(name)


def runtime(node_netns: str, state: Path) -> Runtime:
    return Runtime(RuntimeConfig(node_netns=node_netns, node_ip="192.0.2.5", prefix="kvp",
                                 cni_conf=state / "unused.conflist", cni_bin=state),
                   PodStore(state))


def host_pod(name: str, ports: list[int]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox", "args": ["sleep", "3600"]}
    if ports:
        container["ports"] = [{"containerPort": p} for p in ports]
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
            "spec": {"hostNetwork": True, "containers": [container]}}


def test_a_pod_without_ports_is_started_and_stays_so_after_adoption(
        node_netns: str, tmp_path: Path) -> None:
    first = runtime(node_netns, tmp_path)
    portless, web = host_pod("sleeper", []), host_pod("web", [18080])
    records = {}
    for pod in (portless, web):
        record = first.sandbox(pod)
        assert not first.started(record.uid)  # netns/network up is not "started" yet
        assert first.start_servers(record, pod) == []
        assert first.started(record.uid), pod["metadata"]["name"]
        assert record.started_at
        records[record.uid] = record
    assert probe(node_netns, "127.0.0.1", 18080) == "web 127.0.0.1"

    # A restarted kubelet: a new runtime adopts the records; nothing is started until it
    # starts the servers again (none for the portless pod), keeping the first start time.
    again = runtime(node_netns, tmp_path)
    adopted = again.store.load_all()
    assert set(adopted) == set(records)
    for uid, record in adopted.items():
        assert record.started_at == records[uid].started_at
        assert not again.started(uid)
    first.remove(records["uid-web"])  # the old process's socket closed, as on exit
    for pod in (portless, web):
        record = adopted[pod["metadata"]["uid"]]
        assert again.start_servers(record, pod) == []
        assert again.started(record.uid)
        assert record.started_at == records[record.uid].started_at
    assert probe(node_netns, "127.0.0.1", 18080) == "web 127.0.0.1"

    for record in adopted.values():
        again.remove(record)
        assert not again.started(record.uid)
    assert again.store.load_all() == {}
