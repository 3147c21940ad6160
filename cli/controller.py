"""`kovn controller`: the operator (Kubernetes -> OVN NB)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cli.remotes import remote_list, sandbox_default
from contract import defaults
from controller.config import ClusterConfig
from northbound.connection import DEFAULT_NB, NorthboundUnavailable


def run(args: argparse.Namespace) -> int:
    from operators.main import run as run_operator

    config = ClusterConfig(default_cidr=args.default_cidr, join_cidr=args.join_cidr,
                           service_cidr=args.service_cidr, mtu=args.mtu,
                           service_dns=args.service_dns)
    try:
        return run_operator(args.nb, args.kubeconfig, config, args.resync)
    except NorthboundUnavailable as exc:
        print(f"kovn: {exc}", file=sys.stderr)
        return 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "controller", help="run the controller: Kubernetes objects -> OVN NB rows",
        description="Watch Subnets, Namespaces, Nodes and Pods; allocate addresses; keep the "
        "OVN northbound database in step; annotate pods with kovn.io/pod-network.")
    parser.add_argument("--nb", default=os.environ.get("KOVN_NB") or sandbox_default(DEFAULT_NB),
                        type=remote_list,
                        help=f"NB address (default $KOVN_NB or {DEFAULT_NB}); a raft "
                        "cluster as all its members, comma-separated (kovn writes through "
                        "the leader and follows it when it changes)")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    parser.add_argument("--default-cidr",
                        default=os.environ.get("KOVN_DEFAULT_CIDR", defaults.POD_CIDR))
    parser.add_argument("--join-cidr", default=defaults.JOIN_CIDR)
    parser.add_argument("--service-cidr", default=defaults.SERVICE_CIDR)
    parser.add_argument("--service-dns", action="store_true",
                        help="answer Service names (<svc>.<ns>.svc.cluster.local) from OVN's "
                        "DNS table, with no DNS server; pods need the cluster DNS address "
                        "(10th of the service range) as nameserver and the usual search path")
    parser.add_argument("--mtu", type=int, default=defaults.DEFAULT_MTU)
    parser.add_argument("--resync", type=float, default=60.0,
                        help="seconds between full reconciles (drift repair, GC)")
    parser.set_defaults(func=run)
