"""The cluster-wide settings the translation depends on (flags/env of `kovn controller`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from contract import defaults
from northbound import names


@dataclass(frozen=True)
class ClusterConfig:
    default_subnet: str = names.DEFAULT_SUBNET
    default_cidr: str = defaults.POD_CIDR
    join_cidr: str = defaults.JOIN_CIDR
    service_cidr: str = defaults.SERVICE_CIDR
    mtu: int = defaults.DEFAULT_MTU
    service_dns: bool = False
    """Publish Service names in OVN's DNS table (answered by ovn-controller, no DNS server)."""
    dns_domain: str = defaults.DNS_DOMAIN

    @property
    def dns_ip(self) -> str:
        """The nameserver pods are given: queries OVN does not answer go there."""
        return str(ipaddress.IPv4Network(self.service_cidr)[defaults.DNS_IP_INDEX])

    @property
    def join_gateway(self) -> str:
        """The cluster router's address on the join switch; nodes route pod subnets via it."""
        return str(ipaddress.IPv4Network(self.join_cidr)[1])

    @property
    def join_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.join_cidr).prefixlen

    def reserved_ranges(self) -> dict[str, str]:
        """Ranges no Subnet may overlap (what -> CIDR; node addresses are added by the
        caller, which knows the Nodes)."""
        return {"join range": self.join_cidr, "service range": self.service_cidr}
