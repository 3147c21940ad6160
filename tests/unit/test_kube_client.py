"""kube.client.KubeClient and kube.listwatch.ListWatch against a small fake API server.

The fake is an in-process HTTP server on the loopback (no root, no Kubernetes): it records
every request and answers what each test scripts, so what goes over the wire is checked.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from kube.client import APPLY_PATCH, MERGE_PATCH, KubeClient, KubeError
from kube.listwatch import CallbackListener, ListWatch


class Seen:
    def __init__(self, method: str, path: str, query: dict[str, str], headers: Any,
                 body: bytes) -> None:
        self.method, self.path, self.query, self.body = method, path, query, body
        self.content_type = headers.get("Content-Type", "")


# (method, path, query) -> (status, body or list of watch lines)
Answer = Callable[[Seen], tuple[int, Any]]


class FakeApi:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.answer: Answer = lambda _: (200, {})
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a watch stream ends when the server closes it

            def log_message(self, *_: Any) -> None:
                pass

            def _any(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, url.path, query, self.headers,
                            self.rfile.read(length) if length else b"")
                fake.seen.append(seen)
                status, body = fake.answer(seen)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if isinstance(body, list):  # a watch: one JSON event per line
                    for event in body:
                        if isinstance(event, float):
                            time.sleep(event)
                            continue
                        self.wfile.write(json.dumps(event).encode() + b"\n")
                        self.wfile.flush()
                else:
                    self.wfile.write(body if isinstance(body, bytes)
                                     else json.dumps(body).encode())

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "me", "user": {"token": "secret"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
    }))
    return path


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    api = FakeApi()
    yield api
    api.close()


@pytest.fixture
def client(fake: FakeApi, tmp_path: Path) -> Iterator[KubeClient]:
    kube = KubeClient(write_kubeconfig(tmp_path / "kubeconfig", fake.port), timeout=5)
    yield kube
    kube.close()


def test_apply_sends_server_side_apply(fake: FakeApi, client: KubeClient) -> None:
    fake.answer = lambda _: (200, {"kind": "Namespace", "metadata": {"name": "x"}})
    answer = client.apply("/api/v1/namespaces/x", {"kind": "Namespace",
                                                  "metadata": {"name": "x"}}, "kovn-test")
    assert answer["metadata"]["name"] == "x"
    (seen,) = fake.seen
    assert (seen.method, seen.path, seen.content_type) == ("PATCH", "/api/v1/namespaces/x",
                                                          APPLY_PATCH)
    assert seen.query == {"fieldManager": "kovn-test", "force": "true"}
    assert json.loads(seen.body) == {"kind": "Namespace", "metadata": {"name": "x"}}


def test_text_bodies_are_sent_as_they_are(fake: FakeApi, client: KubeClient) -> None:
    client.patch("/api/v1/nodes/n1", '{"metadata": {"labels": {"a": "b"}}}', MERGE_PATCH)
    client.call("PATCH", "/api/v1/nodes/n1", "metadata:\n  name: n1\n", APPLY_PATCH,
                query={"fieldManager": "m"})
    merge, apply = fake.seen
    assert merge.content_type == MERGE_PATCH
    assert json.loads(merge.body) == {"metadata": {"labels": {"a": "b"}}}  # not re-quoted
    assert apply.body == b"metadata:\n  name: n1\n"


def test_answers_json_text_and_empty(fake: FakeApi, client: KubeClient) -> None:
    answers = iter([(200, b"ok"), (200, b""), (200, {"gitVersion": "v1.36.3"})])
    fake.answer = lambda _: next(answers)
    assert client.get("/readyz") == "ok"
    assert client.delete("/api/v1/namespaces/x", body={"gracePeriodSeconds": 0}) == {}
    assert client.get("/version") == {"gitVersion": "v1.36.3"}
    assert json.loads(fake.seen[1].body) == {"gracePeriodSeconds": 0}


def test_errors_carry_status_request_and_message(fake: FakeApi, client: KubeClient) -> None:
    fake.answer = lambda _: (404, {"kind": "Status", "message": 'pods "p" not found',
                                   "code": 404})
    with pytest.raises(KubeError) as err:
        client.get("/api/v1/namespaces/d/pods/p")
    assert err.value.status == 404
    assert err.value.request == "GET /api/v1/namespaces/d/pods/p"
    assert str(err.value) == 'HTTP 404: pods "p" not found'
    assert client.get_or_none("/api/v1/namespaces/d/pods/p") is None
    assert client.delete("/api/v1/namespaces/d/pods/p") is None
    with pytest.raises(KubeError):
        client.delete("/api/v1/namespaces/d/pods/p", missing_ok=False)


def test_unreachable_is_status_0_with_the_hint(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kube = KubeClient(write_kubeconfig(tmp_path / "kubeconfig", port), timeout=2,
                      unreachable_hint="pass --kube-netns")
    try:
        with pytest.raises(KubeError) as err:
            kube.get("/version")
    finally:
        kube.close()
    assert err.value.status == 0
    assert str(err.value).startswith(f"cannot reach the API server at http://127.0.0.1:{port} "
                                     "(pass --kube-netns): ")


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match=r"cannot load the kubeconfig .*pass --kubeconfig"):
        KubeClient(tmp_path / "nope")


def test_event_names_the_reporting_host(fake: FakeApi, client: KubeClient) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "d", "uid": "u1"}}
    client.event(pod, "FailedCreatePodSandBox", "CNI said no", component="kubelet",
                 host="node1")
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/namespaces/d/events")
    event = json.loads(seen.body)
    assert event["involvedObject"]["kind"] == "Pod" and event["involvedObject"]["uid"] == "u1"
    assert event["source"] == {"component": "kubelet", "host": "node1"}
    assert (event["reportingComponent"], event["reportingInstance"]) == ("kubelet", "node1")
    assert event["type"] == "Warning"


def test_list_pages_with_selectors(fake: FakeApi, client: KubeClient) -> None:
    def answer(seen: Seen) -> tuple[int, Any]:
        if "continue" not in seen.query:
            return 200, {"items": [{"n": 1}], "metadata": {"continue": "c1"}}
        return 200, {"items": [{"n": 2}], "metadata": {"resourceVersion": "42"}}

    fake.answer = answer
    items, version = client.list_versioned("/api/v1/pods", page=1, fields="spec.nodeName=n1")
    assert (items, version) == ([{"n": 1}, {"n": 2}], "42")
    assert [s.query for s in fake.seen] == [
        {"limit": "1", "fieldSelector": "spec.nodeName=n1"},
        {"limit": "1", "fieldSelector": "spec.nodeName=n1", "continue": "c1"}]


def _pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": name, "resourceVersion": version}}


def test_listwatch_follows_bookmarks_and_relists_after_410(fake: FakeApi,
                                                            client: KubeClient) -> None:
    lists = iter([(["a"], "10"), (["a", "b"], "20")])
    watches = {
        "10": [{"type": "ADDED", "object": _pod("b", "11")},
               {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],
        "15": [{"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                            "message": "too old resource version"}}],
        "20": [{"type": "DELETED", "object": _pod("a", "21")}, 0.3],
    }

    def answer(seen: Seen) -> tuple[int, Any]:
        if seen.query.get("watch"):
            return 200, watches.get(seen.query["resourceVersion"], [0.3])
        names, version = next(lists)
        return 200, {"items": [_pod(n, version) for n in names],
                     "metadata": {"resourceVersion": version}}

    fake.answer = answer
    got: list[Any] = []
    watch = ListWatch(client, "/api/v1/pods",
                      CallbackListener(lambda items: got.append(
                          ("listed", [p["metadata"]["name"] for p in items])),
                          lambda kind, obj: got.append((kind, obj["metadata"]["name"]))),
                      fields="spec.nodeName=n1", timeout=60)
    watch.start()
    deadline = time.monotonic() + 10
    while ("DELETED", "a") not in got and time.monotonic() < deadline:
        time.sleep(0.02)
    watch.stop()
    assert got[:4] == [("listed", ["a"]), ("ADDED", "b"), ("listed", ["a", "b"]),
                       ("DELETED", "a")]
    assert watch.relists == 1
    resumed = [s.query for s in fake.seen if s.query.get("watch")][:3]
    assert [q["resourceVersion"] for q in resumed] == ["10", "15", "20"]  # the bookmark counts
    assert all(q["allowWatchBookmarks"] == "true" and q["timeoutSeconds"] == "60"
               and q["fieldSelector"] == "spec.nodeName=n1" for q in resumed)


def test_the_sandbox_cli_reports_api_errors_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.cli import _guarded

    def handler(_: object) -> int:
        raise KubeError(403, 'nodes "n1" is forbidden', "PATCH", "/api/v1/nodes/n1")

    assert _guarded(handler)(object()) == 1  # type: ignore[arg-type]
    assert capsys.readouterr().err == (
        "kovn: the sandbox's Kubernetes API server (PATCH /api/v1/nodes/n1): HTTP 403: nodes "
        '"n1" is forbidden (is the sandbox healthy? `kovn sandbox status`)\n')
