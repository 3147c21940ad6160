"""The controller's writers, fenced by leadership: nothing reaches NB or the API server
unless `may_write()` says this process leads (operators/leader.py).

The worker already waits while it does not lead; these fences close the remaining window:
a flush that was computing when the hold ran out must not commit from a view that another
leader may by now have changed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from kube.client import KubeClient, KubeError
from northbound.connection import NbConnection, NorthboundUnavailable
from northbound.plan import Plan
from northbound.reconciler import Reconciler
from northbound.rows import NbRow, Owner

MayWrite = Callable[[], bool]
NOT_LEADING = ("this controller does not hold the leader Lease (any more): it writes nothing "
               "until it does")


class NotLeading(NorthboundUnavailable):
    """A write refused by the fence. A NorthboundUnavailable, so the worker treats it as it
    treats NB being away (no owner is blamed, the flush is retried in full)."""


class FencedReconciler(Reconciler):
    def __init__(self, nb: NbConnection, may_write: MayWrite) -> None:
        super().__init__(nb)
        self.may_write = may_write

    def reconcile(self, desired: Iterable[NbRow], owners: Collection[Owner] | None = None,
                  what: str = "", spare: Collection[Owner] = ()) -> Plan:
        if not self.may_write():
            raise NotLeading(NOT_LEADING)
        return super().reconcile(desired, owners, what, spare)

    def apply(self, the_plan: Plan) -> Plan:
        if not self.may_write():
            raise NotLeading(NOT_LEADING)
        return super().apply(the_plan)


class FencedKube(KubeClient):
    """The controller's Kubernetes client: reads always, writes only while leading."""

    def __init__(self, kubeconfig: str | None, may_write: MayWrite, **kwargs: Any) -> None:
        super().__init__(kubeconfig, **kwargs)
        self.may_write = may_write

    def call(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if method != "GET" and not self.may_write():
            raise KubeError(0, NOT_LEADING, method, path)
        return super().call(method, path, *args, **kwargs)

    request = call
