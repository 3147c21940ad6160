"""The node agent's metrics and probes, served on `kovn node --metrics-address`.

Metrics: every CNI request by command and result (`ok` or the CNI error's name, e.g.
`try_again_later`) with its duration; for every pod attached, where its ADD's time went
(waiting for the controller's annotation, the veth, the OVS port, ovn-controller's
ovn-installed) and how long the pod waited for its network (from the ADD's start, and from
the pod's creationTimestamp); requests in flight, read when scraped.

Probes: /healthz 200 while the agent runs (and, once started, its CNI server thread lives);
/readyz 200 once it serves CNI and its management port has its join address, what the
sandbox waits for before it calls a node ready (sandbox/workloads.py agent_ready).

The listening socket may be opened in another netns than the agent's (`--metrics-netns`):
the sandbox's agents run in node namespaces and listen on the machine's loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.attach import AddTimings
from node.cni_protocol import Code
from node.netns import in_netns
from telemetry.address import parse_address
from telemetry.server import TelemetryServer, process_registry

if TYPE_CHECKING:
    from node.agent import Agent

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SINCE_CREATION = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
PHASES = ("annotation", "veth", "ovs", "ovn_installed")


def result_name(code: int) -> str:
    """`ok`, or the CNI error code's name (`try_again_later`, `pod_not_found`...)."""
    if code == 0:
        return "ok"
    try:
        return Code(code).name.lower()
    except ValueError:
        return f"error_{code}"


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """`registry`: by default one of its own with the process_* series."""
        self.registry = registry = registry if registry is not None else process_registry()
        self.requests = Counter(
            "kovn_cni_requests_total", "CNI requests answered, by command and result (ok or "
            "the CNI error)", ["command", "result"], registry=registry)
        self.duration = Histogram(
            "kovn_cni_request_duration_seconds", "Time to answer a CNI request, by command",
            ["command"], buckets=SECONDS, registry=registry)
        self.add_phase = Histogram(
            "kovn_cni_add_phase_duration_seconds", "Where a successful ADD's time went: "
            "annotation (waiting for the controller), veth, ovs (the port on br-int), "
            "ovn_installed (waiting for ovn-controller)", ["phase"], buckets=SECONDS,
            registry=registry)
        self.network_ready = Histogram(
            "kovn_pod_network_ready_seconds", "From the start of a pod's ADD until "
            "ovn-controller installed its port", buckets=SECONDS, registry=registry)
        self.since_creation = Histogram(
            "kovn_pod_network_ready_since_creation_seconds", "From the pod's "
            "creationTimestamp until ovn-controller installed its port (whole-second "
            "resolution: the API server's clock)", buckets=SINCE_CREATION, registry=registry)
        self.network_from = Counter(
            "kovn_cni_add_network_source_total", "Successful ADDs by where they found the "
            "pod's network first: annotation, or southbound (its Port_Binding)", ["source"],
            registry=registry)
        self._phases = {p: self.add_phase.labels(p) for p in PHASES}
        self.live = _LiveCollector()
        registry.register(self.live)

    def cni_request(self, command: str, code: int, seconds: float) -> None:
        """CniServer's observer."""
        command = command if command in COMMANDS else "other"
        self.requests.labels(command, result_name(code)).inc()
        self.duration.labels(command).observe(seconds)

    def pod_added(self, timings: AddTimings) -> None:
        """Attachments' on_added."""
        for phase, value in zip(PHASES, (timings.annotation, timings.veth, timings.ovs,
                                         timings.ovn_installed), strict=True):
            self._phases[phase].observe(value)
        self.network_ready.observe(timings.total)
        self.network_from.labels(timings.network_from).inc()
        if timings.since_creation is not None:
            self.since_creation.observe(timings.since_creation)


class _LiveCollector(Collector):
    """Gauges read from the agent when scraped."""

    def __init__(self) -> None:
        self.agent: Agent | None = None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        server = self.agent.server if self.agent is not None else None
        if server is None:
            return
        busy = GaugeMetricFamily("kovn_cni_requests_in_flight", "CNI requests being answered")
        busy.add_metric([], server.busy)
        yield busy


class NodeProbes:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def liveness(self) -> str | None:
        agent = self.agent
        if agent.started and (agent.server is None or not agent.server.serving):
            return f"the CNI server on {agent.config.socket} has stopped; restart the agent"
        return None

    def readiness(self) -> str | None:
        agent = self.agent
        if not agent.started or agent.server is None:
            return "starting: Open_vSwitch, the API server and the restart reconcile first"
        if not agent.server.serving or not os.path.exists(agent.config.socket):
            return f"not serving CNI on {agent.config.socket}"
        if agent.mgmt is None or agent.mgmt.applied is None:
            return (f"management port has no join address yet: waiting for the Node "
                    f"{agent.config.node}'s kovn.io/node-network (written by the controller)")
        return None


def serve(agent: Agent, address: str, netns: str | None = None) -> TelemetryServer | None:
    """Serve the agent's metrics and probes on `address` (None when `off`), listening in
    `netns` if given; TelemetryError (saying what to do) if that fails."""
    where = parse_address(address)
    if where is None:
        return None
    agent.metrics.live.agent = agent
    probes = NodeProbes(agent)
    return TelemetryServer(where, agent.metrics.registry, probes.liveness, probes.readiness,
                           what=f"kovn node {agent.config.node}",
                           bind_in=(lambda: in_netns(netns)) if netns else None).start()
