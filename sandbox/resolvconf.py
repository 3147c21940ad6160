"""A pod's /etc/resolv.conf, as a kubelet writes it for dnsPolicy ClusterFirst.

`ip netns exec NETNS` bind-mounts the files of /etc/netns/NETNS/ over /etc, so a command run
in a pod's netns (`kovn sandbox exec ns/pod -- curl web`) resolves with the pod's own
resolv.conf: the cluster DNS address (10.96.0.10) and the search path of the pod's namespace.
ovn-controller answers Service names itself (kovn controller --service-dns). It answers
exact names only, and glibc gives up on the search path at the first query nobody answers
(a timeout, TRY_AGAIN) and also at a refused one (an ICMP unreachable: tried, worse), so:
- `ndots:1`: `web` goes through the search path, whose first candidate is the Service's
  full name; `web.demo`, `web.demo.svc` and the full name are asked as typed; all are
  records (controller/services.py service_names), so each lookup is one answered query.
- `no-aaaa` (glibc >= 2.36): OVN answers A queries only; an unanswered AAAA query beside
  every lookup would add the timeout to every curl by name.
- `timeout:1 attempts:1`: a name OVN does not hold goes to the cluster DNS address, where
  the sandbox has no server (a cluster would run one there for outside names): it fails in
  a second.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

ETC_NETNS = Path("/etc/netns")


def content(namespace: str, dns_ip: str, domain: str) -> str:
    search = f"{namespace}.svc.{domain} svc.{domain} {domain}"
    return f"nameserver {dns_ip}\nsearch {search}\noptions ndots:1 timeout:1 attempts:1 no-aaaa\n"


def write(netns: str, namespace: str, dns_ip: str, domain: str) -> Path:
    path = ETC_NETNS / netns / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content(namespace, dns_ip, domain))
    return path


def remove(netns: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(ETC_NETNS / netns)
