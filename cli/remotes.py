"""argparse types for OVSDB addresses that may list a raft cluster's members."""

from __future__ import annotations

import argparse

from northbound.remotes import check_remote


def remote_list(value: str) -> str:
    """The `type=` of an option taking one OVSDB address or several, comma-separated (every
    member of a clustered database); the error says what is wrong with the value."""
    try:
        return check_remote(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
