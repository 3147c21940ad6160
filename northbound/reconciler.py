"""Make NB hold exactly the desired kovn rows: observe, plan, apply, in one transaction.

    with NbConnection("unix:/tmp/kovn-sandbox/nb.sock") as nb:
        Reconciler(nb).reconcile(desired_rows, owners={Owner("Pod", "default/web-1")})

`owners` scopes the reconcile: only rows of those owners are candidates for update or delete,
so a pod's reconcile never touches another pod's rows. Without `owners` the whole of kovn's
NB state is reconciled (the periodic full resync; mark-and-sweep of everything kovn owns).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from northbound.apply import PlanCommand, write_plan
from northbound.connection import NbConnection
from northbound.observe import observe
from northbound.plan import ELEMENT_WRITE_MIN, Observed, Plan, plan
from northbound.rows import NbRow, Owner

LOG = logging.getLogger(__name__)
TransactionHook = Callable[[Plan | None, float, bool], None]
"""Told of every writing transaction: (the plan applied, None if it failed; seconds; whether
it covered all of kovn's rows). The controller's metrics listen here (operators/metrics.py),
so northbound/ knows nothing of Prometheus."""


class Reconciler:
    def __init__(self, nb: NbConnection, element_min: int | None = ELEMENT_WRITE_MIN) -> None:
        """`element_min`: see plan.ELEMENT_WRITE_MIN; None writes changed columns whole (the
        behaviour before element diffs, kept so bench/nb_mutation.py can show the difference)."""
        self.nb = nb
        self.element_min = element_min
        self.on_transaction: TransactionHook | None = None

    def observe(self, owners: Collection[Owner] | None = None) -> list[Observed]:
        """kovn's rows as NB holds them now (read in the connection thread for consistency)."""
        holder: list[list[Observed]] = []

        def read(tables: dict[str, Any]) -> Plan:
            holder.append(observe(tables, owners, self.nb.owner_index))
            return Plan()

        self.nb.execute(PlanCommand(self.nb.api, read))
        return holder[-1]

    def plan(self, desired: Iterable[NbRow], owners: Collection[Owner] | None = None) -> Plan:
        """What reconcile() would do, without doing it (for dry runs and tests)."""
        return plan(desired, self.observe(owners), self.element_min)

    def reconcile(
        self,
        desired: Iterable[NbRow],
        owners: Collection[Owner] | None = None,
        what: str = "",
        spare: Collection[Owner] = (),
    ) -> Plan:
        """Apply the difference in one transaction; return the plan that was applied.

        `spare`: owners whose rows NB keeps exactly as they are, whatever `desired` says (the
        controller's owners set aside after a failure: a full sweep must not delete their
        last good rows)."""
        desired = list(desired)
        spared = set(spare)
        started = time.monotonic()

        def make_plan(tables: dict[str, Any]) -> Plan:
            actual = observe(tables, owners, self.nb.owner_index)
            if spared:
                actual = [o for o in actual if o.row.owner not in spared]
            return plan(desired, actual, self.element_min)

        result = self._write(PlanCommand(self.nb.api, make_plan, self.nb.name_index),
                             started, owners is None)
        elapsed_ms = (time.monotonic() - started) * 1000
        scope = what or (f"{len(owners)} owners" if owners is not None else "all kovn rows")
        for obs in result.kept:
            LOG.warning("keeping %s %r of %s: it holds %d rows kovn does not own; delete them "
                        "(or it) by hand", obs.row.TABLE, obs.row.key, obs.row.owner,
                        obs.foreign_children)
        if result:
            LOG.info("reconciled %s: %s in %.1f ms", scope, result.summary(), elapsed_ms)
        else:
            LOG.debug("reconciled %s: no change (%.1f ms)", scope, elapsed_ms)
        return result

    def apply(self, the_plan: Plan) -> Plan:
        """Write a plan computed elsewhere (e.g. from a previous observe) in one transaction."""

        def write(tables: dict[str, Any]) -> Plan:
            return the_plan

        return self._write(PlanCommand(self.nb.api, write, self.nb.name_index),
                           time.monotonic(), True)

    def _write(self, command: PlanCommand, started: float, full: bool) -> Plan:
        hook = self.on_transaction
        try:
            result: Plan = self.nb.execute(command)
        except BaseException:
            if hook is not None:
                hook(None, time.monotonic() - started, full)
            raise
        if hook is not None:
            hook(result, time.monotonic() - started, full)
        return result


__all__ = ["Reconciler", "write_plan"]
