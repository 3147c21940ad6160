"""The controller's and the node agents' /metrics, /healthz and /readyz during a real run.

Scraped over HTTP on the machine's loopback, where the sandbox records them (the agents live
in node namespaces and listen in the root one): a Deployment and a Service later, the CNI
ADDs and their histogram went up by the pods started, the controller reconciled Pods and
Services and wrote NB transactions, and the default Subnet's IPAM gauge agrees with the
addresses the API server's pods carry (also once they are deleted again).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contract.podnetwork import POD_NETWORK, PodNetwork
from sandbox import metrics
from sandbox.cluster import Sandbox
from sandbox.controlplane import eventually
from tests.e2e.controlplane import Cluster
from tests.e2e.test_network_model import PORT, create_deployment, ready_pods

pytestmark = pytest.mark.e2e
NS = "metrics"
PODS = 3
DEFAULT_SUBNET = "ovn-default"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(url: str) -> Samples:
    status, text = get(f"{url}/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of `name` over the series that have `labels`."""
    return sum(v for (n, have), v in samples.items()
               if n == name and set(labels.items()) <= set(have))


def summed(urls: list[str], name: str, **labels: str) -> float:
    return sum(total(scrape(u), name, **labels) for u in urls)


def addresses_in(cluster: Cluster, subnet: str) -> int:
    """Pods holding an address of `subnet`, as their annotations say (not kovn's metrics)."""
    count = 0
    for pod in cluster.pods():
        text = (pod["metadata"].get("annotations") or {}).get(POD_NETWORK)
        if text and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed") \
                and not pod.get("spec", {}).get("hostNetwork") \
                and PodNetwork.decode(text).subnet == subnet:
            count += 1
    return count


def gauge_matches_annotations(controller: str, cluster: Cluster) -> Callable[[], bool]:
    def check() -> bool:
        used = total(scrape(controller), "kovn_subnet_ips_used", subnet=DEFAULT_SUBNET)
        return used == addresses_in(cluster, DEFAULT_SUBNET)
    return check


def test_endpoints_are_recorded_and_healthy(cluster_sandbox: Sandbox) -> None:
    found = metrics.endpoints(cluster_sandbox.config)
    assert set(found) == {"kovn-controller", *(f"{n.name}/agent" for n in cluster_sandbox.nodes)}
    assert cluster_sandbox.status()["metrics"] == found  # what `sandbox status` shows
    for url in found.values():
        assert get(f"{url}/healthz") == (200, "ok\n"), url
        assert get(f"{url}/readyz") == (200, "ok\n"), url
        assert total(scrape(url), "process_cpu_seconds_total") > 0


def test_values_move_with_pods_and_a_service(cluster_sandbox: Sandbox) -> None:
    found = metrics.endpoints(cluster_sandbox.config)
    controller = found.pop("kovn-controller")
    agents = list(found.values())
    cluster = Cluster(cluster_sandbox.kubeconfig)
    name = f"m{int(time.time()) % 100000}"  # a rerun after a vswitchd crash starts afresh
    before_ctl = scrape(controller)
    adds_ok = summed(agents, "kovn_cni_requests_total", command="ADD", result="ok")
    adds_timed = summed(agents, "kovn_cni_request_duration_seconds_count", command="ADD")
    ready_before = summed(agents, "kovn_pod_network_ready_seconds_count")
    sources_before = sum(summed(agents, "kovn_cni_add_network_source_total", source=s)
                         for s in ("annotation", "southbound"))

    create_deployment(cluster, NS, name, PODS)
    cluster.create_service(NS, name, name, "tcp", PORT)
    pods = ready_pods(cluster_sandbox, cluster, NS, name, PODS)

    started = summed(agents, "kovn_cni_requests_total", command="ADD", result="ok") - adds_ok
    assert started >= PODS
    assert summed(agents, "kovn_cni_request_duration_seconds_count", command="ADD") \
        - adds_timed >= started
    assert summed(agents, "kovn_pod_network_ready_seconds_count") - ready_before >= PODS
    # Every successful ADD says where it found the network first.
    assert sum(summed(agents, "kovn_cni_add_network_source_total", source=s)
               for s in ("annotation", "southbound")) - sources_before == started
    for node in {p.node for p in pods}:  # the agent of every node that started one of them
        assert total(scrape(metrics.endpoints(cluster_sandbox.config)[f"{node}/agent"]),
                     "kovn_cni_add_phase_duration_seconds_count", phase="ovn_installed") > 0

    def reconciled(kind: str) -> float:
        return total(scrape(controller), "kovn_controller_reconciles_total", kind=kind) \
            - total(before_ctl, "kovn_controller_reconciles_total", kind=kind)

    eventually(lambda: reconciled("Pod") > 0 and reconciled("Service") > 0, 30,
               "Pod and Service reconciles counted")
    after_ctl = scrape(controller)
    assert total(after_ctl, "kovn_controller_reconciled_objects_total", kind="Pod") \
        - total(before_ctl, "kovn_controller_reconciled_objects_total", kind="Pod") >= PODS
    assert total(after_ctl, "kovn_nb_transaction_duration_seconds_count") \
        > total(before_ctl, "kovn_nb_transaction_duration_seconds_count")
    assert total(after_ctl, "kovn_nb_transaction_rows_sum") \
        > total(before_ctl, "kovn_nb_transaction_rows_sum")
    assert total(after_ctl, "kovn_subnet_ips_used", subnet=DEFAULT_SUBNET) \
        - total(before_ctl, "kovn_subnet_ips_used", subnet=DEFAULT_SUBNET) >= PODS
    assert total(after_ctl, "kovn_subnet_ips_available", subnet=DEFAULT_SUBNET) \
        < total(before_ctl, "kovn_subnet_ips_available", subnet=DEFAULT_SUBNET)
    # The gauge is IPAM itself, read when scraped: it agrees with the pods' annotations.
    eventually(gauge_matches_annotations(controller, cluster), 30,
               "kovn_subnet_ips_used agrees with the pods' kovn.io/pod-network")
    assert total(after_ctl, "kovn_controller_leader") == 1
    assert total(after_ctl, "kovn_controller_pods_waiting_for_address") == 0
    assert total(after_ctl, "kovn_controller_owners_set_aside") == 0

    dels = summed(agents, "kovn_cni_requests_total", command="DEL")
    cluster.api.call("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/{name}")
    eventually(lambda: not cluster.pods(NS, f"app={name}"), 60, "the pods gone")
    eventually(gauge_matches_annotations(controller, cluster), 30,
               "addresses released in the gauge as in the annotations")
    eventually(lambda: summed(agents, "kovn_cni_requests_total", command="DEL") - dels >= PODS,
               30, f"{PODS} CNI DELs counted")
    for url in (controller, *agents):
        assert get(f"{url}/healthz")[0] == 200 and get(f"{url}/readyz")[0] == 200
