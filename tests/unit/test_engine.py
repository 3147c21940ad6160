"""The engine's pure parts: isolating bad owners, the cache's indexes and fan-out, label
selection, the kind table."""

from __future__ import annotations

import pytest

from northbound.connection import NorthboundUnavailable
from northbound.rows import CLUSTER, Owner
from operators.cache import CacheKind, ClusterCache, IndexSpec
from operators.faults import Faults, write_isolated
from operators.kinds import BY_NAME, KINDS, LISTWATCH
from operators.selection import (
    LABEL_INDEX,
    NAMESPACE_INDEX,
    SERVICE_INDEX,
    label_keys,
    matches,
    namespace_keys,
    select,
    service_keys,
)


def pod(i: int) -> Owner:
    return Owner("Pod", f"ns/p{i}")


class Recorder:
    """A stand-in for NB that refuses any transaction holding a bad owner, and records
    what it committed: the property under test is which owners end up written."""

    def __init__(self, bad: set[Owner], needs: dict[Owner, Owner] | None = None) -> None:
        self.bad, self.needs = bad, needs or {}
        self.committed: set[Owner] = set()
        self.transactions = 0

    def __call__(self, group: dict) -> None:
        self.transactions += 1
        if self.bad & set(group):
            raise RuntimeError(f"refused: {sorted(str(o) for o in self.bad & set(group))}")
        for owner in group:
            need = self.needs.get(owner)
            if need is not None and need not in self.committed and need not in group:
                raise LookupError(f"{owner} needs {need}")
        self.committed |= set(group)


@pytest.mark.parametrize("bad_count", [0, 1, 3])
def test_bad_owners_are_isolated_and_the_rest_commit(bad_count: int) -> None:
    owners = [pod(i) for i in range(100)]
    bad = {owners[i * 37 % 100] for i in range(bad_count)}
    write = Recorder(bad)
    failed = write_isolated(write, {o: () for o in owners}, owners)
    assert set(failed) == bad
    assert write.committed == set(owners) - bad
    assert all("refused" in m for m in failed.values())
    # k bad owners among n cost about 2·k·log2(n) transactions, not n.
    assert write.transactions <= 1 + bad_count * 2 * 8 + bad_count


def test_dependents_in_a_later_half_land_after_their_container() -> None:
    switch, pods = Owner("Subnet", "s"), [pod(i) for i in range(7)]
    bad = {pods[3]}
    write = Recorder(bad, needs={p: switch for p in pods})
    order = [CLUSTER, switch, *pods]
    failed = write_isolated(write, {o: () for o in order}, order)
    assert set(failed) == bad and write.committed == set(order) - bad


def test_nb_unavailable_is_nobodys_fault() -> None:
    def down(group: dict) -> None:
        raise NorthboundUnavailable("NB is down")

    with pytest.raises(NorthboundUnavailable):
        write_isolated(down, {pod(1): (), pod(2): ()})


def test_faults_back_off_and_recover() -> None:
    faults = Faults(base_delay=1.0, max_delay=8.0)
    owner = pod(1)
    first = faults.failed(owner, "boom", now=100.0)
    assert first.attempts == 1 and first.retry_at == 101.0
    assert faults.due(now=100.5) == []
    assert faults.due(now=101.0) == [owner]
    assert faults.due(now=101.5) == []  # one retry per due time
    for _ in range(6):
        last = faults.failed(owner, "boom", now=200.0)
    assert last.retry_at == 208.0  # capped
    assert faults.succeeded(owner) and owner not in faults and not faults.succeeded(owner)


def obj(name: str, namespace: str | None = None, labels: dict | None = None) -> dict:
    meta: dict = {"name": name, "labels": labels or {}}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta}


def selector_cache() -> ClusterCache:
    """pods indexed by namespace and label; `policies` follow pods: a pod change dirties
    the policies of its namespace whose selector picks the pod before or after."""

    def policies_selecting(cache: ClusterCache, old: dict | None, new: dict | None) -> set:
        hit = set()
        for version in (old, new):
            if version is None:
                continue
            ns = version["metadata"]["namespace"]
            for key in cache.indexed("policies", NAMESPACE_INDEX, ns):
                policy = cache.get("policies", key)
                if policy and matches(policy["spec"], version["metadata"]["labels"]):
                    hit.add(key)
        return hit

    return ClusterCache([
        CacheKind("pods", (IndexSpec(NAMESPACE_INDEX, namespace_keys),
                           IndexSpec(LABEL_INDEX, label_keys))),
        CacheKind("policies", (IndexSpec(NAMESPACE_INDEX, namespace_keys),),
                  {"pods": policies_selecting}),
    ])


def test_a_label_change_dirties_exactly_the_objects_that_select_it() -> None:
    cache = selector_cache()
    for name, app in (("web", "web"), ("db", "db")):
        policy = obj(f"allow-{name}", "a")
        policy["spec"] = {"matchLabels": {"app": app}}
        cache.store("policies", policy)
    other = obj("allow-web", "b")
    other["spec"] = {"matchLabels": {"app": "web"}}
    cache.store("policies", other)
    cache.store("pods", obj("p1", "a", {"app": "web"}))
    cache.take_dirty(0)
    cache.store("pods", obj("p1", "a", {"app": "db"}))  # web -> db
    dirty = cache.take_dirty(0)
    assert dirty["pods"] == {"a/p1"}
    assert dirty["policies"] == {"a/allow-web", "a/allow-db"}  # not b/allow-web
    cache.store("pods", obj("p1", "a", {"app": "db", "tier": "x"}))
    assert cache.take_dirty(0)["policies"] == {"a/allow-db"}


def test_indexes_follow_stores_forgets_and_relists() -> None:
    cache = selector_cache()
    cache.store("pods", obj("p1", "a", {"app": "web"}))
    cache.store("pods", obj("p2", "a", {"app": "db"}))
    cache.store("pods", obj("p3", "b", {"app": "web"}))
    assert select(cache, "pods", {"matchLabels": {"app": "web"}}) == {"a/p1", "b/p3"}
    assert select(cache, "pods", {"matchLabels": {"app": "web"}}, "a") == {"a/p1"}
    assert select(cache, "pods", {}, "a") == {"a/p1", "a/p2"}
    assert select(cache, "pods", None) == set()
    expr = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}
    assert select(cache, "pods", expr) == {"a/p2"}
    cache.forget("pods", obj("p1", "a"))
    assert cache.indexed("pods", LABEL_INDEX, ("app", "web")) == {"b/p3"}
    cache.take_dirty(0)
    cache.replace_all("pods", [obj("p2", "a", {"app": "web"})])  # p3 vanished, p2 relabelled
    assert cache.take_dirty(0)["pods"] == {"a/p2", "b/p3"}
    assert cache.indexed("pods", LABEL_INDEX, ("app", "web")) == {"a/p2"}
    assert cache.indexed("pods", NAMESPACE_INDEX, "b") == set()


@pytest.mark.parametrize(("selector", "labels", "picked"), [
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
     {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
])
def test_label_selector_semantics(selector: dict, labels: dict, picked: bool) -> None:
    assert matches(selector, labels) is picked


def test_kind_table() -> None:
    assert [k.name for k in KINDS] == ["subnets", "nodes", "pods", "qospolicies", "endpointslices",
                                      "services", "networkpolicies", "namespaces", "peersets"]
    assert BY_NAME["pods"].watch == LISTWATCH
    full = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"},
                         "managedFields": [{"huge": True}]},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "web"}]},
                {"name": "d", "image": "j"}]},
            "status": {"phase": "Running", "conditions": []}}
    slim = BY_NAME["pods"].slim(full)
    assert slim == {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"}},
                    "spec": {"nodeName": "n1",
                             "containers": [{"ports": [{"containerPort": 80, "name": "web"}]}]},
                    "status": {"phase": "Running"}}
    subnet = BY_NAME["subnets"].slim({"metadata": {"name": "s"}, "spec": {"cidrBlock": "x"}})
    assert subnet["spec"] == {"cidrBlock": "x"} and subnet["kind"] == "Subnet"
    assert BY_NAME["subnets"].group_version == ("kovn.io", "v1")
    assert BY_NAME["nodes"].group_version == ("", "v1")


def test_namespaces_dirty_subnets_only_when_their_switch_annotation_moves() -> None:
    cache = ClusterCache(k.cache_kind() for k in KINDS)
    ns = obj("team")
    cache.store("namespaces", ns)
    assert cache.take_dirty(0)["subnets"] == {"team"}  # a new namespace
    relabelled = obj("team", labels={"x": "y"})
    cache.store("namespaces", relabelled)
    assert not cache.take_dirty(0).get("subnets")
    annotated = obj("team")
    annotated["metadata"]["annotations"] = {"ovn.kubernetes.io/logical_switch": "s1"}
    cache.store("namespaces", annotated)
    assert cache.take_dirty(0)["subnets"] == {"team"}


def test_endpointslices_by_service() -> None:
    cache = ClusterCache([CacheKind("endpointslices",
                                    (IndexSpec(SERVICE_INDEX, service_keys),))])
    for name, service in (("web-abc", "web"), ("web-def", "web"), ("db-1", "db")):
        cache.store("endpointslices", obj(name, "a", {"kubernetes.io/service-name": service}))
    cache.store("endpointslices", obj("orphan", "a"))
    assert cache.indexed("endpointslices", SERVICE_INDEX, "a/web") == {"a/web-abc", "a/web-def"}
    assert cache.indexed("endpointslices", SERVICE_INDEX, "a/db") == {"a/db-1"}
