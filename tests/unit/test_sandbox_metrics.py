"""sandbox.metrics: free loopback ports at `up`, kept in the config (so in state.json), and the
flags they become."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sandbox import metrics
from sandbox.config import SandboxConfig


def test_ports_are_chosen_once_and_survive_state_json(tmp_path: Path) -> None:
    config = SandboxConfig(state_dir=tmp_path, nodes=3, prefix="kvz", apiserver_port=0,
                           etcd_port=0, etcd_peer_port=0)
    config = dataclasses.replace(config, **metrics.resolve_ports(config))
    ports = [config.controller_metrics_port, *config.agent_metrics_ports]
    assert len(set(ports)) == 4 and all(ports)
    assert metrics.resolve_ports(config) == {
        "controller_metrics_port": ports[0], "agent_metrics_ports": tuple(ports[1:])}
    loaded = SandboxConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert loaded == config
    assert metrics.endpoints(loaded) == {
        "kovn-controller": f"http://127.0.0.1:{ports[0]}",
        "node1/agent": f"http://127.0.0.1:{ports[1]}",
        "node2/agent": f"http://127.0.0.1:{ports[2]}",
        "node3/agent": f"http://127.0.0.1:{ports[3]}"}
    assert metrics.controller_args(loaded) == ["--metrics-address", f"127.0.0.1:{ports[0]}"]
    assert metrics.agent_args(loaded, "node2") == [
        "--metrics-address", f"127.0.0.1:{ports[2]}", "--metrics-netns", "kvz-host"]


def test_a_sandbox_recorded_without_ports_serves_none(tmp_path: Path) -> None:
    config = SandboxConfig(state_dir=tmp_path)
    assert metrics.controller_args(config) == ["--metrics-address", "off"]
    assert metrics.agent_args(config, "node1") == ["--metrics-address", "off"]
    assert metrics.endpoints(config) == {}


def test_only_what_runs_is_listed(tmp_path: Path) -> None:
    config = SandboxConfig(state_dir=tmp_path, controller=False, workloads=False,
                           controller_metrics_port=1234, agent_metrics_ports=(1235, 1236))
    assert metrics.endpoints(config) == {}
