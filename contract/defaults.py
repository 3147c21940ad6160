"""The cluster's default address plan, in one place.

`kovn controller` uses these unless told otherwise (flags), the sandbox runs its control plane
with them and blackholes them in the root namespace while up, and the node side falls back to
the MTU when an annotation carries none. Every other module takes them from here.
"""

from __future__ import annotations

# The default Subnet's range (Subnet `ovn-default`, created at controller start).
POD_CIDR = "10.16.0.0/16"
# The join switch: one management port per node (ovn0), the gateway routers' links.
JOIN_CIDR = "100.64.0.0/16"
# ClusterIPs (kube-apiserver --service-cluster-ip-range); no Subnet may overlap it.
SERVICE_CIDR = "10.96.0.0/16"
# Pod and management port MTU: Geneve adds its header; with 1500 large TCP segments are lost.
DEFAULT_MTU = 1400

DNS_DOMAIN = "cluster.local"
"""The cluster's DNS domain: Services are `<svc>.<ns>.svc.<domain>`."""
DNS_IP_INDEX = 10
"""The cluster DNS address is this offset into the service range (10.96.0.10), as usual."""

SYSTEM_NAMESPACE = "kovn-system"
"""Where kovn's own objects live (manifests/): its ServiceAccounts and the leader Lease."""
LEADER_LEASE = "kovn-controller"
"""The coordination.k8s.io Lease whose holder is the one controller writing NB."""
