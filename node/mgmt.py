"""The node's management port: OVS internal interface `ovn0` on the join switch.

The controller allocates the join address and writes it on the Node (`kovn.io/node-network`);
the agent makes `ovn0` on br-int with `iface-id=<the port's name>`, that MAC, address and MTU,
and routes every pod subnet via the join gateway, so processes in the node's host netns
(agents, host-network pods) reach every pod through ovn-cluster.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time

from contract.podnetwork import NodeNetwork
from node import plumbing
from node.ovs import IFACE_ID, Ovs

LOG = logging.getLogger(__name__)
MGMT_IF = "ovn0"


class ManagementPort:
    def __init__(self, ovs: Ovs, bridge: str, tx_off: bool = True, ifname: str = MGMT_IF) -> None:
        self.ovs = ovs
        self.bridge = bridge
        self.tx_off = tx_off
        self.ifname = ifname
        self.applied: NodeNetwork | None = None
        self.installed = False

    def sync(self, network: NodeNetwork) -> bool:
        """Bring ovn0 in line with `network`; True if anything had to be changed."""
        if network == self.applied and self._intact(network):
            self._note_installed()
            return False
        t0 = time.monotonic()
        self.ovs.ensure_internal_port(self.bridge, self.ifname,
                                      {IFACE_ID: network.logical_switch_port},
                                      network.mac, network.mtu)
        self._configure_link(network)
        added, removed = plumbing.sync_link_routes(self.ifname, network.gateway,
                                                   network.pod_subnets)
        LOG.info("management port %s: %s %s mtu %d, routes to %s via %s (+%d -%d) in %.3fs",
                 self.ifname, network.ip, network.mac, network.mtu,
                 ", ".join(network.pod_subnets) or "no pod subnets", network.gateway,
                 added, removed, time.monotonic() - t0)
        self.applied = network
        self.installed = False
        self._note_installed()
        return True

    def _intact(self, network: NodeNetwork) -> bool:
        """Whether ovn0 still has its address; by ioctl on the agent's shared handle, since
        this runs every few seconds and a netlink dump costs O(links): one per pod."""
        with plumbing.host_sockets() as host:
            if plumbing.primary_ipv4(host, self.ifname) == network.ip:
                return True
        with plumbing.sockets_in(pyroute2=True) as host:  # a secondary address, or none
            index = plumbing.link_index(host.ipr, self.ifname)
            if index is None:
                return False
            return network.ip in _addresses(host.ipr, index)

    def _configure_link(self, network: NodeNetwork) -> None:
        # vswitchd creates the device when the transaction completes; allow it a moment.
        deadline = time.monotonic() + 10
        with plumbing.sockets_in() as host:
            while (index := plumbing.link_index(host.ipr, self.ifname)) is None:
                if time.monotonic() > deadline:
                    raise plumbing.PlumbingError(
                        f"ovs-vswitchd created no device {self.ifname} for the internal port")
                time.sleep(0.05)
            ipr = host.ipr
            ipr.link("set", index=index, address=network.mac, mtu=network.mtu)
            wanted = ipaddress.ip_interface(network.ip)
            for address in _addresses(ipr, index):
                if address != network.ip:
                    iface = ipaddress.ip_interface(address)
                    ipr.addr("del", index=index, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
            if network.ip not in _addresses(ipr, index):
                ipr.addr("add", index=index, address=str(wanted.ip),
                         prefixlen=wanted.network.prefixlen)
            if self.tx_off:
                plumbing.tx_checksum_off(host, self.ifname)
            ipr.link("set", index=index, state="up")

    def _note_installed(self) -> None:
        if self.installed:
            return
        iface = self.ovs.interface(self.ifname)
        if iface is not None and iface.external_ids.get("ovn-installed") == "true":
            self.installed = True
            LOG.info("management port %s is ovn-installed", self.ifname)


def _addresses(ipr: object, index: int) -> set[str]:
    return {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(index=index, family=socket.AF_INET)}  # type: ignore[attr-defined]
