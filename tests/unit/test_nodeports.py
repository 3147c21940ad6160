"""node.nodeports: which node ports the node's own addresses serve, and the nft table."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from typing import Any

import pytest

from node.nodeports import NodePort, node_ports, ruleset


def svc(kind: str, ports: list[dict[str, Any]], ip: str = "10.96.0.10") -> dict[str, Any]:
    return {"metadata": {"namespace": "demo", "name": "web"},
            "spec": {"type": kind, "clusterIP": ip, "ports": ports}}


TCP = {"port": 80, "protocol": "TCP", "nodePort": 30080}
UDP = {"port": 53, "protocol": "UDP", "nodePort": 30053}


def test_node_ports_of_node_port_and_load_balancer_services_only() -> None:
    found = node_ports([svc("NodePort", [TCP, UDP]), svc("LoadBalancer", [TCP], "10.96.0.11"),
                        svc("ClusterIP", [TCP], "10.96.0.12")])
    assert found == [NodePort("tcp", 30080), NodePort("udp", 30053)]


def test_no_node_port_no_sctp_no_headless() -> None:
    assert node_ports([svc("LoadBalancer", [{"port": 80, "protocol": "TCP"}]),
                       svc("NodePort", [{**TCP, "protocol": "SCTP"}]),
                       svc("NodePort", [TCP], ip="None")]) == []


def test_ruleset_sends_node_ports_to_the_gateway_router_and_masquerades_into_ovn0() -> None:
    text = ruleset([NodePort("tcp", 30080), NodePort("tcp", 30081)], "198.51.100.11")
    assert "elements = { 30080, 30081 }" in text
    assert "tcp dport @nodeports_tcp dnat ip to 198.51.100.11" in text
    assert 'oifname "ovn0" ct status dnat masquerade' in text
    assert text.startswith("table ip kovn {}\ndelete table ip kovn\n")  # one transaction


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("ip") is None,
                    reason="needs nft and ip (scripts/install.sh installs nftables)")
def test_the_kernel_takes_the_table_and_a_rewrite(tmp_path: Any) -> None:
    netns = f"kvn-nft-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        for ports in ([NodePort("tcp", 30080), NodePort("udp", 30053)], []):
            done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"],
                                  input=ruleset(ports, "100.64.0.3"), capture_output=True,
                                  text=True)
            assert done.returncode == 0, done.stderr
        listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "ip",
                                 "kovn"], capture_output=True, text=True, check=True).stdout
        assert "nodeports_tcp" in listed and "30080" not in listed
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
