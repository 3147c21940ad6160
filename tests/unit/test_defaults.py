"""The cluster's default ranges and MTU live in contract/defaults.py and nowhere else."""

from __future__ import annotations

import ast

import pytest

from cli.main import build_parser
from contract import defaults, podnetwork
from controller.config import ClusterConfig
from sandbox.config import SandboxConfig
from tests.unit import sourcetree

DEFAULTS = {defaults.POD_CIDR, defaults.JOIN_CIDR, defaults.SERVICE_CIDR}


def test_controller_config_defaults() -> None:
    config = ClusterConfig()
    assert (config.default_cidr, config.join_cidr, config.service_cidr, config.mtu) == (
        defaults.POD_CIDR, defaults.JOIN_CIDR, defaults.SERVICE_CIDR, defaults.DEFAULT_MTU)
    assert podnetwork.DEFAULT_MTU == defaults.DEFAULT_MTU


def test_controller_flags_default_to_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KOVN_DEFAULT_CIDR", raising=False)
    args = build_parser().parse_args(["controller"])
    assert (args.default_cidr, args.join_cidr, args.service_cidr, args.mtu) == (
        defaults.POD_CIDR, defaults.JOIN_CIDR, defaults.SERVICE_CIDR, defaults.DEFAULT_MTU)


def test_sandbox_blackholes_them() -> None:
    assert set(SandboxConfig().blackhole_ranges) >= DEFAULTS


def test_no_other_shipped_module_spells_them() -> None:
    """A string equal to a default range anywhere in shipped code (docstrings aside) is a
    second source of truth."""
    shipped = sourcetree.first_party() - set(sourcetree.NOT_SHIPPED)
    copies = []
    for package in sorted(shipped):
        for path in sourcetree.sources(package):
            rel = str(path.relative_to(sourcetree.REPO))
            if rel == "contract/defaults.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in DEFAULTS:
                    copies.append(f"{rel}:{node.lineno} {node.value!r}")
    assert copies == []
