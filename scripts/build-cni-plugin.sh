#!/bin/sh
# Build the kovn-cni plugin as one self-contained file for a node's host: a Python zipapp of
# node/cni_plugin.py and node/cni_protocol.py, which import only the standard library, run by
# the host's python3 (>= 3.11). The kubelet's runtime execs it from /opt/cni/bin; it
# forwards each request to the kovn node agent's socket. The node DaemonSet's init container
# installs it (manifests/node.yaml); tests/unit/test_manifests.py runs the result.
#   scripts/build-cni-plugin.sh OUT.pyz
set -eu
out=${1:?usage: build-cni-plugin.sh OUT.pyz}
python=${PYTHON:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/node"
cp "$repo/node/__init__.py" "$repo/node/cni_plugin.py" "$repo/node/cni_protocol.py" "$tmp/node/"
"$python" -m zipapp "$tmp" --output "$out" --python "/usr/bin/env python3" \
  --main "node.cni_plugin:main"
chmod 755 "$out"
