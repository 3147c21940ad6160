"""The sandbox's cloud load-balancer controller: Services of type LoadBalancer get an address.

On a cloud, a cloud-controller-manager (or MetalLB on bare metal) writes
`status.loadBalancer.ingress` of every `type: LoadBalancer` Service; kovn then serves that
address as a VIP on the nodes' gateway routers, exactly as it serves `spec.externalIPs`. In
the sandbox this daemon plays the cloud: a pool in the outside network (POOL, at the top of
198.51.100.0/24, where no node's external IP is), the outside's clients reach it on-link
(the gateway routers answer ARP for VIPs in their external network).

Each Service keeps its address while it is of type LoadBalancer: `spec.loadBalancerIP` is
honoured when it is a free address of the pool; otherwise the lowest free address is given.
A Service that stops being of that type, or is deleted, frees its address. A full pool is
logged and retried at the next change. Level-triggered: every event re-reads the whole
listing the watch keeps, so a restart converges to the same assignment.

    python -m sandbox.lbpool --pidfile=P --kubeconfig K [--pool 198.51.100.240/28]
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from kube.client import KubeClient, KubeError
from kube.listwatch import ListWatch, Mirror

LOG = logging.getLogger("kovn.sandbox.lbpool")
POOL = "198.51.100.240/28"
"""Addresses handed out to LoadBalancer Services (the outside network's top 16)."""
SERVICES = "/api/v1/services"


def ingress_ip(service: dict[str, Any]) -> str | None:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return next((i["ip"] for i in ingress if i.get("ip")), None)


def is_load_balancer(service: dict[str, Any]) -> bool:
    return (service.get("spec") or {}).get("type") == "LoadBalancer"


def assign(services: dict[str, dict[str, Any]], pool: list[str]) -> dict[str, str | None]:
    """Service key -> the address it should carry (None: none), for every Service whose
    status must change. Pure: keeps valid assignments, then fills the rest in key order."""
    taken: dict[str, str] = {}
    for key, svc in sorted(services.items()):
        ip = ingress_ip(svc)
        if is_load_balancer(svc) and ip in pool and ip not in taken.values():
            taken[key] = ip
    changes: dict[str, str | None] = {}
    for key, svc in sorted(services.items()):
        if key in taken:
            continue
        if not is_load_balancer(svc):
            if ingress_ip(svc) in pool:
                changes[key] = None
            continue
        wanted = (svc.get("spec") or {}).get("loadBalancerIP") or ""
        free = [ip for ip in pool if ip not in taken.values()]
        if not free:
            LOG.warning("pool %s is full: %s gets no address", POOL, key)
            continue
        taken[key] = wanted if wanted in free else free[0]
        changes[key] = taken[key]
    return changes


class Assigner:
    def __init__(self, api: KubeClient, pool: str) -> None:
        self.api = api
        network = ipaddress.ip_network(pool)
        self.pool = [str(ip) for ip in network.hosts()]
        self.services = Mirror(self.sync)
        """Every Service, kept by the list+watch; each change re-assigns."""

    def sync(self) -> None:
        changes = assign(self.services.snapshot(), self.pool)
        for key, ip in changes.items():
            namespace, name = key.split("/", 1)
            ingress = [{"ip": ip, "ipMode": "VIP"}] if ip else []
            try:
                self.api.merge_patch(f"/api/v1/namespaces/{namespace}/services/{name}/status",
                                     {"status": {"loadBalancer": {"ingress": ingress}}})
            except KubeError as exc:
                LOG.warning("service %s: %s (retried at the next change)", key, exc)
                continue
            LOG.info("service %s: %s", key, f"ingress {ip}" if ip else "address released")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.lbpool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--pool", default=POOL)
    parser.add_argument("--pidfile", type=Path,
                        help="written by the sandbox; identifies this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = KubeClient(args.kubeconfig, pool_size=2, timeout=10)
    assigner = Assigner(api, args.pool)
    watch = ListWatch(api, SERVICES, assigner.services, name="services")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    LOG.info("assigning LoadBalancer addresses from %s", args.pool)
    while not stop.is_set():
        try:
            watch.start()
            break
        except KubeError as exc:
            LOG.warning("listing Services: %s (retrying)", exc)
            stop.wait(1)
    stop.wait()
    watch.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
