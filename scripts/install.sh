#!/usr/bin/env bash
# Install everything kovn needs on Debian 12, as root. Idempotent: a second run only checks.
#   Debian: Open vSwitch, OVN (central + host), iproute2, ethtool, nftables (node ports on
#           the nodes' own addresses), curl, ping, the OVS python bindings' C JSON parser
#           (python3-openvswitch), and build tools.
#   PyPI:   kovn itself (editable) with its test extra, into the virtual environment .venv of
#           this checkout (not the system Python: only what pyproject.toml declares is there),
#           with `kovn` linked and `kovn-cni` (compiled: node/cni_shim.c) in /usr/local/bin.
#   Go:     the upstream Kubernetes control plane for the sandbox (sandbox/k8s/build.sh).
# Tests then run with the venv's Python: .venv/bin/python -m pytest tests
#
# Why .venv in the checkout: the install is editable, so the environment belongs to this
# checkout (two checkouts never share or overwrite one), .gitignore already ignores it, and
# ruff and editors find it. KOVN_VENV=<dir> puts it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

PACKAGES=(openvswitch-switch openvswitch-common python3-openvswitch ovn-central ovn-host
          iproute2 ethtool nftables curl iputils-ping procps psmisc python3-venv gcc libc6-dev)

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

# The venv's base interpreter: Debian's, the ABI python3-openvswitch's C JSON parser is built
# for (northbound/fastjson.py loads it from /usr/lib/python3/dist-packages by path).
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=${KOVN_VENV:-$REPO/.venv}
venv_ok() {  # usable, and isolated from the system's site-packages
  "$VENV/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null &&
    grep -qx 'include-system-site-packages = false' "$VENV/pyvenv.cfg"
}
if ! venv_ok; then
  echo "install.sh: creating the virtual environment $VENV ($("$PYTHON" --version))"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
# pip is idempotent: when everything is satisfied this only re-links the editable install.
# editable_mode=compat: a plain path entry instead of setuptools' import-hook finder, whose
# import at start-up cost ~17 ms of every `kovn-cni` exec (89 -> 72 ms measured here); the
# kubelet execs the plugin for every pod, so this is on the pod-ready path.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' \
  --config-settings editable_mode=compat
ln -sfn "$VENV/bin/kovn" /usr/local/bin/kovn
# kovn-cni: node/cni_shim.c compiled (under 1 ms of CPU per exec; runtimes exec it for every
# pod's ADD and DEL), with the Python shim beside it as kovn-cni-py (node/cni_plugin.py under
# `python3 -I -S`, ~18 ms), to which it hands VERSION, unreadable configs and an unreachable
# agent. Without a C compiler kovn-cni is the Python shim alone. rm first: an older
# install.sh linked the venv's console script here, which writing would overwrite.
rm -f /usr/local/bin/kovn-cni
(cd "$REPO" && "$VENV/bin/python" -m node.cni_shim /usr/local/bin)
# An earlier install.sh put kovn into the system Python (`python3 -m pip install -e .`); its
# `kovn` would shadow this one on PATH and miss every package added since. Remove it.
for old in python3 /usr/bin/python3; do
  [ "$(command -v "$old")" != "$VENV/bin/python3" ] || continue
  shown=$("$old" -m pip show kovn 2>/dev/null || true)
  if grep -qx "Editable project location: $REPO" <<<"$shown"; then
    echo "install.sh: removing the old kovn install from $("$old" -c 'import sys; print(sys.prefix)')"
    "$old" -m pip uninstall -q -y --disable-pip-version-check --root-user-action=ignore kovn || true
  fi
done
if command -v pyenv >/dev/null; then pyenv rehash || true; fi  # drop its stale kovn shims
found=$(command -v kovn || true)
if [ "$(readlink -f "$found")" != "$(readlink -f "$VENV/bin/kovn")" ]; then
  echo "install.sh: warning: \`kovn\` on PATH is ${found:-missing}, not $VENV/bin/kovn" >&2
fi
# The sandbox's Kubernetes control plane, built from Go modules (idempotent: 0.1 s when up to
# date, ~6 min cold on 2 cores). KOVN_SKIP_K8S_BUILD=1 skips it (tests needing it then skip,
# or fail under CI=true: .ci/run).
if [ "${KOVN_SKIP_K8S_BUILD:-0}" != 1 ]; then
  sandbox/k8s/build.sh
fi
echo "install.sh: ready ($(ovs-vsctl --version | head -1), $(ovn-nbctl --version | head -1))"
