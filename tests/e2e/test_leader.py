"""Leader election on the real API server: one NB writer, a standby that takes over within
15 s of the leader's death, and a leader cut off from the API server that stops writing NB
before its Lease can expire (operators/leader.py, operators/fence.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from contract.defaults import LEADER_LEASE, SYSTEM_NAMESPACE
from kube.client import KubeClient
from operators.leader import LeaderElector, LeaseTiming, lease_path
from sandbox import procs
from sandbox.cluster import Sandbox
from sandbox.controlplane import ControllerProcess, eventually
from sandbox.kube import CONTROLLER
from sandbox.probe import probe
from tests.e2e.conftest import EXPECTED_FORBIDDEN
from tests.e2e.controlplane import Cluster
from tests.e2e.test_network_model import PORT, create_deployment, ready_pods

pytestmark = pytest.mark.e2e
FAST = LeaseTiming(duration=3.0, renew_deadline=2.0, retry=0.5)
METER = "kovn-acl-logging"  # a row the cluster owns: every full resync repairs it


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


def holder(api: KubeClient, name: str = LEADER_LEASE) -> str | None:
    lease = api.get_or_none(lease_path(SYSTEM_NAMESPACE, name)) or {}
    return (lease.get("spec") or {}).get("holderIdentity")


# --- the election itself, in-process against the sandbox's API server ------------------------
def test_one_candidate_wins_the_others_wait_for_expiry_or_release(kube_sandbox: Sandbox) -> None:
    api = KubeClient(kube_sandbox.kubeconfig)
    name = "kovn-test-election"
    api.delete(lease_path(SYSTEM_NAMESPACE, name))
    a, b, c = (LeaderElector(api, who, SYSTEM_NAMESPACE, name, FAST) for who in "abc")
    # A race for a free Lease: the API server's optimistic concurrency lets exactly one win.
    with ThreadPoolExecutor(3) as pool:
        won = list(pool.map(lambda e: e.try_acquire_or_renew(), (a, b, c)))
    assert won.count(True) == 1, won
    leader = (a, b, c)[won.index(True)]
    others = [e for e in (a, b, c) if e is not leader]
    assert leader.may_write() and not any(e.may_write() for e in others)
    assert holder(api, name) == leader.identity
    # The leader goes silent (never renews again): its fence closes at the renew deadline,
    # before any standby may take over (the Lease's duration, counted by the standby's clock).
    silent_at = time.monotonic()
    eventually(lambda: not leader.may_write(), timeout=5, interval=0.05)
    fenced_after = time.monotonic() - silent_at
    standby = others[0]
    assert not standby.try_acquire_or_renew()  # observed now: its clock starts here at latest
    eventually(standby.try_acquire_or_renew, timeout=10, interval=0.1)
    took_over_after = time.monotonic() - silent_at
    assert fenced_after < FAST.renew_deadline + 0.2 < FAST.duration <= took_over_after + 0.1
    assert holder(api, name) == standby.identity
    assert not leader.try_acquire_or_renew()  # the old leader stands by, it does not steal back
    # A clean stop hands the Lease over at once, without waiting for its expiry.
    standby.release()
    assert others[1].try_acquire_or_renew()
    api.delete(lease_path(SYSTEM_NAMESPACE, name))


# --- whole controllers on the cluster sandbox ----------------------------------------------------
def test_a_second_controller_stands_by_then_takes_over_within_15s(
        cluster_sandbox: Sandbox, tmp_path: Path) -> None:
    cluster = Cluster(cluster_sandbox.kubeconfig)
    first = f"{cluster_sandbox.config.prefix}-controller"
    assert holder(cluster.api) == first
    log = tmp_path / "standby.log"
    # The same flags as the sandbox's controller: the standby computes the same rows.
    standby = ControllerProcess(cluster_sandbox.nb_remote, cluster_sandbox.kubeconfig, log,
                                resync=60, identity="kovn-standby", extra=("--service-dns",))
    standby.start()
    try:
        eventually(lambda: "standing by: Lease kovn-system/kovn-controller is held by "
                   f"{first}" in log.read_text(), timeout=20, what="the standby says so")
        create_deployment(cluster, "leader-a", "web", 2)
        ready_pods(cluster_sandbox, cluster, "leader-a", "web", 2)
        assert "reconciled" not in log.read_text()  # it wrote nothing while standing by
        # Alive and ready (ready to take over), and its metrics say it does not lead.
        assert "standby" in fetch(f"{standby.metrics_url}/readyz")
        assert "kovn_controller_leader 0.0" in fetch(f"{standby.metrics_url}/metrics")

        daemon = next(d for d in cluster_sandbox._daemons if d.name == CONTROLLER)
        pid = procs.live_pid(daemon)
        assert pid is not None, "the sandbox's controller is not running"
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # no release: a crash
        eventually(lambda: "leading: Lease" in log.read_text(), timeout=20,
                   what="the standby takes over", interval=0.1)
        took_over = time.monotonic() - killed_at
        assert took_over < 15, f"took over after {took_over:.1f} s"
        standby.wait_ready()
        assert "kovn_controller_leader 1.0" in fetch(f"{standby.metrics_url}/metrics")
        # It converged from its own listing with nothing to undo: the same rows.
        resync = re.findall(r"reconciled full resync: (\d+) creates, (\d+) updates, "
                            r"(\d+) deletes", log.read_text())
        assert all(d == "0" for *_, d in resync), resync
        # And it serves: new pods get their network and reach the old ones.
        create_deployment(cluster, "leader-b", "web", 2)
        new = ready_pods(cluster_sandbox, cluster, "leader-b", "web", 2)
        old = ready_pods(cluster_sandbox, cluster, "leader-a", "web", 2)
        for src in new:
            for dst in old:
                assert probe(src.netns, dst.ip, PORT, timeout=2.0), (src, dst)
        print(f"standby took over {took_over:.1f} s after the leader's SIGKILL")
    finally:
        standby.stop()  # SIGTERM: releases the Lease, the sandbox's controller resumes at once
        cluster_sandbox.restart(CONTROLLER)
        eventually(lambda: holder(cluster.api) == first, timeout=20,
                   what="the sandbox's controller leads again")
        for ns in ("leader-a", "leader-b"):
            cluster.api.delete(f"/api/v1/namespaces/{ns}")


# --- a leader cut off from the API server -------------------------------------------------------
class CuttableProxy:
    """A TCP relay on loopback to the API server that can be cut (every connection closed,
    new ones refused) and restored on the same port: the API server gone, for one client."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def up(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
            listener, self._listener = self._listener, None
        for s in [*socks, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting: never relayed
                    client.close()
                    server.close()
                    return
                self._socks += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def proxied_kubeconfig(kubeconfig: Path, tmp_path: Path) -> Iterator[tuple[Path, CuttableProxy]]:
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = CuttableProxy((host, int(port)))
    proxy.up()
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = tmp_path / "proxied.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    try:
        yield path, proxy
    finally:
        proxy.cut()


def meter_present(nb_remote: str) -> bool:
    out = subprocess.run(["ovn-nbctl", f"--db={nb_remote}", "--bare", "--columns=name", "list",
                          "Meter"], capture_output=True, text=True, check=True).stdout
    return METER in out.split()


def delete_meter(nb_remote: str) -> None:
    subprocess.run(["ovn-nbctl", f"--db={nb_remote}", "meter-del", METER],
                   capture_output=True, check=True)


def lease_renewed_at(api: KubeClient) -> float:
    """The Lease's last renewal, as a time.time() value (same machine, same clock)."""
    spec = api.get(lease_path(SYSTEM_NAMESPACE, LEADER_LEASE))["spec"]
    when = dt.datetime.strptime(spec["renewTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return when.replace(tzinfo=dt.UTC).timestamp()


def test_a_leader_cut_off_from_the_api_stops_writing_before_its_lease_expires(
        kube_sandbox: Sandbox, tmp_path: Path) -> None:
    nb, api = kube_sandbox.nb_remote, KubeClient(kube_sandbox.kubeconfig)
    timing = LeaseTiming()  # the defaults users get
    with proxied_kubeconfig(kube_sandbox.kubeconfig, tmp_path) as (kubeconfig, proxy):
        log = tmp_path / "controller.log"
        leader = ControllerProcess(nb, kubeconfig, log, resync=0.5, identity="kovn-cut")
        with leader.running():
            # While it leads, it repairs drift at every full resync (0.5 s).
            delete_meter(nb)
            eventually(lambda: meter_present(nb), timeout=10, what="the meter repaired")
            proxy.cut()
            cut_at = time.time()
            renewed = lease_renewed_at(api)
            # Delete the meter again and again: each time it comes back, the controller wrote.
            last_write = renewed
            while time.time() < renewed + timing.duration + 3:
                if meter_present(nb):
                    last_write = time.time()
                    delete_meter(nb)
                time.sleep(0.1)
            text = log.read_text()
            assert "lost leadership" in text, text[-3000:]
            assert last_write < renewed + timing.duration, (
                f"wrote NB {last_write - renewed:.1f} s after its last renewal; its Lease "
                f"lasts {timing.duration:.0f} s")
            assert not meter_present(nb)
            print(f"cut {cut_at - renewed:.1f} s after the last renewal; last NB write "
                  f"{last_write - renewed:.1f} s after it (renew deadline "
                  f"{timing.renew_deadline:.0f} s, Lease {timing.duration:.0f} s)")
            # The API server back: the controller (a fresh process by now) leads again, lists
            # everything anew and converges.
            proxy.up()
            eventually(lambda: meter_present(nb), timeout=40,
                       what="the controller leads again and repairs NB")
            assert holder(api) == "kovn-cut"


def test_a_leader_whose_credentials_are_revoked_stops_writing_and_resumes_once_restored(
        cluster_sandbox: Sandbox) -> None:
    """The sandbox's controller runs as the manifests' ServiceAccount: take its Lease rights
    away (the RoleBinding of manifests/rbac/controller.yaml) and give them back."""
    if not cluster_sandbox.config.service_accounts:
        pytest.skip("the controller runs as the admin (--admin-identities)")
    nb, api = cluster_sandbox.nb_remote, KubeClient(cluster_sandbox.kubeconfig)
    log = Path(next(d for d in cluster_sandbox._daemons if d.name == CONTROLLER).log)
    binding = (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/rolebindings/"
               "kovn-controller-leader-election")
    saved = api.get(binding)
    EXPECTED_FORBIDDEN.append('cannot get resource "leases"')
    offset = log.stat().st_size
    api.delete(binding)
    revoked_at = time.monotonic()
    try:
        eventually(lambda: "lost leadership" in log.read_text()[offset:], timeout=15,
                   what="the controller stands down", interval=0.1)
        lost_after = time.monotonic() - revoked_at
        assert lost_after < LeaseTiming().duration, f"stood down after {lost_after:.1f} s"
        delete_meter(nb)
        time.sleep(3)
        assert not meter_present(nb), "a controller without its Lease wrote NB"
        assert "may not use Leases" in log.read_text()[offset:]
    finally:
        api.create(binding.rsplit("/", 1)[0], {k: v for k, v in saved.items()
                                               if k != "metadata"} | {
            "metadata": {"name": saved["metadata"]["name"],
                         "namespace": SYSTEM_NAMESPACE}})
    eventually(lambda: meter_present(nb), timeout=40,
               what="the controller leads again and repairs NB")
    print(f"stood down {lost_after:.1f} s after its Lease rights were revoked")
