"""The sandbox kubelet's container runtime: a pod is a network namespace plumbed by the CNI
plugin, plus servers answering on its declared ports.

Every pod the kubelet runs has a record in `<state>/pods/<uid>.json`, written before anything
is created for it, so a restarted kubelet adopts its pods (no second CNI ADD) and a crash
half-way leaves nothing it cannot clean up. `<state>/cni-add.jsonl` logs every ADD with its
duration and the plugin's CPU time (bench/pod_ready.py reads it). Pod netns are made
in-process (sandbox.podnetns): the harness should cost little next to what it measures.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract import defaults
from node.netns import in_netns
from sandbox import cni, podnetns, podstatus, resolvconf
from sandbox.errors import SandboxError
from sandbox.serve_hostname import HostnameServers, listen, sctp_supported

LOG = logging.getLogger("kovn.sandbox.kubelet")
PODS_DIR = "pods"
ADD_LOG = "cni-add.jsonl"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRecord:
    """One pod as the runtime knows it; JSON in the state dir."""

    uid: str
    namespace: str
    name: str
    netns: str  # the pod's netns; the node's for host-network pods
    host_network: bool
    container_id: str
    ifname: str = "eth0"
    result: dict[str, Any] | None = None  # the CNI ADD result, once it succeeded
    pod_ips: list[str] = field(default_factory=list)
    started_at: str = ""  # servers started (the "containers" run)
    add_seconds: float | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def cni_call(self) -> cni.CniCall:
        return cni.CniCall(container_id=self.container_id, netns_path=self.netns_path,
                           ifname=self.ifname, namespace=self.namespace, pod=self.name,
                           pod_uid=self.uid)


class PodStore:
    """The records of one kubelet's pods."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / PODS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.add_log = Path(state_dir) / ADD_LOG
        self._lock = threading.Lock()

    def load_all(self) -> dict[str, PodRecord]:
        return load_records(self.dir.parent)

    def save(self, record: PodRecord) -> None:
        path = self.dir / f"{record.uid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)) + "\n")
        tmp.replace(path)

    def delete(self, uid: str) -> None:
        (self.dir / f"{uid}.json").unlink(missing_ok=True)

    def log_add(self, record: PodRecord, started: float, seconds: float, error: str,
                cpu: float = 0.0) -> None:
        """One line per ADD attempt: its wall time and the CPU seconds of the plugin exec."""
        line = json.dumps({"pod": record.key, "uid": record.uid, "start": round(started, 6),
                           "seconds": round(seconds, 6), "error": error,
                           "cpu": round(cpu, 6)})
        with self._lock, self.add_log.open("a") as out:
            out.write(line + "\n")


def load_records(state_dir: Path) -> dict[str, PodRecord]:
    """The pod records in a kubelet state dir, by pod uid."""
    records = {}
    for path in sorted((Path(state_dir) / PODS_DIR).glob("*.json")):
        try:
            record = PodRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            LOG.warning("ignoring unreadable pod record %s: %s", path, exc)
            continue
        records[record.uid] = record
    return records


def find_record(state_dirs: Iterable[Path], namespace: str, name: str) -> PodRecord | None:
    """The running pod `namespace/name` in any of these kubelet state dirs."""
    for state_dir in state_dirs:
        for record in load_records(state_dir).values():
            if (record.namespace, record.name) == (namespace, name) and record.started_at:
                return record
    return None


@dataclass(frozen=True)
class RuntimeConfig:
    node_netns: str
    node_ip: str
    prefix: str  # the sandbox's netns prefix
    cni_conf: Path  # the conflist
    cni_bin: Path
    dns_ip: str = ""  # the cluster DNS address for pods' resolv.conf ("": none written)
    dns_domain: str = defaults.DNS_DOMAIN


class Runtime:
    """Creates and removes pods: netns, CNI ADD/DEL, servers."""

    def __init__(self, config: RuntimeConfig, store: PodStore) -> None:
        self.config = config
        self.store = store
        self.servers = HostnameServers().start()
        self.sctp = sctp_supported()
        # Pods whose "containers" this process started: network up, servers (maybe none)
        # listening. Not the servers' owners: a pod without ports owns no socket.
        self._started: set[str] = set()
        self._lock = threading.Lock()

    def sandbox(self, pod: dict[str, Any]) -> PodRecord:
        """The pod's record and netns (created unless host-network); nothing plumbed yet."""
        meta = pod["metadata"]
        host = bool(pod.get("spec", {}).get("hostNetwork"))
        netns = self.config.node_netns if host else podstatus.pod_netns(
            self.config.prefix, meta["namespace"], meta["name"], meta["uid"])
        record = PodRecord(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"],
                           netns=netns, host_network=host,
                           container_id=podstatus.container_id(meta["uid"]))
        if host:
            record.pod_ips = [self.config.node_ip]
        self.store.save(record)  # first: a crash from here on leaves a record to clean up
        if not host:
            podnetns.delete(netns)  # a leftover of a crash between creating it and recording
            podnetns.create(netns)
            if self.config.dns_ip:
                resolvconf.write(netns, meta["namespace"], self.config.dns_ip,
                                 self.config.dns_domain)
        return record

    def add_network(self, record: PodRecord) -> None:
        """CNI ADD for the pod; CniError if the plugin fails."""
        conf = cni.load_conf(self.config.cni_conf)
        t0, wall = time.monotonic(), time.time()
        error = ""
        cpu: list[float] = []
        try:
            result = cni.invoke("ADD", record.cni_call(), conf, self.config.cni_bin,
                                self.config.node_netns, cpu=cpu)
        except cni.CniError as exc:
            error = f"code {exc.code}: {exc}"
            raise
        finally:
            self.store.log_add(record, wall, time.monotonic() - t0, error, sum(cpu))
        record.result = result
        record.pod_ips = cni.result_ips(result)
        record.add_seconds = round(time.monotonic() - t0, 6)
        if not record.pod_ips:
            raise cni.CniError(cni.EXEC_FAILED, "the CNI result has no IP address",
                               json.dumps(result)[:200])
        self.store.save(record)

    def start_servers(self, record: PodRecord, pod: dict[str, Any]) -> list[str]:
        """Serve every declared port inside the pod's netns; the problems (ports skipped)."""
        self.servers.remove(record.uid)
        sockets, problems = [], []
        with in_netns(record.netns):
            for port, protocol in podstatus.declared_ports(pod):
                if protocol == "SCTP" and not self.sctp:
                    problems.append(f"{port}/SCTP skipped: this kernel has no SCTP")
                    continue
                try:
                    sockets.append(listen(port, protocol))
                except OSError as exc:
                    problems.append(f"{port}/{protocol}: {exc.strerror or exc}")
        self.servers.add(record.uid, record.name, sockets)
        if not record.started_at:
            record.started_at = now()
            self.store.save(record)
        with self._lock:
            self._started.add(record.uid)
        return problems

    def started(self, uid: str) -> bool:
        """Whether this process started the pod's containers (start_servers ran, whatever
        the number of ports, zero included); False for a pod adopted but not yet started."""
        with self._lock:
            return uid in self._started

    def remove(self, record: PodRecord) -> None:
        """Stop the servers, CNI DEL, delete the netns and the record; CniError if DEL fails
        (then the record stays, to be retried)."""
        with self._lock:
            self._started.discard(record.uid)
        self.servers.remove(record.uid)
        if not record.host_network:
            conf = cni.load_conf(self.config.cni_conf)
            if record.result is not None:
                conf = {**conf, "prevResult": record.result}
            cni.invoke("DEL", record.cni_call(), conf, self.config.cni_bin,
                       self.config.node_netns, timeout=60)
            with contextlib.suppress(SandboxError, OSError):
                podnetns.delete(record.netns)
        self.store.delete(record.uid)
