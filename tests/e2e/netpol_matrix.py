"""The harness of the NetworkPolicy conformance suite (tests/e2e/test_netpol.py), modelled on
upstream Kubernetes' test/e2e/network/netpol: namespaces x, y, z (labelled `ns: <name>`),
pods a, b, c in each (labelled `pod: <name>`), the 9x9 probe matrix, expected matrices built
like upstream's Reachability, and a printout of expected vs observed truth tables.

Every pod declares containerPorts 80 and 81 on TCP and UDP, named `serve-80-tcp`,
`serve-80-udp`, `serve-81-tcp` and `serve-81-udp` as upstream, plus `web`, a name that maps to
a different number per pod (80/TCP on a and c, 81/TCP on b): a policy on port `web` must
resolve it per destination pod. The sandbox kubelet serves every declared port; an answer is
`<pod> <client ip>`, and a probe counts as allowed only when the destination pod answered.

A matrix is probed from each pod to every other pod's IP for one (port, protocol), in
parallel, with short timeouts (a UDP probe nobody answers in time is denied). The diagonal
(a pod to its own IP) never leaves the pod's kernel, so, as upstream, it is not checked.
`Model.check` polls: it probes the cells that still differ from the expectation until none
do, then confirms with one full probe (a cell that matched before the policy arrived is
measured again), and fails after the deadline with the two tables and the differing cells.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kube.client import KubeError
from node.netns import in_netns
from northbound import names
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from sandbox.podruntime import find_record
from sandbox.probe import probe
from tests.e2e.controlplane import Cluster, condition
from tests.e2e.test_network_model import Pod

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
SERVED = ((80, "TCP"), (80, "UDP"), (81, "TCP"), (81, "UDP"))
WEB_PORT = {"a": 80, "b": 81, "c": 80}
"""The number the port name `web` has on each pod (TCP)."""
POD_CIDR = "10.16.0.0/16"
PROBE_TIMEOUT = 0.5
WORKERS = 27
CHECK_TIMEOUT = 12.0
NETPOL = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


def port_name(port: int, proto: str) -> str:
    return f"serve-{port}-{proto.lower()}"


def pod_manifest(namespace: str, name: str, node: str,
                 annotations: dict[str, str] | None = None) -> dict[str, Any]:
    ports = [{"name": port_name(port, proto), "containerPort": port, "protocol": proto}
             for port, proto in SERVED]
    ports.append({"name": "web", "containerPort": WEB_PORT[name], "protocol": "TCP"})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"pod": name},
                         "annotations": annotations or {}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "serve", "image": "kovn.io/serve-hostname",
                                     "ports": ports}]}}



# --- expected matrices -------------------------------------------------------------------------
def matches(spec: str | Iterable[str], key: str) -> bool:
    """Whether pod `key` ("x/a") is one of `spec`: "*" every pod, "x" a namespace, "a" that
    pod in every namespace, "x/a" one pod, "x/*" and "*/a" as they read; or a list of these."""
    if not isinstance(spec, str):
        return any(matches(one, key) for one in spec)
    ns, pod = key.split("/")
    if "/" in spec:
        want_ns, want_pod = spec.split("/")
        return want_ns in ("*", ns) and want_pod in ("*", pod)
    if spec == "*":
        return True
    if spec in NAMESPACES:
        return spec == ns
    if spec in POD_NAMES:
        return spec == pod
    raise ValueError(f"peer {spec!r}: not *, a namespace, a pod or ns/pod")


class Reachability:
    """An expected truth table over the pods, like upstream's: start all allowed or all
    denied, then set cells with wildcards (see `matches`); later calls win."""

    def __init__(self, keys: Sequence[str], default: bool) -> None:
        self.keys = list(keys)
        self.cells = {(src, dst): default for src in self.keys for dst in self.keys}

    def expect_peer(self, from_: str | Iterable[str] = "*", to: str | Iterable[str] = "*",
                    allowed: bool = True) -> Reachability:
        for src, dst in self.cells:
            if matches(from_, src) and matches(to, dst):
                self.cells[(src, dst)] = allowed
        return self

    def expect_ingress(self, to: str | Iterable[str], allowed: bool) -> Reachability:
        """Everything into `to` (its column)."""
        return self.expect_peer("*", to, allowed)

    def expect_egress(self, from_: str | Iterable[str], allowed: bool) -> Reachability:
        """Everything out of `from_` (its row)."""
        return self.expect_peer(from_, "*", allowed)

    def __getitem__(self, cell: tuple[str, str]) -> bool:
        return self.cells[cell]


def render(keys: Sequence[str], value: dict[tuple[str, str], str]) -> str:
    """A truth table: rows = from, columns = to."""
    width = max(len(k) for k in keys) + 1
    lines = [" " * width + " ".join(k.ljust(4) for k in keys)]
    for src in keys:
        lines.append(src.ljust(width) + " ".join(value.get((src, dst), "-").ljust(4)
                                                 for dst in keys))
    return "\n".join(lines)


def truth_diff(keys: Sequence[str], expected: Reachability, observed: dict[tuple[str, str], bool],
               answers: dict[tuple[str, str], str | None], title: str) -> str:
    """Expected and observed tables (`.` allowed, `X` denied, `*` where they differ) and one
    line per differing cell with what answered."""
    mark = {True: ".", False: "X"}
    wrong = [c for c in observed if observed[c] != expected[c]]
    exp = {c: mark[expected[c]] for c in observed}
    obs = {c: mark[v] + ("*" if c in wrong else "") for c, v in observed.items()}
    lines = [f"{title}: {len(wrong)} of {len(observed)} cells differ "
             "(rows: from, columns: to; . allowed, X denied, * differs, - not probed)",
             "expected:", render(keys, exp), "observed:", render(keys, obs), "differing:"]
    for src, dst in wrong:
        want = "allowed" if expected[(src, dst)] else "denied"
        lines.append(f"  {src} -> {dst}: expected {want}, answer {answers.get((src, dst))!r}")
    return "\n".join(lines)


# --- the model ---------------------------------------------------------------------------------
class Model:
    """The 9 pods (created once), their probes, NetworkPolicies, and the reset between cases."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.cluster = Cluster(sandbox.kubeconfig)
        self.api = self.cluster.api
        self.keys = [f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES]
        nodes = [n.name for n in sandbox.nodes]
        # Alternate over the nodes: x/a node1, x/b node2, ... so every namespace spans both.
        self.node_of = {key: nodes[i % len(nodes)] for i, key in enumerate(self.keys)}
        self.pods: dict[str, Pod] = {}
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="netpol-probe")

    # setup and reset
    def setup(self) -> None:
        for ns in NAMESPACES:
            self.cluster.namespace(ns)
            self.api.merge_patch(f"/api/v1/namespaces/{ns}", {"metadata": {"labels": {"ns": ns}}})
            eventually(lambda ns=ns: self.api.get_or_none(
                f"/api/v1/namespaces/{ns}/serviceaccounts/default"), 30,
                f"ServiceAccount {ns}/default")
        for key in self.keys:
            ns, name = key.split("/")
            self.cluster.create_pod(pod_manifest(ns, name, self.node_of[key]))
        self.refresh()

    def close(self) -> None:
        """Delete the namespaces (and so the policies and pods) and wait for the pods to go,
        so the modules after this one find the nodes as they were."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        for ns in NAMESPACES:
            with contextlib.suppress(KubeError):
                self.api.delete(f"/api/v1/namespaces/{ns}")
        eventually(lambda: not any(self.cluster.pods(ns) for ns in NAMESPACES), 90,
                   "the pods of x, y, z gone")

    def refresh(self, timeout: float = 90) -> None:
        """Wait until all 9 pods are Ready and record their IPs and netns."""
        def ready() -> dict[str, Pod] | None:
            found = {}
            for ns in NAMESPACES:
                for item in self.cluster.pods(ns):
                    meta = item["metadata"]
                    key = f"{ns}/{meta['name']}"
                    if (key not in self.keys or meta.get("deletionTimestamp")
                            or condition(item, "Ready").get("status") != "True"):
                        continue
                    record = find_record(self.sandbox.kubelet_states(), ns, meta["name"])
                    if record is None or record.pod_ips != [item["status"].get("podIP")]:
                        continue
                    found[key] = Pod(ns, meta["name"], item["status"]["podIP"],
                                     item["spec"]["nodeName"], record.netns)
            return found if len(found) == len(self.keys) else None

        self.pods = eventually(ready, timeout, "the 9 pods of x, y, z Ready")

    def reset(self) -> None:
        """No NetworkPolicy in x, y, z, the model's labels on namespaces and pods, every pod
        there (re-created if a case deleted it), and the full matrix allowed again."""
        self.delete_policies()
        for ns in NAMESPACES:
            self.set_labels(f"/api/v1/namespaces/{ns}", {"ns": ns},
                            keep=("kubernetes.io/metadata.name",))
        for key in self.keys:
            ns, name = key.split("/")
            pod = self.cluster.pod(ns, name)
            if pod is None:
                self.cluster.create_pod(pod_manifest(ns, name, self.node_of[key]))
            elif pod["metadata"].get("deletionTimestamp"):
                eventually(lambda ns=ns, name=name: self.cluster.pod(ns, name) is None, 60,
                           f"{key} gone")
                self.cluster.create_pod(pod_manifest(ns, name, self.node_of[key]))
            else:
                self.set_labels(f"/api/v1/namespaces/{ns}/pods/{name}", {"pod": name})
        self.refresh()
        self.check(Reachability(self.keys, True), timeout=30, title="reset: TCP/80")

    def set_labels(self, path: str, labels: dict[str, str], keep: Sequence[str] = ()) -> None:
        """Make the object's labels exactly `labels` (plus the `keep` keys it has)."""
        current = self.api.get(path)["metadata"].get("labels") or {}
        wanted = {k: v for k, v in current.items() if k in keep} | labels
        if current != wanted:
            patch: dict[str, str | None] = {k: None for k in current if k not in wanted}
            self.api.merge_patch(path, {"metadata": {"labels": patch | wanted}})

    def label(self, key: str, **labels: str | None) -> None:
        """Merge labels (None removes one) into a pod ("x/a") or a namespace ("x")."""
        path = (f"/api/v1/namespaces/{key}" if "/" not in key else
                "/api/v1/namespaces/{}/pods/{}".format(*key.split("/")))
        self.api.merge_patch(path, {"metadata": {"labels": labels}})

    # NetworkPolicies
    def apply_policy(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create the policy, or replace the spec of the one of that name; the stored object
        (with the API server's defaults, e.g. policyTypes)."""
        path = NETPOL.format(ns=namespace)
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        try:
            return self.api.create(path, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        current = self.api.get(f"{path}/{name}")
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.api.put(f"{path}/{name}", body)

    def delete_policy(self, namespace: str, name: str) -> None:
        self.api.delete(f"{NETPOL.format(ns=namespace)}/{name}")

    def delete_policies(self) -> None:
        for ns in NAMESPACES:
            self.api.call("DELETE", NETPOL.format(ns=ns))
        eventually(lambda: not any(self.api.get(NETPOL.format(ns=ns)).get("items")
                                   for ns in NAMESPACES), 30, "no NetworkPolicy left")

    # probes
    def probe_cell(self, src: str, dst: str, port: int, proto: str) -> str | None:
        target = self.pods[dst]
        return probe(self.pods[src].netns, target.ip, port, proto.lower(), PROBE_TIMEOUT)

    def allowed(self, answer: str | None, dst: str) -> bool:
        return bool(answer) and answer.split()[0] == self.pods[dst].name

    def probe_matrix(self, port: int = 80, proto: str = "tcp",
                     cells: Iterable[tuple[str, str]] | None = None
                     ) -> dict[tuple[str, str], str | None]:
        """What answered in each cell (every off-diagonal cell by default), in parallel."""
        todo = list(cells if cells is not None else self.cells())
        answers = self.pool.map(lambda c: self.probe_cell(c[0], c[1], port, proto), todo)
        return dict(zip(todo, answers, strict=True))

    def cells(self) -> list[tuple[str, str]]:
        return [(s, d) for s in self.keys for d in self.keys if s != d]

    def check(self, expected: Reachability, port: int = 80, proto: str = "tcp",
              timeout: float = CHECK_TIMEOUT, title: str = "") -> None:
        """Poll until the matrix on (port, proto) is `expected`; AssertionError with the diff
        after `timeout` seconds."""
        title = title or f"{proto.upper()}/{port}"
        started = time.monotonic()
        answers = self.probe_matrix(port, proto)
        partial = False
        while True:
            observed = {c: self.allowed(a, c[1]) for c, a in answers.items()}
            wrong = [c for c, ok in observed.items() if ok != expected[c]]
            if not wrong and not partial:
                return
            if time.monotonic() - started > timeout:
                raise AssertionError(truth_diff(self.keys, expected, observed, answers,
                                                f"{title} after {timeout:.0f} s"))
            if wrong:
                time.sleep(0.1)
                answers.update(self.probe_matrix(port, proto, wrong))
                partial = True
            else:  # every cell matches: confirm them all with one full probe
                answers = self.probe_matrix(port, proto)
                partial = False

    def reach(self, netns: str, ip: str, port: int, proto: str, name: str | None,
              timeout: float = CHECK_TIMEOUT, what: str = "") -> str | None:
        """Poll one probe until it is answered by pod `name`, or, with name None, until
        nothing answers; the last answer. AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            answer = probe(netns, ip, port, proto.lower(), PROBE_TIMEOUT)
            ok = (answer is None) if name is None else bool(answer) and \
                answer.split()[0] == name
            if ok:
                return answer
            if time.monotonic() > deadline:
                want = "no answer" if name is None else f"an answer from {name}"
                raise AssertionError(f"{what or f'{ip}:{port}/{proto}'}: expected {want}, "
                                     f"got {answer!r} after {timeout:.0f} s")
            time.sleep(0.1)


# --- northbound and DNS ------------------------------------------------------------------------
OWNED_TABLES = ("Port_Group", "ACL", "Address_Set")


def owned_rows(nb_remote: str) -> collections.Counter[tuple[str, str, str]]:
    """(table, owner type, owner) of every Port_Group, ACL and Address_Set row whose
    external_ids carry kovn.io/owner-type, counted; read with ovn-nbctl."""
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for table in OWNED_TABLES:
        out = subprocess.run(
            ["ovn-nbctl", f"--db={nb_remote}", "--format=json", "--columns=external_ids",
             "find", table, f'external_ids:"{names.OWNER_TYPE_KEY}"!=""'],
            capture_output=True, text=True, check=True).stdout
        for (ids,) in json.loads(out)["data"]:
            ext = dict(ids[1])
            counts[(table, ext[names.OWNER_TYPE_KEY], ext.get(names.OWNER_KEY, ""))] += 1
    return counts


def address_sets(nb_remote: str) -> dict[str, set[str]]:
    """Every kovn-owned Address_Set: name -> addresses."""
    out = subprocess.run(
        ["ovn-nbctl", f"--db={nb_remote}", "--format=json", "--columns=name,addresses",
         "find", "Address_Set", f'external_ids:"{names.OWNER_TYPE_KEY}"!=""'],
        capture_output=True, text=True, check=True).stdout
    found = {}
    for name, addresses in json.loads(out)["data"]:
        found[name] = set(addresses[1]) if addresses[0] == "set" else {addresses}
    return found


def _skip_name(data: bytes, at: int) -> int:
    while data[at]:
        if data[at] & 0xC0 == 0xC0:  # a compression pointer ends the name
            return at + 2
        at += data[at] + 1
    return at + 1


def dns_a(netns: str, server: str, name: str, timeout: float = PROBE_TIMEOUT
          ) -> list[str] | None:
    """The A records a DNS query for `name` sent from `netns` to server:53/UDP got; None
    when nothing answered."""
    qid = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack("!2H", 1, 1)
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        data = sock.recv(4096)
    except OSError:
        return None
    finally:
        sock.close()
    rid, flags, qdcount, ancount = struct.unpack("!4H", data[:8])
    if rid != qid or not flags & 0x8000 or flags & 0xF:
        return []
    at = 12
    for _ in range(qdcount):
        at = _skip_name(data, at) + 4
    found = []
    for _ in range(ancount):
        at = _skip_name(data, at)
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", data[at:at + 10])
        at += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(data[at:at + 4]))
        at += length
    return found
