"""Benchmark: Services + EndpointSlices through the controller, against the real control plane.

(a) N selector-less Services (default 5,000), each with one EndpointSlice of 3 ready IPv4
    endpoints, created through the API by a pool of client threads while the controller
    runs: the time to create them, and the time from the first create until NB holds N
    load balancers with 3 backends each, all members of clusterLBGroup (goal < 30 s).
    Then the NB rows Services own, per Service (goal: 1, one Load_Balancer each).
(b) Under that load, 50 EndpointSlice changes one after the other (a PATCH that adds or
    removes one endpoint): the time from sending the PATCH until NB shows the new backends,
    p50/p99 (goal p99 < 0.5 s).
(c) The controller killed, the N load balancers deleted from NB, the controller started:
    the time until NB holds them all again. No API writes compete with it, so this is the
    controller's own convergence (list 2N objects, translate, one transaction).
Finally every Service is deleted and the time until NB has none of their rows is printed.

    python -m bench.services [--services 5000] [--state-dir DIR] [--profile FILE]

Why selector-less Services with hand-made EndpointSlices: a Service with a selector needs
pods (15,000 of them here) for the EndpointSlice controller to fill its slices, and on 2
cores creating those would be the benchmark. A selector-less Service is backed by slices
labelled `kubernetes.io/service-name`, the documented way, and that is exactly what the
controller consumes either way.

NB is watched by a raw OVSDB monitor (NbMonitor: `monitor_cond`, update2 diffs), not
polled: every update is timestamped as it arrives, so a latency is the real one and not
rounded to a poll interval, and the bench costs the machine one JSON parse per NB
transaction instead of a 5,000-row dump a second.

Without --state-dir it brings up its own sandbox (prefix kvs, no workloads) and takes it
down afterwards; a borrowed one must run without its own controller (`--no-controller`).
It holds the e2e lock (/tmp/kovn-e2e.lock) while it measures: on 2 cores an e2e run beside
it would make both sets of figures meaningless.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import fcntl
import ipaddress
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovs.jsonrpc
import ovs.poller
import ovs.stream

from kube.client import KubeClient, KubeError
from northbound import fastjson, names
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.controlplane import ControllerProcess

SCHEMA = "OVN_Northbound"
RUN = str(int(time.time()))  # namespace of this run: reruns never collide
BENCH_LABEL = "kovn.io/bench-services"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "bench.kovn.io"  # not the EndpointSlice controller's: it leaves these alone
PORT_NAME, PORT, TARGET_PORT = "http", 80, 8080
ENDPOINTS = 3
FIRST_ENDPOINT = ipaddress.IPv4Address("10.16.0.10")
E2E_LOCK = Path("/tmp/kovn-e2e.lock")
CLIENT_THREADS = 16
CHANGES = 50
GOAL_CONVERGE_S, GOAL_CHANGE_P99_S = 30.0, 0.5
PROGRESS_EVERY = 5.0  # seconds between progress lines (NB itself is watched continuously)


# --- objects ---------------------------------------------------------------------------------
def service_manifest(namespace: str, name: str,
                     ports: Sequence[tuple[str, int, int]] = ((PORT_NAME, PORT, TARGET_PORT),)
                     ) -> dict[str, Any]:
    """A ClusterIP Service without a selector: nothing but its EndpointSlices backs it.
    `ports`: (name, port, targetPort), all TCP."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {BENCH_LABEL: RUN}},
            "spec": {"type": "ClusterIP",
                     "ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"}
                               for n, p, t in ports]}}


def slice_manifest(namespace: str, service: str, addresses: Iterable[str], name: str = "",
                   ports: Sequence[tuple[str, int]] = ((PORT_NAME, TARGET_PORT),)
                   ) -> dict[str, Any]:
    """An EndpointSlice of `service` with one ready endpoint per address; `ports`:
    (name, port), named like the Service's ports, which is how the controller pairs them."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{service}-1", "namespace": namespace,
                         "labels": {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: MANAGED_BY,
                                    BENCH_LABEL: RUN}},
            "addressType": "IPv4",
            "endpoints": endpoints(addresses),
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}


def endpoints(addresses: Iterable[str]) -> list[dict[str, Any]]:
    return [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]


def endpoint_ips(index: int, count: int = ENDPOINTS) -> list[str]:
    """Service `index`'s endpoint addresses; each Service has 4 of its own (the 4th is the
    one (b) adds), so no two Services share a backend."""
    return [str(FIRST_ENDPOINT + 4 * index + j) for j in range(count)]


def service_name(index: int) -> str:
    return f"s{index}"


def lb_name(namespace: str, service: str) -> str:
    return names.load_balancer(namespace, service, "TCP")


def ensure_namespace(api: KubeClient, namespace: str) -> None:
    try:
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": namespace}})
    except KubeError as exc:
        if exc.status != 409:
            raise


def create_parallel(api: KubeClient, namespace: str, count: int,
                    threads: int = CLIENT_THREADS,
                    done: Callable[[int], None] | None = None) -> None:
    """Services 0..count-1, each created and then its EndpointSlice, by `threads` client
    threads (one API request at a time is ~5 ms on 2 cores: 10,000 in a row would take
    most of a minute). `done(n)`: n objects more were created."""
    def one(i: int) -> None:
        name = service_name(i)
        api.create(f"/api/v1/namespaces/{namespace}/services",
                   service_manifest(namespace, name))
        if done:
            done(1)
        api.create(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                   slice_manifest(namespace, name, endpoint_ips(i)))
        if done:
            done(1)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))


def delete_services(api: KubeClient, namespace: str, threads: int = CLIENT_THREADS) -> None:
    """Every EndpointSlice (one deletecollection) and Service (one by one: Services have no
    deletecollection) in the namespace, then the namespace itself."""
    api.call("DELETE", f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices")
    services = [s["metadata"]["name"]
                for s in api.list(f"/api/v1/namespaces/{namespace}/services")]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda n: api.delete(f"/api/v1/namespaces/{namespace}/services/{n}"),
                      services))
    api.delete(f"/api/v1/namespaces/{namespace}")


# --- NB, watched ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One row of one NB update, as ovsdb-server sent it (update2): `op` is initial, insert,
    modify or delete; `diff` the columns it carried, decoded (for a modify of a set or map
    column: only the elements that changed)."""

    at: float
    """time.monotonic() when the update arrived."""
    update: int
    """Which update message (one per committed transaction) carried it."""
    table: str
    uuid: str
    op: str
    diff: Mapping[str, Any]


class NbMonitor:
    """A raw OVSDB monitor of NB: the rows of the given tables, kept current by a thread.

    `tables`: table -> the columns to monitor (None: all); None: every table, every column.
    `rows[table][uuid]` holds the decoded columns (sets as Python sets, maps as dicts, uuids
    as strings); `changes` lists every row of every update with its arrival time, so a test
    can say which rows one transaction touched and how much of each. Read both under
    `cond` (a Condition the thread notifies after every update). Independent of kovn's NB
    code: only the ovs library's JSON-RPC (with the C JSON parser where there is one).
    """

    def __init__(self, remote: str,
                 tables: Mapping[str, Sequence[str] | None] | None = None) -> None:
        fastjson.enable()  # the pure-python parser takes seconds over a 5,000-row update
        error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), 10_000)
        if error:
            raise ConnectionError(f"cannot connect to NB at {remote}: {os.strerror(error)}")
        self._conn = ovs.jsonrpc.Connection(stream)
        self.cond = threading.Condition()
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.changes: list[Change] = []
        self.updates = 0
        self.last_update = 0.0
        self._stop = threading.Event()
        self._probe: Callable[[], bool] | None = None
        self._hit: float | None = None
        schema = self._request("get_schema", [SCHEMA])
        self._kinds = {t: {"_version": "scalar",
                           **{c: _column_kind(spec["type"]) for c, spec in body["columns"].items()}}
                       for t, body in schema["tables"].items()}
        wanted = tables if tables is not None else dict.fromkeys(self._kinds)
        requests = {t: [{"columns": list(cols)} if cols is not None else {}]
                    for t, cols in wanted.items()}
        for table in wanted:
            self.rows[table] = {}
        initial = self._request("monitor_cond", [SCHEMA, "bench", requests])
        self._apply(initial, time.monotonic())
        self._thread = threading.Thread(target=self._loop, name="nb-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._conn.close()

    def __enter__(self) -> NbMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting --------------------------------------------------------------------------
    def until(self, predicate: Callable[[], bool], timeout: float,
              tick: Callable[[], None] | None = None, what: str = "",
              every: float = 1.0) -> float:
        """Wait until `predicate` (evaluated under the lock after every update, by the
        monitor thread) holds; the arrival time of the update that made it hold. `tick` runs
        every `every` seconds meanwhile, under the lock (progress lines)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            if predicate():
                return time.monotonic()
            self._probe, self._hit = predicate, None
            next_tick = time.monotonic() + every
            try:
                while self._hit is None:
                    now = time.monotonic()
                    if now >= deadline:
                        raise TimeoutError(f"not within {timeout:.0f}s: {what}")
                    if tick and now >= next_tick:
                        tick()
                        next_tick = now + every
                    self.cond.wait(min(deadline, next_tick if tick else now + 1.0) - now)
                return self._hit
            finally:
                self._probe = None

    def quiet(self, seconds: float) -> None:
        """Return once no update has arrived for `seconds`."""
        while True:
            with self.cond:
                idle = time.monotonic() - self.last_update
            if idle >= seconds:
                return
            time.sleep(seconds - idle)

    # -- the thread -----------------------------------------------------------------------
    def _request(self, method: str, params: list[Any]) -> Any:
        """Synchronous, before the thread starts (afterwards the monitor only listens)."""
        request = ovs.jsonrpc.Message.create_request(method, params)
        error, reply = self._conn.transact_block(request)
        if error or reply is None:
            raise ConnectionError(f"NB {method}: {os.strerror(error) if error else 'no reply'}")
        if reply.error:
            raise ConnectionError(f"NB {method}: {reply.error}")
        return reply.result

    def _loop(self) -> None:
        conn = self._conn
        while not self._stop.is_set():
            conn.run()
            error, msg = conn.recv()
            if error == errno.EAGAIN:
                poller = ovs.poller.Poller()
                conn.wait(poller)
                conn.recv_wait(poller)
                poller.timer_wait(100)
                poller.block()
                continue
            if error or msg is None:
                return  # closed or broken: waiters time out and say so
            if msg.type == ovs.jsonrpc.Message.T_REQUEST and msg.method == "echo":
                conn.send(ovs.jsonrpc.Message.create_reply(msg.params, msg.id))
            elif msg.type == ovs.jsonrpc.Message.T_NOTIFY and msg.method == "update2":
                self._apply(msg.params[1], time.monotonic())

    def _apply(self, updates: Mapping[str, Any], at: float) -> None:
        with self.cond:
            self.updates += 1
            self.last_update = at
            for table, by_uuid in updates.items():
                kinds, rows = self._kinds[table], self.rows.setdefault(table, {})
                for uuid, ops in by_uuid.items():
                    for op, body in ops.items():
                        diff = {c: _decode(v, kinds[c]) for c, v in (body or {}).items()}
                        self.changes.append(Change(at, self.updates, table, uuid, op, diff))
                        if op == "delete":
                            rows.pop(uuid, None)
                        elif op in ("initial", "insert"):
                            rows[uuid] = {**{c: _empty(k) for c, k in kinds.items()}, **diff}
                        elif op == "modify":
                            row = rows.setdefault(uuid, {})
                            for column, value in diff.items():
                                row[column] = _merge(row.get(column), value, kinds[column])
            if self._probe is not None and self._hit is None and self._probe():
                self._hit = at
            self.cond.notify_all()


def _column_kind(column_type: Any) -> str:
    """scalar, set or map: how update2 encodes a modify of the column (ovsdb-server(7):
    only min=max=1 columns without values are sent whole; others as the changed elements)."""
    if not isinstance(column_type, dict):
        return "scalar"
    if "value" in column_type:
        return "map"
    if column_type.get("min", 1) == 1 and column_type.get("max", 1) == 1:
        return "scalar"
    return "set"


def _atom(value: Any) -> Any:
    return value[1] if isinstance(value, list) and value and value[0] in ("uuid",
                                                                          "named-uuid") else value


def _decode(value: Any, kind: str) -> Any:
    if kind == "map":
        return {_atom(k): _atom(v) for k, v in value[1]}
    if kind == "set":
        if isinstance(value, list) and value and value[0] == "set":
            return {_atom(v) for v in value[1]}
        return {_atom(value)}
    return _atom(value)


def _empty(kind: str) -> Any:
    return {} if kind == "map" else set() if kind == "set" else None


def _merge(old: Any, diff: Any, kind: str) -> Any:
    """Apply an update2 diff: set elements toggle; map pairs add, replace, or (same pair
    again) delete; scalars are replaced."""
    if kind == "set":
        return set(old or ()) ^ diff
    if kind == "map":
        merged = dict(old or {})
        for key, value in diff.items():
            if merged.get(key) == value:
                del merged[key]
            else:
                merged[key] = value
        return merged
    return diff


def owned_rows(monitor: NbMonitor, owner_type: str, prefix: str) -> Counter[str]:
    """Rows per table whose owner is of `owner_type` and named `prefix...` (call under
    monitor.cond). Tables without external_ids (Load_Balancer_Group) own nothing."""
    found: Counter[str] = Counter()
    for table, rows in monitor.rows.items():
        for row in rows.values():
            ids = row.get("external_ids") or {}
            if (ids.get(names.OWNER_TYPE_KEY) == owner_type
                    and ids.get(names.OWNER_KEY, "").startswith(prefix)):
                found[table] += 1
    return found


def backends(row: Mapping[str, Any]) -> dict[str, set[str]]:
    """A Load_Balancer row's VIPs -> their backends."""
    return {vip: {b for b in value.split(",") if b} for vip, value in row["vips"].items()}


def lbs_by_name(monitor: NbMonitor) -> dict[str, str]:
    """Load_Balancer name -> uuid (under monitor.cond)."""
    return {row["name"]: uuid for uuid, row in monitor.rows["Load_Balancer"].items()}


def group_members(monitor: NbMonitor, group: str = names.CLUSTER_LB_GROUP) -> set[str]:
    for row in monitor.rows.get("Load_Balancer_Group", {}).values():
        if row["name"] == group:
            return set(row["load_balancer"])
    return set()


# --- the measurements --------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank (p99 of 50 samples is their maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Converged:
    """The predicate "NB holds `count` LBs of the namespace, 3 backends each, all in
    clusterLBGroup". It runs after every update on the monitor's thread, so it looks only at
    the rows that update changed: rescanning 5,000 rows each time would take CPU from the
    controller it measures."""

    def __init__(self, monitor: NbMonitor, namespace: str, count: int) -> None:
        self.monitor, self.count = monitor, count
        self.prefix = f"Service_{namespace}/"
        self.seen = 0
        self.ours: set[str] = set()
        self.full: set[str] = set()
        self.members: set[str] = set()

    def __call__(self) -> bool:
        changes, rows = self.monitor.changes, self.monitor.rows
        for change in changes[self.seen:]:
            if change.table == "Load_Balancer":
                row = rows["Load_Balancer"].get(change.uuid)
                if row is None or not row["name"].startswith(self.prefix):
                    self.ours.discard(change.uuid)
                    self.full.discard(change.uuid)
                    continue
                self.ours.add(change.uuid)
                vips = backends(row)
                if len(vips) == 1 and all(len(b) == ENDPOINTS for b in vips.values()):
                    self.full.add(change.uuid)
                else:
                    self.full.discard(change.uuid)
            elif change.table == "Load_Balancer_Group":
                group = rows["Load_Balancer_Group"].get(change.uuid)
                if group is not None and group["name"] == names.CLUSTER_LB_GROUP:
                    self.members = group["load_balancer"]
        self.seen = len(changes)
        return len(self.full) == self.count and self.full <= self.members

    def progress(self) -> str:
        return (f"NB {len(self.ours)} LBs, {len(self.full)} with {ENDPOINTS} backends, "
                f"{len(self.ours & self.members)} in {names.CLUSTER_LB_GROUP}")


def daemon_pids(state_dir: Path) -> dict[str, int]:
    """The sandbox's daemons by pidfile: `kube-apiserver`, `northd`, `node1/ovnc`..."""
    found = {}
    for pidfile in [*sorted(state_dir.glob("*.pid")), *sorted(state_dir.glob("node*/*.pid"))]:
        name = (pidfile.stem if pidfile.parent == state_dir
                else f"{pidfile.parent.name}/{pidfile.stem}")
        with contextlib.suppress(ValueError, OSError, IndexError):
            found[name] = int(pidfile.read_text().split()[0])
    return found


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far (from /proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    times = os.times()
    used["bench (this process)"] = times.user + times.system
    return used


def cpu_report(before: Mapping[str, float], after: Mapping[str, float], wall: float) -> str:
    """Who used the machine's CPU between two cpu_seconds(), biggest first; the nodes'
    daemons (ovsdb-server, ovs-vswitchd, ovn-controller of every node) summed."""
    spent: Counter[str] = Counter()
    for name, seconds in after.items():
        spent["nodes' OVS+ovn-controller" if name.startswith("node") else name] += (
            seconds - before.get(name, 0.0))
    cores = os.cpu_count() or 1
    parts = ", ".join(f"{name} {seconds:.0f}" for name, seconds in spent.most_common()
                      if seconds >= 0.5)
    return (f"CPU seconds in {wall:.0f}s x {cores} cores = {wall * cores:.0f}: {parts} "
            f"(the rest: other processes on this machine, idle)")


def alive(controller: ControllerProcess) -> Callable[[], None]:
    """A tick that fails the wait at once when the controller has exited (a crash would
    otherwise look like a controller that is merely slow, until the timeout)."""
    def check() -> None:
        code = controller.proc.poll() if controller.proc is not None else None
        if code is not None:
            raise RuntimeError(f"the controller exited with {code}: see {controller.log}")

    return check


def converge_live(api: KubeClient, monitor: NbMonitor, namespace: str, count: int,
                  pids: Mapping[str, int], controller: ControllerProcess) -> None:
    """(a): create while the controller runs, print progress, then the figures and who
    used the CPU meanwhile (on 2 cores the API server, northd and the controller share)."""
    made = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []
    finished = [0.0]

    def done(n: int) -> None:
        with lock:
            made[0] += n

    def create() -> None:
        try:
            create_parallel(api, namespace, count, done=done)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finished[0] = time.monotonic()

    converged = Converged(monitor, namespace, count)
    check = alive(controller)
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    creator = threading.Thread(target=create, name="creator")
    creator.start()

    def tick() -> None:
        check()
        if errors:
            raise RuntimeError(f"creating objects failed: {errors[0]}") from errors[0]
        print(f"  {time.monotonic() - started:5.1f}s  created {made[0]}/{2 * count} objects;"
              f"  {converged.progress()}", flush=True)

    at = monitor.until(converged, max(120.0, count / 10), tick, "all load balancers in NB",
                       every=PROGRESS_EVERY)
    creator.join()
    if errors:
        raise RuntimeError(f"creating objects failed: {errors[0]}") from errors[0]
    create_s, converge_s = finished[0] - started, at - started
    print(f"(a) created {count} Services + {count} EndpointSlices in {create_s:.1f}s "
          f"({2 * count / create_s:.0f} objects/s, {CLIENT_THREADS} client threads)")
    print(f"(a) NB converged: {count} LBs x {ENDPOINTS} backends in {converge_s:.1f}s from "
          f"the first create, {max(0.0, at - finished[0]):.1f}s after the last "
          f"(goal < {GOAL_CONVERGE_S:.0f} s) -> "
          f"{'met' if converge_s < GOAL_CONVERGE_S else 'NOT met'}", flush=True)
    print(f"(a) {cpu_report(cpu_before, cpu_seconds(pids), time.monotonic() - started)}",
          flush=True)


def rows_per_service(remote: str, namespace: str, count: int) -> None:
    """Every NB row of every table that Services of this run own, counted once."""
    with NbMonitor(remote) as everything, everything.cond:
        owned = owned_rows(everything, names.OwnerType.SERVICE, f"{namespace}/")
        members = len(group_members(everything)
                      & {u for u, r in everything.rows["Load_Balancer"].items()
                         if r["name"].startswith(f"Service_{namespace}/")})
    total = sum(owned.values())
    by_table = ", ".join(f"{t} {n}" for t, n in sorted(owned.items())) or "none"
    print(f"(a) NB rows owned by the {count} Services: {total} ({by_table}) = "
          f"{total / count:.2f} rows per Service; {members} of their LBs in "
          f"{names.CLUSTER_LB_GROUP} (goal: 1 row per Service)", flush=True)


def one_change(api: KubeClient, monitor: NbMonitor, namespace: str, index: int,
               endpoint_count: int, uuid: str) -> tuple[float, float]:
    """PATCH Service `index`'s slice to `endpoint_count` endpoints; (PATCH sent -> NB shows
    the new backends, PATCH round trip), in seconds."""
    ips = endpoint_ips(index, endpoint_count)
    want = {f"{ip}:{TARGET_PORT}" for ip in ips}
    name = service_name(index)

    def shown() -> bool:
        row = monitor.rows["Load_Balancer"].get(uuid)
        return row is not None and list(backends(row).values()) == [want]

    path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}-1"
    sent = time.monotonic()
    api.merge_patch(path, {"endpoints": endpoints(ips)})
    answered = time.monotonic()
    at = monitor.until(shown, 30, what=f"{name}'s change in NB")
    return at - sent, answered - sent


def changes_under_load(api: KubeClient, monitor: NbMonitor, namespace: str, count: int,
                       log: Path, offset: int) -> None:
    """(b): 50 single-endpoint changes, one at a time: on 25 Services spread over all of
    them, one endpoint added and then removed again, so every Service has its 3 backends
    afterwards (which (c) checks). A change that arrives while the controller runs a full
    resync waits for it: those are counted from the controller's log, so a slow p99 says
    why it is slow."""
    with monitor.cond:
        uuids = lbs_by_name(monitor)
    picks = [i * count // (CHANGES // 2) for i in range(CHANGES // 2)]
    latencies, patches, spans = [], [], []
    for index in picks:
        uuid = uuids[lb_name(namespace, service_name(index))]
        for endpoint_count in (ENDPOINTS + 1, ENDPOINTS):
            wall = time.time()
            latency, patch = one_change(api, monitor, namespace, index, endpoint_count, uuid)
            latencies.append(latency)
            patches.append(patch)
            spans.append((wall, wall + latency))
            time.sleep(random.uniform(0.05, 0.25))  # not in step with the worker's loop
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"(b) one EndpointSlice change -> NB, {len(latencies)} changes (25 adds, 25 removes) "
          f"with {count} Services: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (nearest "
          f"rank: the maximum of 50) (PATCH round trip p50 "
          f"{percentile(patches, 50) * 1000:.0f} ms) (goal p99 < "
          f"{GOAL_CHANGE_P99_S * 1000:.0f} ms) -> "
          f"{'met' if p99 < GOAL_CHANGE_P99_S else 'NOT met'}", flush=True)
    fulls = full_flushes(log, offset)
    hit = [i for i, (start, end) in enumerate(spans)
           if any(f_start < end and start < f_end for f_start, f_end in fulls)]
    during = [f for f in fulls if f[0] < spans[-1][1] and spans[0][0] < f[1]]
    if hit:
        rest = [v for i, v in enumerate(latencies) if i not in hit]
        print(f"(b) {len(hit)} of the changes arrived during a full resync of the controller "
              f"({', '.join(f'{(e - s) * 1000:.0f} ms' for s, e in during)}; every 60 s) and "
              f"waited for it: {', '.join(f'{latencies[i] * 1000:.0f} ms' for i in hit)}; "
              f"the other {len(rest)}: p99 "
              f"{percentile(rest, 99) * 1000 if rest else float('nan'):.0f} ms", flush=True)
    else:
        print(f"(b) no change overlapped a full resync of the controller ({len(during)} ran "
              "meanwhile)", flush=True)


def delete_lbs(remote: str, monitor: NbMonitor, namespace: str) -> int:
    """Remove the namespace's Service LBs from NB by hand (out of clusterLBGroup first: the
    group references them), in one ovn-nbctl transaction; how many."""
    with monitor.cond:
        ours = [u for u, r in monitor.rows["Load_Balancer"].items()
                if r["name"].startswith(f"Service_{namespace}/")]
    subprocess.run(["ovn-nbctl", f"--db={remote}", "remove", "Load_Balancer_Group",
                    names.CLUSTER_LB_GROUP, "load_balancer", *ours, "--", "destroy",
                    "Load_Balancer", *ours], check=True, capture_output=True)
    return len(ours)


def converge_restart(controller: ControllerProcess, remote: str, monitor: NbMonitor,
                     namespace: str, count: int, profile: Path | None = None) -> None:
    """(c): kill, empty NB of the namespace's LBs, start; time until NB is whole again.
    When profiling, stop instead of kill (yappi writes at exit) and profile the new process
    to `<profile>.restart`."""
    if profile is None:
        controller.kill()
    else:
        controller.stop()
        os.environ["KOVN_PROFILE"] = f"{profile}.restart"
    removed = delete_lbs(remote, monitor, namespace)
    monitor.until(lambda: not any(r["name"].startswith(f"Service_{namespace}/")
                                  for r in monitor.rows["Load_Balancer"].values()),
                  30, what="the deleted LBs gone from the monitor")
    started = time.monotonic()
    controller.start()
    at = monitor.until(Converged(monitor, namespace, count), max(120.0, count / 10),
                       alive(controller), "all load balancers back after the restart")
    print(f"(c) controller started onto an NB without the {removed} LBs: all "
          f"{count} back with {ENDPOINTS} backends in {at - started:.1f}s (process start, "
          f"list, translate, write; goal < {GOAL_CONVERGE_S:.0f} s) -> "
          f"{'met' if at - started < GOAL_CONVERGE_S else 'NOT met'}", flush=True)
    controller.wait_ready()


def delete_all(api: KubeClient, monitor: NbMonitor, namespace: str,
               controller: ControllerProcess) -> None:
    """Delete everything of this run and wait (with the controller running) until NB has no
    row of it left, so a borrowed sandbox is left as it was."""
    started = time.monotonic()
    delete_services(api, namespace)
    deleted = time.monotonic()

    def gone() -> bool:
        return not any(r["name"].startswith(f"Service_{namespace}/")
                       for r in monitor.rows["Load_Balancer"].values())

    at = monitor.until(gone, 300, alive(controller), "the Services' load balancers deleted")
    print(f"deleted the Services in {deleted - started:.1f}s; NB had none of their rows "
          f"{max(0.0, at - started):.1f}s after the first delete", flush=True)


FLUSH_LINE = re.compile(r"flush: (\d+) objects \((\w+)\), (\d+) owners written, .* in (\d+) ms")


def full_flushes(log: Path, offset: int) -> list[tuple[float, float]]:
    """(start, end) wall-clock times of the controller's full flushes since `offset`: the log
    line is written at the end and says how long it took."""
    spans = []
    text = log.read_bytes()[offset:].decode(errors="replace")
    for line in text.splitlines():
        match = FLUSH_LINE.search(line)
        if match and match[2] == "full":
            end = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            spans.append((end - int(match[4]) / 1000, end))
    return spans


def flush_summary(log: Path, offset: int) -> list[str]:
    """Where the controller's worker spent its time, from its log since `offset`: the
    incremental flushes in total and at most, every full one, and its start-ups."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    incremental: list[tuple[int, int, int]] = []
    lines = []
    for line in text.splitlines():
        match = FLUSH_LINE.search(line)
        if match and match[2] == "incremental":
            incremental.append((int(match[1]), int(match[3]), int(match[4])))
        elif match or "controller ready in" in line:
            lines.append(line.split(": ", 1)[-1] if "ready in" in line
                         else line[line.index("flush:"):])
    if incremental:
        worst = max(incremental, key=lambda f: f[2])
        lines.insert(0, f"{len(incremental)} incremental flushes logged (those writing rows or "
                     f"> 100 ms): {sum(f[2] for f in incremental) / 1000:.1f}s in all, "
                     f"{sum(f[0] for f in incremental)} objects, "
                     f"{sum(f[1] for f in incremental)} owners written; the longest "
                     f"{worst[2]} ms ({worst[0]} objects, {worst[1]} owners)")
    return lines


@contextlib.contextmanager
def e2e_lock() -> Iterator[None]:
    """Hold the machine's e2e lock: no e2e run competes for the 2 cores meanwhile."""
    with E2E_LOCK.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for an e2e run to finish ({E2E_LOCK})", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--state-dir", type=Path,
                        help="use this running kube sandbox (started with --no-controller)")
    parser.add_argument("--profile", type=Path,
                        help="the controller writes a yappi profile here, and its restarted "
                        "self to FILE.restart (KOVN_PROFILE; slows it down: figures of a "
                        "profiled run are not the real ones)")
    args = parser.parse_args()
    if args.profile:
        os.environ["KOVN_PROFILE"] = str(args.profile)
    with e2e_lock():
        return run(args.services, args.state_dir, args.profile)


def run(count: int, state_dir: Path | None, profile: Path | None = None) -> int:
    own = state_dir is None
    if own:
        sandbox = Sandbox(SandboxConfig(
            state_dir=Path(tempfile.mkdtemp(prefix="kovn-bench-svc-")), prefix="kvs", nodes=2,
            nb_tcp_port=None, controller=False, kube=True, workloads=False, apiserver_port=0,
            etcd_port=0, etcd_peer_port=0))
        sandbox.up(progress=lambda line: print(f"  {line}", flush=True))
    else:
        sandbox = Sandbox.load(state_dir)
    namespace = f"bench-svc-{RUN}"
    log = Path(sandbox.state_dir) / "bench-services-controller.log"
    offset = log.stat().st_size if log.exists() else 0
    # The CLI's default resync (60 s): a full reconcile during (b) is part of the load.
    controller = ControllerProcess(sandbox.nb_remote, sandbox.kubeconfig, log, resync=60)
    api = KubeClient(str(sandbox.kubeconfig), pool_size=CLIENT_THREADS + 8)
    monitor: NbMonitor | None = None
    cleaned = False
    try:
        ensure_namespace(api, namespace)
        controller.start()
        controller.wait_ready()
        monitor = NbMonitor(sandbox.nb_remote, {"Load_Balancer": ("name", "vips"),
                                                "Load_Balancer_Group": ("name",
                                                                        "load_balancer")})
        print(f"(a) {count} selector-less Services x {ENDPOINTS} endpoints in {namespace}, "
              f"controller {log}", flush=True)
        assert controller.proc is not None
        pids = {**daemon_pids(Path(sandbox.state_dir)), "kovn controller": controller.proc.pid}
        converge_live(api, monitor, namespace, count, pids, controller)
        rows_per_service(sandbox.nb_remote, namespace, count)
        changes_under_load(api, monitor, namespace, count, log, offset)
        converge_restart(controller, sandbox.nb_remote, monitor, namespace, count, profile)
        delete_all(api, monitor, namespace, controller)
        cleaned = True
    finally:
        if not cleaned and not own:  # after a failure: leave nothing behind
            with contextlib.suppress(KubeError):
                delete_services(api, namespace)
        if monitor is not None:
            monitor.close()
        controller.stop()
        api.close()
        print(f"the controller's worker (from {log}):")
        for line in flush_summary(log, offset):
            print(f"  {line}")
        if own:
            sandbox.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
