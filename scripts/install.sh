#!/usr/bin/env bash
# Install everything kovn needs on Debian 12, as root. Idempotent: a second run only checks.
#   Debian: Open vSwitch, OVN (central + host), iproute2, ethtool, curl, ping, the OVS python
#           bindings' C JSON parser (python3-openvswitch), and build tools.
#   PyPI:   kovn itself (editable) with its test extra.
#   Go:     the upstream Kubernetes control plane for the sandbox (sandbox/k8s/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(openvswitch-switch openvswitch-common python3-openvswitch ovn-central ovn-host
          iproute2 ethtool curl iputils-ping procps psmisc)

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it installs Debian packages and kovn needs root for netns)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || echo "install.sh: apt-get update failed; trying the cached package lists"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system daemons where systemd runs; kovn starts its own, in its
# own directories, and does not need or touch those.

PYTHON=${PYTHON:-python3}
# pip is idempotent: when everything is satisfied this only re-links the editable install.
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
# The sandbox's Kubernetes control plane, built from Go modules (idempotent: 0.1 s when up to
# date, ~6 min cold on 2 cores). KOVN_SKIP_K8S_BUILD=1 skips it (tests needing it then skip).
if [ "${KOVN_SKIP_K8S_BUILD:-0}" != 1 ]; then
  sandbox/k8s/build.sh
fi
echo "install.sh: ready ($(ovs-vsctl --version | head -1), $(ovn-nbctl --version | head -1))"
