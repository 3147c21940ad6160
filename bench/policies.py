"""Benchmark: NetworkPolicies through the controller, against the real control plane.

Setup: N namespaces (default 500, labelled `team: t<i%10>`, `tier: web|app|data`) of P pods
each (default 10, labelled `app: a<j%3>`, `role: web|api`), never scheduled (UNSCHEDULED)
and so never run: the controller gives each an address and a Logical_Switch_Port all the
same. The bench waits until NB holds every port and every pod is annotated.

(A) M NetworkPolicies (default 2,000), four kinds per namespace, in two steps (the first
    quarter, then the rest): the time to create them through the API, the time from the first
    create until NB holds exactly the rows the bench's own model of the policies says
    (every port group with the right ports and number of ACLs, every address set with the
    right addresses, no other row of these owners; goal < 60 s for all of them), then the
    NB rows by owner and table, in total and per policy, after each step: rows must grow
    with policies + pods, never their product. The kinds, in namespace i:
      deny-all             ingress, podSelector {}: the namespace's default deny alone
      allow-a1-to-a0       ingress to app=a0 from app=a1 of the namespace, TCP 8080
      allow-team           ingress to app=a1 from app=a2 of the namespaces of team
                           t<(i+1)%10> whose tier is not data (namespaceSelector AND
                           podSelector), TCP 8443 and 9000-9100: the 10 distinct peers are
                           cluster-scoped, so each is ONE address set shared by N/10 policies
      egress-internal-dns  egress of every pod (role Exists) to 10.0.0.0/8 except
                           10.1.0.0/16, and to anyone on port 53 UDP and TCP
(B) Under that load, 50 pod label changes one after the other (a PATCH of `app` a1 -> a2 on
    25 pods spread over the namespaces, then back): the pod leaves its namespace's a1 peer
    set and the allow-team policy's port group, and joins its team's shared set (when its
    tier is not data). The time from sending the PATCH until NB shows every row the model
    says changed, p50/p99 (goal p99 < 1 s). The changes start once the controller is idle.
    When none of them met one of the controller's full resyncs (every 60 s), more follow
    until some do, reported apart, with the resync's length: a change that arrives during
    one waits for it, so a resync longer than the goal that runs more than 1% of the time
    puts a long run's p99 above the goal.
Finally every policy is deleted and the time until NB holds no row of NetworkPolicy,
Namespace or PeerSet owners but `kovn_nodes` is printed.

    python -m bench.policies [--namespaces 500] [--pods 10] [--policies 2000]
                             [--state-dir DIR] [--profile FILE [--profile-phase all|A|B]]

NB is watched by bench/services.py's NbMonitor (a raw OVSDB monitor, every update
timestamped as it arrives), not polled. The expected rows come from the bench's own model of
the policies' semantics (selectors evaluated here, pod addresses read from NB's ports); only
the names of the rows (northbound/names.py, and controller/peers.py for which peers are the
same set) are kovn's.

Without --state-dir it brings up its own sandbox (prefix kvp, no workloads) and takes it
down afterwards, keeping the controller's log in the temp dir; a borrowed one must run
without its own controller (`kovn sandbox up --no-controller`), and gets its namespaces
deleted at the end. The namespaces' names and the peers' namespace selector carry this
run's id, so nothing else in a borrowed sandbox is selected. It holds the e2e lock while it
measures.

--profile FILE runs the controller under cProfile (profiled_controller: the worker, the
publishers and the NB connection's thread), over the phase --profile-phase names (all:
from the end of the setup to the exit): FILE (pstats, those threads), FILE.worker (the
worker thread) and FILE.txt (the top functions by own and by cumulative time per thread),
which the bench prints. Profiled figures are not the real ones.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import marshal
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.services import (
    CLIENT_THREADS,
    PROGRESS_EVERY,
    NbMonitor,
    alive,
    cpu_report,
    cpu_seconds,
    daemon_pids,
    e2e_lock,
    flush_summary,
    full_flushes,
    percentile,
)
from contract.podnetwork import POD_NETWORK
from controller.peers import peer_of
from kube.client import KubeClient, KubeError
from northbound import names
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.controlplane import ControllerProcess

RUN = str(int(time.time()))  # namespace names and selectors of this run: reruns never collide
BENCH_LABEL = "kovn.io/bench-policies"
TEAMS, TIERS, APPS = 10, ("web", "app", "data"), 3
KINDS = ("deny-all", "allow-a1-to-a0", "allow-team", "egress-internal-dns")
ACLS = (0, 1, 1, 2)
"""Policy ACLs per kind: allow-team's two port ranges are one match, the egress policy's
ipBlock and DNS rules one ACL each."""
DENY_ACLS = {"ingress": 4, "egress": 2}
"""A namespace's default deny per direction: drop, ARP/ND (+ nodes, hairpin for ingress)."""
OWNER_TYPES = (names.OwnerType.NETWORK_POLICY, names.OwnerType.NAMESPACE,
               names.OwnerType.PEER_SET)
NODES_OWNER = "nodes"  # the PeerSet owner of kovn_nodes, which outlives every policy
PG, AS, ACL, LSP = "Port_Group", "Address_Set", "ACL", "Logical_Switch_Port"
CHANGES = 50
UNSCHEDULED = "kovn-bench-none"
"""The pods' schedulerName, which no scheduler serves: they stay Pending and unbound, and
the controller gives them a port all the same (operators/pods.py wants_port). Bound to the
sandbox's nodes instead, they made its heartbeat (which confirms pod deletions where no
kubelet runs) list all 5,000 every second: 24 of 61 CPU seconds in (B), on 2 cores."""
GOAL_CONVERGE_S, GOAL_CHANGE_P99_S = 60.0, 1.0
IDLE = 0.15
"""An idle controller's share of a core: with 5,000 pods it recomputes its Subnet's status
every 2 s (~35 ms)."""


# --- the objects --------------------------------------------------------------------------------
def namespace_name(i: int) -> str:
    return f"np-{RUN}-{i}"


def namespace_labels(i: int) -> dict[str, str]:
    return {"team": f"t{i % TEAMS}", "tier": TIERS[i % len(TIERS)], BENCH_LABEL: RUN}


def pod_name(j: int) -> str:
    return f"p{j}"


def pod_labels(j: int) -> dict[str, str]:
    return {"app": f"a{j % APPS}", "role": ("web", "api")[j % 2], BENCH_LABEL: RUN}


def pod_manifest(namespace: str, j: int) -> dict[str, Any]:
    """A pod that is never scheduled (UNSCHEDULED), so never run."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name(j), "namespace": namespace, "labels": pod_labels(j)},
            "spec": {"schedulerName": UNSCHEDULED, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "kovn.io/serve-hostname",
                                     "ports": [{"containerPort": 8080}]}]}}


def team_peer(i: int) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"team": f"t{(i + 1) % TEAMS}",
                                                  BENCH_LABEL: RUN},
                                  "matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                        "values": ["data"]}]},
            "podSelector": {"matchLabels": {"app": "a2"}}}


def policy_spec(kind: int, i: int) -> dict[str, Any]:
    if kind == 0:
        return {"podSelector": {}, "policyTypes": ["Ingress"]}
    if kind == 1:
        return {"podSelector": {"matchLabels": {"app": "a0"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a1"}}}],
                             "ports": [{"protocol": "TCP", "port": 8080}]}]}
    if kind == 2:
        return {"podSelector": {"matchLabels": {"app": "a1"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [team_peer(i)],
                             "ports": [{"protocol": "TCP", "port": 8443},
                                       {"protocol": "TCP", "port": 9000, "endPort": 9100}]}]}
    return {"podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
                       {"ports": [{"protocol": "UDP", "port": 53},
                                  {"protocol": "TCP", "port": 53}]}]}


@dataclass(frozen=True)
class Policy:
    index: int
    """Which namespace (0..N-1)."""
    kind: int
    round: int
    """0 for the first four of a namespace; more policies than 4 x N start round 1."""

    @property
    def namespace(self) -> str:
        return namespace_name(self.index)

    @property
    def name(self) -> str:
        return KINDS[self.kind] + (f"-{self.round}" if self.round else "")

    @property
    def spec(self) -> dict[str, Any]:
        return policy_spec(self.kind, self.index)

    @property
    def ingress(self) -> bool:
        return "Ingress" in self.spec["policyTypes"]

    def manifest(self) -> dict[str, Any]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {BENCH_LABEL: RUN}},
                "spec": self.spec}

    def peers(self) -> list[dict[str, Any]]:
        return [peer for rule in self.spec.get("ingress", ()) for peer in rule.get("from", ())
                if "ipBlock" not in peer]


def policy_list(namespaces: int, count: int) -> list[Policy]:
    """Policy k: namespace (k // 4) mod N, kind k mod 4: any prefix is a realistic mix."""
    return [Policy((k // len(KINDS)) % namespaces, k % len(KINDS),
                   k // (len(KINDS) * namespaces)) for k in range(count)]


def netpol_path(namespace: str) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"


# --- the model: what NB must hold ----------------------------------------------------------------
def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """LabelSelector semantics (the bench's own, not the controller's)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or ()
        present = key in labels
        if not {"In": present and labels.get(key) in values,
                "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[op]:
            return False
    return True


@dataclass
class Expected:
    groups: dict[str, tuple[frozenset[str], int]] = field(default_factory=dict)
    """Port_Group name -> (its ports' Logical_Switch_Port names, how many ACLs)."""
    sets: dict[str, frozenset[str]] = field(default_factory=dict)
    """Address_Set name -> addresses (kovn_nodes: not checked, only counted)."""
    rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(owner type, table) -> rows."""

    def keys(self) -> set[tuple[str, str]]:
        return {(PG, n) for n in self.groups} | {(AS, n) for n in self.sets}

    def value(self, key: tuple[str, str]) -> Any:
        return (self.groups if key[0] == PG else self.sets).get(key[1])


class Model:
    """The namespaces' and pods' labels as the bench set them, and the rows they imply."""

    def __init__(self, namespaces: int, pods: int) -> None:
        self.ns_labels = {namespace_name(i): namespace_labels(i) for i in range(namespaces)}
        self.pod_labels = {(namespace_name(i), pod_name(j)): pod_labels(j)
                           for i in range(namespaces) for j in range(pods)}
        self.by_namespace: dict[str, list[str]] = {}
        for ns, pod in self.pod_labels:
            self.by_namespace.setdefault(ns, []).append(pod)

    def selected(self, namespace: str, selector: Mapping[str, Any]) -> frozenset[str]:
        return frozenset(names.pod_port(namespace, p) for p in self.by_namespace.get(namespace, ())
                         if matches(selector, self.pod_labels[(namespace, p)]))

    def peer_ports(self, namespace: str, peer: Mapping[str, Any]) -> frozenset[str]:
        pods = peer.get("podSelector") or {}
        if "namespaceSelector" not in peer:
            return self.selected(namespace, pods)
        return frozenset().union(*(self.selected(ns, pods) for ns, labels in
                                   self.ns_labels.items()
                                   if matches(peer["namespaceSelector"], labels)))

    def expected(self, policies: Iterable[Policy], ips: Mapping[str, str]) -> Expected:
        """`ips`: Logical_Switch_Port name -> address, as NB holds them."""
        out = Expected()
        deny: dict[tuple[str, str], set[str]] = {}
        peers: dict[str, tuple[str, dict[str, Any]]] = {}
        for policy in policies:
            ports = self.selected(policy.namespace, policy.spec["podSelector"])
            out.groups[names.policy_port_group(policy.namespace, policy.name)] = \
                (ports, ACLS[policy.kind])
            out.rows[(names.OwnerType.NETWORK_POLICY, PG)] += 1
            out.rows[(names.OwnerType.NETWORK_POLICY, ACL)] += ACLS[policy.kind]
            direction = "ingress" if policy.ingress else "egress"
            deny.setdefault((policy.namespace, direction), set()).update(ports)
            for peer in policy.peers():
                peers[peer_of(policy.namespace, peer).address_set] = (policy.namespace, peer)
        for (namespace, direction), ports in deny.items():
            if ports:
                out.groups[names.default_deny_port_group(namespace, direction)] = \
                    (frozenset(ports), DENY_ACLS[direction])
                out.rows[(names.OwnerType.NAMESPACE, PG)] += 1
                out.rows[(names.OwnerType.NAMESPACE, ACL)] += DENY_ACLS[direction]
        for set_name, (namespace, peer) in peers.items():
            out.sets[set_name] = frozenset(ips[p] for p in self.peer_ports(namespace, peer))
        out.rows[(names.OwnerType.PEER_SET, AS)] = len(peers) + 1  # + kovn_nodes
        return out


def shared_sets(policies: Iterable[Policy]) -> set[str]:
    """Names of every cluster-scoped peer set the policies may use."""
    return {peer_of(p.namespace, peer).address_set for p in policies for peer in p.peers()
            if "namespaceSelector" in peer}


# --- NB, watched ----------------------------------------------------------------------------------
MONITORED: dict[str, Sequence[str] | None] = {
    LSP: ("name", "addresses"),
    PG: ("name", "ports", "acls", "external_ids"),
    AS: ("name", "addresses", "external_ids"),
    ACL: ("name", "match", "direction", "priority", "action", "external_ids"),
}


class Tracker:
    """What the monitor's rows say, kept incrementally (the monitor thread calls `sync`
    after every update: rescanning 10,000 rows each time would take CPU from the controller
    it measures). Call everything under monitor.cond."""

    def __init__(self, monitor: NbMonitor, known_sets: set[str]) -> None:
        self.monitor, self.known_sets = monitor, known_sets
        self.prefix = f"np-{RUN}-"
        self.seen = 0
        self.port_name: dict[str, str] = {}
        self.ip: dict[str, str] = {}
        self.uuid_of: dict[tuple[str, str], str] = {}
        self.key_of: dict[str, tuple[str, str]] = {}
        self.ours: dict[str, tuple[str, str]] = {}
        self.count: Counter[tuple[str, str]] = Counter()

    def _is_ours(self, table: str, row: Mapping[str, Any]) -> str | None:
        ids = row.get("external_ids") or {}
        kind, owner = ids.get(names.OWNER_TYPE_KEY), ids.get(names.OWNER_KEY, "")
        if kind not in OWNER_TYPES:
            return None
        if owner.startswith(self.prefix) or owner == NODES_OWNER or \
                (table == AS and row.get("name") in self.known_sets):
            return kind
        return None

    def sync(self) -> set[tuple[str, str]]:
        """Take the updates that arrived since the last call; the (table, name) of the port
        groups and address sets they touched."""
        touched: set[tuple[str, str]] = set()
        changes, rows = self.monitor.changes, self.monitor.rows
        for change in changes[self.seen:]:
            table, uuid = change.table, change.uuid
            row = rows[table].get(uuid)
            if table == LSP:
                if row is None:
                    self.ip.pop(self.port_name.pop(uuid, ""), None)
                    continue
                self.port_name[uuid] = row["name"]
                addresses = sorted(row["addresses"])
                if addresses and len(addresses[0].split()) > 1:
                    self.ip[row["name"]] = addresses[0].split()[1]
                continue
            if row is None:
                key = self.key_of.pop(uuid, None)
                if key is not None:
                    touched.add(key)
                    if self.uuid_of.get(key) == uuid:
                        del self.uuid_of[key]
                owned = self.ours.pop(uuid, None)
                if owned is not None:
                    self.count[owned] -= 1
                continue
            if table != ACL and uuid not in self.key_of:
                key = (table, row["name"])
                self.key_of[uuid], self.uuid_of[key] = key, uuid
            if table != ACL:
                touched.add(self.key_of[uuid])
            if uuid not in self.ours and change.op in ("initial", "insert"):
                kind = self._is_ours(table, row)
                if kind is not None:
                    self.ours[uuid] = (kind, table)
                    self.count[(kind, table)] += 1
        self.seen = len(changes)
        return touched

    def actual(self, key: tuple[str, str]) -> Any:
        uuid = self.uuid_of.get(key)
        if uuid is None:
            return None
        row = self.monitor.rows[key[0]][uuid]
        if key[0] == PG:
            return (frozenset(self.port_name.get(u, u) for u in row["ports"]), len(row["acls"]))
        return frozenset(row["addresses"])

    def holds(self, expected: Expected, key: tuple[str, str]) -> bool:
        return self.actual(key) == expected.value(key)

    def owned(self) -> list[tuple[str, Mapping[str, Any]]]:
        return [(table, self.monitor.rows[table][uuid])
                for uuid, (_, table) in self.ours.items()]


class Converged:
    """The predicate "NB holds exactly the expected rows": every expected port group and
    address set as the model says, and as many rows of each owner type and table as it
    says (so no extra ones). Only what an update touched is checked again."""

    def __init__(self, tracker: Tracker, expected: Expected) -> None:
        self.tracker, self.expected = tracker, expected
        self.keys = expected.keys()
        tracker.sync()
        self.wrong = {k for k in self.keys if not tracker.holds(expected, k)}

    def __call__(self) -> bool:
        for key in self.tracker.sync() & self.keys:
            if self.tracker.holds(self.expected, key):
                self.wrong.discard(key)
            else:
                self.wrong.add(key)
        return not self.wrong and +self.tracker.count == +self.expected.rows

    def progress(self) -> str:
        have = sum(self.tracker.count.values())
        return (f"NB {len(self.keys) - len(self.wrong)}/{len(self.keys)} port groups and "
                f"address sets as expected, {have}/{sum(self.expected.rows.values())} rows")


# --- the measurements -------------------------------------------------------------------------
def create_all(api: KubeClient, jobs: Sequence[Callable[[], None]],
               threads: int = CLIENT_THREADS) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def create_pod(api: KubeClient, namespace: str, j: int) -> None:
    """Retried while the namespace's ServiceAccount `default` does not exist yet (the
    ServiceAccount admission refuses pods until kube-controller-manager made it)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            api.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest(namespace, j))
            return
        except KubeError as exc:
            if exc.status != 403 or "serviceaccount" not in str(exc).lower() or \
                    time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def annotated(api: KubeClient) -> int:
    return sum(1 for p in api.list("/api/v1/pods", selector=f"{BENCH_LABEL}={RUN}")
               if POD_NETWORK in (p["metadata"].get("annotations") or {}))


def setup(api: KubeClient, monitor: NbMonitor, tracker: Tracker, model: Model,
          controller: ControllerProcess) -> None:
    namespaces = list(model.ns_labels)
    started = time.monotonic()
    create_all(api, [lambda ns=ns: api.create("/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": model.ns_labels[ns]}}) for ns in namespaces])
    pods = sorted(model.pod_labels)
    create_all(api, [lambda ns=ns, p=p: create_pod(api, ns, int(p[1:])) for ns, p in pods])
    created = time.monotonic()
    ports = {names.pod_port(ns, p) for ns, p in pods}
    check = alive(controller)

    def tick() -> None:
        check()
        print(f"  {time.monotonic() - started:5.1f}s  NB {len(ports & tracker.ip.keys())}/"
              f"{len(ports)} pod ports", flush=True)

    def all_ports() -> bool:
        tracker.sync()
        return ports <= tracker.ip.keys()

    at = monitor.until(all_ports, max(300.0, len(ports) / 10), tick, "every pod's port in NB",
                       every=PROGRESS_EVERY)
    while (done := annotated(api)) < len(ports):
        check()
        if time.monotonic() - started > max(600.0, len(ports) / 5):
            raise TimeoutError(f"only {done}/{len(ports)} pods annotated")
        time.sleep(2.0)
    monitor.quiet(2.0)
    print(f"(setup) {len(namespaces)} namespaces + {len(ports)} pods created in "
          f"{created - started:.1f}s; every port in NB {at - started:.1f}s, every pod "
          f"annotated {time.monotonic() - started:.1f}s after the first create", flush=True)


@dataclass
class Step:
    """One batch of policy creates and the NB convergence it caused."""

    policies: int
    create_s: float
    converge_s: float


def converge(api: KubeClient, monitor: NbMonitor, tracker: Tracker, model: Model,
             policies: Sequence[Policy], batch: Sequence[Policy], label: str,
             pids: Mapping[str, int], controller: ControllerProcess) -> Step:
    """Create `batch` (the last of `policies`) and wait until NB holds the rows of all."""
    with monitor.cond:
        tracker.sync()
        expected = model.expected(policies, tracker.ip)
        done = Converged(tracker, expected)
    made = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []
    finished = [0.0]

    def one(policy: Policy) -> None:
        api.create(netpol_path(policy.namespace), policy.manifest())
        with lock:
            made[0] += 1

    def create() -> None:
        try:
            create_all(api, [lambda p=p: one(p) for p in batch])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finished[0] = time.monotonic()

    check = alive(controller)
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    creator = threading.Thread(target=create, name="creator")
    creator.start()

    def tick() -> None:
        check()
        if errors:
            raise RuntimeError(f"creating policies failed: {errors[0]}") from errors[0]
        print(f"  {time.monotonic() - started:5.1f}s  created {made[0]}/{len(batch)} "
              f"policies;  {done.progress()}", flush=True)

    at = monitor.until(done, max(180.0, len(batch) / 5), tick,
                       f"NB rows of {len(policies)} policies", every=PROGRESS_EVERY)
    creator.join()
    if errors:
        raise RuntimeError(f"creating policies failed: {errors[0]}") from errors[0]
    step = Step(len(batch), finished[0] - started, at - started)
    print(f"({label}) created {len(batch)} NetworkPolicies in {step.create_s:.1f}s "
          f"({len(batch) / step.create_s:.0f}/s, {CLIENT_THREADS} client threads)")
    print(f"({label}) NB converged to the rows of all {len(policies)} policies in "
          f"{step.converge_s:.1f}s from the first create, "
          f"{max(0.0, at - finished[0]):.1f}s after the last", flush=True)
    print(f"({label}) {cpu_report(cpu_before, cpu_seconds(pids), time.monotonic() - started)}",
          flush=True)
    with monitor.cond:
        print_rows(label, tracker, expected, policies, model)
    return step


def print_rows(label: str, tracker: Tracker, expected: Expected, policies: Sequence[Policy],
               model: Model) -> None:
    counts = +tracker.count
    total = sum(counts.values())
    by_owner = []
    for kind in OWNER_TYPES:
        tables = {t: n for (k, t), n in sorted(counts.items()) if k == kind}
        by_owner.append(f"{kind} {sum(tables.values())} ("
                        + ", ".join(f"{t} {n}" for t, n in tables.items()) + ")")
    by_table: Counter[str] = Counter()
    for (_, table), n in counts.items():
        by_table[table] += n
    namespaces = len({p.namespace for p in policies})
    elements = sum(len(row["addresses"]) for table, row in tracker.owned() if table == AS)
    print(f"({label}) NB rows for {len(policies)} policies in {namespaces} namespaces "
          f"({len(model.pod_labels)} pods): {total} = {total / len(policies):.2f} rows per "
          f"policy; by table: " + ", ".join(f"{t} {n}" for t, n in sorted(by_table.items()))
          + f"; by owner: {'; '.join(by_owner)}; {elements} addresses in the address sets; "
          f"as the model expects: {'yes' if counts == +expected.rows else 'NO'}", flush=True)
    shared = sorted(n for n in expected.sets if n in tracker.known_sets)
    if shared:
        sizes = [len(tracker.actual((AS, n)) or ()) for n in shared]
        users = Counter(peer_of(p.namespace, peer).address_set for p in policies
                        for peer in p.peers() if "namespaceSelector" in peer)
        print(f"({label}) {len(shared)} shared team peer sets, used by "
              f"{min(users[n] for n in shared)}-{max(users[n] for n in shared)} policies each, "
              f"holding {min(sizes)}-{max(sizes)} addresses (the model: "
              f"{min(len(expected.sets[n]) for n in shared)}-"
              f"{max(len(expected.sets[n]) for n in shared)}); e.g. {shared[0]}", flush=True)


def print_acls(tracker: Tracker, namespace: str) -> None:
    """The ACLs of one namespace's policies and default deny, as NB holds them."""
    acls = sorted((row["external_ids"].get(names.OWNER_KEY, ""), row["priority"],
                   row["direction"], row["action"], row["match"])
                  for table, row in tracker.owned() if table == ACL
                  and row["external_ids"].get(names.OWNER_KEY, "").split("/")[0] == namespace)
    print(f"(A) the {len(acls)} ACLs of namespace {namespace} (owner, direction, priority, "
          "action, match):")
    width = max((len(a[0]) for a in acls), default=0)
    for owner, priority, direction, action, match in acls:
        print(f"  {owner:{width}} {direction:10} {priority} {action:13} {match}")


def concerned(policies: Sequence[Policy]) -> Callable[[str], list[Policy]]:
    """namespace -> the policies whose rows a label change of a pod there may change: those
    of the namespace (their port groups, its default deny, its peer sets) and one user of
    each cluster-scoped peer set. (The model of all 2,000 costs 0.1 s of the bench's CPU,
    twice per change, which the controller and northd would miss on 2 cores.)"""
    shared = {peer_of(p.namespace, peer).address_set: p for p in policies for peer in p.peers()
              if "namespaceSelector" in peer}
    by_namespace: dict[str, list[Policy]] = {}
    for policy in policies:
        by_namespace.setdefault(policy.namespace, []).append(policy)
    return lambda namespace: list(dict.fromkeys([*by_namespace.get(namespace, ()),
                                                 *shared.values()]))


def one_change(api: KubeClient, monitor: NbMonitor, tracker: Tracker, model: Model,
               policies: Sequence[Policy], pod: tuple[str, str], app: str
               ) -> tuple[float, float, int]:
    """PATCH the pod's `app` label; (PATCH sent -> NB shows every row the model says
    changed, PATCH round trip, how many rows changed). `policies`: concerned() ones."""
    with monitor.cond:
        tracker.sync()
        before = model.expected(policies, tracker.ip)
        model.pod_labels[pod] = {**model.pod_labels[pod], "app": app}
        after = model.expected(policies, tracker.ip)
    keys = {k for k in after.keys() | before.keys() if after.value(k) != before.value(k)}

    def shown() -> bool:
        tracker.sync()
        return all(tracker.holds(after, k) for k in keys)

    sent = time.monotonic()
    api.merge_patch(f"/api/v1/namespaces/{pod[0]}/pods/{pod[1]}",
                    {"metadata": {"labels": {"app": app}}})
    answered = time.monotonic()
    at = monitor.until(shown, 30, what=f"pod {pod[0]}/{pod[1]} app={app} in NB")
    return at - sent, answered - sent, len(keys)


@dataclass
class Changes:
    """Label changes made one after the other, with what each cost."""

    latencies: list[float] = field(default_factory=list)
    patches: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    """Wall-clock (sent, shown) of each, to match against the controller's full resyncs."""

    def overlapping(self, fulls: Sequence[tuple[float, float]]) -> list[int]:
        return [i for i, (start, end) in enumerate(self.spans)
                if any(f_start < end and start < f_end for f_start, f_end in fulls)]


def change_pods(model: Model) -> list[tuple[str, str]]:
    """25 pods with app=a1, spread over the namespaces."""
    namespaces = list(model.ns_labels)
    spread = list(dict.fromkeys(namespaces[k * len(namespaces) // (CHANGES // 2)]
                                for k in range(CHANGES // 2)))
    a1 = [p for p in sorted(model.by_namespace[namespaces[0]], key=lambda p: int(p[1:]))
          if model.pod_labels[(namespaces[0], p)]["app"] == "a1"]
    return [(ns, p) for p in a1 for ns in spread][:CHANGES // 2]


def change_round_trips(api: KubeClient, monitor: NbMonitor, tracker: Tracker, model: Model,
                       of_namespace: Callable[[str], list[Policy]],
                       pods: Iterable[tuple[str, str]], into: Changes) -> None:
    """Each pod's app a1 -> a2, then back."""
    for pod in pods:
        for app in ("a2", "a1"):
            wall = time.time()
            latency, patch, changed = one_change(api, monitor, tracker, model,
                                                 of_namespace(pod[0]), pod, app)
            into.latencies.append(latency)
            into.patches.append(patch)
            into.rows.append(changed)
            into.spans.append((wall, wall + latency))
            time.sleep(0.05 + (len(into.latencies) % 5) * 0.05)  # not in step with the worker


def changes_under_load(api: KubeClient, monitor: NbMonitor, tracker: Tracker, model: Model,
                       policies: Sequence[Policy], log: Path, offset: int,
                       pids: Mapping[str, int]) -> None:
    """(B): 50 changes; then, if none of them met one of the controller's full resyncs
    (every 60 s), more until some do, reported apart: the p99 of a long run is theirs when
    a resync takes more than 1% of the time."""
    picks = change_pods(model)
    if not picks:
        print("(B) no pod with app=a1 (--pods < 2): no label changes", flush=True)
        return
    of_namespace = concerned(policies)
    cpu_before, started, updates = cpu_seconds(pids), time.monotonic(), monitor.updates
    quick = Changes()
    change_round_trips(api, monitor, tracker, model, of_namespace, picks, quick)
    p50, p99 = percentile(quick.latencies, 50), percentile(quick.latencies, 99)
    print(f"(B) one pod label change -> NB, {len(quick.latencies)} changes ({len(picks)} pods "
          f"app a1 -> a2 and back, {min(quick.rows)}-{max(quick.rows)} port groups/address "
          f"sets changed each) with {len(policies)} policies: p50 {p50 * 1000:.0f} ms, p99 "
          f"{p99 * 1000:.0f} ms (nearest rank: the maximum of {len(quick.latencies)}) "
          f"(PATCH round trip p50 {percentile(quick.patches, 50) * 1000:.0f} ms) (goal p99 "
          f"< {GOAL_CHANGE_P99_S * 1000:.0f} ms) -> "
          f"{'met' if p99 < GOAL_CHANGE_P99_S else 'NOT met'}; the slowest: "
          + ", ".join(f"{v * 1000:.0f}" for v in sorted(quick.latencies)[-5:]) + " ms; "
          f"{monitor.updates - updates} NB updates meanwhile", flush=True)
    print(f"(B) {cpu_report(cpu_before, cpu_seconds(pids), time.monotonic() - started)}",
          flush=True)
    fulls = full_flushes(log, offset)
    hit = quick.overlapping(fulls)
    more = Changes()
    if hit:
        rest = [v for i, v in enumerate(quick.latencies) if i not in hit]
        print(f"(B) {len(hit)} of them arrived during a full resync of the controller and "
              f"waited for it: {', '.join(f'{quick.latencies[i] * 1000:.0f} ms' for i in hit)};"
              f" the other {len(rest)}: p50 "
              f"{percentile(rest, 50) * 1000 if rest else float('nan'):.0f} ms, p99 "
              f"{percentile(rest, 99) * 1000 if rest else float('nan'):.0f} ms", flush=True)
    else:
        deadline = time.monotonic() + 90  # the resync runs every 60 s
        while not (hit := more.overlapping(fulls)) and time.monotonic() < deadline:
            change_round_trips(api, monitor, tracker, model, of_namespace,
                               picks[len(more.latencies) // 2 % len(picks):][:1], more)
            fulls = full_flushes(log, offset)
        print(f"(B) none of them met a full resync of the controller; "
              f"{len(more.latencies)} more changes until some did: "
              + (f"{len(hit)} waited for it: "
                 + ", ".join(f"{more.latencies[i] * 1000:.0f} ms" for i in hit)
                 + "; the others: p50 "
                 f"{percentile(more.latencies, 50) * 1000:.0f} ms" if hit else "none did"),
              flush=True)
    if fulls:
        longest = max(e - s for s, e in fulls)
        print(f"(B) the controller's full resyncs with {len(policies)} policies took "
              f"{', '.join(f'{(e - s) * 1000:.0f} ms' for s, e in fulls)}: every 60 s, "
              f"{longest / 60 * 100:.1f}% of the time, a change waits up to "
              f"{longest * 1000:.0f} ms for one, so the p99 of a long run is "
              f"{'above' if longest / 60 > 0.01 and longest > GOAL_CHANGE_P99_S else 'within'}"
              f" the goal", flush=True)


def delete_policies(api: KubeClient, namespaces: Iterable[str]) -> None:
    create_all(api, [lambda ns=ns: api.call("DELETE", netpol_path(ns)) for ns in namespaces])


def delete_all(api: KubeClient, monitor: NbMonitor, tracker: Tracker, model: Model,
               controller: ControllerProcess) -> None:
    started = time.monotonic()
    delete_policies(api, model.ns_labels)
    deleted = time.monotonic()

    def gone() -> bool:
        tracker.sync()
        return all(owner == (names.OwnerType.PEER_SET, AS) and n == 1
                   for owner, n in (+tracker.count).items())

    at = monitor.until(gone, 300, alive(controller), "the policies' rows deleted")
    with monitor.cond:
        left = [row["name"] for table, row in tracker.owned()]
    print(f"(end) deleted the policies in {deleted - started:.1f}s; NB held no row of "
          f"NetworkPolicy, Namespace or PeerSet owners but {', '.join(left)} "
          f"{max(0.0, at - started):.1f}s after the first delete", flush=True)


def delete_namespaces(api: KubeClient, namespaces: Iterable[str]) -> None:
    create_all(api, [lambda ns=ns: api.delete(f"/api/v1/namespaces/{ns}") for ns in namespaces])


def settle(monitor: NbMonitor, pid: int, seconds: float = 1.0) -> None:
    """Return once NB had no update and the controller used less than IDLE of a core for
    `seconds`. NB alone is not enough: a flush of 4,600 new rows observes and plans for
    seconds before NB sees anything, and ends only once the controller's own IDL has taken
    in its commit, a second or more after NB sent the same update to the bench's monitor; a
    change sent meanwhile would wait for it. Nor is the log: a flush logs its line at the
    end."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        monitor.quiet(seconds)
        before = cpu_seconds({"c": pid}).get("c", 0.0)
        with monitor.cond:
            updates = monitor.updates
        time.sleep(seconds)
        used = cpu_seconds({"c": pid}).get("c", 0.0) - before
        with monitor.cond:
            if used < IDLE * seconds and monitor.updates == updates:
                return


def print_flushes(monitor: NbMonitor, pid: int, log: Path, offset: int) -> None:
    """The controller's flushes since `offset`, once it is idle (settle)."""
    settle(monitor, pid)
    for line in flush_summary(log, offset):
        print(f"  {line}")


# --- the profiled controller ------------------------------------------------------------------
Entry = tuple[str, int, str]
"""(file, line, function), as cProfile names a function."""
Figures = dict[Entry, tuple[int, int, float, float]]
"""entry -> (primitive calls, calls, own time, cumulative time)."""
WAITS = ("acquire", "wait", "select", "poll", "sleep", "recv", "recv_into", "block", "accept",
         "read", "readinto", "_worker", "run_forever", "_run_once", "get", "join")
"""Functions that mostly wait (the timer is wall-clock per thread): left out of the
all-threads list."""


PROFILED_THREADS = ("kovn-worker", "kovn-publish")
NB_THREAD = "Connection.run"
"""The threads profiled: the worker (every flush), the annotation publishers and ovsdbapp's
connection thread (every NB transaction: observe, plan, write, commit, the IDL's update).
With every thread profiled, kopf's event loop too, Python 3.11 crashed (SIGSEGV while
collecting garbage in the connection's thread), with cProfile's own timer and with
time.thread_time alike."""


def _figures(profile: cProfile.Profile) -> Figures:
    """A profiler's figures so far, read without disabling it (another thread's profiler;
    the GIL keeps it still meanwhile)."""
    profile.snapshot_stats()
    return {k: v[:4] for k, v in profile.stats.items()}  # type: ignore[attr-defined]


def _bare(entry: Entry) -> str:
    """A function's bare name: `<method 'acquire' of '_thread.lock' objects>` -> acquire."""
    match = re.search(r"(?:method|function) '?([\w.]+)", entry[2])
    return (match[1] if match else entry[2]).rsplit(".", 1)[-1]


def _group(name: str) -> str:
    """Thread name without its pool index: kovn-publish_3 -> kovn-publish."""
    return name.rstrip("0123456789").rstrip("_-") or name


def profiled_controller() -> None:
    """`python -c 'import bench.policies as b; b.profiled_controller()' OUT ARGS...`: the
    controller (`kovn ARGS`) with a cProfile per thread. SIGUSR1 marks the start of the
    window the bench wants, SIGUSR2 its end (else: the exit); at exit the figures of the
    window go to OUT (pstats, every thread), OUT.worker (pstats, the worker) and OUT.txt.

    The timer is cProfile's own (wall-clock, per thread): an external one (time.thread_time)
    is called back from inside the profiler, and a garbage collection started there crashed
    the process (SIGSEGV in the NB connection thread, Python 3.11)."""
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    profiles: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()
    original = threading.Thread.run
    baseline: dict[int, Figures] = {}
    final: dict[int, Figures] = {}

    def run(self: threading.Thread) -> None:
        target = getattr(getattr(self, "_target", None), "__qualname__", "")
        if not self.name.startswith(PROFILED_THREADS) and target != NB_THREAD:
            original(self)
            return
        if target == NB_THREAD:
            self.name = "nb-connection"
        profile = cProfile.Profile()
        with lock:
            profiles.append((self.name, profile))
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    def mark(*_: object) -> None:
        with lock:
            baseline.update({id(p): _figures(p) for _, p in profiles})

    def end(*_: object) -> None:
        with lock:
            final.update({id(p): _figures(p) for _, p in profiles})

    threading.Thread.run = run  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, mark)
    signal.signal(signal.SIGUSR2, end)
    from cli.main import main as cli_main

    try:
        code = cli_main(argv)
    finally:
        by_thread: dict[str, Figures] = {}
        with lock:
            for name, profile in profiles:
                before = baseline.get(id(profile), {})
                into = by_thread.setdefault(_group(name), {})
                figures = final[id(profile)] if final else _figures(profile)
                for entry, (cc, nc, tt, ct) in figures.items():
                    b = before.get(entry, (0, 0, 0.0, 0.0))
                    old = into.get(entry, (0, 0, 0.0, 0.0))
                    into[entry] = (old[0] + cc - b[0], old[1] + nc - b[1],
                                   old[2] + tt - b[2], old[3] + ct - b[3])
        _write_profile(out, by_thread, bool(baseline))
    sys.exit(code)


def _write_profile(out: Path, by_thread: Mapping[str, Figures], marked: bool) -> None:
    merged: dict[Entry, list[float]] = {}
    for figures in by_thread.values():
        for entry, values in figures.items():
            into = merged.setdefault(entry, [0, 0, 0.0, 0.0])
            for i, v in enumerate(values):
                into[i] += v
    for path, figures in ((out, {k: tuple(v) for k, v in merged.items()}),
                          (Path(f"{out}.worker"), by_thread.get("kovn-worker", {}))):
        path.write_bytes(marshal.dumps({k: (*v, {}) for k, v in figures.items() if v[1] > 0}))

    def where(entry: Entry) -> str:
        file, line, func = entry
        short = file.split("site-packages/")[-1].replace(str(Path.cwd()) + "/", "")
        return f"{short}:{line}({func})" if line else func

    def table(figures: Mapping[Entry, Any], column: int, count: int,
              keep: Callable[[Entry], bool] = lambda e: True) -> list[str]:
        rows = sorted((e for e in figures if figures[e][1] > 0 and keep(e)),
                      key=lambda e: -figures[e][column])[:count]
        return [f"  {figures[e][2]:9.3f} {figures[e][3]:9.3f} {figures[e][1]:9d}  {where(e)}"
                for e in rows]

    header = "     own s     cum s     calls  function"
    worker = by_thread.get("kovn-worker", {})
    nb = by_thread.get("nb-connection", {})
    lines = [f"window: {'the phase asked for' if marked else 'the whole run'}; "
             "wall-clock seconds per thread",
             "threads by own time summed: " + ", ".join(
                 f"{name} {sum(v[2] for v in f.values()):.1f}s"
                 for name, f in sorted(by_thread.items(),
                                       key=lambda i: -sum(v[2] for v in i[1].values()))[:8]),
             "the worker thread (kovn-worker), by own time:", header,
             *table(worker, 2, 30),
             "the worker thread, by cumulative time (kovn's own code):", header,
             *table(worker, 3, 40, lambda e: "site-packages" not in e[0] and
                    "/usr/lib/python" not in e[0] and e[1] > 0),
             "the NB connection's thread (observe, plan, write, commit), by own time:", header,
             *table(nb, 2, 25, lambda e: _bare(e) not in WAITS),
             "the NB connection's thread, by cumulative time:", header,
             *table(nb, 3, 30, lambda e: e[1] > 0 and _bare(e) not in WAITS),
             "every thread, by own time (waits left out):", header,
             *table(merged, 2, 25, lambda e: _bare(e) not in WAITS)]
    Path(f"{out}.txt").write_text("\n".join(lines) + "\n")


def print_profile(profile: Path) -> None:
    text = Path(f"{profile}.txt")
    if not text.exists():
        print(f"no profile written ({text})")
        return
    print(f"the controller's profile ({profile}, {profile}.worker: pstats):")
    for line in text.read_text().splitlines():
        print(f"  {line.rstrip()[:170]}")


# --- main -----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--pods", type=int, default=10, help="per namespace")
    parser.add_argument("--policies", type=int, default=2000)
    parser.add_argument("--state-dir", type=Path,
                        help="use this running kube sandbox (started with --no-controller)")
    parser.add_argument("--profile", type=Path,
                        help="run the controller under cProfile (per thread, after the "
                        "setup) and write FILE, FILE.worker (pstats) and FILE.txt (slows it "
                        "down: figures of a profiled run are not the real ones)")
    parser.add_argument("--profile-phase", choices=("all", "A", "B"), default="all",
                        help="the profile's window: from the end of the setup to the exit "
                        "(all), (A) or (B) alone")
    args = parser.parse_args()
    if args.namespaces < 1 or args.pods < 1 or args.policies < 1:
        parser.error("--namespaces, --pods and --policies must be at least 1")
    with e2e_lock():
        return run(args.namespaces, args.pods, args.policies, args.state_dir, args.profile,
                   args.profile_phase)


def run(namespaces: int, pods: int, count: int, state_dir: Path | None,
        profile: Path | None = None, phase: str = "all") -> int:
    own = state_dir is None
    if own:
        sandbox = Sandbox(SandboxConfig(
            state_dir=Path(tempfile.mkdtemp(prefix="kovn-bench-np-")), prefix="kvp", nodes=2,
            nb_tcp_port=None, controller=False, kube=True, workloads=False, apiserver_port=0,
            etcd_port=0, etcd_peer_port=0))
        sandbox.up(progress=lambda line: print(f"  {line}", flush=True))
    else:
        sandbox = Sandbox.load(state_dir)
        if sandbox.config.controller:
            raise SystemExit(f"{state_dir}: the sandbox must run without its own controller "
                             "(kovn sandbox up --no-controller)")
    log = Path(sandbox.state_dir) / "bench-policies-controller.log"
    offset = log.stat().st_size if log.exists() else 0
    controller = ControllerProcess(sandbox.nb_remote, sandbox.kubeconfig, log, resync=60)
    if profile is not None:
        profile = profile.resolve()
        controller.argv = [sys.executable, "-X", "faulthandler", "-c",
                           "import bench.policies as b; b.profiled_controller()", str(profile),
                           *controller.argv[3:]]
    api = KubeClient(str(sandbox.kubeconfig), pool_size=CLIENT_THREADS + 8)
    model = Model(namespaces, pods)
    policies = policy_list(namespaces, count)
    monitor: NbMonitor | None = None
    cleaned = False
    steps: list[Step] = []
    try:
        controller.start()
        controller.wait_ready()
        monitor = NbMonitor(sandbox.nb_remote, MONITORED)
        tracker = Tracker(monitor, shared_sets(policies))
        assert controller.proc is not None
        pids = {**daemon_pids(Path(sandbox.state_dir)), "kovn controller": controller.proc.pid}
        print(f"(setup) {namespaces} namespaces x {pods} pods (never scheduled), {count} "
              f"NetworkPolicies; controller {log}", flush=True)
        setup(api, monitor, tracker, model, controller)

        def window(starts: str, ends: str) -> None:
            """Tell a profiled controller where the phase asked for starts or ends."""
            if profile is not None and controller.proc is not None:
                if phase == starts:
                    os.kill(controller.proc.pid, signal.SIGUSR1)
                elif phase == ends:
                    os.kill(controller.proc.pid, signal.SIGUSR2)

        window("all", "")
        window("A", "")
        first = max(1, count // 4)
        for label, upto, since in (("A1", first, 0), ("A2", count, first)):
            if upto <= since:
                continue
            print(f"({label}) creating policies {since}..{upto - 1} "
                  f"({upto} in all)", flush=True)
            mark = log.stat().st_size
            steps.append(converge(api, monitor, tracker, model, policies[:upto],
                                  policies[since:upto], label, pids, controller))
            print_flushes(monitor, controller.proc.pid, log, mark)
        total = sum(s.converge_s for s in steps)
        print(f"(A) time to converge {count} policies: "
              + " + ".join(f"{s.converge_s:.1f}s ({s.policies})" for s in steps)
              + f" = {total:.1f}s (API creates alone: "
              + " + ".join(f"{s.create_s:.1f}s" for s in steps)
              + f") (goal < {GOAL_CONVERGE_S:.0f} s) -> "
              f"{'met' if total < GOAL_CONVERGE_S else 'NOT met'}", flush=True)
        with monitor.cond:
            print_acls(tracker, namespace_name(0))
        window("", "A")
        mark = log.stat().st_size
        window("B", "")
        changes_under_load(api, monitor, tracker, model, policies, log, mark, pids)
        window("", "B")
        print_flushes(monitor, controller.proc.pid, log, mark)
        delete_all(api, monitor, tracker, model, controller)
        if not own:  # leave a borrowed sandbox as it was: its controller-less NB too
            delete_namespaces(api, model.ns_labels)
            ports = {names.pod_port(ns, p) for ns, p in model.pod_labels}

            def no_ports() -> bool:
                tracker.sync()
                return not ports & tracker.ip.keys()

            monitor.until(no_ports, 300, alive(controller), "the pods' ports deleted")
        cleaned = True
    finally:
        if not own and not cleaned:  # after a failure: leave as little behind as can be
            with contextlib.suppress(KubeError):
                delete_policies(api, model.ns_labels)
                delete_namespaces(api, model.ns_labels)
        if monitor is not None:
            monitor.close()
        if profile is not None and controller.proc is not None and controller.proc.poll() is None:
            controller.proc.terminate()  # the profiles are merged at exit: give it time
            with contextlib.suppress(Exception):
                controller.proc.wait(timeout=120)
        controller.stop()
        api.close()
        print(f"the controller's worker over the whole run (from {log}):")
        for line in flush_summary(log, offset):
            print(f"  {line}")
        if profile is not None:
            print(f"(profile window: {phase})")
            print_profile(profile)
        if own:
            kept = Path(tempfile.gettempdir()) / f"kovn-bench-policies-{RUN}.log"
            with contextlib.suppress(OSError):
                shutil.copyfile(log, kept)
                print(f"(the controller's log is kept as {kept})")
            sandbox.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
