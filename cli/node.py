"""`kovn node`: the node agent (OVS for OVN, management port, CNI server)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from cli.remotes import remote_list
from contract.defaults import SERVICE_CIDR
from node.cni_protocol import DEFAULT_SOCKET
from telemetry import address as metrics_address

LOG = logging.getLogger("kovn.node")


def run(args: argparse.Namespace) -> int:
    from contract.gateway import ExternalNetwork
    from kube.client import KubeError
    from node.agent import Agent, AgentConfig
    from node.cni_server import ServerError
    from node.ovs import OvsError
    from telemetry.address import TelemetryError, parse_address

    try:
        parse_address(args.metrics_address)
    except TelemetryError as exc:
        print(f"kovn node: {exc}", file=sys.stderr)
        return 2

    external = None
    if args.external_ip or args.external_gateway:
        try:
            external = ExternalNetwork(args.external_ip or "", args.external_gateway or "")
        except ValueError as exc:
            print(f"kovn node: --external-ip/--external-gateway: {exc}", file=sys.stderr)
            return 2
    config = AgentConfig(
        node=args.node, kubeconfig=args.kubeconfig, ovs_db=args.ovs_db,
        sb_remote=args.sb_remote, encap_ip=args.encap_ip, datapath_type=args.datapath_type,
        socket=args.socket, annotation_timeout=args.annotation_timeout, bridge=args.bridge,
        kube_netns=args.kube_netns or None, install_timeout=args.ovn_installed_timeout,
        external=external, external_bridge=args.external_bridge,
        service_cidr=args.service_cidr, metrics_address=args.metrics_address,
        metrics_netns=args.metrics_netns or None,
        southbound_networks=not args.annotation_only)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    agent = Agent(config)
    try:
        agent.start()
        agent.run(stop)
    except (OvsError, ServerError, KubeError, TelemetryError, OSError) as exc:
        print(f"kovn node: {exc}", file=sys.stderr)
        return 1
    finally:
        agent.close()
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "node", help="run the node agent: OVS for OVN, management port, CNI server",
        description="Configure this node's Open_vSwitch for OVN (chassis external_ids, br-int), "
        "keep the management port ovn0 in line with the Node's kovn.io/node-network annotation "
        "and serve the kovn-cni plugin on a unix socket. Runs in the node's host netns.")
    parser.add_argument("--node", required=True, help="Kubernetes Node name (= OVN chassis)")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    parser.add_argument("--ovs-db", required=True,
                        help="the node's Open_vSwitch database, e.g. "
                        "unix:/var/run/openvswitch/db.sock")
    parser.add_argument("--sb-remote", required=True, type=remote_list,
                        help="OVN southbound address for ovn-controller (external_ids:ovn-remote);"
                        " a raft cluster as all its members, comma-separated")
    parser.add_argument("--annotation-only", action="store_true",
                        help="ADDs wait for the pod's kovn.io/pod-network annotation alone, "
                        "without reading the same network from the pod's southbound "
                        "Port_Binding (which usually has it earlier under a burst)")
    parser.add_argument("--encap-ip", required=True, help="this node's Geneve tunnel address")
    parser.add_argument("--datapath-type", choices=("netdev", "system"), default="system",
                        help="br-int datapath: netdev = userspace (default system)")
    parser.add_argument("--socket", default=DEFAULT_SOCKET,
                        help=f"CNI socket to serve (default {DEFAULT_SOCKET})")
    parser.add_argument("--annotation-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long ADD waits for the pod's kovn.io/pod-network (default 30)")
    parser.add_argument("--ovn-installed-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long ADD waits for ovn-controller to install the port "
                        "(default 30)")
    parser.add_argument("--bridge", default="br-int", help="integration bridge (default br-int)")
    parser.add_argument("--kube-netns", default=os.environ.get("KOVN_KUBE_NETNS", ""),
                        metavar="NETNS",
                        help="talk to the API server from this netns (a name in /run/netns or "
                        "a path such as /proc/PID/ns/net): for when the agent's own netns "
                        "cannot reach it, as in the sandbox (default $KOVN_KUBE_NETNS, else "
                        "the agent's netns)")
    parser.add_argument("--external-ip", metavar="CIDR",
                        help="this node's address on the external network, with its prefix "
                        "length (e.g. 198.51.100.11/24): the gateway router GR_<node> owns "
                        "it and pods of natOutgoing Subnets leave as it; published on the "
                        "Node as kovn.io/external-ip (needs --external-gateway)")
    parser.add_argument("--external-gateway", metavar="IP",
                        help="the external network's next hop (kovn.io/external-gateway)")
    parser.add_argument("--service-cidr", default=SERVICE_CIDR, metavar="CIDR",
                        help="the cluster's Service range (kube-apiserver "
                             "--service-cluster-ip-range), routed to this node's gateway router "
                             f"for the node's own connections to Services (default {SERVICE_CIDR})")
    parser.add_argument("--external-bridge", default="br-ex", metavar="BRIDGE",
                        help="the OVS bridge holding the external uplink: with --external-ip "
                        "the agent sets ovn-bridge-mappings=physnet:BRIDGE (default br-ex)")
    metrics_address.add_address_option(parser, metrics_address.NODE_ENV,
                                       metrics_address.NODE_DEFAULT)
    parser.add_argument("--metrics-netns", default="", metavar="NETNS",
                        help="listen for --metrics-address in this netns (a name in /run/netns "
                        "or a path), e.g. where the scraper is, as in the sandbox (default: "
                        "the agent's netns)")
    parser.set_defaults(func=run)
