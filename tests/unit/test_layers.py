"""The layers import in one direction only (an import-linter in a unit test).

Data flows operators/ -> controller/ -> northbound/; node/ binds pods; contract/ is what the
controller and the node agent agree on; sandbox/ runs all of it; cli/ is the one place that
imports every layer. A module that breaks a rule fails here with file:line.
"""

from __future__ import annotations

import pytest

from tests.unit import sourcetree
from tests.unit.sourcetree import NOT_SHIPPED, Import, imports, imports_of_source

# package -> the modules (and their submodules) it must never import, and why.
FORBIDDEN: dict[str, tuple[tuple[str, ...], str]] = {
    "node": (("controller", "operators", "sandbox", "cli"),
             "the node agent shares only contract/ (and northbound/names) with the controller"),
    "controller": (("operators", "northbound.connection", "northbound.apply",
                    "northbound.reconciler", "node", "sandbox", "cli", "kopf", "ovsdbapp"),
                   "controller/ is pure translation and IPAM: no IO, no Kubernetes, no OVSDB"),
    "sandbox": (("cli",), "cli/ imports the sandbox, not the reverse"),
    "northbound": (("operators", "controller", "node", "sandbox", "cli", "kopf"),
                   "northbound/ knows OVN, not who computes the rows"),
    "contract": (("cli", "controller", "kube", "manifests", "node", "northbound", "operators",
                  "sandbox"),
                 "contract/ is imported by both sides and imports neither"),
    "kube": (("bench", "cli", "contract", "controller", "manifests", "node", "northbound",
              "operators", "sandbox", "tests"),
             "kube/ is the Kubernetes client of every layer and imports none of them"),
    "telemetry": (("bench", "cli", "contract", "controller", "kube", "manifests", "node",
                   "northbound", "operators", "sandbox", "tests"),
                  "telemetry/ serves what each component defines and imports none of them"),
}
# third-party package -> the one layer that may import it
ONLY_IN = {
    "kopf": "operators",
    # kube/client.py is kovn's one Kubernetes API client: everyone else (operators/, node/,
    # sandbox/, bench/, tests/) uses it, never the `kubernetes` package itself.
    "kubernetes": "kube",
}
# The Prometheus client: the HTTP server and each component's own metrics module.
PROMETHEUS_USERS = ("telemetry/", "operators/metrics.py", "node/metrics.py",
                    "bench/")  # the benches parse what the daemons serve


def matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(found: list[Import], package: str) -> list[str]:
    """One line per offending import statement (file:line)."""
    banned, why = FORBIDDEN[package]
    bad: dict[tuple[str, int], Import] = {}
    for imp in found:
        if any(matches(imp.module, prefix) for prefix in banned):
            bad.setdefault((imp.file, imp.line), imp)
    return [f"{imp}: {why}" for imp in bad.values()]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_go_one_way(package: str) -> None:
    assert violations(imports(package), package) == []


def test_nothing_shipped_imports_tests_or_bench() -> None:
    shipped = sorted(sourcetree.first_party() - set(NOT_SHIPPED))
    bad = {(imp.file, imp.line): str(imp) for package in [*shipped, "bench"]
           for imp in imports(package)
           if matches(imp.module, "tests") or (package != "bench" and matches(imp.module, "bench"))}
    assert sorted(bad.values()) == []


@pytest.mark.parametrize("module, layer", sorted(ONLY_IN.items()))
def test_third_party_confined_to_one_layer(module: str, layer: str) -> None:
    bad = {(imp.file, imp.line): str(imp) for imp in imports()
           if matches(imp.module, module) and not imp.file.startswith(f"{layer}/")}
    assert sorted(bad.values()) == []


def test_prometheus_stays_in_the_metrics_modules() -> None:
    """Hot paths report through hooks (Reconciler.on_transaction, CniServer's observer,
    Attachments.on_added) and the kovn-cni plugin never loads the client."""
    bad = [str(imp) for imp in imports() if matches(imp.module, "prometheus_client")
           and not imp.file.startswith(PROMETHEUS_USERS) and not imp.file.startswith("tests/")]
    assert bad == []


def test_contract_is_pure() -> None:
    """contract/ needs nothing but the standard library (and itself)."""
    bad = [str(imp) for imp in imports("contract")
           if not sourcetree.is_stdlib(imp.module) and not matches(imp.module, "contract")]
    assert bad == []


def test_one_kubernetes_client() -> None:
    """Only kube/ talks the Kubernetes API: it alone imports the `kubernetes` package (the
    rule above) and builds watch requests; every list+watch loop is kube.listwatch.ListWatch,
    and no second client module comes back."""
    assert [str(imp) for imp in imports() if matches(imp.module, "kubernetes")
            and not imp.file.startswith("kube/")] == []
    unit_tests = sourcetree.REPO / "tests" / "unit"  # these check kube/ itself
    watchers = [str(path.relative_to(sourcetree.REPO)) for path in sourcetree.sources()
                if "allowWatchBookmarks" in path.read_text()
                and not path.is_relative_to(unit_tests)]
    assert watchers == ["kube/client.py"]
    assert not (sourcetree.REPO / "node" / "kube.py").exists()
    assert not (sourcetree.REPO / "sandbox" / "kubeapi.py").exists()


def test_one_setns_helper() -> None:
    """Only node/netns.py calls setns(2); everything else enters a netns through it."""
    holders = [str(path.relative_to(sourcetree.REPO)) for path in sourcetree.sources()
               if "CLONE_NEWNET" in path.read_text() and path.name != "test_layers.py"]
    assert holders == ["node/netns.py"]


@pytest.mark.parametrize("source, package, expected", [
    ("from controller.podnetwork import PodNetwork", "node", 1),
    ("from controller import topology", "node", 1),
    ("def f():\n    import sandbox.kube", "node", 1),  # lazy imports count too
    ("from contract.podnetwork import PodNetwork", "node", 0),
    ("from northbound import connection", "controller", 1),
    ("from northbound import names, rows", "controller", 0),
    ("import ovsdbapp.api", "controller", 1),
    ("from cli.main import build_parser", "sandbox", 1),
    ("from node.netns import enter_netns", "kube", 1),  # kube/ takes enter_netns as a callable
    ("import kubernetes", "kube", 0),
])
def test_the_checker_sees_violations(source: str, package: str, expected: int) -> None:
    found = imports_of_source(source, f"{package}/x.py", package)
    assert len(violations(found, package)) == expected


def test_relative_and_lazy_imports_are_resolved() -> None:
    found = imports_of_source("from . import a\nfrom ..b import c\ndef f():\n    import d\n",
                              "p/q/x.py", "p.q")
    assert [(i.module, i.top_level) for i in found] == [
        ("p.q", True), ("p.q.a", True), ("p.b", True), ("p.b.c", True), ("d", False)]
