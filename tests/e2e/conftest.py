"""Shared e2e machinery: skip e2e tests where the sandbox cannot run, one OVN-only sandbox
per session for tests that only need a running OVN, one with the Kubernetes control plane
(`kube_sandbox`) for tests that need the API, and a whole cluster (`cluster_sandbox`: control
plane, kovn controller, node agents and sandbox kubelets) for tests that run pods.

e2e tests start real daemons in network namespaces, so they need root and the OVS/OVN
packages; elsewhere they are skipped with the reason, never failed.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.runner import CallInfo, runtestprotocol

from sandbox import identities, kube, workloads
from sandbox.cluster import Sandbox, SandboxError
from sandbox.config import SandboxConfig
from sandbox.controlplane import ControllerProcess
from sandbox.leftovers import sandboxes_using_prefix
from sandbox.prerequisites import REQUIRED_BINARIES

# Netns prefixes reserved for tests: the session sandbox and the CLI tests' sandboxes. They
# differ from a user's `kovn` sandbox, so the tests can run while that one is up.
SESSION_PREFIX = "kvt"
CLI_PREFIX = "kvc"
KUBE_PREFIX = "kvk"
CLUSTER_PREFIX = "kvw"
RAFT_PREFIX = "kvr"  # tests/e2e/test_raft.py's --ovn-ha cluster
TEST_PREFIXES = (SESSION_PREFIX, CLI_PREFIX, KUBE_PREFIX, CLUSTER_PREFIX, RAFT_PREFIX)
# Held for a whole e2e session: two test runs on one machine would share the test prefixes.
LOCK_FILE = Path("/tmp/kovn-e2e.lock")


def _why_no_sandbox() -> str | None:
    if os.geteuid() != 0:
        return "e2e tests need root (network namespaces)"
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        return f"e2e tests need {', '.join(missing)}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "run_last: run at the end of the session (a test that waits for time to "
        "pass on a shared sandbox waits less after the others)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)  # stable
    reason = _why_no_sandbox()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.skip(reason=reason))


def why_no_kube() -> str | None:
    """Why tests needing the Kubernetes control plane cannot run here, or None."""
    try:
        kube.check_binaries()
    except SandboxError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session", autouse=True)
def e2e_lock() -> Iterator[None]:
    """Serialise e2e runs on this machine, then remove what a killed earlier run left.

    Holding the lock means no other run is active, so any sandbox still running with a test
    prefix belongs to a run that died without its finalizers: take it down by its state dir.
    """
    with LOCK_FILE.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another e2e run to finish ({LOCK_FILE})", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        for prefix in TEST_PREFIXES:
            for state_dir in sandboxes_using_prefix(prefix):
                with contextlib.suppress(SandboxError):
                    Sandbox.load(state_dir).down()
        yield


CRASHES: list[str] = []
"""ovs-vswitchd aborts seen in the sandboxes' logs (OVS 3.1.0's userspace conntrack can
assert; `--monitor` restarts it in ~2 s): printed in the summary, so a test that failed in
such a window says why."""


LIVE: list[Sandbox] = []
"""The sandboxes up right now (whose vswitchd logs a test's run is checked against)."""
RERUNS: list[str] = []
MAX_RERUNS = 10  # a whole run logs ~15 crashes; most hit no test
ATTEMPTS = 3
"""A test is run at most this often: a rerun may meet the next crash (seen in CI: vswitchd
aborted on node2, then on node1 14 s later, both during one TCP test)."""
RECOVERY = 15.0
"""Seconds after a crash in which the next tests may still lose packets: vswitchd is back in
~2 s, but ovn-controller reinstalls every flow and conntrack starts empty."""
_last_crash_seen = [float("-inf")]  # time.monotonic() when a test's run showed a new crash


def _crashes(sandbox: Sandbox) -> list[str]:
    found = []
    for node in sandbox.nodes:
        with contextlib.suppress(OSError):
            found += [f"{sandbox.config.prefix}/{node.name}: {line.strip()}"
                      for line in (node.dir / "vs.log").read_text(errors="replace").splitlines()
                      if "|EMER|" in line]
    return found


def _note_crashes(sandbox: Sandbox) -> None:
    CRASHES.extend(_crashes(sandbox))


FORBIDDEN: list[str] = []
"""Requests the API server refused the kovn controller and node agents (they run as the
ServiceAccounts of manifests/rbac): a role misses a verb the code uses. Listed in the
summary; read before the sandbox's logs go with its state dir."""


EXPECTED_FORBIDDEN: list[str] = []
"""Text of refusals a test provokes on purpose (its rights revoked): not listed."""
FORBIDDEN_MARKS = ("HTTP 403", "Forbidden", "forbidden", "Not enough permissions")
"""kube/client.py's KubeError, the API server's message, and kopf's warning when it may not
watch something (it then carries on with less)."""


def forbidden_lines(log: Path, what: str) -> list[str]:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [f"{what}: {line.strip()[:300]}" for line in text.splitlines()
            if any(mark in line for mark in FORBIDDEN_MARKS)
            and not any(expected in line for expected in EXPECTED_FORBIDDEN)]


def _note_forbidden(sandbox: Sandbox) -> None:
    prefix = sandbox.config.prefix
    FORBIDDEN.extend(forbidden_lines(sandbox.state_dir / "controller.log",
                                     f"{prefix}/controller"))
    for node in sandbox.nodes:
        FORBIDDEN.extend(forbidden_lines(node.dir / "agent.log", f"{prefix}/{node.name}/agent"))


def _live_crashes() -> set[str]:
    return {line for sandbox in LIVE for line in _crashes(sandbox)}


def _forget_failed_fixtures(item: pytest.Item) -> None:
    """A module fixture that failed (pods not Ready while vswitchd was down) is set up
    again, not re-raised from pytest's cache. It is finished as pytest would (its
    finalizers run and go): pytest refuses to set up a fixture that still has some."""
    for defs in item._fixtureinfo.name2fixturedefs.values():
        for fixturedef in defs:
            cached = getattr(fixturedef, "cached_result", None)
            if cached is not None and cached[2] is not None:
                # As FixtureDef.finish does, last registered first (a failing one is not
                # the test's failure); finish() itself needs the test's request, gone by now.
                finalizers = fixturedef._finalizers[:]
                fixturedef._finalizers.clear()
                for finalizer in reversed(finalizers):
                    with contextlib.suppress(Exception):
                        finalizer()
                fixturedef.cached_result = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """Run an e2e test once more when it failed while a sandbox's ovs-vswitchd aborted
    (OVS 3.1.0's conntrack assertion, an upstream bug; `--monitor` restarts it in ~2 s, a
    window in which packets are lost), or within RECOVERY seconds after one. Only then, at
    most ATTEMPTS times per test and MAX_RERUNS times a session, and every rerun is listed
    in the summary with the crash and the failure it followed.
    """
    if item.get_closest_marker("e2e") is None:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    keep = item.parent  # tear down only the test's own fixtures between attempts
    reports: list[Any] = []
    for attempt in range(1, ATTEMPTS + 1):
        if attempt > 1:
            time.sleep(5)  # vswitchd back, ovn-controller's flows reinstalled
            _forget_failed_fixtures(item)
        before = _live_crashes()
        recovering = time.monotonic() - _last_crash_seen[0] < RECOVERY  # one just before
        reports = runtestprotocol(item, log=False, nextitem=keep)  # type: ignore[arg-type]
        crashed = sorted(_live_crashes() - before)
        if crashed:
            _last_crash_seen[0] = time.monotonic()
        elif recovering:
            crashed = ["(during the recovery from the crash logged just before)"]
        failure = next((r for r in reports if r.failed), None)
        if not crashed or failure is None or attempt == ATTEMPTS or len(RERUNS) >= MAX_RERUNS:
            break
        RERUNS.append(f"{item.nodeid}: {crashed[0]}\n    attempt {attempt}: "
                      f"{str(failure.longrepr).strip().splitlines()[-1][:200]}")
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    # What the attempts kept (module and session fixtures) goes as pytest would; only a
    # failure there is reported, the attempt's own teardown report is already logged.
    rest = CallInfo.from_call(lambda: item.session._setupstate.teardown_exact(nextitem),
                              when="teardown")
    if rest.excinfo is not None:
        item.ihook.pytest_runtest_logreport(
            report=item.ihook.pytest_runtest_makereport(item=item, call=rest))
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


STARTED: list[tuple[str, str]] = []
"""(UTC time as the OVS logs print it, test id) of every test started: names the test
that was running when a crash was logged."""


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    now = datetime.datetime.now(datetime.UTC)
    STARTED.append((now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], nodeid))


def _running_at(stamp: str) -> str:
    before = [nodeid for started, nodeid in STARTED if started <= stamp]
    return before[-1] if before else "?"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RERUNS:
        terminalreporter.section("e2e tests run again after an ovs-vswitchd crash")
        for line in RERUNS:
            terminalreporter.line(line)
    if FORBIDDEN:
        terminalreporter.section("requests refused to kovn's ServiceAccounts (manifests/rbac "
                                 "misses a verb?)")
        for line in FORBIDDEN:
            terminalreporter.line(line)
    if CRASHES:
        terminalreporter.section("ovs-vswitchd crashes (restarted by --monitor)")
        for line in CRASHES:
            stamp = line.split(": ", 1)[1][:23]
            terminalreporter.line(f"{line}  [during {_running_at(stamp)}]")


def running(config: SandboxConfig) -> Iterator[Sandbox]:
    """Up for the fixture's lifetime, always down after. A failing up() has already
    stopped everything it started (keeping its logs for reading)."""
    sandbox = Sandbox(config)
    sandbox.up(progress=lambda _line: None)
    LIVE.append(sandbox)
    try:
        yield sandbox
    finally:
        LIVE.remove(sandbox)
        _note_crashes(sandbox)
        _note_forbidden(sandbox)
        with contextlib.suppress(SandboxError):
            sandbox.down()


@pytest.fixture(scope="session")
def e2e_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A 2-node OVN sandbox shared by the session (no NB TCP port, no Kubernetes), always
    taken down at the end."""
    config = SandboxConfig(
        state_dir=tmp_path_factory.mktemp("sandbox"), prefix=SESSION_PREFIX, nb_tcp_port=None,
        kube=False, controller=False,
    )
    yield from running(config)


@pytest.fixture(scope="session")
def kube_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A 2-node sandbox with the Kubernetes control plane and Ready nodes, shared by the
    session; no kovn controller (tests run their own), free ports, always taken down."""
    reason = why_no_kube()
    if reason is not None:
        pytest.skip(reason)
    config = SandboxConfig(
        state_dir=tmp_path_factory.mktemp("kube-sandbox"), prefix=KUBE_PREFIX,
        nb_tcp_port=None, kube=True, controller=False, workloads=False,
        apiserver_port=0, etcd_port=0, etcd_peer_port=0,
    )
    yield from running(config)


def why_no_pods() -> str | None:
    """Why tests that run pods (agents, CNI, kubelets) cannot run here, or None."""
    return why_no_kube() or workloads.why_no_workloads()


@pytest.fixture(scope="session")
def cluster_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A 2-node cluster that runs pods: control plane, kovn controller, a node agent and a
    sandbox kubelet per node; shared by the session, free ports, always taken down."""
    reason = why_no_pods()
    if reason is not None:
        pytest.skip(reason)
    config = SandboxConfig(
        state_dir=tmp_path_factory.mktemp("cluster-sandbox"), prefix=CLUSTER_PREFIX,
        nb_tcp_port=None, kube=True, controller=True, workloads=True,
        apiserver_port=0, etcd_port=0, etcd_peer_port=0,
    )
    yield from running(config)


@pytest.fixture(scope="module")
def controller(kube_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ControllerProcess]:
    """A `kovn controller` on the session's kube_sandbox for one test module (modules run
    one after another, so there is only ever one NB writer)."""
    log = Path(tmp_path_factory.mktemp("controller")) / "controller.log"
    kubeconfig = identities.kubeconfig_for(kube_sandbox.config, identities.CONTROLLER_SA)
    with ControllerProcess(kube_sandbox.nb_remote, kubeconfig, log).running() as proc:
        yield proc
    FORBIDDEN.extend(forbidden_lines(log, "controller"))
