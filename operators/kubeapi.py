"""The controller's view of the Kubernetes API: kovn's one client (kube/client.py) and the
paths of the objects the controller writes to.

kopf does the low-churn watching; lists, the high-churn watches, annotation and status
patches and Events go through the shared client, as plain dicts.
"""

from __future__ import annotations

from kube.client import KubeClient, KubeError, node_path, now_rfc3339, pod_path

KubeAPI = KubeClient
"""The controller's client is the shared one; the name stays for its callers."""

SUBNETS = "/apis/kovn.io/v1/subnets"


def subnet_path(name: str) -> str:
    return f"{SUBNETS}/{name}"


__all__ = ["SUBNETS", "KubeAPI", "KubeError", "node_path", "now_rfc3339", "pod_path",
           "subnet_path"]
