"""Large set and map columns change by element, against a real ovsdb-server.

What the IDL sends is read off the wire (the `wire` fixture of conftest.py): one pod
joining a 5,000-address set is a mutate of one element, whatever the set's size, and elements
the transaction does not name (kovn's others, one added by hand meanwhile) stay.
"""

from __future__ import annotations

import json

from northbound import names
from northbound.connection import NbConnection
from northbound.reconciler import Reconciler
from northbound.rows import AddressSet, LoadBalancer, LogicalSwitch, LogicalSwitchPort, PortGroup
from tests.integration.conftest import NbServer, Wire, elements
from tests.integration.test_reconciler import NP, SUBNET, SVC, Snapshot, settle

AS_NAME = names.peer_address_set("big", "0")
N = 5_000


def ips(n: int) -> tuple[str, ...]:
    return tuple(f"10.{16 + i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n))


def addresses(server: NbServer, name: str) -> set[str]:
    return set(Snapshot(server).named("Address_Set", name)["addresses"])


def test_one_address_joining_a_5000_address_set(nb_server: NbServer, nb: NbConnection,
                                                reconciler: Reconciler, wire: Wire) -> None:
    start = AddressSet(owner=NP, name=AS_NAME, addresses=ips(N))
    reconciler.reconcile([start], owners={NP})
    new_ip = "10.99.0.1"
    desired = [AddressSet(owner=NP, name=AS_NAME, addresses=(*ips(N), new_ip))]

    # Planned first; then someone adds an element by hand before the plan is written.
    planned = reconciler.plan(desired, owners={NP})
    (update,) = planned.updates
    assert update.columns == {} and set(update.elements) == {"addresses"}
    nb_server.nbctl("add", "Address_Set", AS_NAME, "addresses", "10.98.0.1")
    settle(nb, nb_server)
    wire.mark()
    reconciler.apply(planned)

    assert addresses(nb_server, AS_NAME) == {*ips(N), new_ip, "10.98.0.1"}
    ((how, value),) = wire.writes_of("Address_Set", "addresses")
    assert (how, elements(value)) == ("insert", [new_ip])
    assert len(json.dumps(wire.transacts)) < 1000  # not 5,000 addresses

    # The hand element was written concurrently, not lost; as drift in a column kovn owns, the
    # next reconcile of the set takes it out, again by element.
    wire.mark()
    reconciler.reconcile(desired, owners={NP})
    ((how, value),) = wire.writes_of("Address_Set", "addresses")
    assert (how, elements(value)) == ("delete", ["10.98.0.1"])
    assert addresses(nb_server, AS_NAME) == {*ips(N), new_ip}
    assert not reconciler.reconcile(desired, owners={NP})
    assert not reconciler.reconcile(desired)  # unscoped too


def test_whole_column_writes_when_asked(nb: NbConnection, reconciler: Reconciler,
                                        wire: Wire) -> None:
    """element_min=None is the behaviour before element diffs (bench/nb_mutation.py)."""
    reconciler.reconcile([AddressSet(owner=NP, name=AS_NAME, addresses=ips(100))])
    wire.mark()
    Reconciler(nb, element_min=None).reconcile(
        [AddressSet(owner=NP, name=AS_NAME, addresses=ips(101))])
    ((how, value),) = wire.writes_of("Address_Set", "addresses")
    assert how == "update" and len(elements(value)) == 101


def test_vips_change_by_key(nb_server: NbServer, nb: NbConnection, reconciler: Reconciler,
                            wire: Wire) -> None:
    """A changed backend list is "delete key, insert key=value" in one mutate (the IDL's
    setkey); a key gone is a delete; vips made by hand meanwhile stay; 1,000 vips, 3 sent."""
    lb_name = names.load_balancer("default", "big", "tcp")
    vips = {f"10.96.{i // 250}.{i % 250 + 1}:80": f"10.16.0.{i % 250 + 1}:8080"
            for i in range(1000)}
    reconciler.reconcile([LoadBalancer(owner=SVC, name=lb_name, vips=vips)])
    changed, gone, added = "10.96.0.1:80", "10.96.0.2:80", "10.96.9.9:80"
    new_vips = {k: v for k, v in vips.items() if k != gone}
    new_vips[changed] = "10.16.0.1:8080,10.16.0.2:8080"
    new_vips[added] = "10.16.0.9:8080"
    desired = [LoadBalancer(owner=SVC, name=lb_name, vips=new_vips)]

    planned = reconciler.plan(desired)
    nb_server.nbctl("set", "Load_Balancer", lb_name, 'vips:"10.96.99.99:80"="10.16.9.9:80"')
    settle(nb, nb_server)
    wire.mark()
    reconciler.apply(planned)

    nb_vips = Snapshot(nb_server).named("Load_Balancer", lb_name)["vips"]
    assert nb_vips == {**new_vips, "10.96.99.99:80": "10.16.9.9:80"}
    writes = wire.writes_of("Load_Balancer", "vips")
    assert [how for how, _ in writes] == ["delete", "insert"]
    # setkey deletes every key it sets first (ovs/db/idl.py), so the added key is named too
    assert sorted(elements(writes[0][1])) == sorted([changed, gone, added])
    assert sorted(elements(writes[1][1])) == sorted([[changed, new_vips[changed]],
                                                     [added, new_vips[added]]])
    reconciler.reconcile(desired)  # the hand vip is drift in kovn's column
    assert Snapshot(nb_server).named("Load_Balancer", lb_name)["vips"] == new_vips
    assert not reconciler.reconcile(desired)


def test_port_group_ports_change_by_element(nb_server: NbServer, reconciler: Reconciler,
                                            wire: Wire) -> None:
    """Port_Group.ports is a container-side reference set: already one mutate per change."""
    ports = [names.pod_port("big", f"p{i}") for i in range(300)]
    base = [LogicalSwitch(owner=SUBNET, name="s"),
            *(LogicalSwitchPort(owner=SUBNET, name=p, switch="s") for p in ports)]
    pg_name = names.policy_port_group("big", "np")
    reconciler.reconcile([*base, PortGroup(owner=NP, name=pg_name, ports=frozenset(ports[1:]))])
    wire.mark()
    reconciler.reconcile([PortGroup(owner=NP, name=pg_name, ports=frozenset(ports[:-1]))],
                         owners={NP})
    assert sorted(how for how, _ in wire.writes_of("Port_Group", "ports")) == [
        "delete", "insert"]
    assert all(len(elements(v)) == 1 for _, v in wire.writes_of("Port_Group", "ports"))
    snap = Snapshot(nb_server)
    assert snap.names_of(snap.named("Port_Group", pg_name)["ports"]) == set(ports[:-1])
