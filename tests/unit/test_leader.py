"""The pure parts of leader election (the rest runs against the real API server in
tests/e2e/test_leader.py)."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from operators.leader import LeaseTiming, default_identity, default_namespace, micro_time


def test_timing_keeps_client_gos_order() -> None:
    LeaseTiming(10, 7, 2)
    for bad in ((7, 7, 2), (10, 2, 2), (10, 7, 0)):
        with pytest.raises(ValueError, match="duration > renew deadline > retry"):
            LeaseTiming(*bad)


def test_micro_time_is_what_the_api_server_takes() -> None:
    when = dt.datetime(2026, 12, 1, 20, 0, 1, 2345, tzinfo=dt.UTC)
    assert micro_time(when) == "2026-12-01T20:00:01.002345Z"


def test_identity_and_namespace_come_from_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "kovn-controller-7d9-abc")
    monkeypatch.setenv("POD_NAMESPACE", "kube-system")
    assert default_identity() == "kovn-controller-7d9-abc"
    assert default_namespace() == "kube-system"
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("POD_NAMESPACE")
    assert default_identity().endswith(f"_{os.getpid()}")
    assert default_namespace() == "kovn-system"
