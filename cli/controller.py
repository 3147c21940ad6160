"""`kovn controller`: the operator (Kubernetes -> OVN NB)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cli.remotes import remote_list, sandbox_default
from contract import defaults
from controller.config import ClusterConfig
from northbound import names
from northbound.connection import DEFAULT_NB, NorthboundUnavailable
from telemetry import address as metrics_address
from telemetry.address import TelemetryError, parse_address


def run(args: argparse.Namespace) -> int:
    from operators.leader import LeaseTiming, default_identity, default_namespace
    from operators.main import Election
    from operators.main import run as run_operator

    try:
        parse_address(args.metrics_address)
    except TelemetryError as exc:
        print(f"kovn controller: {exc}", file=sys.stderr)
        return 2
    config = ClusterConfig(default_subnet=args.default_subnet, default_cidr=args.default_cidr,
                           join_cidr=args.join_cidr,
                           service_cidr=args.service_cidr, mtu=args.mtu,
                           service_dns=args.service_dns)
    try:
        election = Election(enabled=args.leader_elect,
                            identity=args.identity or default_identity(),
                            namespace=args.lease_namespace or default_namespace(),
                            timing=LeaseTiming(args.lease_duration, args.renew_deadline,
                                               args.retry_period))
    except ValueError as exc:
        print(f"kovn: {exc}", file=sys.stderr)
        return 2
    try:
        return run_operator(args.nb, args.kubeconfig, config, args.resync, election,
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
    parser.add_argument("--nb", default=os.environ.get("KOVN_NB") or sandbox_default(DEFAULT_NB),
                        type=remote_list,
                        help=f"NB address (default $KOVN_NB or {DEFAULT_NB}); a raft "
                        "cluster as all its members, comma-separated (kovn writes through "
                        "the leader and follows it when it changes)")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                        help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    parser.add_argument("--default-subnet", default=names.DEFAULT_SUBNET,
                        help="name of the Subnet created at start for namespaces no Subnet "
                        f"claims (default {names.DEFAULT_SUBNET})")
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
    metrics_address.add_address_option(parser, metrics_address.CONTROLLER_ENV,
                                       metrics_address.CONTROLLER_DEFAULT)
    lease = parser.add_argument_group(
        "leader election", "Only the holder of a coordination.k8s.io Lease writes NB and the "
        "API; the others stand by and say so. A leader that cannot renew stops writing "
        "before the Lease expires.")
    lease.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                       help="stand by unless holding the Lease (default on; turn off only for "
                       "a controller that is alone by construction)")
    lease.add_argument("--identity", default="",
                       help="this candidate's name (default $POD_NAME, else host_pid)")
    lease.add_argument("--lease-namespace", default="",
                       help=f"namespace of the Lease {defaults.LEADER_LEASE} (default "
                       f"$POD_NAMESPACE, else {defaults.SYSTEM_NAMESPACE})")
    # client-go's ratios; a standby takes over within duration + retry of the last renewal.
    lease.add_argument("--lease-duration", type=float, default=10.0, metavar="SECONDS",
                       help="how long a standby waits for a silent leader (default 10)")
    lease.add_argument("--renew-deadline", type=float, default=7.0, metavar="SECONDS",
                       help="how long a leader writes without a renewal (default 7)")
    lease.add_argument("--retry-period", type=float, default=2.0, metavar="SECONDS",
                       help="between renewals and standby checks (default 2)")
    parser.set_defaults(func=run)
