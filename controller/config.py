"""The cluster-wide settings the translation depends on (flags/env of `kovn controller`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controller.podnetwork import DEFAULT_MTU
from northbound import names


@dataclass(frozen=True)
class ClusterConfig:
    default_subnet: str = names.DEFAULT_SUBNET
    default_cidr: str = "10.16.0.0/16"
    join_cidr: str = "100.64.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    mtu: int = DEFAULT_MTU

    @property
    def join_gateway(self) -> str:
        """The cluster router's address on the join switch; nodes route pod subnets via it."""
        return str(ipaddress.IPv4Network(self.join_cidr)[1])

    @property
    def join_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.join_cidr).prefixlen

    def reserved_ranges(self) -> dict[str, str]:
        """Ranges no Subnet may overlap."""
        return {"join": self.join_cidr, "service": self.service_cidr}
