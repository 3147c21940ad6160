"""`kovn show [KIND NAME] [--nb ADDRESS]`: the NB tree with Kubernetes owners."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cli.remotes import sandbox_default
from northbound import names
from northbound.connection import DEFAULT_NB, NbConnection, NorthboundUnavailable
from northbound.rows import Owner
from northbound.show import show_text

KINDS = {t.value.lower(): t for t in names.OwnerType}
KINDS.update({"policy": names.OwnerType.NETWORK_POLICY, "netpol": names.OwnerType.NETWORK_POLICY,
              "svc": names.OwnerType.SERVICE, "ns": names.OwnerType.NAMESPACE})


def nb_address(args: argparse.Namespace) -> str:
    return args.nb or os.environ.get("KOVN_NB") or sandbox_default(DEFAULT_NB)


def owner_from_args(kind: str | None, name: str | None) -> Owner | None:
    if kind is None:
        return None
    owner_type = KINDS.get(kind.lower())
    if owner_type is None:
        raise ValueError(f"unknown kind {kind!r}; use one of: {', '.join(sorted(KINDS))}")
    if owner_type == names.OwnerType.CLUSTER:
        return Owner(owner_type, name or names.CLUSTER_OWNER)
    if not name:
        raise ValueError(f"`kovn show {kind}` needs a name (namespace/name for namespaced kinds)")
    return Owner(owner_type, name)


def run(args: argparse.Namespace) -> int:
    try:
        owner = owner_from_args(args.kind, args.name)
    except ValueError as exc:
        print(f"kovn: {exc}", file=sys.stderr)
        return 2
    try:
        with NbConnection(nb_address(args), timeout=args.timeout) as nb:
            text = show_text(nb, owner)
    except NorthboundUnavailable as exc:
        print(f"kovn: {exc}", file=sys.stderr)
        return 1
    if text:
        print(text)
    elif owner is not None:
        print(f"no NB rows are owned by {owner}")
    else:
        print("the northbound database is empty")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "show",
        help="show the OVN NB as a tree with each row's Kubernetes owner",
        description="Print the OVN northbound database like `ovn-nbctl show`, with "
        "[Kind namespace/name] after every row kovn owns. Give KIND NAME (e.g. `pod default/web-1`,"
        " `subnet ovn-default`, `node node1`, `cluster`) to see only that object's rows.",
    )
    parser.add_argument("kind", nargs="?", help="owner kind: " + ", ".join(sorted(KINDS)))
    parser.add_argument("name", nargs="?", help="owner name: namespace/name or name")
    parser.add_argument("--nb", help=f"NB address (default $KOVN_NB or {DEFAULT_NB})")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for NB")
    parser.set_defaults(func=run)
