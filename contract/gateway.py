"""The node's external network, as the node agent publishes it and the controller reads it.

A node's gateway router `GR_<node>` needs two facts only the node knows: the address it owns
on the external (physical) network and that network's next hop. The node agent is told them
(`kovn node --external-ip 198.51.100.11/24 --external-gateway 198.51.100.1`), maps the
physical network `physnet` to its external bridge (`ovn-bridge-mappings=physnet:br-ex`) and
writes both on its Node as two plain annotations, so an administrator without the agent's
flags can also set them by hand (`kubectl annotate node n1 kovn.io/external-ip=...`):

    kovn.io/external-ip:      198.51.100.11/24   the GR's address on the external network
    kovn.io/external-gateway: 198.51.100.1       the next hop of its default route

A Node without them gets no gateway router (its pods have no egress of their own). Pure and
dependency-free, like contract.podnetwork: both sides import it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

EXTERNAL_IP = "kovn.io/external-ip"
EXTERNAL_GATEWAY = "kovn.io/external-gateway"
PHYSICAL_NETWORK = "physnet"
"""`network_name` of every external switch's localnet port; each chassis maps it to its
external bridge with `ovn-bridge-mappings=physnet:<bridge>`."""
DEFAULT_EXTERNAL_BRIDGE = "br-ex"


@dataclass(frozen=True)
class ExternalNetwork:
    """Where a node's gateway router meets the physical network: checked at construction."""

    ip: str
    """The GR's address with the network's prefix length: "198.51.100.11/24"."""
    gateway: str
    """The next hop of the GR's default route, inside that network."""

    def __post_init__(self) -> None:
        try:
            iface = ipaddress.IPv4Interface(self.ip)
            gateway = ipaddress.IPv4Address(self.gateway)
        except ValueError as exc:
            raise ValueError(f"{EXTERNAL_IP}={self.ip!r}, {EXTERNAL_GATEWAY}="
                             f"{self.gateway!r}: {exc}") from exc
        if "/" not in self.ip or iface.network.prefixlen >= 31:
            raise ValueError(f"{EXTERNAL_IP}={self.ip!r} needs the external network's prefix "
                             "length, e.g. 198.51.100.11/24")
        if gateway not in iface.network or gateway == iface.ip:
            raise ValueError(f"{EXTERNAL_GATEWAY}={self.gateway} is not another address of "
                             f"{iface.network} (the network of {EXTERNAL_IP}={self.ip})")

    @property
    def address(self) -> str:
        """The IP without its prefix length (the SNAT address)."""
        return self.ip.partition("/")[0]

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(self.ip).network

    def annotations(self) -> dict[str, str]:
        return {EXTERNAL_IP: self.ip, EXTERNAL_GATEWAY: self.gateway}


def from_annotations(annotations: Mapping[str, str]) -> ExternalNetwork | None:
    """The Node's external network; None when neither annotation is set, ValueError (naming
    the annotations) when one is missing or malformed."""
    ip, gateway = annotations.get(EXTERNAL_IP, ""), annotations.get(EXTERNAL_GATEWAY, "")
    if not ip and not gateway:
        return None
    if not ip or not gateway:
        missing = EXTERNAL_IP if not ip else EXTERNAL_GATEWAY
        raise ValueError(f"{missing} is missing: a gateway router needs both {EXTERNAL_IP} "
                         f"and {EXTERNAL_GATEWAY}")
    return ExternalNetwork(ip, gateway)


def bridge_mappings(bridge: str) -> str:
    """The chassis' `ovn-bridge-mappings` value for an external bridge."""
    return f"{PHYSICAL_NETWORK}:{bridge}"
