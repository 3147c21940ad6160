"""argparse types for OVSDB addresses that may list a raft cluster's members."""

from __future__ import annotations

import argparse
from pathlib import Path

from northbound.remotes import check_remote, join_remotes, split_remotes


def remote_list(value: str) -> str:
    """The `type=` of an option taking one OVSDB address or several, comma-separated (every
    member of a clustered database); the error says what is wrong with the value."""
    try:
        return check_remote(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sandbox_default(remote: str) -> str:
    """A default address naming the sandbox's standalone socket (`unix:/tmp/kovn-sandbox/
    nb.sock`), or, when that socket is absent but a sandbox started with `--ovn-ha` runs its
    members beside it (nb1.sock, nb2.sock, nb3.sock), all of them: `kovn show` and `kovn
    trace` then work on either sandbox without --nb/--sb."""
    single = split_remotes(remote)
    if len(single) != 1 or not single[0].startswith("unix:"):
        return remote
    path = Path(single[0].removeprefix("unix:"))
    if path.exists():
        return remote
    members = [path.with_name(f"{path.stem}{i}{path.suffix}") for i in range(1, 4)]
    if any(m.exists() for m in members):
        return join_remotes(f"unix:{m}" for m in members)
    return remote
