"""pyproject.toml declares what kovn imports and ships what users run.

A third-party import that is not declared works on a machine that happens to have the package
(the system Python, a transitive dependency) and fails with ModuleNotFoundError in a clean
virtual environment; CI installs into one (.ci/run), and this test names the culprit first.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re

from tests.unit import sourcetree
from tests.unit.sourcetree import NOT_SHIPPED

SHIPPED = tuple(sourcetree.pyproject()["tool"]["setuptools"]["packages"])


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def declared() -> tuple[set[str], set[str], set[str]]:
    """(dependencies, the test extra, the other extras) as canonical distribution names."""
    project = sourcetree.pyproject()["project"]
    extras = project.get("optional-dependencies", {})
    other = set().union(*(requirement_names(v) for k, v in extras.items() if k != "test"))
    return (requirement_names(project["dependencies"]), requirement_names(extras.get("test", [])),
            other)


@functools.cache
def _provides() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def distributions(module: str) -> set[str]:
    """The installed distributions that provide top-level `module` (empty: none does)."""
    return {canonical(d) for d in _provides().get(module, [])}


def third_party(package: str) -> list[sourcetree.Import]:
    first = sourcetree.first_party()
    return [imp for imp in sourcetree.imports(package)
            if imp.root not in first and not sourcetree.is_stdlib(imp.module)]


def undeclared(imports: list[sourcetree.Import], allowed: set[str],
               lazy_allowed: set[str] = frozenset()) -> list[str]:
    """Imports whose distribution is not in `allowed` (or, for imports inside a function
    only, in `lazy_allowed`: optional extras)."""
    bad = {}
    for imp in imports:
        names = distributions(imp.root) or {canonical(imp.root)}
        ok = allowed | (lazy_allowed if not imp.top_level else set())
        if not names & ok:
            bad.setdefault(imp.root, f"{imp} (distribution {' or '.join(sorted(names))}): "
                           "declare it in pyproject.toml [project] dependencies")
    return sorted(bad.values())


def test_shipped_packages_declare_every_third_party_import() -> None:
    deps, _test, extras = declared()
    found = [imp for package in SHIPPED for imp in third_party(package)]
    assert {imp.root for imp in found} >= {"cryptography", "yaml", "kopf", "ovsdbapp"}
    assert undeclared(found, deps, extras) == []


def test_tests_and_benchmarks_need_only_declared_packages() -> None:
    deps, test, _extras = declared()
    found = [imp for package in NOT_SHIPPED for imp in third_party(package)]
    assert undeclared(found, deps | test) == []


def test_the_check_catches_an_undeclared_import() -> None:
    found = sourcetree.imports_of_source("import yaml\ndef f():\n    import yappi\n",
                                         "sandbox/x.py", "sandbox")
    assert len(undeclared(found, {"kopf"}, {"yappi"})) == 1  # yaml: PyYAML is not in {kopf}
    assert undeclared(found, {"pyyaml"}, {"yappi"}) == []
    top_level = sourcetree.imports_of_source("import yappi\n", "sandbox/x.py", "sandbox")
    assert len(undeclared(top_level, {"pyyaml"}, {"yappi"})) == 1  # an extra only lazily


def test_wheel_ships_every_package_users_run_and_no_tests() -> None:
    packages = set(SHIPPED)
    assert not {p for p in packages if p.split(".")[0] in NOT_SHIPPED}
    expected = {".".join(p.parent.relative_to(sourcetree.REPO).parts)
                for top in sourcetree.first_party() - set(NOT_SHIPPED)
                for p in (sourcetree.REPO / top).rglob("__init__.py")}
    assert packages == expected, "pyproject.toml [tool.setuptools] packages is out of date"


def test_console_scripts_point_into_shipped_packages() -> None:
    scripts = sourcetree.pyproject()["project"]["scripts"]
    assert set(scripts) == {"kovn", "kovn-cni"}
    for target in scripts.values():
        assert target.split(".")[0] in SHIPPED, target
