"""Every ACL priority kovn writes, in one place.

OVN 23.03 has no ACL tiers (23.06 brings them): within a stage the highest-priority matching
ACL decides, so what must hold together is layered by priority here. Stages: `to-lport` ACLs
run in ls_out_acl, `from-lport` ACLs in ls_in_acl, and `from-lport` ACLs with
`options:apply-after-lb=true` in ls_in_acl_after_lb (after the load balancer chose a
backend). A stage where no ACL matches lets the packet through.

- NetworkPolicy (NetworkPolicy ingress = to-lport; egress = from-lport after LB, so egress to
  a ClusterIP is judged against the chosen backend pod):
  - POLICY_ALLOW: a policy rule's allow-related; every allow is alike, so rules need no order
    among themselves (any allowing policy is the right answer: policies are additive).
  - ALWAYS_ALLOW: what isolation still lets through: ARP/ND, the nodes' management
    addresses (kubelet probes, host-network pods), hairpin traffic to a pod's own Service.
  - DEFAULT_DENY: a namespace's isolated pods drop the rest.
  Replies of allowed connections pass before any ACL (OVN's ct.est && ct.rpl flows), and so
  does every connection OVN committed: a new policy cuts an established connection it does
  not allow at its next packet (OVN then marks the conntrack entry blocked).
- Subnet `private: true`:
  - PRIVATE_DROP (to-lport, above every NetworkPolicy ACL): sources that are neither the
    subnet, the nodes, hairpin nor `allowSubnets` are dropped whatever a policy allows: the
    subnet's isolation and the policies must both allow, and a drop above the policies
    expresses "and" without tiers.
  - PRIVATE_COMMIT (from-lport in ls_in_acl, a stage NetworkPolicy never uses): commits the
    subnet's own connections, so their replies come back through PRIVATE_DROP.
"""

from __future__ import annotations

DEFAULT_DENY = 1000
ALWAYS_ALLOW = 1001
POLICY_ALLOW = 1002
PRIVATE_COMMIT = 1000
PRIVATE_DROP = 2000
