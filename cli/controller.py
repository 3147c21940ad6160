"""`kovn controller`: the operator (Kubernetes -> OVN NB)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from contract import defaults
from controller.config import ClusterConfig
from northbound.connection import DEFAULT_NB, NorthboundUnavailable
from telemetry import address as metrics_address
from telemetry.address import TelemetryError, parse_address


def run(args: argparse.Namespace) -> int:
    from operators.main import run as run_operator

    try:
        parse_address(args.metrics_address)
    except TelemetryError as exc:
        print(f"kovn controller: {exc}", file=sys.stderr)
        return 2
    config = ClusterConfig(default_cidr=args.default_cidr, join_cidr=args.join_cidr,
                           service_cidr=args.service_cidr, mtu=args.mtu,
                           service_dns=args.service_dns)
    try:
        return run_operator(args.nb, args.kubeconfig, config, args.resync,
                            args.metrics_address)
    except NorthboundUnavailable as exc:
        print(f"kovn: {exc}", file=sys.stderr)
        return 1
    except TelemetryError as exc:
        print(f"kovn controller: {exc}", file=sys.stderr)
        return 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "controller", help="run the controller: Kubernetes objects -> OVN NB rows",
        description="Watch Subnets, Namespaces, Nodes and Pods; allocate addresses; keep the "
        "OVN northbound database in step; annotate pods with kovn.io/pod-network.")
    parser.add_argument("--nb", default=os.environ.get("KOVN_NB", DEFAULT_NB),
                        help=f"NB address (default $KOVN_NB or {DEFAULT_NB})")
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
    parser.add_argument("--metrics-address", metavar="HOST:PORT|off",
                        default=os.environ.get(metrics_address.CONTROLLER_ENV,
                                               metrics_address.CONTROLLER_DEFAULT),
                        help="serve /metrics (Prometheus), /healthz and /readyz here; off "
                        f"disables (default ${metrics_address.CONTROLLER_ENV} or "
                        f"{metrics_address.CONTROLLER_DEFAULT})")
    parser.set_defaults(func=run)
