"""Entry point of the `kovn` command.

Each verb lives in the module of the layer it serves and exposes `register(subparsers)`;
this module only wires them together, importing them lazily enough that `kovn --help`
works even when an optional layer's dependencies are broken.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (module, description) of every verb group; each module has register(subparsers).
VERB_MODULES: tuple[str, ...] = (
    "cli.show",
    "cli.trace",
    "cli.controller",
    "cli.node",
    "sandbox.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kovn",
        description="kovn: a Kubernetes network controller on OVN/Open vSwitch",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for module_name in VERB_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
