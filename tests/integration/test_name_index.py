"""The name index follows NB (real ovsdb-server): rows kovn creates, rows made by hand, renames
and deletes; the reconciler's clash check and links use it."""

from __future__ import annotations

import subprocess
import time

import pytest

from northbound.connection import NbConnection, NorthboundError
from northbound.reconciler import Reconciler
from northbound.rows import LogicalSwitch, Owner
from tests.integration.conftest import NbServer

SUBNET = Owner("Subnet", "blue")


def settle(nb: NbConnection, table: str, name: str, present: bool) -> None:
    deadline = time.monotonic() + 5
    while bool(nb.name_index.lookup(nb.tables, table, name)) is not present:
        assert time.monotonic() < deadline, f"{table} {name} present={present} not seen"
        time.sleep(0.02)


def test_index_follows_creates_renames_and_deletes(nb: NbConnection, reconciler: Reconciler,
                                                   nb_server: NbServer) -> None:
    reconciler.reconcile([LogicalSwitch(owner=SUBNET, name="blue")], owners={SUBNET})
    settle(nb, "Logical_Switch", "blue", True)
    db = f"--db={nb_server.remote}"
    subprocess.run(["ovn-nbctl", db, "ls-add", "by-hand"], check=True)
    settle(nb, "Logical_Switch", "by-hand", True)
    subprocess.run(["ovn-nbctl", db, "set", "Logical_Switch", "by-hand", "name=renamed"],
                   check=True)
    settle(nb, "Logical_Switch", "renamed", True)
    settle(nb, "Logical_Switch", "by-hand", False)
    # A hand-made row holding the name kovn wants is still a clash, found through the index.
    with pytest.raises(NorthboundError, match="already exists"):
        reconciler.reconcile([LogicalSwitch(owner=Owner("Subnet", "renamed"), name="renamed")],
                             owners={Owner("Subnet", "renamed")})
    reconciler.reconcile([], owners={SUBNET})
    settle(nb, "Logical_Switch", "blue", False)
