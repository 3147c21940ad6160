"""The contract between the controller and the node agent: annotations and their codec.

The controller writes `kovn.io/pod-network` on a pod once its logical switch port exists; the
node agent reads it to plumb the pod. The same for nodes (`kovn.io/node-network`, the
management port). IPAM is rebuilt from these annotations on start, so they are the durable
record of every allocation. This module is pure and dependency-free: controller/ and node/
both import it from here, and node/ never imports controller/ (tests/unit/test_layers.py).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from contract import defaults

T = TypeVar("T")
POD_NETWORK = "kovn.io/pod-network"
NODE_NETWORK = "kovn.io/node-network"

# Input annotations, Kube-OVN compatible so existing manifests keep working.
STATIC_IP = "ovn.kubernetes.io/ip_address"
STATIC_MAC = "ovn.kubernetes.io/mac_address"
LOGICAL_SWITCH = "ovn.kubernetes.io/logical_switch"
INGRESS_RATE = "ovn.kubernetes.io/ingress_rate"
EGRESS_RATE = "ovn.kubernetes.io/egress_rate"

DEFAULT_MTU = defaults.DEFAULT_MTU  # the MTU when an annotation carries none
"""1500 minus Geneve's overhead (with room for options): larger TCP segments are lost."""

_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


@dataclass(frozen=True)
class Route:
    dest: str
    next_hop: str

    def to_json(self) -> dict[str, str]:
        return {"dest": self.dest, "nextHop": self.next_hop}


def _check_interface(ip: str, mac: str, gateway: str) -> None:
    iface = ipaddress.ip_interface(ip)  # ValueError names the bad value
    if iface.network.prefixlen == iface.max_prefixlen:
        raise ValueError(f"ip {ip!r} needs the subnet's prefix length, e.g. 10.16.0.5/16")
    if gateway and ipaddress.ip_address(gateway) not in iface.network:
        raise ValueError(f"gateway {gateway} is outside {iface.network}")
    if not _MAC.fullmatch(mac):
        raise ValueError(f"mac {mac!r} is not a MAC address")


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _parse(annotation: str, text: str, build: Callable[[dict[str, Any]], T]) -> T:
    """`build` from the annotation's JSON; ValueError naming the annotation on anything
    malformed (ValueError: not JSON or refused fields; AttributeError: not an object)."""
    try:
        return build(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed {annotation} annotation {text!r}: {exc}") from exc


@dataclass(frozen=True)
class _Interface:
    """An address on a logical switch port: checked at construction."""

    ip: str  # with prefix length: "10.16.0.5/16"
    mac: str
    gateway: str

    def __post_init__(self) -> None:
        _check_interface(self.ip, self.mac, self.gateway)

    @property
    def address(self) -> str:
        """The IP without its prefix length."""
        return self.ip.partition("/")[0]


@dataclass(frozen=True)
class PodNetwork(_Interface):
    """`kovn.io/pod-network`: everything the node agent needs to plumb eth0."""

    subnet: str
    logical_switch_port: str
    mtu: int = DEFAULT_MTU
    routes: tuple[Route, ...] = field(default=())

    def encode(self) -> str:
        # Field by field, not dataclasses.asdict: the controller encodes every pod it syncs
        # to compare with the annotation, and asdict's recursive copy was most of that.
        return _dump({"ip": self.ip, "mac": self.mac, "gateway": self.gateway,
                      "subnet": self.subnet, "logical_switch_port": self.logical_switch_port,
                      "mtu": self.mtu, "routes": [r.to_json() for r in self.routes]})

    @classmethod
    def decode(cls, text: str) -> PodNetwork:
        """Parse the annotation; ValueError (with what is wrong) on anything malformed."""
        return _parse(POD_NETWORK, text, lambda data: cls(
            ip=data["ip"], mac=data["mac"], gateway=data.get("gateway", ""),
            subnet=data["subnet"], logical_switch_port=data["logical_switch_port"],
            mtu=int(data.get("mtu", DEFAULT_MTU)),
            routes=tuple(Route(r["dest"], r["nextHop"]) for r in data.get("routes", ()))))


@dataclass(frozen=True)
class NodeNetwork(_Interface):
    """`kovn.io/node-network`: the node's management port on the join switch (and the join
    address of its gateway router). Its gateway is the cluster router's join address: routes
    to pod subnets go via it."""

    logical_switch_port: str
    pod_subnets: tuple[str, ...] = ()
    mtu: int = DEFAULT_MTU
    gateway_router_ip: str = ""
    """The join address of the node's gateway router `GR_<node>` (the controller's record of
    the allocation, so a restart keeps it); empty while the node has no gateway router.
    Written only when set, so nodes without one keep their annotation unchanged."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gateway_router_ip:
            network = ipaddress.ip_interface(self.ip).network
            if ipaddress.ip_address(self.gateway_router_ip) not in network:
                raise ValueError(f"gateway_router_ip {self.gateway_router_ip} is outside "
                                 f"{network}")

    def encode(self) -> str:
        data = asdict(self)
        data["pod_subnets"] = list(self.pod_subnets)
        if not self.gateway_router_ip:
            del data["gateway_router_ip"]
        return _dump(data)

    @classmethod
    def decode(cls, text: str) -> NodeNetwork:
        return _parse(NODE_NETWORK, text, lambda data: cls(
            ip=data["ip"], mac=data["mac"], gateway=data["gateway"],
            logical_switch_port=data["logical_switch_port"],
            pod_subnets=tuple(data.get("pod_subnets", ())),
            mtu=int(data.get("mtu", DEFAULT_MTU)),
            gateway_router_ip=str(data.get("gateway_router_ip", ""))))


def mac_from_ip(ip: str) -> str:
    """0a:58 + the IPv4 address (ovn-kubernetes' convention): unique wherever IPs are, and a
    MAC seen in a capture names its pod."""
    octets = ipaddress.IPv4Address(ip).packed
    return "0a:58:" + ":".join(f"{o:02x}" for o in octets)
