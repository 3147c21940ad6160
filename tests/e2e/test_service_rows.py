"""What Services cost in NB, against the real control plane and a real `kovn controller`:
1,000 Services make O(Services) rows (one Load_Balancer each, nothing else owned by them),
and one endpoint added to one Service is one NB row changed by one element.

The Services have no selector and the test writes their EndpointSlices itself (3 ready
endpoints each), the documented way to back such a Service: no pods are needed, and the
controller consumes exactly what the EndpointSlice controller would have written.

NB is watched by a raw OVSDB monitor of every table and column (bench.services.NbMonitor),
so "one row changed" is what ovsdb-server reported for the whole database, not what kovn
believes it wrote; update2 carries a map column's modify as the changed pairs only, which
is how the test sees that one VIP of two changed and the other did not.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.services import (
    ENDPOINTS,
    NbMonitor,
    backends,
    create_parallel,
    delete_services,
    endpoint_ips,
    endpoints,
    ensure_namespace,
    group_members,
    lb_name,
    owned_rows,
    service_manifest,
    service_name,
    slice_manifest,
)
from contract.gateway import ExternalNetwork
from kube.client import KubeClient
from northbound import names
from sandbox.cluster import Sandbox
from sandbox.controlplane import ControllerProcess

pytestmark = pytest.mark.e2e
NS = "t-svc-rows"
SERVICES = 1000
PROBE = "probe"
"""The one Service with two ports (http 80, metrics 9090), each backed by its own slice, as
the EndpointSlice controller makes when pods expose different ports: adding an http
endpoint must change the :80 VIP and leave the :9090 one alone."""
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
NODES_NS = "t-svc-nodes"


@pytest.fixture
def api(kube_sandbox: Sandbox, controller: ControllerProcess) -> Iterator[KubeClient]:
    """A client with room for the creating threads, and the namespace; afterwards every
    Service deleted (with the controller still running) and NB checked free of their rows,
    so the session's later tests see the sandbox as it was."""
    client = KubeClient(kube_sandbox.kubeconfig, pool_size=24)
    ensure_namespace(client, NS)
    try:
        yield client
    finally:
        delete_services(client, NS)
        with NbMonitor(kube_sandbox.nb_remote, {"Load_Balancer": ("name",)}) as nb:
            nb.until(lambda: not any(r["name"].startswith(f"Service_{NS}/")
                                     for r in nb.rows["Load_Balancer"].values()),
                     60, what=f"the load balancers of {NS} deleted")
        client.close()


def create_probe(api: KubeClient) -> str:
    """The two-port Service and its two slices; its cluster IP."""
    made = api.create(f"/api/v1/namespaces/{NS}/services", service_manifest(
        NS, PROBE, ports=(("http", 80, 8080), ("metrics", 9090, 9090))))
    api.create(SLICES, slice_manifest(NS, PROBE, endpoint_ips(SERVICES), name=f"{PROBE}-http",
                                      ports=(("http", 8080),)))
    api.create(SLICES, slice_manifest(NS, PROBE, endpoint_ips(SERVICES + 1),
                                      name=f"{PROBE}-metrics", ports=(("metrics", 9090),)))
    return made["spec"]["clusterIP"]


def test_services_cost_one_row_each_and_one_endpoint_one_element(
        kube_sandbox: Sandbox, api: KubeClient) -> None:
    started = time.monotonic()
    with NbMonitor(kube_sandbox.nb_remote) as nb:
        create_parallel(api, NS, SERVICES - 1)
        probe_ip = create_probe(api)
        created = time.monotonic()
        prefix = f"Service_{NS}/"

        def complete() -> bool:
            ours = {u: r for u, r in nb.rows["Load_Balancer"].items()
                    if r["name"].startswith(prefix)}
            return (len(ours) == SERVICES and set(ours) <= group_members(nb)
                    and all(len(b) == ENDPOINTS for r in ours.values()
                            for b in backends(r).values()))

        converged = nb.until(complete, 60, what=f"{SERVICES} LBs x {ENDPOINTS} backends in NB")
        print(f"\n{SERVICES} Services + {SERVICES + 1} EndpointSlices created in "
              f"{created - started:.1f}s, NB complete {converged - started:.1f}s after the "
              "first create")

        with nb.cond:
            owned = owned_rows(nb, names.OwnerType.SERVICE, f"{NS}/")
            lbs = {r["name"]: u for u, r in nb.rows["Load_Balancer"].items()
                   if r["name"].startswith(prefix)}
        total = sum(owned.values())
        print(f"NB rows owned by the {SERVICES} Services: {dict(owned)} = "
              f"{total / SERVICES:.2f} rows per Service")
        assert owned == Counter({"Load_Balancer": SERVICES}), \
            f"Services own other rows than one Load_Balancer each: {dict(owned)}"
        expected = {lb_name(NS, service_name(i)) for i in range(SERVICES - 1)}
        assert set(lbs) == expected | {lb_name(NS, PROBE)}, "one TCP LB per Service, by name"

        uuid = lbs[lb_name(NS, PROBE)]
        with nb.cond:
            before = dict(nb.rows["Load_Balancer"][uuid]["vips"])
        http, metrics = f"{probe_ip}:80", f"{probe_ip}:9090"
        assert set(before) == {http, metrics}
        nb.quiet(1.0)  # nothing in flight: what follows is the change's alone
        mark = len(nb.changes)
        four = endpoint_ips(SERVICES, ENDPOINTS + 1)
        patched = time.monotonic()
        api.merge_patch(f"{SLICES}/{PROBE}-http", {"endpoints": endpoints(four)})
        want = {f"{ip}:8080" for ip in four}
        shown = nb.until(lambda: backends(nb.rows["Load_Balancer"][uuid]).get(http) == want,
                         10, what="the fourth http backend in NB")
        nb.quiet(2.0)  # a second transaction of the same flush, or a stray write, shows here
        with nb.cond:
            changes = nb.changes[mark:]
            after = dict(nb.rows["Load_Balancer"][uuid]["vips"])
        print(f"one endpoint added: NB shows it {(shown - patched) * 1000:.0f} ms after the "
              f"PATCH; NB changes since: {[(c.table, c.op, sorted(c.diff)) for c in changes]}")

    assert [(c.table, c.uuid, c.op) for c in changes] == [("Load_Balancer", uuid, "modify")], \
        "one endpoint must change exactly one NB row, in one transaction"
    diff = changes[0].diff
    assert set(diff) - {"_version"} == {"vips"}, f"columns other than vips changed: {diff}"
    assert set(diff["vips"]) == {http}, \
        f"only the :80 VIP's value may change (element-sized), got {diff['vips']}"
    assert set(diff["vips"][http].split(",")) == want
    assert after == {**before, http: diff["vips"][http]}, "the :9090 VIP is as it was"


def gateway_node(name: str, index: int) -> dict:
    """A Node object with an external network, as a node agent publishes it: the controller
    gives it a gateway router and a Chassis_Template_Var (no kubelet, no chassis needed)."""
    network = ExternalNetwork(f"198.51.100.{60 + index}/24", "198.51.100.1")
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": network.annotations()}}


def test_a_node_port_service_costs_the_same_rows_on_2_and_on_4_nodes(
        kube_sandbox: Sandbox, controller: ControllerProcess) -> None:
    """Node ports are one template load balancer on `^NODE_EXTERNAL_IP`: the nodes add one
    Chassis_Template_Var each (theirs), never a row of the Service's."""
    api = KubeClient(kube_sandbox.kubeconfig)
    ensure_namespace(api, NODES_NS)
    manifest = service_manifest(NODES_NS, "np")
    manifest["spec"]["type"] = "NodePort"
    api.create(f"/api/v1/namespaces/{NODES_NS}/services", manifest)
    api.create(f"/apis/discovery.k8s.io/v1/namespaces/{NODES_NS}/endpointslices",
               slice_manifest(NODES_NS, "np", endpoint_ips(0)))
    counts = {}
    added: list[str] = []
    try:
        with NbMonitor(kube_sandbox.nb_remote) as nb:
            for total in (2, 4):
                while len(added) < total:
                    name = f"gw{len(added) + 1}"
                    api.create("/api/v1/nodes", gateway_node(name, len(added)))
                    added.append(name)

                def ready(total: int = total) -> bool:
                    routers = {r["name"] for r in nb.rows["Logical_Router"].values()}
                    chassis = {r["chassis"]: r["variables"]
                               for r in nb.rows["Chassis_Template_Var"].values()}
                    lbs = {r["name"]: r for r in nb.rows["Load_Balancer"].values()}
                    node_lb = lbs.get(names.node_port_load_balancer(NODES_NS, "np", "TCP"))
                    return (all(f"GR_{n}" in routers and "NODE_EXTERNAL_IP" in chassis.get(n, {})
                                for n in added[:total])
                            and node_lb is not None and len(backends(node_lb)) == 1)

                nb.until(ready, 30, what=f"{total} gateway routers and the node-port LB")
                nb.quiet(1.0)
                with nb.cond:
                    counts[total] = owned_rows(nb, names.OwnerType.SERVICE, f"{NODES_NS}/np")
    finally:
        for name in added:
            api.delete(f"/api/v1/nodes/{name}")
        delete_services(api, NODES_NS)
        api.close()
    print(f"\nrows owned by a NodePort Service: {dict(counts[2])} with 2 nodes, "
          f"{dict(counts[4])} with 4")
    assert counts[2] == counts[4] == Counter({"Load_Balancer": 2}), counts
