"""observe._memberships: what a scoped observe costs to find a row's containers.

Pure: containers are stand-ins carrying real ovs Datum values whose lookups and iterations
are counted. One Service's load balancer in a group of 5,000 must cost a lookup per
container, not a walk over the 5,000 members.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from ovs.db import data as ovs_data
from ovs.db import types as ovs_types

from northbound import names
from northbound.observe import _memberships
from northbound.rows import LoadBalancerGroup, LogicalRouter


class CountingValues(dict):
    """A Datum's `values`, counting membership tests and elements iterated."""

    lookups = 0
    iterated = 0

    def __contains__(self, key: object) -> bool:
        CountingValues.lookups += 1
        return super().__contains__(key)

    def __iter__(self) -> Any:
        for key in super().__iter__():
            CountingValues.iterated += 1
            yield key


def container(name: str, members: list[uuid.UUID]) -> Any:
    values = CountingValues({ovs_data.Atom(ovs_types.UuidType, m): None for m in members})
    return SimpleNamespace(name=name, uuid=uuid.uuid4(),
                           _data={"load_balancer": SimpleNamespace(values=values)})


def tables(**containers: list[Any]) -> dict[str, Any]:
    return {table: SimpleNamespace(rows={c.uuid: c for c in rows})
            for table, rows in containers.items()}


def test_scoped_memberships_cost_a_lookup_per_container() -> None:
    others = [uuid.uuid4() for _ in range(5_000)]
    mine = uuid.uuid4()
    routers = [container(names.gateway_router(f"n{i}"), [*others[:1000], mine] if i == 1
                         else others[:1000]) for i in range(3)]
    nb = tables(Load_Balancer_Group=[container(names.CLUSTER_LB_GROUP, [*others, mine])],
                Logical_Router=routers)
    CountingValues.lookups = CountingValues.iterated = 0
    found = _memberships(nb, [("Load_Balancer", SimpleNamespace(uuid=mine))])
    assert found == {mine: {LoadBalancerGroup.membership(names.CLUSTER_LB_GROUP),
                            LogicalRouter.membership(names.gateway_router("n1"))}}
    assert CountingValues.lookups == 4  # candidates x containers
    assert CountingValues.iterated == 0


def test_many_candidates_walk_each_container_once() -> None:
    """A full observe (every LB a candidate) costs the memberships NB holds, once."""
    lbs = [uuid.uuid4() for _ in range(300)]
    nb = tables(Load_Balancer_Group=[container(names.CLUSTER_LB_GROUP, lbs[:200])],
                Logical_Router=[container("GR_n1", lbs[100:150])])
    CountingValues.lookups = CountingValues.iterated = 0
    found = _memberships(nb, [("Load_Balancer", SimpleNamespace(uuid=u)) for u in lbs])
    assert CountingValues.iterated == 250 and CountingValues.lookups == 0
    assert len(found) == 200
    assert len(found[lbs[120]]) == 2 and lbs[250] not in found


def test_rows_of_other_tables_cost_nothing() -> None:
    nb = tables(Load_Balancer_Group=[container(names.CLUSTER_LB_GROUP, [uuid.uuid4()])])
    CountingValues.lookups = CountingValues.iterated = 0
    pods = [("Logical_Switch_Port", SimpleNamespace(uuid=uuid.uuid4())) for _ in range(100)]
    assert _memberships(nb, pods) == {}
    assert CountingValues.lookups == CountingValues.iterated == 0
