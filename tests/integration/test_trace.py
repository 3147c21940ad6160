"""`kovn trace` end to end on a real NB, SB and ovn-northd (no chassis: ovn-trace needs none).

Two switches behind `ovn-cluster`, three pods, a Service, and a port group of ns1/b with the
ACLs a NetworkPolicy translation writes (external_ids of northbound/names.py): a default-deny
drop and an allow-related of policy ns1/allow-a for ns1/a on TCP 8080. What is checked is
the whole way: the NB read, ovn-trace on the SB, the SB lookup of the traced flows' stage
hints and the verdict printed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.main import main
from northbound import names

SCHEMAS = {"nb": "/usr/share/ovn/ovn-nb.ovsschema", "sb": "/usr/share/ovn/ovn-sb.ovsschema"}


@dataclass
class Central:
    nb: str
    sb: str

    def nbctl(self, *args: str) -> str:
        return subprocess.run(["ovn-nbctl", f"--db={self.nb}", "--timeout=20", *args],
                              check=True, capture_output=True, text=True).stdout.strip()


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


def _pod(ns: str, pod: str, switch: str, mac: str, ip: str) -> list[str]:
    port = names.pod_port(ns, pod)
    return ["--", "lsp-add", switch, port, "--", "lsp-set-addresses", port, f"{mac} {ip}",
            "--", "set", "Logical_Switch_Port", port,
            f'external_ids:"{names.OWNER_TYPE_KEY}"=Pod', f'external_ids:"{names.OWNER_KEY}"='
            f'"{ns}/{pod}"']


def _link(switch: str, mac: str, network: str) -> list[str]:
    lrp = names.router_port(names.CLUSTER_ROUTER, switch)
    lsp = names.switch_router_port(switch, names.CLUSTER_ROUTER)
    return ["--", "ls-add", switch, "--", "lrp-add", names.CLUSTER_ROUTER, lrp, mac, network,
            "--", "lsp-add", switch, lsp, "--", "lsp-set-type", lsp, "router",
            "--", "lsp-set-addresses", lsp, "router",
            "--", "lsp-set-options", lsp, f"router-port={lrp}"]


def _acl(var: str, direction: str, priority: int, match: str, action: str, name: str,
         ids: dict[str, str]) -> list[str]:
    cols = [f"direction={direction}", f"priority={priority}", f'match="{match}"',
            f"action={action}", f'name="{name}"']
    cols += [f'external_ids:"{k}"="{v}"' for k, v in ids.items()]
    return ["--", f"--id=@{var}", "create", "ACL", *cols,
            "--", "add", "Port_Group", "pg_b", "acls", f"@{var}"]


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    for tool in ("ovsdb-server", "ovn-northd", "ovn-trace", "ovsdb-client"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: install the OVN/OVS packages (see README)")
    d = tmp_path_factory.mktemp("trace")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for db in ("nb", "sb"):
            subprocess.run(["ovsdb-tool", "create", str(d / f"{db}.db"), SCHEMAS[db]], check=True)
            procs.append(subprocess.Popen(
                ["ovsdb-server", "--no-chdir", f"--remote=punix:{d / f'{db}.sock'}",
                 f"--unixctl={d / f'{db}.ctl'}", f"--log-file={d / f'{db}.log'}",
                 str(d / f"{db}.db")]))
            _wait_for(d / f"{db}.sock")
        c = Central(f"unix:{d / 'nb.sock'}", f"unix:{d / 'sb.sock'}")
        procs.append(subprocess.Popen(
            ["ovn-northd", "--no-chdir", f"--ovnnb-db={c.nb}", f"--ovnsb-db={c.sb}",
             f"--unixctl={d / 'northd.ctl'}", f"--log-file={d / 'northd.log'}"]))
        policy = {names.ACL_ROLE_KEY: "policy", names.POLICY_KEY: "ns1/allow-a",
                  names.DIRECTION_KEY: "ingress", names.RULE_KEY: "0"}
        deny = {names.ACL_ROLE_KEY: "default-deny", names.POLICY_KEY: "ns1",
                names.DIRECTION_KEY: "ingress"}
        c.nbctl(
            "lr-add", names.CLUSTER_ROUTER,
            *_link("ls1", "0a:00:00:01:00:01", "10.1.0.1/16"),
            *_link("ls2", "0a:00:00:02:00:01", "10.2.0.1/16"),
            *_pod("ns1", "a", "ls1", "0a:00:00:01:00:02", "10.1.0.2"),
            *_pod("ns1", "b", "ls1", "0a:00:00:01:00:03", "10.1.0.3"),
            *_pod("ns2", "c", "ls2", "0a:00:00:02:00:02", "10.2.0.2"),
            "--", "lb-add", "Service_ns1/web_TCP", "10.96.0.10:80", "10.1.0.3:8080", "tcp",
            "--", "ls-lb-add", "ls1", "Service_ns1/web_TCP",
            "--", "ls-lb-add", "ls2", "Service_ns1/web_TCP",
            "--", "pg-add", "pg_b", "ns1_b",
            *_acl("deny", "to-lport", 1000, "outport == @pg_b && ip4", "drop",
                  "ns1:default-deny:ingress", deny),
            *_acl("allow", "to-lport", 1002,
                  "outport == @pg_b && ip4.src == 10.1.0.2 && tcp.dst == 8080",
                  "allow-related", "ns1/allow-a:ingress:0", policy),
        )
        c.nbctl("--wait=sb", "sync")
        yield c
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=10)


def _trace(central: Central, capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str]:
    rc = main(["trace", *words, "--nb", central.nb, "--sb", central.sb])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_allowed_by_the_policy_rule(central: Central, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _trace(central, capsys, "ns1/a", "ns1/b", "tcp", "8080")
    assert out.splitlines()[0] == ("ns1/a -> 10.1.0.3 (ns1/b) tcp/8080: allowed by NetworkPolicy "
                                   "ns1/allow-a, ingress rule 0; no NetworkPolicy applies to "
                                   "egress")
    assert "delivered to ns1_b" in out and rc == 0


def test_other_ports_are_dropped_by_default_deny(central: Central,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _trace(central, capsys, "ns1/a", "10.1.0.3", "tcp", "9090")
    assert out.splitlines()[0] == ("ns1/a -> 10.1.0.3 (ns1/b) tcp/9090: dropped by default deny "
                                   "of namespace ns1 (ingress)")
    assert rc == 1


def test_across_the_router_the_destination_switch_decides(
        central: Central, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _trace(central, capsys, "ns2/c", "ns1/b", "tcp", "8080", "--raw")
    assert 'ingress(dp="ovn-cluster"' in out  # routed: ls2 -> ovn-cluster -> ls1
    assert "eth.dst == 0a:00:00:02:00:01" in out  # the first hop is ls2's router port
    assert ("ns2/c -> 10.1.0.3 (ns1/b) tcp/8080: dropped by default deny of namespace ns1 "
            "(ingress)") in out
    assert '  ACL "ns1:default-deny:ingress" (to-lport 1000 drop on port group pg_b) in ' \
           "ls_out_acl of ls1" in out
    assert rc == 1


def test_a_service_is_traced_to_its_backend(central: Central,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _trace(central, capsys, "ns1/a", "svc", "ns1/web", "tcp")
    lines = out.splitlines()
    assert lines[0] == ("ns1/a -> Service ns1/web (10.96.0.10) tcp/80: allowed by "
                        "NetworkPolicy ns1/allow-a, ingress rule 0; no NetworkPolicy applies "
                        "to egress")
    assert lines[1] == "  load balancer Service_ns1/web_TCP chose 10.1.0.3:8080 (ns1/b)"
    assert rc == 0
    rc, out = _trace(central, capsys, "ns2/c", "svc", "ns1/web", "tcp", "80")
    assert "dropped by default deny of namespace ns1 (ingress)" in out and rc == 1


def test_errors_say_what_to_do(central: Central, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _trace(central, capsys, "ns1/zz", "ns1/b", "tcp", "80")
    assert rc == 2
    assert "no port ns1_zz in NB: is the pod running and kovn controller up?" in out
    rc = main(["trace", "ns1/a", "ns1/b", "tcp", "80", "--nb", central.nb,
               "--sb", "unix:/nonexistent/sb.sock"])
    assert rc == 2 and "pass --sb" in capsys.readouterr().err
