"""The CNI side of kovn, pure: what a runtime hands the plugin, what the plugin answers, and
the small JSON protocol between the `kovn-cni` shim and the `kovn node` agent.

A runtime runs the plugin with CNI_* environment variables and the network config on stdin
(CNI spec 1.0.0 / 1.1.0); the plugin prints a result, or an error
`{"cniVersion", "code", "msg", "details"}` with one of the spec's well-known codes, and exits
non-zero. Everything here is input -> output so that the shim stays small and fast and the
rules (which variable each command needs, which cniVersion allows which command, how a result
looks in each version) are unit-tested as tables.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
DEFAULT_SOCKET = "/var/run/kovn/cni.sock"
SOCKET_ENV = "KOVN_CNI_SOCKET"
VALID_ATTACHMENTS = "cni.dev/valid-attachments"

# Environment variables each command needs (CNI spec, "Parameters").
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}
# Commands a config of an older cniVersion cannot ask for.
_SINCE = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class Code(IntEnum):
    """CNI error codes: 1-99 are the spec's well-known ones, 100+ are kovn's own."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODE_FAILED = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    INTERNAL = 100
    POD_NOT_FOUND = 101
    POD_MISMATCH = 102
    BAD_ANNOTATION = 103
    OVS_FAILURE = 104
    CHECK_FAILED = 105
    PLUMBING_FAILED = 106


class CniError(Exception):
    """A failure the plugin reports to the runtime as a CNI error."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = LATEST_VERSION) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg,
                "details": self.details}

    def __repr__(self) -> str:
        return f"CniError({self.code}, {self.msg!r})"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def version_result(requested: str | None) -> dict[str, Any]:
    """The answer to VERSION: what we support, in the requested version if we know it."""
    version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: `K=V;K=V`. CniError(4) on a pair without '='."""
    args: dict[str, str] = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(Code.INVALID_ENVIRONMENT, f"CNI_ARGS: {pair!r} is not KEY=VALUE",
                           f"CNI_ARGS={text}")
        args[key] = value
    return args


@dataclass(frozen=True)
class Attachment:
    """One (container, interface) of this network, as GC's valid-attachments names it."""

    container_id: str
    ifname: str


@dataclass(frozen=True)
class CniRequest:
    """One plugin invocation: the command, its environment and the network config."""

    command: str
    config: dict[str, Any] = field(default_factory=dict)
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion") or LATEST_VERSION)

    @property
    def network(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def pod_uid(self) -> str:
        return self.args.get("K8S_POD_UID", "")

    @property
    def annotation_timeout(self) -> float | None:
        value = self.config.get("annotationTimeout")
        return None if value is None else float(value)

    @property
    def valid_attachments(self) -> frozenset[Attachment]:
        return frozenset(Attachment(a["containerID"], a["ifname"])
                         for a in self.config.get(VALID_ATTACHMENTS, ()))

    @property
    def prev_result(self) -> dict[str, Any]:
        return dict(self.config.get("prevResult") or {})

    def socket_path(self, env: Mapping[str, str]) -> str:
        """Where the agent listens: $KOVN_CNI_SOCKET, else config "socket", else the default."""
        return env.get(SOCKET_ENV) or str(self.config.get("socket") or DEFAULT_SOCKET)

    def to_wire(self) -> dict[str, Any]:
        return {"command": self.command, "containerID": self.container_id,
                "netns": self.netns, "ifname": self.ifname, "args": self.args,
                "path": self.path, "config": self.config}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> CniRequest:
        """The agent's side: rebuild and re-validate what the shim sent, either the raw
        invocation (`{"env": {CNI_*...}, "stdin": "<network config>"}`, what kovn-cni sends:
        it parses nothing itself, see node/cni_plugin.py) or an already parsed request."""
        if "env" in data:
            env, stdin = data.get("env"), data.get("stdin")
            if not isinstance(env, dict) or not isinstance(stdin, str):
                raise CniError(Code.DECODE_FAILED, "malformed request to the agent: env must "
                               "be an object and stdin a string")
            return parse_request({str(k): str(v) for k, v in env.items()}, stdin.encode())
        try:
            request = cls(command=str(data["command"]), config=dict(data.get("config") or {}),
                          container_id=str(data.get("containerID") or ""),
                          netns=str(data.get("netns") or ""),
                          ifname=str(data.get("ifname") or ""),
                          args={str(k): str(v) for k, v in (data.get("args") or {}).items()},
                          path=str(data.get("path") or ""))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise CniError(Code.DECODE_FAILED, f"malformed request to the agent: {exc}") from exc
        _check_request(request)
        return request


def parse_request(env: Mapping[str, str], stdin: bytes) -> CniRequest:
    """What the runtime asked for, from the environment and stdin; CniError when it is not a
    valid CNI invocation (the error says which variable or field is wrong)."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError(Code.INVALID_ENVIRONMENT,
                       "CNI_COMMAND is not set: kovn-cni is a CNI plugin, run by a container "
                       "runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC and the "
                       "network config on stdin")
    if command not in COMMANDS:
        raise CniError(Code.INVALID_ENVIRONMENT,
                       f"unknown CNI_COMMAND {command!r}; expected one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        # Nothing is required: answer even for an empty or unreadable stdin.
        try:
            config = json.loads(stdin or b"{}")
        except ValueError:
            config = {}
        return CniRequest(command, config if isinstance(config, dict) else {})
    config = decode_config(stdin)
    request = CniRequest(
        command=command, config=config, container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""), ifname=env.get("CNI_IFNAME", ""),
        args=parse_cni_args(env.get("CNI_ARGS", "")), path=env.get("CNI_PATH", ""))
    missing = [name for name in _REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise CniError(Code.INVALID_ENVIRONMENT,
                       f"{command} needs the environment variable(s) {', '.join(missing)}, "
                       "which the runtime did not set")
    _check_request(request)
    return request


def decode_config(stdin: bytes) -> dict[str, Any]:
    """The network config from stdin: 6 if it is not JSON, 7 if it is not a valid config."""
    if not stdin.strip():
        raise CniError(Code.DECODE_FAILED,
                       "no network config on stdin: the runtime must pass the network "
                       "configuration JSON (with cniVersion, name, type) on stdin")
    try:
        config = json.loads(stdin)
    except ValueError as exc:
        raise CniError(Code.DECODE_FAILED, f"the network config on stdin is not JSON: {exc}",
                       stdin[:200].decode(errors="replace")) from exc
    if not isinstance(config, dict):
        raise CniError(Code.INVALID_CONFIG,
                       f"the network config must be a JSON object, got {type(config).__name__}")
    return config


def _check_request(request: CniRequest) -> None:
    """Checks shared by the shim and the agent (the agent never trusts the socket's peer)."""
    config, command = request.config, request.command
    if command not in COMMANDS:
        raise CniError(Code.INVALID_ENVIRONMENT, f"unknown CNI command {command!r}")
    if command == "VERSION":
        return
    version = config.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(Code.INVALID_CONFIG, "the network config has no cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(Code.INCOMPATIBLE_VERSION,
                       f"cniVersion {version} is not supported; kovn-cni supports "
                       f"{', '.join(SUPPORTED_VERSIONS)}")
    since = _SINCE.get(command)
    if since and version_tuple(version) < version_tuple(since):
        raise CniError(Code.INCOMPATIBLE_VERSION,
                       f"{command} needs cniVersion {since} or later, the config has {version}")
    for key in ("name", "type"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise CniError(Code.INVALID_CONFIG, f"the network config has no {key!r}")
    _check_config_fields(config, command)
    if request.container_id and not _CONTAINER_ID.fullmatch(request.container_id):
        raise CniError(Code.INVALID_ENVIRONMENT,
                       f"CNI_CONTAINERID {request.container_id!r} is invalid: it must start "
                       "with a letter or digit, then letters, digits, '_', '.' or '-'")
    if request.ifname:
        check_ifname(request.ifname)
    if command == "ADD" and not (request.pod_namespace and request.pod_name):
        raise CniError(Code.INVALID_ENVIRONMENT,
                       "ADD needs the pod in CNI_ARGS: "
                       "K8S_POD_NAMESPACE=<namespace>;K8S_POD_NAME=<name>[;K8S_POD_UID=<uid>]")


def _check_config_fields(config: Mapping[str, Any], command: str) -> None:
    socket = config.get("socket")
    if socket is not None and (not isinstance(socket, str) or not socket):
        raise CniError(Code.INVALID_CONFIG, f'"socket" must be a path, got {socket!r}')
    timeout = config.get("annotationTimeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout <= 0):
        raise CniError(Code.INVALID_CONFIG,
                       f'"annotationTimeout" must be a positive number of seconds, got {timeout!r}')
    if command == "GC":
        valid = config.get(VALID_ATTACHMENTS)
        if not isinstance(valid, list) or not all(
                isinstance(a, dict) and isinstance(a.get("containerID"), str)
                and isinstance(a.get("ifname"), str) for a in valid):
            raise CniError(Code.INVALID_CONFIG,
                           f'GC needs "{VALID_ATTACHMENTS}": a list of '
                           '{"containerID": ..., "ifname": ...} (refusing to guess: a missing '
                           "list would delete every attachment)")
    if command == "CHECK" and not isinstance(config.get("prevResult"), dict):
        raise CniError(Code.INVALID_CONFIG, "CHECK needs prevResult in the network config")


def check_ifname(name: str) -> None:
    """Linux interface name rules, as the spec states them (CniError 4 otherwise)."""
    if (not name or len(name) > 15 or name in (".", "..")
            or any(c in name for c in "/:") or any(c.isspace() for c in name)):
        raise CniError(Code.INVALID_ENVIRONMENT,
                       f"CNI_IFNAME {name!r} is not a valid interface name (1-15 characters, "
                       "not . or .., no '/', ':' or whitespace)")


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddOutcome:
    """What ADD did, independent of the CNI version it is reported in."""

    host_ifname: str
    host_mac: str
    ifname: str
    mac: str
    sandbox: str  # the netns path
    ip: str  # with prefix length
    gateway: str
    mtu: int
    routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, next hop)


def add_result(version: str, outcome: AddOutcome) -> dict[str, Any]:
    """The ADD result in the config's cniVersion (0.3.x/0.4.0 carry "version" in each ip)."""
    modern = version_tuple(version) >= (1, 0, 0)
    host = {"name": outcome.host_ifname, "mac": outcome.host_mac}
    pod = {"name": outcome.ifname, "mac": outcome.mac, "sandbox": outcome.sandbox}
    if version_tuple(version) >= (1, 1, 0):
        host["mtu"] = pod["mtu"] = outcome.mtu
    ip: dict[str, Any] = {"address": outcome.ip, "interface": 1}
    if outcome.gateway:
        ip["gateway"] = outcome.gateway
    if not modern:
        ip["version"] = str(ipaddress.ip_interface(outcome.ip).version)
    routes = [{"dst": dst, "gw": via} for dst, via in outcome.routes]
    return {"cniVersion": version, "interfaces": [host, pod], "ips": [ip], "routes": routes,
            "dns": {}}


def default_routes(gateway: str, extra: Sequence[tuple[str, str]] = ()
                   ) -> tuple[tuple[str, str], ...]:
    """The pod's routes: the default route via its gateway, then the annotation's own."""
    routes: list[tuple[str, str]] = []
    if gateway:
        family = ipaddress.ip_address(gateway).version
        routes.append(("0.0.0.0/0" if family == 4 else "::/0", gateway))
    routes += [r for r in extra if r not in routes]
    return tuple(routes)


# --- the shim <-> agent wire format: one JSON object each way, newline-terminated ------------


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(data: bytes) -> dict[str, Any]:
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


def ok_response(result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"ok": True, "result": dict(result) if result is not None else None}


def error_response(error: CniError) -> dict[str, Any]:
    return {"ok": False, "error": {"code": error.code, "msg": error.msg,
                                   "details": error.details}}


def response_error(response: Mapping[str, Any]) -> CniError | None:
    """The CniError an agent response carries, or None for success."""
    if response.get("ok"):
        return None
    error = response.get("error") or {}
    return CniError(int(error.get("code", Code.INTERNAL)), str(error.get("msg", "agent error")),
                    str(error.get("details", "")))


def printed(response: Mapping[str, Any], message: Mapping[str, Any]) -> bytes:
    """`response` as kovn-cni prints it, for a request that asked `"reply": "printed"` (the
    compiled shim, node/cni_shim.c, which copies this out and parses no JSON itself):
    b"<exit code> <length of stdout>\\n", then stdout, then stderr. As node/cni_plugin.py
    prints: the result (nothing for none), or the CNI error in the config's cniVersion
    (the latest if it names none kovn supports) and a line on stderr."""
    error = response_error(response)
    if error is None:
        result = response.get("result")
        out, err, code = (json.dumps(result) + "\n" if result is not None else ""), "", 0
    else:
        try:
            version = decode(str(message.get("stdin", "")).encode()).get("cniVersion")
        except ValueError:
            version = None
        version = version if version in SUPPORTED_VERSIONS else LATEST_VERSION
        out = json.dumps(error.to_json(version)) + "\n"
        err, code = f"kovn-cni: {error.msg}\n", 1
    stdout = out.encode()
    return f"{code} {len(stdout)}\n".encode() + stdout + err.encode()
