"""OVN NB as a raft cluster: kovn loses nothing when the NB leader dies in a burst of pods.

A sandbox with `--ovn-ha` (NB and SB each three ovsdb-servers in one raft cluster; northd, the
kovn controller and ovn-controller get every member). A Deployment of 200 replicas is
created, and while the controller is writing their ports the NB leader is SIGKILLed (found
with `ovs-appctl cluster/status`). Then: the two survivors elected a new leader, the
controller failed over to it and went on writing, every pod is Ready with its own IP, its
Logical_Switch_Port is in NB with that IP, pods on different nodes answer real TCP probes,
and the killed member, started again, rejoins and catches up.

KOVN_RAFT_BASELINE=1 first runs the same burst without a kill (and deletes it), to compare
the times; both are printed (`-s` shows them).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kube.client import KubeError
from northbound.remotes import split_remotes
from sandbox import procs, raft
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.controlplane import eventually, nb_ports
from sandbox.kube import CONTROLLER
from sandbox.probe import probe
from tests.e2e.conftest import RAFT_PREFIX, running, why_no_pods
from tests.e2e.controlplane import REPO, Cluster, condition
from tests.e2e.test_network_model import Pod, ready_pods

pytestmark = pytest.mark.e2e

PODS = 200
PORT = 8080
KILL_AT = 10
"""Kill the leader once this many of the burst's ports are in NB: the writes are under way."""
READY_TIMEOUT = 300.0


def burst(namespace: str, replicas: int) -> dict[str, Any]:
    """A Deployment of tiny TCP servers (the sandbox kubelet runs one per containerPort),
    Ready once the node reaches them, spread over the nodes."""
    labels = {"app": "burst"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "burst", "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "terminationGracePeriodSeconds": 0,
                     "topologySpreadConstraints": [{
                         "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "DoNotSchedule",
                         "labelSelector": {"matchLabels": labels}}],
                     "containers": [{
                         "name": "server", "image": "kovn.io/serve-hostname",
                         "ports": [{"name": "tcp", "containerPort": PORT}],
                         "readinessProbe": {"tcpSocket": {"port": "tcp"},
                                            "periodSeconds": 2}}]}}},
    }


@pytest.fixture(scope="module")
def ha_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 2-node cluster that runs pods, with NB and SB as 3-member raft clusters."""
    reason = why_no_pods()
    if reason is not None:
        pytest.skip(reason)
    config = SandboxConfig(
        state_dir=tmp_path_factory.mktemp("raft-sandbox"), prefix=RAFT_PREFIX,
        nb_tcp_port=None, ovn_ha=True, kube=True, controller=True, workloads=True,
        apiserver_port=0, etcd_port=0, etcd_peer_port=0,
    )
    yield from running(config)
    # `down` stopped every member, by pidfile (the killed one restarted under the same).
    alive = [m.name for db in raft.DATABASES for m in raft.members(config.state_dir, db)
             if procs.live_pid(m.daemon()) is not None]
    assert not alive, f"raft members still running after down: {alive}"


def burst_ports(sandbox: Sandbox, namespace: str) -> dict[str, dict[str, Any]]:
    return {n: p for n, p in nb_ports(sandbox.nb_remote).items()
            if n.startswith(f"{namespace}_")}


def start_burst(cluster: Cluster, namespace: str, replicas: int = PODS) -> float:
    """Create the namespace and the Deployment; when the Deployment was created."""
    cluster.namespace(namespace)
    eventually(lambda: cluster.api.get_or_none(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
        what=f"ServiceAccount {namespace}/default")
    started = time.monotonic()
    cluster.create_or_get(f"/apis/apps/v1/namespaces/{namespace}/deployments",
                          burst(namespace, replicas))
    return started


def wait_ready(sandbox: Sandbox, cluster: Cluster, namespace: str, count: int,
               started: float) -> float:
    """Seconds from `started` until `count` pods of the burst are Ready (polled each second:
    listing 200 pods more often costs the 2 cores the burst needs)."""
    deadline = time.monotonic() + READY_TIMEOUT
    ready: collections.Counter[str] = collections.Counter()
    while time.monotonic() < deadline:
        ready = collections.Counter(
            p["spec"].get("nodeName", "?") for p in cluster.pods(namespace, "app=burst")
            if not p["metadata"].get("deletionTimestamp")
            and condition(p, "Ready").get("status") == "True")
        if ready.total() >= count:
            return time.monotonic() - started
        time.sleep(1.0)
    # Printed too: conftest's rerun after a vswitchd crash keeps one line of a failure.
    message = (f"only {ready.total()}/{count} pods of {namespace} Ready after "
               f"{READY_TIMEOUT:.0f}s (Ready per node: {dict(ready)})\n{log_tails(sandbox)}")
    print(message)
    raise AssertionError(message)


def log_tails(sandbox: Sandbox, lines: int = 4) -> str:
    """The last lines of every node's ovn-controller, agent and kubelet logs."""
    out = []
    for node in sandbox.nodes:
        for name in ("ovnc.log", "agent.log", "kubelet.log"):
            with contextlib.suppress(OSError):
                tail = (node.dir / name).read_text(errors="replace").splitlines()[-lines:]
                out += [f"{node.name}/{name}: {line}" for line in tail]
    return "\n".join(out)


def kill_leader(sandbox: Sandbox, db: str = "nb") -> tuple[raft.Member, int]:
    """SIGKILL the leader's ovsdb-server of `db`'s cluster; the member and its term."""
    leader = eventually(lambda: raft.find_leader(sandbox.state_dir, db), 10, f"a {db} leader")
    status = raft.member_status(leader)
    assert status is not None
    pid = procs.live_pid(leader.daemon())
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: procs.live_pid(leader.daemon()) is None, 5, f"{leader.name} gone")
    return leader, status.term


def ports_on(member: raft.Member, namespace: str) -> int | None:
    """How many of the burst's ports this one member holds, leader or not (None: it does not
    answer yet, e.g. still catching up after a restart)."""
    proc = subprocess.run(["ovn-nbctl", "--no-leader-only", f"--db={member.remote}",
                           "--timeout=5", "--bare", "--columns=name", "list",
                           "Logical_Switch_Port"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return sum(name.startswith(f"{namespace}_") for name in proc.stdout.split())


def kovn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def controller_log(sandbox: Sandbox) -> str:
    return (sandbox.state_dir / "controller.log").read_text(errors="replace")


def clear_earlier_attempts(cluster: Cluster) -> None:
    """Delete the namespaces of an earlier attempt of these tests (conftest runs a test once
    more after a vswitchd crash) and wait until their pods are gone: two nodes take 220
    pods (110 each), not two bursts of 200."""
    earlier = [n["metadata"]["name"] for n in cluster.api.get("/api/v1/namespaces")["items"]
               if n["metadata"]["name"].startswith("raft-")]
    for name in earlier:
        with contextlib.suppress(KubeError):
            cluster.api.call("DELETE", f"/api/v1/namespaces/{name}")
    eventually(lambda: not any(cluster.pods(name) for name in earlier), 180,
               f"the pods of {', '.join(earlier)} gone", interval=1.0)


def all_members_running(sandbox: Sandbox) -> None:
    """Start again whatever member an earlier test (or attempt) killed; wait for quorum."""
    for db in raft.DATABASES:
        for member in raft.members(sandbox.state_dir, db):
            if procs.live_pid(member.daemon()) is None:
                sandbox.restart(member.name)
        raft.wait_joined(raft.members(sandbox.state_dir, db))


def test_nb_leader_killed_during_a_burst_loses_nothing(ha_sandbox: Sandbox) -> None:
    sandbox, cluster = ha_sandbox, Cluster(ha_sandbox.kubeconfig)
    assert len(split_remotes(sandbox.nb_remote)) == raft.MEMBERS
    clear_earlier_attempts(cluster)
    baseline = None
    if os.environ.get("KOVN_RAFT_BASELINE"):
        base = f"raft-base-{int(time.time()) % 100000}"
        started = start_burst(cluster, base)
        baseline = wait_ready(sandbox, cluster, base, PODS, started)
        cluster.api.call("DELETE", f"/api/v1/namespaces/{base}")
        eventually(lambda: not cluster.pods(base), 180, "the baseline's pods gone",
                   interval=1.0)

    # A fresh namespace and a whole cluster per attempt (conftest runs a test once more after
    # a vswitchd crash): the first attempt's pods are gone, its killed member runs again.
    namespace = f"raft-burst-{int(time.time()) % 100000}"
    all_members_running(sandbox)
    started = start_burst(cluster, namespace)
    at_kill = len(eventually(lambda: len(burst_ports(sandbox, namespace)) >= KILL_AT
                             and burst_ports(sandbox, namespace), 60,
                             f"{KILL_AT} ports of the burst in NB"))
    killed, term = kill_leader(sandbox)
    killed_after = time.monotonic() - started
    assert at_kill < PODS, "the controller wrote every port before the kill: kill earlier"

    # The survivors elect a new leader of a later term.
    new_leader = eventually(lambda: raft.find_leader(sandbox.state_dir, "nb"), 15,
                            "a new NB leader after the kill")
    assert new_leader != killed
    new_status = raft.member_status(new_leader)
    assert new_status is not None and new_status.term > term
    elected_after = time.monotonic() - started - killed_after

    took = wait_ready(sandbox, cluster, namespace, PODS, started)
    pods = ready_pods(sandbox, cluster, namespace, "burst", PODS, timeout=30)

    # Every pod has its own IP, and its port is in NB with exactly that IP on its node.
    assert len({p.ip for p in pods}) == PODS
    ports = burst_ports(sandbox, namespace)
    problems = []
    for pod in pods:
        port = ports.get(f"{namespace}_{pod.name}")
        if port is None:
            problems.append(f"{pod.key}: no Logical_Switch_Port")
        elif not any(pod.ip in a.split() for a in port["addresses"]):
            problems.append(f"{pod.key}: port addresses {port['addresses']}, pod IP {pod.ip}")
        elif port["options"].get("requested-chassis") != pod.node:
            problems.append(f"{pod.key}: requested-chassis {port['options']} on {pod.node}")
    assert not problems, "\n".join(problems[:20])
    assert len(ports) == PODS, f"{len(ports)} ports for {PODS} pods"

    # The controller survived, failed over, and wrote the rest after the kill.
    controller = next(d for d in sandbox._daemons if d.name == CONTROLLER)
    assert procs.live_pid(controller) is not None, f"the controller died; see {controller.log}"
    log = controller_log(sandbox)
    assert f"NB: lost unix:{killed.socket}" in log, log[-3000:]
    failover = [line for line in log.splitlines() if "NB failover: now on" in line]
    assert failover and str(new_leader.socket) in failover[-1], log[-3000:]

    # Real packets: a sample of pods on each node answers a client on the other node.
    by_node: dict[str, list[Pod]] = {}
    for pod in pods:
        by_node.setdefault(pod.node, []).append(pod)
    assert len(by_node) == len(sandbox.nodes), f"pods only on {sorted(by_node)}"
    pairs = []
    for node, local in by_node.items():
        remote_clients = [p for n, ps in by_node.items() if n != node for p in ps]
        sample = local[::max(1, len(local) // 10)]
        pairs += [(remote_clients[i], dst) for i, dst in enumerate(sample)]

    def check(pair: tuple[Pod, Pod]) -> str:
        src, dst = pair
        answer = probe(src.netns, dst.ip, PORT, timeout=3.0) or \
            probe(src.netns, dst.ip, PORT, timeout=3.0)
        return "" if answer == f"{dst.name} {src.ip}" else \
            f"{src.key} ({src.node}) -> {dst.key} {dst.ip} ({dst.node}): {answer!r}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        failures = [f for f in pool.map(check, pairs) if f]
    assert not failures, "\n".join(failures)

    # kovn show and kovn trace take the members as one comma-separated remote.
    src, dst = pairs[0]
    # (Printed as well: conftest's rerun after a vswitchd crash keeps one line of a failure.)
    shown = kovn("show", "pod", dst.key, "--nb", sandbox.nb_remote)
    if shown.returncode != 0 or f"{namespace}_{dst.name}" not in shown.stdout:
        print(f"kovn show failed: {shown.stdout}{shown.stderr}")
    assert shown.returncode == 0 and f"{namespace}_{dst.name}" in shown.stdout, shown.stderr
    traced = kovn("trace", src.key, dst.key, "tcp", str(PORT), "--nb", sandbox.nb_remote,
                  "--sb", sandbox.sb_remote)
    if traced.returncode != 0 or "allowed" not in traced.stdout:
        print(f"kovn trace failed: {traced.stdout}{traced.stderr}")
    assert traced.returncode == 0 and "allowed" in traced.stdout, traced.stdout + traced.stderr

    comparison = f"; without a kill: {baseline:.1f}s" if baseline is not None else ""
    print(f"\nraft: {PODS} pods Ready in {took:.1f}s with the NB leader {killed.name} killed "
          f"{killed_after:.1f}s in ({at_kill} ports written by then), {new_leader.name} leader "
          f"{elected_after:.1f}s later (term {term} -> {new_status.term}){comparison}; "
          f"{len(pairs)} cross-node probes answered; {failover[-1].split('NB failover: ')[-1]}")

    # The killed member, started again, rejoins as a follower and catches up.
    sandbox.restart(killed.name)
    raft.wait_joined(raft.members(sandbox.state_dir, "nb"), timeout=30)
    rejoined = raft.member_status(killed)
    assert rejoined is not None and rejoined.joined and rejoined.role == "follower"
    eventually(lambda: ports_on(killed, namespace) == PODS, 30,
               f"{killed.name} holding all {PODS} ports again")


def test_sb_leader_killed_pods_still_come_up(ha_sandbox: Sandbox) -> None:
    """northd and every ovn-controller follow the SB to its new leader: pods created after
    the SB leader died are bound, Ready and reachable across nodes."""
    sandbox, cluster = ha_sandbox, Cluster(ha_sandbox.kubeconfig)
    all_members_running(sandbox)
    killed, term = kill_leader(sandbox, "sb")
    namespace = f"raft-sb-{int(time.time()) % 100000}"
    started = start_burst(cluster, namespace, replicas=6)
    new_leader = eventually(lambda: raft.find_leader(sandbox.state_dir, "sb"), 15,
                            "a new SB leader after the kill")
    status = raft.member_status(new_leader)
    assert new_leader != killed and status is not None and status.term > term
    took = wait_ready(sandbox, cluster, namespace, 6, started)
    pods = ready_pods(sandbox, cluster, namespace, "burst", 6, timeout=30)
    first = {p.node: p for p in pods}
    assert len(first) == len(sandbox.nodes)
    src, dst = list(first.values())[:2]
    assert probe(src.netns, dst.ip, PORT, timeout=3.0) == f"{dst.name} {src.ip}"
    print(f"\nraft: SB leader {killed.name} killed, {new_leader.name} leads (term {term} -> "
          f"{status.term}); 6 pods created after it Ready in {took:.1f}s")
