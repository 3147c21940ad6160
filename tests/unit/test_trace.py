"""`kovn trace`'s pure part on real ovn-trace output (OVN 23.03.1, captured on the sandbox).

The samples are ovn-trace's detailed output as `kovn trace` runs it; the NB and SB rows
below are the ones of that sandbox (hand-made Port_Group ACLs carrying kovn's external_ids:
x_b in `kovn_test_deny` with a default-deny drop and an allow-related of NetworkPolicy
x/allow-a; x_a in `kovn_test_egress` with an egress default deny after LB).
"""
# ruff: noqa: E501  (ovn-trace's own lines are longer than 100 characters)

from __future__ import annotations

import dataclasses

import pytest

from cli.trace import parse_addresses, parse_request, report, trace_argv
from northbound import names
from northbound.trace import (
    Acl,
    Northbound,
    SwitchPort,
    TraceError,
    Verdict,
    acl_for,
    acl_steps,
    decide,
    describe_acl,
    microflow,
    resolve_target,
    source_port,
    stage_hints,
)
from northbound.trace_output import parse_trace

# `ovn-trace --detailed --ct=new (x8)` from y/c (10.16.0.4, node1) to x/b (10.16.0.3, node2) on
# ovn-default, OVN 23.03.1 (the sandbox, hand-made kovn ACLs): the ingress pipeline of
# y/c is the same in the three.
_INGRESS_Y_C = """
ingress(dp="ovn-default", inport="y_c")
---------------------------------------
 0. ls_in_check_port_sec (northd.c:8432): 1, priority 50, uuid 85d9751d
    reg0[15] = check_in_port_sec();
    next;
 4. ls_in_pre_acl (northd.c:5922): ip, priority 100, uuid 2be47bea
    reg0[0] = 1;
    next;
 5. ls_in_pre_lb (northd.c:6109): ip, priority 100, uuid 2c6f3095
    reg0[2] = 1;
    next;
 6. ls_in_pre_stateful (northd.c:6132): reg0[2] == 1, priority 110, uuid af4d385f
    ct_lb_mark;

ct_lb_mark
----------
 7. ls_in_acl_hint (northd.c:6190): ct.new && !ct.est, priority 7, uuid 03c854f9
    reg0[7] = 1;
    reg0[9] = 1;
    next;
 8. ls_in_acl (northd.c:6809): ip && !ct.est, priority 1, uuid d5cf9263
    reg0[1] = 1;
    next;
14. ls_in_pre_hairpin (northd.c:7633): ip && ct.trk, priority 100, uuid 705b9521
    reg0[6] = chk_lb_hairpin();
    reg0[12] = chk_lb_hairpin_reply();
    next;
18. ls_in_stateful (northd.c:7607): reg0[1] == 1 && reg0[13] == 0, priority 100, uuid e35c0e0e
    ct_commit { ct_mark.blocked = 0; };
    next;
25. ls_in_l2_lkup (northd.c:9122): eth.dst == 0a:58:0a:10:00:03, priority 50, uuid 77fd05b8
    outport = "x_b";
    output;

"""

ALLOWED = "# tcp,reg14=0x4,vlan_tci=0x0000,dl_src=0a:58:0a:10:00:04,dl_dst=0a:58:0a:10:00:03,nw_src=10.16.0.4,nw_dst=10.16.0.3,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=40000,tp_dst=8080,tcp_flags=0\n" + _INGRESS_Y_C + """\
egress(dp="ovn-default", inport="y_c", outport="x_b")
-----------------------------------------------------
 0. ls_out_pre_acl (northd.c:5924): ip, priority 100, uuid bc8e2507
    reg0[0] = 1;
    next;
 1. ls_out_pre_lb (northd.c:6111): ip, priority 100, uuid 4ca6a08d
    reg0[2] = 1;
    next;
 2. ls_out_pre_stateful (northd.c:6135): reg0[2] == 1, priority 110, uuid f0ae33e6
    ct_lb_mark;

ct_lb_mark
----------
 3. ls_out_acl_hint (northd.c:6190): ct.new && !ct.est, priority 7, uuid 9453d8a5
    reg0[7] = 1;
    reg0[9] = 1;
    next;
 4. ls_out_acl (northd.c:6445): reg0[7] == 1 && (outport == @kovn_test_deny && ip4.src == {10.16.0.2, 10.16.0.4} && tcp.dst == 8080), priority 2002, uuid d61fdc32
    reg0[1] = 1;
    next;
 7. ls_out_stateful (northd.c:7611): reg0[1] == 1 && reg0[13] == 0, priority 100, uuid ee4856d3
    ct_commit { ct_mark.blocked = 0; };
    next;
 8. ls_out_check_port_sec (northd.c:5772): 1, priority 0, uuid 01d7bed3
    reg0[15] = check_out_port_sec();
    next;
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 37f6c470
    output;
    /* output to "x_b", type "" */
"""

DENIED = "# tcp,reg14=0x4,vlan_tci=0x0000,dl_src=0a:58:0a:10:00:04,dl_dst=0a:58:0a:10:00:03,nw_src=10.16.0.4,nw_dst=10.16.0.3,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=40000,tp_dst=9090,tcp_flags=0\n" + _INGRESS_Y_C + """\
egress(dp="ovn-default", inport="y_c", outport="x_b")
-----------------------------------------------------
 0. ls_out_pre_acl (northd.c:5924): ip, priority 100, uuid bc8e2507
    reg0[0] = 1;
    next;
 1. ls_out_pre_lb (northd.c:6111): ip, priority 100, uuid 4ca6a08d
    reg0[2] = 1;
    next;
 2. ls_out_pre_stateful (northd.c:6135): reg0[2] == 1, priority 110, uuid f0ae33e6
    ct_lb_mark;

ct_lb_mark
----------
 3. ls_out_acl_hint (northd.c:6190): ct.new && !ct.est, priority 7, uuid 9453d8a5
    reg0[7] = 1;
    reg0[9] = 1;
    next;
 4. ls_out_acl (northd.c:6543): reg0[9] == 1 && (outport == @kovn_test_deny && ip4), priority 2000, uuid 17789967
    drop;
"""

REJECTED = "# tcp,reg14=0x4,vlan_tci=0x0000,dl_src=0a:58:0a:10:00:04,dl_dst=0a:58:0a:10:00:03,nw_src=10.16.0.4,nw_dst=10.16.0.3,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=40000,tp_dst=9090,tcp_flags=0\n" + _INGRESS_Y_C + """\
egress(dp="ovn-default", inport="y_c", outport="x_b")
-----------------------------------------------------
 0. ls_out_pre_acl (northd.c:5924): ip, priority 100, uuid bc8e2507
    reg0[0] = 1;
    next;
 1. ls_out_pre_lb (northd.c:6111): ip, priority 100, uuid 4ca6a08d
    reg0[2] = 1;
    next;
 2. ls_out_pre_stateful (northd.c:6135): reg0[2] == 1, priority 110, uuid f0ae33e6
    ct_lb_mark;

ct_lb_mark
----------
 3. ls_out_acl_hint (northd.c:6190): ct.new && !ct.est, priority 7, uuid 9453d8a5
    reg0[7] = 1;
    reg0[9] = 1;
    next;
 4. ls_out_acl (northd.c:6365): (reg0[9] == 1) && outport == @kovn_test_deny && ip4, priority 2000, uuid 0a7b6930
    reg0 = 0;
    reject { outport <-> inport; next(pipeline=ingress, table=25); };

tcp_reset
---------
    outport <-> inport;
    next(pipeline=ingress, table=25);

ingress(dp="ovn-default", inport="x_b")
---------------------------------------
25. ls_in_l2_lkup (northd.c:9122): eth.dst == 0a:58:0a:10:00:04, priority 50, uuid 6c8cfbc7
    outport = "y_c";
    output;

egress(dp="ovn-default", inport="x_b", outport="y_c")
-----------------------------------------------------
 0. ls_out_pre_acl (northd.c:5924): ip, priority 100, uuid bc8e2507
    reg0[0] = 1;
    next;
 1. ls_out_pre_lb (northd.c:6111): ip, priority 100, uuid 4ca6a08d
    reg0[2] = 1;
    next;
 2. ls_out_pre_stateful (northd.c:6135): reg0[2] == 1, priority 110, uuid f0ae33e6
    ct_lb_mark;

ct_lb_mark
----------
 3. ls_out_acl_hint (northd.c:6190): ct.new && !ct.est, priority 7, uuid 9453d8a5
    reg0[7] = 1;
    reg0[9] = 1;
    next;
 4. ls_out_acl (northd.c:6811): ip && !ct.est, priority 1, uuid 31ae0884
    reg0[1] = 1;
    next;
 7. ls_out_stateful (northd.c:7611): reg0[1] == 1 && reg0[13] == 0, priority 100, uuid ee4856d3
    ct_commit { ct_mark.blocked = 0; };
    next;
 8. ls_out_check_port_sec (northd.c:5772): 1, priority 0, uuid 01d7bed3
    reg0[15] = check_out_port_sec();
    next;
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 37f6c470
    output;
    /* output to "y_c", type "" */
"""

NO_ENDPOINTS = """\
# tcp,reg14=0x4,vlan_tci=0x0000,dl_src=0a:58:0a:10:00:04,dl_dst=0a:58:0a:10:00:01,nw_src=10.16.0.4,nw_dst=10.96.244.168,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=40000,tp_dst=80,tcp_flags=0

ingress(dp="ovn-default", inport="y_c")
---------------------------------------
 0. ls_in_check_port_sec (northd.c:8432): 1, priority 50, uuid 85d9751d
    reg0[15] = check_in_port_sec();
    next;
 4. ls_in_pre_acl (northd.c:5922): ip, priority 100, uuid 2be47bea
    reg0[0] = 1;
    next;
 5. ls_in_pre_lb (northd.c:6109): ip, priority 100, uuid 2c6f3095
    reg0[2] = 1;
    next;
 6. ls_in_pre_stateful (northd.c:7115): reg0[2] == 1 && ip4.dst == 10.96.244.168 && tcp.dst == 80, priority 120, uuid 530f64c2
    reg1 = 10.96.244.168;
    reg2[0..15] = 80;
    ct_lb_mark;

ct_lb_mark
----------
 7. ls_in_acl_hint (northd.c:6190): ct.new && !ct.est, priority 7, uuid 03c854f9
    reg0[7] = 1;
    reg0[9] = 1;
    next;
 8. ls_in_acl (northd.c:6809): ip && !ct.est, priority 1, uuid d5cf9263
    reg0[1] = 1;
    next;
12. ls_in_lb (northd.c:7558): ct.new && ip4.dst == 10.96.244.168 && tcp.dst == 80, priority 120, uuid e9e98f06
    reg0 = 0;
    reject { outport <-> inport; next(pipeline=egress, table=5); };

tcp_reset
---------
    outport <-> inport;
    next(pipeline=egress, table=5);

egress(dp="ovn-default", outport="y_c")
---------------------------------------
 8. ls_out_check_port_sec (northd.c:5772): 1, priority 0, uuid 01d7bed3
    reg0[15] = check_out_port_sec();
    next;
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 37f6c470
    output;
    /* output to "y_c", type "" */
"""

SPOOFED = """\
# tcp,reg14=0x4,vlan_tci=0x0000,dl_src=0a:58:0a:10:00:05,dl_dst=0a:58:0a:10:00:03,nw_src=10.16.0.4,nw_dst=10.16.0.3,nw_tos=0,nw_ecn=0,nw_ttl=64,nw_frag=no,tp_src=40000,tp_dst=8080,tcp_flags=0

ingress(dp="ovn-default", inport="y_c")
---------------------------------------
 0. ls_in_check_port_sec (northd.c:8432): 1, priority 50, uuid 85d9751d
    reg0[15] = check_in_port_sec();
    next;
 1. ls_in_apply_port_sec (northd.c:8435): reg0[15] == 1, priority 50, uuid 185071b1
    drop;
"""


def _pod(name: str, switch: str, mac: str, ip: str) -> SwitchPort:
    ns, pod = name.split("_", 1)
    return SwitchPort(name, switch, mac, (ip,), names.OwnerType.POD, f"{ns}/{pod}")


def _ids(role: str, policy: str, direction: str, rule: str | None = None) -> dict[str, str]:
    ids = {names.ACL_ROLE_KEY: role, names.POLICY_KEY: policy, names.DIRECTION_KEY: direction}
    return ids if rule is None else {**ids, names.RULE_KEY: rule}


WEB = "x_web-7fcb5ffd4f-zd8qg"
DENY_IN = Acl("8d1e9517-0d73-4a3b-8d47-bc5359ebbddc", "to-lport", 1000,
              "outport == @kovn_test_deny && ip4", "drop", "x:default-deny:ingress",
              _ids("default-deny", "x", "ingress"), "port group kovn_test_deny")
ALLOW_A = Acl("233fc690-20be-4624-a675-78acac3ae5ee", "to-lport", 1002,
              "outport == @kovn_test_deny && ip4.src == {10.16.0.2, 10.16.0.4} && tcp.dst == 8080",
              "allow-related", "x/allow-a:ingress:0", _ids("policy", "x/allow-a", "ingress", "0"),
              "port group kovn_test_deny")
PRIVATE = Acl("891f2ae7-4ef5-4838-ac38-60832ebac256", "to-lport", 999, "ip4.dst == 10.17.0.0/16",
              "drop", None, names.owner_ids(names.OwnerType.SUBNET, "net2"), "switch net2")
NB = Northbound(
    ports={p.name: p for p in (
        _pod("x_a", "ovn-default", "0a:58:0a:10:00:02", "10.16.0.2"),
        _pod("x_b", "ovn-default", "0a:58:0a:10:00:03", "10.16.0.3"),
        _pod("y_c", "ovn-default", "0a:58:0a:10:00:04", "10.16.0.4"),
        _pod(WEB, "ovn-default", "0a:58:0a:10:00:05", "10.16.0.5"),
        _pod("z_d", "net2", "0a:58:0a:11:00:02", "10.17.0.2"),
        SwitchPort("node-node1", "join", "0a:58:64:40:00:02", ("100.64.0.2",),
                   names.OwnerType.NODE, "node1"),
    )},
    router_macs={"ovn-cluster-ovn-default": "0a:58:0a:10:00:01",
                 "ovn-cluster-net2": "0a:58:0a:11:00:01"},
    load_balancers={"Service_x/web_TCP": {"10.96.64.42:80": "10.16.0.5:8080,10.16.0.6:8080"},
                    "Service_y/empty_TCP": {"10.96.244.168:80": ""}},
    acls={a.uuid: a for a in (DENY_IN, ALLOW_A, PRIVATE)},
)
# SB Logical_Flow rows of the traced ACL-stage flows, as `ovsdb-client query` selected them.
LFLOWS = [
    {"_uuid": "d5cf9263-a1a0-4f3c-9eff-946f28aca91f", "priority": 1, "match": "ip && !ct.est",
     "external_ids": {"source": "northd.c:6809", "stage-name": "ls_in_acl"}},
    {"_uuid": "d61fdc32-604f-4c16-a7ec-a7194e6cdc75", "priority": 2002,
     "match": "reg0[7] == 1 && (outport == @kovn_test_deny && ip4.src == {10.16.0.2, 10.16.0.4} && tcp.dst == 8080)",
     "external_ids": {"source": "northd.c:6445", "stage-hint": "233fc690", "stage-name": "ls_out_acl"}},
    {"_uuid": "17789967-8d32-4825-ad22-7b916f4bc3ae", "priority": 2000,
     "match": "reg0[9] == 1 && (outport == @kovn_test_deny && ip4)",
     "external_ids": {"source": "northd.c:6543", "stage-hint": "8d1e9517", "stage-name": "ls_out_acl"}},
    {"_uuid": "0a7b6930-0cc4-4d3a-b028-deab599fd8ad", "priority": 2000,
     "match": "(reg0[9] == 1) && outport == @kovn_test_deny && ip4",
     "external_ids": {"source": "northd.c:6365", "stage-hint": "8d1e9517", "stage-name": "ls_out_acl"}},
]


def _mapped(text: str, nb: Northbound = NB) -> tuple[list, dict[str, Acl]]:
    """The steps of a sample and the ACLs its ACL-stage flows map to, as the CLI does it."""
    steps = parse_trace(text)
    acl_flows = acl_steps(steps)
    hints = stage_hints(acl_flows, LFLOWS)
    found = {s.uuid: acl_for(s, hints.get(s.uuid), nb.acls) for s in acl_flows}
    return steps, {uuid: acl for uuid, acl in found.items() if acl is not None}


# --- the packet -------------------------------------------------------------------------------

def test_microflow_to_a_pod_on_the_same_switch_carries_its_mac() -> None:
    src = source_port(NB, "y", "c")
    target = resolve_target(NB, src, "pod", "x/b", "tcp", 8080)
    assert microflow(src, target, "tcp") == (
        'inport == "y_c" && eth.src == 0a:58:0a:10:00:04 && eth.dst == 0a:58:0a:10:00:03 && '
        "ip4.src == 10.16.0.4 && ip4.dst == 10.16.0.3 && ip.ttl == 64 && "
        "tcp.src == 40000 && tcp.dst == 8080")
    assert target.text == "10.16.0.3 (x/b)" and target.expected == NB.ports["x_b"]


def test_microflow_off_the_switch_goes_to_the_router_port_mac() -> None:
    src = source_port(NB, "y", "c")
    for kind, dst, label in (("ip", "10.17.0.2", "z/d"), ("ip", "100.64.0.2", "node node1"),
                             ("ip", "198.51.100.1", None)):
        target = resolve_target(NB, src, kind, dst, "icmp", None)
        assert target.mac == "0a:58:0a:10:00:01"
        assert target.text == (f"{dst} ({label})" if label else dst)
    flow = microflow(src, resolve_target(NB, src, "pod", "z/d", "icmp", None), "icmp")
    assert flow.endswith("ip4.dst == 10.17.0.2 && ip.ttl == 64 && icmp4.type == 8 && "
                         "icmp4.code == 0")


def test_a_service_vip_given_as_an_ip_is_named() -> None:
    target = resolve_target(NB, NB.ports["y_c"], "ip", "10.96.64.42", "tcp", 80)
    assert target.text == "10.96.64.42 (a VIP of Service_x/web_TCP)"
    assert target.backend is None and target.mac == "0a:58:0a:10:00:01"
    portless = dataclasses.replace(NB, load_balancers={"Service_x/web_TCP": {"10.96.9.9": ""}})
    with pytest.raises(TraceError, match="no tcp port 80"):
        resolve_target(portless, NB.ports["y_c"], "svc", "x/web", "tcp", 80)


def test_service_target_takes_the_vip_and_a_backend() -> None:
    src = source_port(NB, "x", "a")
    target = resolve_target(NB, src, "svc", "x/web", "tcp", None)
    assert (target.ip, target.port, target.mac) == ("10.96.64.42", 80, "0a:58:0a:10:00:01")
    assert (target.backend, target.other_backends) == ("10.16.0.5:8080", ("10.16.0.6:8080",))
    assert target.expected == NB.ports[WEB] and target.load_balancer == "Service_x/web_TCP"
    picked = resolve_target(NB, src, "svc", "x/web", "tcp", 80, backend="10.16.0.6:8080")
    assert picked.backend == "10.16.0.6:8080" and picked.expected is None  # .6 not in NB here
    assert trace_argv("unix:sb", "ovn-default", "F", picked.backend)[-3:] == [
        "--lb-dst=10.16.0.6:8080", "ovn-default", "F"]
    empty = resolve_target(NB, source_port(NB, "y", "c"), "svc", "y/empty", "tcp", None)
    assert empty.backend is None and empty.expected is None


@pytest.mark.parametrize(("kind", "dst", "protocol", "port", "backend", "message"), [
    ("svc", "x/web", "tcp", 80, "10.1.1.1:80", "not a backend of Service_x/web_TCP"),
    ("svc", "x/web", "tcp", 81, None, "no tcp port 81 (its tcp ports: 80)"),
    ("svc", "x/web", "udp", 80, None, "no load balancer Service_x/web_UDP in NB"),
    ("svc", "x/web", "icmp", None, None, "Services balance tcp or udp"),
    ("pod", "x/gone", "tcp", 80, None, "no port x_gone with an IPv4 address in NB"),
    ("pod", "x/b", "tcp", 80, "10.16.0.5:8080", "--backend applies to a Service"),
])
def test_unresolvable_destinations_say_why(kind: str, dst: str, protocol: str,
                                           port: int | None, backend: str | None,
                                           message: str) -> None:
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_target(NB, NB.ports["x_a"], kind, dst, protocol, port, backend)


def test_a_pod_missing_from_nb_says_what_to_check() -> None:
    with pytest.raises(TraceError, match="no port x_zz in NB: is the pod running and kovn "
                                         "controller up"):
        source_port(NB, "x", "zz")


def test_parse_addresses_takes_mac_and_ips() -> None:
    assert parse_addresses(["0a:58:0a:10:00:02 10.16.0.2"]) == ("0a:58:0a:10:00:02",
                                                                  ("10.16.0.2",))
    assert parse_addresses(["router"]) is None and parse_addresses(["dynamic"]) is None


# --- the command line -------------------------------------------------------------------------

def test_parse_request_reads_every_destination_form() -> None:
    assert parse_request("x/a", ["10.16.0.7", "tcp", "80"]).dst_kind == "ip"
    pod = parse_request("x/a", ["y/b", "ICMP"])
    assert (pod.source, pod.dst_kind, pod.dst, pod.protocol, pod.port) == (
        ("x", "a"), "pod", "y/b", "icmp", None)
    svc = parse_request("x/a", ["svc", "x/web", "tcp"])
    assert (svc.dst_kind, svc.dst, svc.port) == ("svc", "x/web", None)


@pytest.mark.parametrize(("words", "message"), [
    ([], "missing destination"), (["y/b"], "give a protocol"),
    (["y/b", "sctp", "1"], "unknown protocol 'sctp'"), (["y/b", "tcp"], "needs a destination port"),
    (["y/b", "icmp", "3"], "icmp takes no port"), (["y/b", "tcp", "0"], "not a number"),
    (["web", "tcp", "80"], "neither an IPv4 address"), (["svc"], "`svc` needs the Service"),
    (["y/b", "tcp", "80", "9"], "unexpected words"),
])
def test_parse_request_errors(words: list[str], message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_request("x/a", words)


# --- ovn-trace's output and the ACLs behind it ------------------------------------------------

def test_parse_trace_reads_stages_priorities_uuids_and_outputs() -> None:
    steps = parse_trace(ALLOWED)
    assert [(s.pipeline, s.table, s.stage) for s in steps][:2] == [
        ("ingress", 0, "ls_in_check_port_sec"), ("ingress", 4, "ls_in_pre_acl")]
    assert [(s.stage, s.priority, s.uuid) for s in acl_steps(steps)] == [
        ("ls_in_acl", 1, "d5cf9263"), ("ls_out_acl", 2002, "d61fdc32")]
    assert steps[-1].outputs == [("x_b", "")] and steps[-1].datapath == "ovn-default"
    assert parse_trace(DENIED)[-1].drops and parse_trace(SPOOFED)[-1].drops
    assert any(s.rejects for s in parse_trace(REJECTED))


def test_traced_acl_flows_map_to_their_nb_acls_by_stage_hint() -> None:
    _, allowed = _mapped(ALLOWED)
    assert allowed == {"d61fdc32": ALLOW_A}  # the OVN-own priority 1 flow maps to no ACL
    assert _mapped(DENIED)[1] == {"17789967": DENY_IN}


def test_without_a_stage_hint_the_acl_is_found_by_its_match_and_priority() -> None:
    for text in (DENIED, REJECTED):  # `reg0[9] == 1 && (M)` and `(reg0[9] == 1) && M`
        step = next(s for s in acl_steps(parse_trace(text)) if s.priority == 2000)
        assert acl_for(step, None, NB.acls) == DENY_IN


# --- the verdict ------------------------------------------------------------------------------

def test_allowed_by_a_policy_rule() -> None:
    steps, acls = _mapped(ALLOWED)
    verdict = decide(steps, acls, "y_c", "x_b")
    assert (verdict.word, verdict.reason) == (
        "allowed", "by NetworkPolicy x/allow-a, ingress rule 0; no NetworkPolicy applies to egress")
    target = resolve_target(NB, NB.ports["y_c"], "pod", "x/b", "tcp", 8080)
    assert report("y/c", target, "tcp", verdict) == [
        "y/c -> 10.16.0.3 (x/b) tcp/8080: allowed by NetworkPolicy x/allow-a, ingress rule 0; "
        "no NetworkPolicy applies to egress",
        '  ACL "x/allow-a:ingress:0" (to-lport 1002 allow-related on port group kovn_test_deny) '
        "in ls_out_acl of ovn-default",
        "  delivered to x_b"]


def test_allowed_without_any_kovn_acl() -> None:
    verdict = decide(parse_trace(ALLOWED), {}, "y_c", "x_b")
    assert (verdict.word, verdict.reason, verdict.delivered) == (
        "allowed", "(no NetworkPolicy applies)", ("x_b",))


def test_dropped_by_default_deny() -> None:
    steps, acls = _mapped(DENIED)
    verdict = decide(steps, acls, "y_c", "x_b")
    assert (verdict.word, verdict.reason) == ("dropped", "by default deny of namespace x (ingress)")


def test_a_reject_acl_decides_although_the_reset_reaches_the_source() -> None:
    rejecting = dataclasses.replace(NB, acls={**NB.acls, DENY_IN.uuid: dataclasses.replace(
        DENY_IN, action="reject")})
    steps, acls = _mapped(REJECTED, rejecting)
    verdict = decide(steps, acls, "y_c", "x_b")
    assert (verdict.word, verdict.reason) == ("rejected", "by default deny of namespace x (ingress)")
    assert any(("y_c", "") in s.outputs for s in steps)  # the TCP RST back to y/c


def test_a_service_without_endpoints_is_rejected_by_its_load_balancer() -> None:
    verdict = decide(parse_trace(NO_ENDPOINTS), {}, "y_c", None, "Service_y/empty_TCP")
    assert (verdict.word, verdict.reason) == (
        "rejected", "by load balancer Service_y/empty_TCP (no backends: the Service has no "
        "ready endpoints)")
    assert verdict.delivered == ("y_c",)


def test_a_drop_outside_the_acls_names_its_stage() -> None:
    verdict = decide(parse_trace(SPOOFED), {}, "y_c", "x_b")
    assert (verdict.word, verdict.reason) == (
        "dropped", "in ls_in_apply_port_sec of ovn-default, not by an ACL (logical flow "
        "'reg0[15] == 1')")
    unmapped = decide(parse_trace(DENIED), {}, "y_c", "x_b")
    assert unmapped.word == "dropped" and "which is no NB ACL's" in unmapped.reason


@pytest.mark.parametrize(("acl", "text"), [
    (ALLOW_A, "NetworkPolicy x/allow-a, ingress rule 0"),
    (DENY_IN, "default deny of namespace x (ingress)"),
    (dataclasses.replace(DENY_IN, external_ids=_ids("always", "y", "ingress", "nodes")),
     "isolation exception for the nodes (namespace y, ingress)"),
    (PRIVATE, "Subnet net2 (private)"),
    (dataclasses.replace(PRIVATE, name="mine", external_ids={}),
     'ACL "mine" on switch net2 (not kovn\'s)'),
])
def test_describe_acl(acl: Acl, text: str) -> None:
    assert describe_acl(acl) == text


def test_service_report_names_the_chosen_backend() -> None:
    target = resolve_target(NB, NB.ports["x_a"], "svc", "x/web", "tcp", 80)
    verdict = Verdict("allowed", "(no NetworkPolicy applies)", delivered=(WEB,))
    assert report("x/a", target, "tcp", verdict) == [
        "x/a -> Service x/web (10.96.64.42) tcp/80: allowed (no NetworkPolicy applies)",
        f"  load balancer Service_x/web_TCP chose 10.16.0.5:8080 (x/{WEB[2:]}); other "
        "backends: 10.16.0.6:8080 (pick one with --backend)",
        f"  delivered to {WEB}"]
