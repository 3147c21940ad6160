"""The owner index answers scoped observes exactly like a full scan would."""

from __future__ import annotations

from typing import Any

from northbound.apply import PlanCommand
from northbound.connection import NbConnection
from northbound.observe import observe
from northbound.plan import Observed, Plan
from northbound.reconciler import Reconciler
from tests.integration.conftest import NbServer
from tests.integration.test_reconciler import (
    PORT_A,
    SWITCH,
    make_hand_rows,
    settle,
    topology,
)


def in_connection(nb: NbConnection, fn: Any) -> Any:
    holder: list[Any] = []

    def run(tables: dict[str, Any]) -> Plan:
        holder.append(fn(tables))
        return Plan()

    nb.execute(PlanCommand(nb.api, run))
    return holder[0]


def as_set(observed: list[Observed]) -> set[tuple[Any, ...]]:
    return {(o.row.ident, repr(o.row.columns()), repr(sorted(o.row.references().items())),
             o.row.parent(), tuple(sorted(o.row.member_of)), o.uuid, o.parent_uuid,
             o.foreign_children) for o in observed}


def test_scoped_observe_matches_full_scan(nb_server: NbServer, nb: NbConnection,
                                          reconciler: Reconciler) -> None:
    desired = topology()
    reconciler.reconcile(desired)
    make_hand_rows(nb_server)
    nb_server.nbctl("lsp-del", PORT_A)  # drift the index must follow
    nb_server.nbctl("set", "Logical_Switch", SWITCH, "other_config:hand=1")
    settle(nb, nb_server)
    owners = {row.owner for row in desired}
    for owner in owners:
        indexed = in_connection(nb, lambda t, o=owner: observe(t, {o}, nb.owner_index))
        scanned = in_connection(nb, lambda t, o=owner: observe(t, {o}))
        assert as_set(indexed) == as_set(scanned), f"owner {owner}"
    everything = in_connection(nb, lambda t: observe(t, owners, nb.owner_index))
    assert as_set(everything) == as_set(in_connection(nb, lambda t: observe(t)))
