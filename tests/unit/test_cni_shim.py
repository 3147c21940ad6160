"""The `kovn-cni` shim stays cheap to start: every pod's ADD and DEL execs it.

It is run the way the sandbox installs it (node.cni_plugin.launcher: `python -I -S`) against
the agent's real socket server with a stand-in handler, and must not have imported anything
beyond CPython's built-in modules: no pyroute2, ovsdbapp, kubernetes or kopf, and not even
json, socket or os (each pulls in re, enum or selectors: milliseconds of CPU per exec).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from node import cni_plugin, cni_protocol
from node.cni_protocol import CniRequest
from node.cni_server import CniServer

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pyroute2", "ovsdbapp", "kubernetes", "kopf", "node.cni_protocol", "json",
         "socket", "os", "re", "enum", "typing", "dataclasses", "ipaddress", "selectors")
CONF = {"cniVersion": "1.0.0", "name": "kovn", "type": "kovn-cni"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/var/run/netns/p",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_UID=u-1"}
# Run main() as the launcher does, then report what got imported.
PROBE = ("import sys\nsys.path.append({root!r})\nfrom node.cni_plugin import main\n"
         "rc = main()\nsys.stderr.write('MODULES ' + ' '.join(sorted(sys.modules)))\n"
         "sys.exit(rc)\n")


def run_shim(stdin: dict[str, Any], env: dict[str, str]) -> tuple[int, str, set[str]]:
    proc = subprocess.run([os.path.realpath(sys.executable), "-I", "-S", "-c",
                           PROBE.format(root=str(REPO))], input=json.dumps(stdin).encode(),
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          timeout=30, check=False)
    err = proc.stderr.decode()
    modules = set(err.rsplit("MODULES ", 1)[1].split()) if "MODULES " in err else set()
    return proc.returncode, proc.stdout.decode(), modules


def test_add_forwarded_with_builtin_modules_only(tmp_path: Path) -> None:
    seen: list[CniRequest] = []

    def handler(request: CniRequest) -> dict[str, Any]:
        seen.append(request)
        return {"cniVersion": request.cni_version, "interfaces": [],
                "ips": [{"address": "10.16.0.5/16"}], "routes": [], "dns": {}}

    path = str(tmp_path / "cni.sock")
    server = CniServer(path, handler).start()
    try:
        rc, out, modules = run_shim({**CONF, "socket": path, "annotationTimeout": 3}, ENV)
    finally:
        server.stop()
    assert rc == 0, out
    assert json.loads(out)["ips"] == [{"address": "10.16.0.5/16"}]
    (request,) = seen  # validated by the agent from the raw env + stdin
    assert (request.command, request.container_id, request.pod_name, request.pod_uid,
            request.annotation_timeout) == ("ADD", "c0ffee", "web", "u-1", 3.0)
    assert modules, "the probe did not report its modules"
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
    assert not heavy, f"kovn-cni imported {heavy} to forward an ADD"


def test_agent_errors_come_back_in_the_config_version(tmp_path: Path) -> None:
    path = str(tmp_path / "cni.sock")
    server = CniServer(path, lambda request: None).start()
    try:  # the agent refuses the invocation (no pod in CNI_ARGS)
        rc, out, _ = run_shim({**CONF, "cniVersion": "0.4.0", "socket": path},
                              {**ENV, "CNI_ARGS": ""})
    finally:
        server.stop()
    error = json.loads(out)
    assert rc == 1 and error["cniVersion"] == "0.4.0"
    assert error["code"] == cni_protocol.Code.INVALID_ENVIRONMENT and "K8S_POD" in error["msg"]


def test_constants_mirror_the_protocol() -> None:
    assert cni_plugin.SUPPORTED_VERSIONS == cni_protocol.SUPPORTED_VERSIONS
    assert cni_plugin.DEFAULT_SOCKET == cni_protocol.DEFAULT_SOCKET
    assert cni_plugin.SOCKET_ENV == cni_protocol.SOCKET_ENV
    assert set(cni_plugin.FORWARDED) == set(cni_protocol.COMMANDS) - {"VERSION"}
    assert (cni_plugin.TRY_AGAIN_LATER, cni_plugin.NOT_AVAILABLE, cni_plugin.INTERNAL) == (
        cni_protocol.Code.TRY_AGAIN_LATER, cni_protocol.Code.NOT_AVAILABLE,
        cni_protocol.Code.INTERNAL)


def test_json_helpers_agree_with_json() -> None:
    value = {"a": [1, 2.5, None, True, "é\n\"x\""], "b": {"c": -3e-7}}
    assert json.loads(cni_plugin.dumps(value)) == value
    assert cni_plugin.loads(json.dumps(value)) == value
    for bad in ("", "{", "[1] [2]", "{'a': 1}"):
        try:
            cni_plugin.loads(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} parsed")


def test_launcher_starts_isolated() -> None:
    text = cni_plugin.launcher("/usr/bin/python3", "/src/kovn")
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert "sys.path.append('/src/kovn')" in text and "from node.cni_plugin import main" in text
