"""sandbox.lbpool.assign: which LoadBalancer Service gets which address of the pool."""

from __future__ import annotations

from typing import Any

from sandbox.lbpool import assign

POOL = ["198.51.100.241", "198.51.100.242", "198.51.100.243"]


def svc(kind: str = "LoadBalancer", ip: str | None = None, wanted: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind}
    if wanted:
        spec["loadBalancerIP"] = wanted
    ingress = [{"ip": ip}] if ip else []
    return {"spec": spec, "status": {"loadBalancer": {"ingress": ingress}}}


def test_new_services_get_the_lowest_free_addresses_in_key_order() -> None:
    assert assign({"a/x": svc(), "a/y": svc()}, POOL) == {
        "a/x": "198.51.100.241", "a/y": "198.51.100.242"}


def test_kept_addresses_stay_and_are_not_handed_out_again() -> None:
    services = {"a/x": svc(ip="198.51.100.242"), "a/y": svc()}
    assert assign(services, POOL) == {"a/y": "198.51.100.241"}


def test_a_requested_free_address_is_honoured() -> None:
    assert assign({"a/x": svc(wanted="198.51.100.243")}, POOL) == {"a/x": "198.51.100.243"}


def test_other_types_release_their_pool_address_and_others_are_left_alone() -> None:
    services = {"a/x": svc("ClusterIP", ip="198.51.100.241"), "a/y": svc("NodePort"),
                "a/z": svc("ClusterIP", ip="192.0.2.7")}
    assert assign(services, POOL) == {"a/x": None}


def test_a_duplicate_address_moves_the_later_service() -> None:
    services = {"a/x": svc(ip="198.51.100.241"), "a/y": svc(ip="198.51.100.241")}
    assert assign(services, POOL) == {"a/y": "198.51.100.242"}


def test_a_full_pool_leaves_the_rest_without_an_address() -> None:
    services = {f"a/{i}": svc() for i in range(4)}
    assert list(assign(services, POOL).values()) == POOL
