"""telemetry.server over real HTTP on 127.0.0.1, and the metric definitions of the controller
and the node agent, read back the way Prometheus reads them (the text exposition)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.config import ClusterConfig
from kube.client import KubeClient
from node.agent import Agent, AgentConfig
from node.attach import AddTimings, seconds_since
from node.cni_protocol import Code
from node.metrics import NodeMetrics, NodeProbes, result_name
from northbound.plan import Plan
from northbound.reconciler import Reconciler
from northbound.rows import Owner
from operators.metrics import ControllerMetrics
from operators.probes import ControllerProbes, ControllerTelemetry
from operators.state import JOIN_POOL
from operators.worker import Controller
from telemetry.address import Address, TelemetryError, parse_address
from telemetry.server import TelemetryServer
from tests.unit.test_kube_client import write_kubeconfig


def get(address: Address, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed as Prometheus would."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def serve(registry: CollectorRegistry, liveness=lambda: None, readiness=lambda: None
          ) -> TelemetryServer:
    return TelemetryServer(Address("127.0.0.1", 0), registry, liveness, readiness,
                           what="test").start()


@pytest.fixture
def served() -> Iterator[list[TelemetryServer]]:
    servers: list[TelemetryServer] = []
    yield servers
    for server in servers:
        server.stop()


# --- addresses ---------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:9476", Address("0.0.0.0", 9476)),
    ("127.0.0.1:0", Address("127.0.0.1", 0)),
    ("[::]:9477", Address("::", 9477)),
    ("localhost:80", Address("localhost", 80)),
    ("off", None), ("OFF", None),
])
def test_addresses(text: str, expected: Address | None) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9476", ":9476", "host:", "host:http", "host:70000", ""])
def test_bad_addresses_say_the_expected_form(text: str) -> None:
    with pytest.raises(TelemetryError, match=r"expected HOST:PORT .* or off"):
        parse_address(text)


# --- the server --------------------------------------------------------------------------
def test_metrics_and_probes_over_http(served: list[TelemetryServer]) -> None:
    registry = CollectorRegistry()
    hits = Counter("kovn_test_hits_total", "hits", ["what"], registry=registry)
    hits.labels("x").inc(3)
    problem: list[str | None] = [None]
    server = serve(registry, liveness=lambda: problem[0], readiness=lambda: "starting: wait")
    served.append(server)
    assert server.address.port != 0
    status, text = get(server.address, "/metrics")
    assert status == 200
    assert samples(text)[("kovn_test_hits_total", (("what", "x"),))] == 3
    assert get(server.address, "/healthz") == (200, "ok\n")
    assert get(server.address, "/readyz") == (503, "starting: wait\n")
    problem[0] = "the worker thread has exited\nsecond line not shown"
    assert get(server.address, "/healthz") == (503, "the worker thread has exited\n")
    assert get(server.address, "/nothing")[0] == 404


def test_a_healthy_remark_and_a_failing_check(served: list[TelemetryServer]) -> None:
    def broken() -> str | None:
        raise KeyError("gone")

    server = serve(CollectorRegistry(), liveness=broken, readiness=lambda: "ok: standby")
    served.append(server)
    assert get(server.address, "/readyz") == (200, "ok: standby\n")
    status, text = get(server.address, "/healthz")
    assert status == 503 and "KeyError" in text


def test_a_taken_port_is_a_clear_error(served: list[TelemetryServer]) -> None:
    first = serve(CollectorRegistry())
    served.append(first)
    with pytest.raises(TelemetryError, match=r"127\.0\.0\.1:\d+: .*in use.*--metrics-address"):
        TelemetryServer(first.address, CollectorRegistry(), lambda: None, lambda: None)


def test_stop_frees_the_port() -> None:
    server = serve(CollectorRegistry())
    address = server.address
    server.stop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))


def test_the_one_thread_outlives_a_client_that_gives_up(served: list[TelemetryServer]) -> None:
    server = serve(CollectorRegistry())
    served.append(server)
    with socket.create_connection((server.address.host, server.address.port)) as sock:
        sock.sendall(b"GET /metr")  # half a request, then gone
    started = time.monotonic()
    assert get(server.address, "/healthz") == (200, "ok\n")
    assert time.monotonic() - started < 2


# --- the controller's metrics ------------------------------------------------------------
def controller(tmp_path: Path, metrics: ControllerMetrics | None = None) -> Controller:
    """A Controller that is never started: its state is what the collector reads."""
    kube = KubeClient(write_kubeconfig(tmp_path / "kubeconfig", 1), timeout=1)
    return Controller(ClusterConfig(), kube, Reconciler(None), metrics=metrics)  # type: ignore[arg-type]


def test_controller_counters_and_state_gauges(tmp_path: Path,
                                              served: list[TelemetryServer]) -> None:
    telemetry = ControllerTelemetry(ControllerMetrics(), ControllerProbes(), None)
    ctl = controller(tmp_path, telemetry.metrics)
    metrics = ctl.metrics
    assert metrics is telemetry.metrics
    metrics.kind_reconciled("Pod", 40, 0.02)
    metrics.kind_reconciled("Pod", 2, 0.001)
    metrics.reconcile_error("Pod", "TranslationFailed")
    metrics.flushed(True, 0.3, 12)
    ctl.reconciler.on_transaction(Plan(creates=(1, 2, 3), deletes=(4,)), 0.01, False)  # type: ignore[arg-type, misc]
    ctl.reconciler.on_transaction(None, 0.5, True)  # type: ignore[misc]
    state = ctl.state
    pool = state.ipam.set_pool("ovn-default", "10.16.0.0/24", "10.16.0.1")
    state.ipam.set_pool(JOIN_POOL, "100.64.0.0/16", "100.64.0.1").allocate("node1")
    for i in range(3):
        pool.allocate(f"ns/p{i}")
    state.waiting.update({"ns/w1", "ns/w2"})
    state.faults.failed(Owner("Pod", "ns/bad"), "refused")
    state.cache.store("pods", {"metadata": {"name": "p0", "namespace": "ns"}})
    telemetry.set_leader(False)
    server = serve(metrics.registry)
    served.append(server)
    got = samples(get(server.address, "/metrics")[1])
    assert got[("kovn_controller_reconciles_total", (("kind", "Pod"),))] == 2
    assert got[("kovn_controller_reconciled_objects_total", (("kind", "Pod"),))] == 42
    assert got[("kovn_controller_reconcile_duration_seconds_count", (("kind", "Pod"),))] == 2
    assert got[("kovn_controller_reconcile_errors_total",
                (("kind", "Pod"), ("reason", "TranslationFailed")))] == 1
    assert got[("kovn_controller_flush_duration_seconds_count", (("mode", "full"),))] == 1
    assert got[("kovn_controller_owners_written_total", ())] == 12
    assert got[("kovn_nb_transaction_duration_seconds_count", (("scope", "owners"),))] == 1
    assert got[("kovn_nb_transaction_rows_sum", (("scope", "owners"),))] == 4
    assert got[("kovn_nb_row_operations_total", (("op", "create"),))] == 3
    assert got[("kovn_nb_transaction_errors_total", (("scope", "full"),))] == 1
    assert got[("kovn_subnet_ips_used", (("subnet", "ovn-default"),))] == 3
    assert got[("kovn_subnet_ips_available", (("subnet", "ovn-default"),))] == 253 - 3
    assert ("kovn_subnet_ips_used", (("subnet", JOIN_POOL),)) not in got
    assert got[("kovn_controller_pods_waiting_for_address", ())] == 2
    assert got[("kovn_controller_owners_set_aside", (("owner_type", "Pod"),))] == 1
    assert got[("kovn_controller_cached_objects", (("kind", "Pod"),))] == 1
    assert got[("kovn_controller_leader", ())] == 0
    # another controller's metrics are its own
    other = samples(generate_latest(controller(tmp_path).metrics.registry).decode())
    assert ("kovn_controller_reconciles_total", (("kind", "Pod"),)) not in other
    assert ("kovn_subnet_ips_used", (("subnet", "ovn-default"),)) not in other


def test_controller_probes(tmp_path: Path) -> None:
    probes = ControllerProbes(stuck_after=30)
    assert probes.liveness() is None
    assert probes.readiness().startswith("starting: connecting")
    ctl = controller(tmp_path)
    probes.controller = ctl
    assert probes.readiness().startswith("starting: listing")
    ctl.ready.set()
    ctl._thread = threading.Thread(target=lambda: time.sleep(5), daemon=True)
    ctl._thread.start()
    assert probes.liveness() is None and probes.readiness() is None
    ctl.last_tick -= 60
    assert "has not come round for 60s" in probes.liveness()
    assert probes.readiness() == probes.liveness()
    probes.leader = False  # a standby has no worker to watch, and is ready to take over
    assert probes.liveness() is None and probes.readiness().startswith("ok: standby")
    probes.leader = True
    ctl._thread = threading.Thread(target=lambda: None)
    ctl._thread.start()
    ctl._thread.join()
    assert "worker thread has exited" in probes.liveness()


def test_off_serves_nothing() -> None:
    telemetry = ControllerTelemetry.serve("off")
    assert telemetry.server is None
    telemetry.set_leader(None)  # no leader election: the one writer is the leader
    assert samples(generate_latest(telemetry.metrics.registry).decode())[
        ("kovn_controller_leader", ())] == 1
    telemetry.close()


# --- the node agent's metrics ------------------------------------------------------------
def test_cni_results_are_named() -> None:
    assert result_name(0) == "ok"
    assert result_name(Code.TRY_AGAIN_LATER) == "try_again_later"
    assert result_name(999) == "error_999"


def test_node_metrics(served: list[TelemetryServer]) -> None:
    metrics = NodeMetrics()
    for command, code in (("ADD", 0), ("ADD", 0), ("ADD", int(Code.TRY_AGAIN_LATER)),
                          ("DEL", 0), ("BOGUS", int(Code.INVALID_ENVIRONMENT))):
        metrics.cni_request(command, code, 0.2)
    metrics.pod_added(AddTimings(annotation=0.5, veth=0.01, ovs=0.02, ovn_installed=0.3,
                                 total=0.9, since_creation=2.0))
    metrics.pod_added(AddTimings(0.1, 0.01, 0.02, 0.2, 0.4, None, network_from="southbound"))
    server = serve(metrics.registry)
    served.append(server)
    got = samples(get(server.address, "/metrics")[1])
    assert got[("kovn_cni_requests_total", (("command", "ADD"), ("result", "ok")))] == 2
    assert got[("kovn_cni_requests_total",
                (("command", "ADD"), ("result", "try_again_later")))] == 1
    assert got[("kovn_cni_requests_total",
                (("command", "other"), ("result", "invalid_environment")))] == 1
    assert got[("kovn_cni_request_duration_seconds_count", (("command", "ADD"),))] == 3
    assert got[("kovn_pod_network_ready_seconds_count", ())] == 2
    assert got[("kovn_pod_network_ready_since_creation_seconds_count", ())] == 1
    for source in ("annotation", "southbound"):
        assert got[("kovn_cni_add_network_source_total", (("source", source),))] == 1
    assert got[("kovn_cni_add_phase_duration_seconds_sum", (("phase", "ovn_installed"),))] \
        == pytest.approx(0.5)
    assert got[("process_open_fds", ())] > 0  # the process's own series come along


def test_node_probes_before_start() -> None:
    agent = Agent(AgentConfig(node="n1", kubeconfig=None, ovs_db="unix:/nonexistent",
                              sb_remote="tcp:127.0.0.1:6642", encap_ip="192.0.2.1"))
    probes = NodeProbes(agent)
    assert probes.liveness() is None
    assert probes.readiness().startswith("starting")


def test_seconds_since_a_creation_timestamp() -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    assert 4 <= seconds_since(stamp) <= 7
    assert seconds_since("garbage") is None and seconds_since(None) is None
