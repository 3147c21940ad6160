"""What `kovn sandbox up` needs before it touches anything: root, the OVS/OVN tools and
schemas, and (with Kubernetes) the binaries sandbox/k8s/build.sh makes."""

from __future__ import annotations

import os
import shutil

from sandbox import central, kube
from sandbox.config import SandboxConfig
from sandbox.errors import SandboxError
from sandbox.node import VSWITCH_SCHEMA

REQUIRED_BINARIES = (
    "ip", "ethtool", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
    "ovn-northd", "ovn-controller", "ovn-sbctl",
)


def require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("the sandbox needs root (network namespaces, routes): use sudo")


def check_prerequisites(config: SandboxConfig | None = None) -> None:
    """Root, the OVS/OVN tools and (if config.kube) the Kubernetes binaries: say plainly what
    is missing before touching anything."""
    require_root()
    if config is not None and config.kube:
        kube.check_binaries()
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        raise SandboxError(
            f"missing {', '.join(missing)}: install openvswitch-switch, ovn-central, ovn-host, "
            "iproute2 and ethtool")
    for schema in (*central.SCHEMAS.values(), VSWITCH_SCHEMA):
        if not schema.exists():
            raise SandboxError(f"missing {schema}: install openvswitch-switch and ovn-central")
