"""Driving the sandbox's control plane from outside: a `kovn controller` subprocess that can be
killed and restarted, pod manifests, the NB's ports as ovn-nbctl sees them, and polling.

Shared by the e2e tests and the benchmarks (bench/ never imports tests/).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sandbox.kube import REPO, free_port

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "",
               interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)


class ControllerProcess:
    """`kovn controller` as a subprocess, as it runs in the sandbox: killable and restartable."""

    def __init__(self, nb_remote: str, kubeconfig: Path, log: Path, resync: float = 5.0,
                 identity: str = "kovn-test-controller", extra: tuple[str, ...] = ()) -> None:
        # /metrics, /healthz, /readyz on a free loopback port, not the default 0.0.0.0:9476
        # that any other controller on the machine may hold; kept across restarts. One
        # identity across kills and restarts: the restarted process resumes the Lease at
        # once (as a restarted container of one pod would) instead of waiting it out.
        self.metrics_url = f"http://127.0.0.1:{free_port()}"
        self.argv = [sys.executable, "-m", "cli.main", "controller", "--nb", nb_remote,
                     "--kubeconfig", str(kubeconfig), "--resync", str(resync),
                     "--metrics-address", self.metrics_url.removeprefix("http://"),
                     "--identity", identity, *extra]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self) -> None:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=out, stderr=out)

    def wait_ready(self, timeout: float = 60) -> None:
        eventually(lambda: b"controller ready" in self.log.read_bytes()[self._offset:]
                   or self._died(),
                   timeout, f"controller ready (see {self.log})")
        assert self.proc is not None and self.proc.poll() is None, \
            f"controller exited: see {self.log}"

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    @contextlib.contextmanager
    def running(self) -> Iterator[ControllerProcess]:
        """Started and ready for the `with` block, stopped after it whatever happens."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def pod_manifest(namespace: str, name: str, annotations: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None, host_network: bool = False
                 ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "kovn.io/serve-hostname",
                                            "ports": [{"containerPort": 8080}]}],
                            "terminationGracePeriodSeconds": 0}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": annotations or {}, "labels": labels or {}},
            "spec": spec}


def nb_ports(nb_remote: str) -> dict[str, dict[str, Any]]:
    """Every Logical_Switch_Port by name, read with ovn-nbctl (independent of kovn's code)."""
    out = subprocess.run(
        ["ovn-nbctl", f"--db={nb_remote}", "--format=json", "--columns=name,addresses,options,"
         "external_ids", "list", "Logical_Switch_Port"],
        capture_output=True, text=True, check=True).stdout
    table = json.loads(out)
    ports = {}
    for row in table["data"]:
        record = dict(zip(table["headings"], row, strict=True))
        addresses = record["addresses"]
        record["addresses"] = addresses[1] if addresses[0] == "set" else [addresses]
        record["options"] = dict(record["options"][1])
        record["external_ids"] = dict(record["external_ids"][1])
        ports[record["name"]] = record
    return ports
