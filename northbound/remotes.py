"""OVSDB remote lists: one address string naming every member of a clustered database.

`unix:/a.sock,unix:/b.sock,unix:/c.sock` or `tcp:10.0.0.1:6641,tcp:10.0.0.2:6641` is what
the OVSDB IDLs (C and Python), ovn-northd, ovn-controller's external_ids:ovn-remote and
ovn-nbctl/ovn-sbctl accept; kovn's --nb and --sb-remote take the same. Pure, no IO.
"""

from __future__ import annotations

from collections.abc import Iterable


def split_remotes(remote: str) -> list[str]:
    """The single remotes of a remote list, blanks dropped.

    Parsed like the Python IDL does (ovs.db.idl.Idl._parse_remotes): a piece without a colon
    is not a remote of its own but continues the previous one, so an address holding a comma
    survives.
    """
    remotes: list[str] = []
    for piece in remote.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if remotes and ":" not in piece:
            remotes[-1] += "," + piece
        else:
            remotes.append(piece)
    return remotes


def join_remotes(remotes: Iterable[str]) -> str:
    """One remote list from single remotes (the inverse of split_remotes)."""
    return ",".join(remotes)


def check_remote(remote: str) -> str:
    """The remote list normalised (no blanks, no empty pieces); ValueError saying what is
    wrong with it otherwise."""
    remotes = split_remotes(remote)
    if not remotes:
        raise ValueError("no address: give an OVSDB address like unix:/run/ovn/ovnnb_db.sock, "
                         "or several separated by commas (a raft cluster's members)")
    for single in remotes:
        method, sep, rest = single.partition(":")
        if not sep or not rest or method not in ("unix", "tcp", "ssl", "punix", "ptcp",
                                                 "pssl"):
            raise ValueError(f"{single!r} is not an OVSDB address (unix:PATH, tcp:IP:PORT or "
                             "ssl:IP:PORT; several separated by commas)")
        if method.startswith("p"):
            raise ValueError(f"{single!r} is a listening address; kovn connects, so give "
                             f"{single[1:]!r}")
    return join_remotes(remotes)
