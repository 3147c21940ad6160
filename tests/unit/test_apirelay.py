"""The sandbox's API relay: the `kubernetes` endpoints it writes (shared by every node's
relay, so each keeps only its own entry) and the byte relay itself (on loopback here; the
e2e test runs it across namespaces)."""

from __future__ import annotations

import copy
import socket
import threading
from typing import Any

import pytest

from kube.client import KubeError
from sandbox import apirelay
from sandbox.apirelay import endpoints_body, slice_body, update


def stored(body: dict[str, Any] | None, version: int = 1) -> dict[str, Any]:
    """What the API server would return for a written body."""
    assert body is not None
    out = copy.deepcopy(body)
    out["metadata"]["resourceVersion"] = str(version)
    return out


def slice_nodes(body: dict[str, Any]) -> dict[str, str]:
    return {e["nodeName"]: e["addresses"][0] for e in body["endpoints"]}


def test_the_slice_is_the_one_the_api_server_would_write_with_our_manager() -> None:
    body = slice_body(None, "node1", "100.64.0.2")
    assert body is not None
    assert body["metadata"]["name"] == "kubernetes"
    assert body["metadata"]["namespace"] == "default"
    assert body["metadata"]["labels"] == {
        "kubernetes.io/service-name": "kubernetes",
        "endpointslice.kubernetes.io/managed-by": "kovn-sandbox"}
    assert body["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]
    assert body["endpoints"] == [{"addresses": ["100.64.0.2"], "conditions": {"ready": True},
                                  "nodeName": "node1"}]
    assert slice_body(stored(body), "node1", "100.64.0.2") is None  # nothing to write


def test_each_relay_changes_only_its_own_entry() -> None:
    one = stored(slice_body(None, "node1", "100.64.0.2"))
    both = stored(slice_body(one, "node2", "100.64.0.4"), 2)
    assert both["metadata"]["resourceVersion"] == "2"
    assert slice_nodes(both) == {"node1": "100.64.0.2", "node2": "100.64.0.4"}
    moved = stored(slice_body(both, "node1", "100.64.0.9"), 3)
    assert slice_nodes(moved) == {"node1": "100.64.0.9", "node2": "100.64.0.4"}
    gone = slice_body(moved, "node2", None)
    assert gone is not None and slice_nodes(gone) == {"node1": "100.64.0.9"}
    assert gone["metadata"]["resourceVersion"] == "3"  # a conflicting writer gets a 409


def test_the_endpoints_object_is_kept_out_of_the_mirroring_controller() -> None:
    one = stored(endpoints_body(None, "node1", "100.64.0.2"))
    assert one["metadata"]["labels"] == {"endpointslice.kubernetes.io/skip-mirror": "true"}
    both = stored(endpoints_body(one, "node2", "100.64.0.4"))
    assert both["subsets"] == [{
        "addresses": [{"ip": "100.64.0.2", "nodeName": "node1"},
                      {"ip": "100.64.0.4", "nodeName": "node2"}],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]
    assert endpoints_body(both, "node2", "100.64.0.4") is None
    last = stored(endpoints_body(endpoints_body(both, "node1", None), "node2", None))
    assert last["subsets"] == []


class FakeApi:
    """GET/POST/PUT on one object, with the API server's optimistic concurrency; `race`
    writes another relay's change between our GET and our write, once."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.version = 0
        self.race: dict[str, Any] | None = None
        self.writes = 0

    def get_or_none(self, _path: str) -> dict[str, Any] | None:
        current = copy.deepcopy(self.obj)
        if self.race is not None:
            self._store(self.race)
            self.race = None
        return current

    def _store(self, body: dict[str, Any]) -> None:
        self.version += 1
        self.obj = stored(body, self.version)

    def create(self, _path: str, body: dict[str, Any]) -> None:
        if self.obj is not None:
            raise KubeError(409, "already exists")
        self._store(body)
        self.writes += 1

    def put(self, _path: str, body: dict[str, Any]) -> None:
        assert self.obj is not None
        if body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified")
        self._store(body)
        self.writes += 1


def test_a_conflict_with_another_relay_is_retried_on_the_new_object() -> None:
    api = FakeApi()
    api.race = slice_body(None, "node2", "100.64.0.4")  # node2 creates it first
    assert update(api, apirelay.SLICE_PATH,  # type: ignore[arg-type]
                  lambda c: slice_body(c, "node1", "100.64.0.2"))
    assert api.obj is not None
    assert slice_nodes(api.obj) == {"node1": "100.64.0.2", "node2": "100.64.0.4"}
    assert not update(api, apirelay.SLICE_PATH,  # type: ignore[arg-type]
                      lambda c: slice_body(c, "node1", "100.64.0.2"))
    assert api.writes == 1


def test_other_errors_are_not_retried() -> None:
    class Refusing(FakeApi):
        def create(self, _path: str, _body: dict[str, Any]) -> None:
            raise KubeError(403, "forbidden")

    with pytest.raises(KubeError, match="forbidden"):
        update(Refusing(), apirelay.SLICE_PATH,  # type: ignore[arg-type]
               lambda c: slice_body(c, "node1", "100.64.0.2"))


def test_the_relay_copies_both_ways_and_passes_half_closes_on() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    listener = socket.create_server(("127.0.0.1", 0))

    def upper_echo() -> None:  # answers with what it got, once the client has finished
        conn, _ = upstream.accept()
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        conn.sendall(data.upper())
        conn.close()

    threading.Thread(target=upper_echo, daemon=True).start()
    threading.Thread(target=apirelay.serve, args=(listener, upstream.getsockname()),
                     daemon=True).start()
    with socket.create_connection(listener.getsockname(), timeout=5) as client:
        client.sendall(b"x" * 200_000 + b"end")
        client.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := client.recv(65536):
            got += chunk
    assert got == b"X" * 200_000 + b"END"
    upstream.close()
    listener.close()


def test_the_upstream_is_the_kubeconfig_server() -> None:
    assert apirelay.upstream_of("https://127.0.0.1:37155") == ("127.0.0.1", 37155)
    assert apirelay.upstream_of("https://localhost") == ("localhost", 443)
