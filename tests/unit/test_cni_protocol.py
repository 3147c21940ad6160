"""The CNI rules, pure: env + stdin -> request or error code, results per cniVersion, wire."""

from __future__ import annotations

import json

import pytest

from node.cni_protocol import (
    SUPPORTED_VERSIONS,
    AddOutcome,
    Attachment,
    CniError,
    CniRequest,
    Code,
    add_result,
    decode,
    default_routes,
    encode,
    error_response,
    ok_response,
    parse_cni_args,
    parse_request,
    printed,
    response_error,
    version_result,
)
from node.plumbing import host_veth_name

POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_UID=u-1"


def conf(version: str = "1.0.0", **extra: object) -> bytes:
    return json.dumps({"cniVersion": version, "name": "kovn", "type": "kovn-cni",
                       **extra}).encode()


def env(command: str, **extra: str) -> dict[str, str]:
    base = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/run/netns/p",
            "CNI_IFNAME": "eth0", "CNI_ARGS": POD_ARGS, "CNI_PATH": "/opt/cni/bin"}
    base.update(extra)
    return {k: v for k, v in base.items() if v != "-"}


def code_of(env_: dict[str, str], stdin: bytes) -> int:
    with pytest.raises(CniError) as err:
        parse_request(env_, stdin)
    return err.value.code


def test_add_request_parsed() -> None:
    req = parse_request(env("ADD"), conf(annotationTimeout=5, socket="/s.sock"))
    assert (req.command, req.container_id, req.netns, req.ifname) == (
        "ADD", "c0ffee", "/run/netns/p", "eth0")
    assert (req.pod_namespace, req.pod_name, req.pod_uid) == ("ns", "web", "u-1")
    assert req.cni_version == "1.0.0" and req.network == "kovn"
    assert req.annotation_timeout == 5.0
    assert req.socket_path({}) == "/s.sock"
    assert req.socket_path({"KOVN_CNI_SOCKET": "/env.sock"}) == "/env.sock"


def test_default_socket() -> None:
    assert parse_request(env("DEL"), conf()).socket_path({}) == "/var/run/kovn/cni.sock"


@pytest.mark.parametrize(("env_", "stdin", "code"), [
    # environment (4)
    ({}, conf(), Code.INVALID_ENVIRONMENT),
    (env("FROB"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_CONTAINERID="-"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_NETNS="-"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_IFNAME="-"), conf(), Code.INVALID_ENVIRONMENT),
    (env("CHECK", CNI_NETNS="-"), conf(prevResult={}), Code.INVALID_ENVIRONMENT),
    (env("DEL", CNI_CONTAINERID="-"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_CONTAINERID="-bad"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_CONTAINERID="a b"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_IFNAME="a-name-longer-than-15"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_IFNAME="eth/0"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_IFNAME=".."), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_ARGS="K8S_POD_NAMESPACE=ns"), conf(), Code.INVALID_ENVIRONMENT),
    (env("ADD", CNI_ARGS="novalue"), conf(), Code.INVALID_ENVIRONMENT),
    # decoding (6) and config (7)
    (env("ADD"), b"", Code.DECODE_FAILED),
    (env("ADD"), b"{not json", Code.DECODE_FAILED),
    (env("ADD"), b"[1, 2]", Code.INVALID_CONFIG),
    (env("ADD"), b'{"name": "kovn", "type": "kovn-cni"}', Code.INVALID_CONFIG),
    (env("ADD"), b'{"cniVersion": "1.0.0", "type": "kovn-cni"}', Code.INVALID_CONFIG),
    (env("ADD"), conf(annotationTimeout=-1), Code.INVALID_CONFIG),
    (env("ADD"), conf(annotationTimeout="soon"), Code.INVALID_CONFIG),
    (env("ADD"), conf(socket=7), Code.INVALID_CONFIG),
    (env("GC"), conf("1.1.0"), Code.INVALID_CONFIG),
    (env("GC"), conf("1.1.0", **{"cni.dev/valid-attachments": [{"ifname": "eth0"}]}),
     Code.INVALID_CONFIG),
    (env("CHECK"), conf(), Code.INVALID_CONFIG),
    # versions (1)
    (env("ADD"), conf("0.2.0"), Code.INCOMPATIBLE_VERSION),
    (env("ADD"), conf("2.0.0"), Code.INCOMPATIBLE_VERSION),
    (env("STATUS"), conf("1.0.0"), Code.INCOMPATIBLE_VERSION),
    (env("GC"), conf("1.0.0", **{"cni.dev/valid-attachments": []}), Code.INCOMPATIBLE_VERSION),
    (env("CHECK"), conf("0.3.1", prevResult={}), Code.INCOMPATIBLE_VERSION),
])
def test_invalid_invocations(env_: dict[str, str], stdin: bytes, code: int) -> None:
    assert code_of(env_, stdin) == code


def test_missing_env_is_named() -> None:
    with pytest.raises(CniError) as err:
        parse_request(env("ADD", CNI_NETNS="-", CNI_IFNAME="-"), conf())
    assert "CNI_NETNS, CNI_IFNAME" in err.value.msg


@pytest.mark.parametrize(("command", "drop"), [
    ("DEL", "CNI_NETNS"),  # DEL must work when the netns is already gone
    ("DEL", "CNI_ARGS"),
    ("STATUS", "CNI_CONTAINERID"),
    ("GC", "CNI_CONTAINERID"),
])
def test_optional_env(command: str, drop: str) -> None:
    stdin = conf("1.1.0", **{"cni.dev/valid-attachments": []})
    assert parse_request(env(command, **{drop: "-"}), stdin).command == command


def test_gc_valid_attachments() -> None:
    valid = [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net1"}]
    req = parse_request(env("GC"), conf("1.1.0", **{"cni.dev/valid-attachments": valid}))
    assert req.valid_attachments == {Attachment("a", "eth0"), Attachment("b", "net1")}


@pytest.mark.parametrize(("stdin", "version"), [
    (b"", "1.1.0"),
    (b"garbage", "1.1.0"),
    (b'{"cniVersion": "0.4.0"}', "0.4.0"),
    (b'{"cniVersion": "9.9.9"}', "1.1.0"),
])
def test_version_needs_nothing(stdin: bytes, version: str) -> None:
    req = parse_request({"CNI_COMMAND": "VERSION"}, stdin)
    result = version_result(req.config.get("cniVersion"))
    assert result == {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def test_cni_args() -> None:
    assert parse_cni_args("") == {}
    assert parse_cni_args("A=1;;B=x=y") == {"A": "1", "B": "x=y"}


OUTCOME = AddOutcome(host_ifname="veth0123456789a", host_mac="aa:bb:cc:dd:ee:ff",
                     ifname="eth0", mac="0a:58:0a:10:00:05", sandbox="/run/netns/p",
                     ip="10.16.0.5/16", gateway="10.16.0.1", mtu=1400,
                     routes=default_routes("10.16.0.1", [("10.96.0.0/16", "10.16.0.1")]))


def test_add_result_1_0() -> None:
    assert add_result("1.0.0", OUTCOME) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "veth0123456789a", "mac": "aa:bb:cc:dd:ee:ff"},
                       {"name": "eth0", "mac": "0a:58:0a:10:00:05", "sandbox": "/run/netns/p"}],
        "ips": [{"address": "10.16.0.5/16", "gateway": "10.16.0.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.16.0.1"},
                   {"dst": "10.96.0.0/16", "gw": "10.16.0.1"}],
        "dns": {},
    }


def test_add_result_versions() -> None:
    assert add_result("0.4.0", OUTCOME)["ips"][0]["version"] == "4"
    assert "version" not in add_result("1.1.0", OUTCOME)["ips"][0]
    assert [i.get("mtu") for i in add_result("1.1.0", OUTCOME)["interfaces"]] == [1400, 1400]
    assert all("mtu" not in i for i in add_result("1.0.0", OUTCOME)["interfaces"])


def test_error_json_shape() -> None:
    error = CniError(Code.TRY_AGAIN_LATER, "later", "why")
    assert error.to_json("1.0.0") == {"cniVersion": "1.0.0", "code": 11, "msg": "later",
                                      "details": "why"}


def test_wire_round_trip() -> None:
    req = parse_request(env("ADD"), conf(annotationTimeout=3))
    assert CniRequest.from_wire(decode(encode(req.to_wire()))) == req
    assert response_error(decode(encode(ok_response({"x": 1})))) is None
    back = response_error(decode(encode(error_response(CniError(7, "bad", "d")))))
    assert back is not None and (back.code, back.msg, back.details) == (7, "bad", "d")


def test_agent_revalidates() -> None:
    wire = parse_request(env("ADD"), conf()).to_wire()
    wire["config"]["cniVersion"] = "0.1.0"
    with pytest.raises(CniError) as err:
        CniRequest.from_wire(wire)
    assert err.value.code == Code.INCOMPATIBLE_VERSION
    with pytest.raises(CniError) as err:
        CniRequest.from_wire({"config": {}})
    assert err.value.code == Code.DECODE_FAILED


def test_host_veth_name() -> None:
    name = host_veth_name("0123456789abcdef")
    assert len(name) == 15 and name.startswith("veth")
    assert name == host_veth_name("0123456789abcdef", "eth0")
    assert host_veth_name("0123456789abcdef", "net1") != name
    assert host_veth_name("other") != name


def test_printed_frames_what_kovn_cni_prints() -> None:
    """The compiled shim copies this out: header "<exit> <stdout bytes>", stdout, stderr."""
    ok = printed(ok_response({"cniVersion": "1.0.0", "ips": []}),
                 {"stdin": '{"cniVersion": "1.0.0"}'})
    header, rest = ok.split(b"\n", 1)
    assert header == f"0 {len(rest)}".encode() and json.loads(rest) == {
        "cniVersion": "1.0.0", "ips": []}
    assert printed(ok_response(None), {"stdin": "{}"}) == b"0 0\n"
    failed = printed(error_response(CniError(Code.TRY_AGAIN_LATER, "not yet", "pod a/b")),
                     {"stdin": '{"cniVersion": "0.4.0"}'})
    header, rest = failed.split(b"\n", 1)
    code, length = header.split()
    assert code == b"1"
    assert json.loads(rest[:int(length)]) == {"cniVersion": "0.4.0", "code": 11,
                                              "msg": "not yet", "details": "pod a/b"}
    assert rest[int(length):] == b"kovn-cni: not yet\n"
    unknown = printed(error_response(CniError(Code.INTERNAL, "x")), {"stdin": "not json"})
    assert json.loads(unknown.split(b"\n", 1)[1].split(b"\n")[0])["cniVersion"] == "1.1.0"
