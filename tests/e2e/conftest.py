"""Shared e2e machinery: skip e2e tests where the sandbox cannot run, one OVN-only sandbox
per session for tests that only need a running OVN, one with the Kubernetes control plane
(`kube_sandbox`) for tests that need the API, and a whole cluster (`cluster_sandbox`: control
plane, kovn controller, node agents and sandbox kubelets) for tests that run pods.

e2e tests start real daemons in network namespaces, so they need root and the OVS/OVN
packages; elsewhere they are skipped with the reason, never failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import kube, workloads
from sandbox.cluster import REQUIRED_BINARIES, Sandbox, SandboxError
from sandbox.config import SandboxConfig
from sandbox.controlplane import ControllerProcess
from sandbox.leftovers import sandboxes_using_prefix

# Netns prefixes reserved for tests: the session sandbox and the CLI tests' sandboxes. They
# differ from a user's `kovn` sandbox, so the tests can run while that one is up.
SESSION_PREFIX = "kvt"
CLI_PREFIX = "kvc"
KUBE_PREFIX = "kvk"
CLUSTER_PREFIX = "kvw"
TEST_PREFIXES = (SESSION_PREFIX, CLI_PREFIX, KUBE_PREFIX, CLUSTER_PREFIX)
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


def running(config: SandboxConfig) -> Iterator[Sandbox]:
    """Up for the fixture's lifetime, always down after. A failing up() has already
    stopped everything it started (keeping its logs for reading)."""
    sandbox = Sandbox(config)
    sandbox.up(progress=lambda _line: None)
    try:
        yield sandbox
    finally:
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
    with ControllerProcess(kube_sandbox.nb_remote, kube_sandbox.kubeconfig, log).running() as proc:
        yield proc
