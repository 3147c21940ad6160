"""Where the sandbox's kovn controller and node agents serve /metrics, /healthz and /readyz.

Every one listens on the machine's loopback (127.0.0.1, the root netns, where tests and users
run) on a port chosen free at `up` and recorded in the config, hence in state.json: `kovn
sandbox status` shows the URLs and a restarted agent gets its port back. The agents run in
their node's netns, which has no route to the machine's loopback, so they open their
listening socket in the root netns (`kovn node --metrics-netns <prefix>-host`, the name the
sandbox gives the root netns for the agents' API connections, sandbox/workloads.py).
"""

from __future__ import annotations

import socket
from typing import Any

from sandbox.config import SandboxConfig

HOST = "127.0.0.1"


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


def resolve_ports(config: SandboxConfig) -> dict[str, Any]:
    """Free ports for the controller and every agent (config fields), apart from the
    sandbox's other ports."""
    taken = {p for p in (config.apiserver_port, config.etcd_port, config.etcd_peer_port,
                         config.nb_tcp_port) if p}
    return {"controller_metrics_port": config.controller_metrics_port or _free_port(taken),
            "agent_metrics_ports": tuple(config.agent_metrics_ports) or
            tuple(_free_port(taken) for _ in range(config.nodes))}


def agent_port(config: SandboxConfig, node_name: str) -> int:
    """Node `node_name`'s agent port (0: none recorded, e.g. a sandbox from older code)."""
    for index, port in enumerate(config.agent_metrics_ports, start=1):
        if config.node_name(index) == node_name:
            return port
    return 0


def controller_args(config: SandboxConfig) -> list[str]:
    port = config.controller_metrics_port
    return ["--metrics-address", f"{HOST}:{port}" if port else "off"]


def agent_args(config: SandboxConfig, node_name: str) -> list[str]:
    port = agent_port(config, node_name)
    if not port:
        return ["--metrics-address", "off"]
    return ["--metrics-address", f"{HOST}:{port}", "--metrics-netns", config.host_netns]


def endpoints(config: SandboxConfig) -> dict[str, str]:
    """Daemon name (as in state.json) -> base URL of its /metrics, /healthz, /readyz."""
    found = {}
    if config.kube and config.controller and config.controller_metrics_port:
        # the name is sandbox.kube.CONTROLLER (not imported: sandbox.kube imports this)
        found["kovn-controller"] = f"http://{HOST}:{config.controller_metrics_port}"
    if config.runs_pods:
        for index in range(1, config.nodes + 1):
            port = agent_port(config, config.node_name(index))
            if port:
                found[f"{config.node_name(index)}/agent"] = f"http://{HOST}:{port}"
    return found
