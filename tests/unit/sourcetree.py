"""The repository's Python sources and what they import, read with `ast` (nothing is imported).

Shared by test_layers.py (which layer may import which) and test_packaging.py (every
third-party import is declared, the wheel holds the right packages).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".cache", ".venv", "venv", "build", "dist", ".git", "__pycache__"}
NOT_SHIPPED = ("tests", "bench")  # run from the checkout only


@dataclass(frozen=True)
class Import:
    module: str  # "northbound.connection" (for `from northbound import connection` too)
    file: str  # path relative to the repo
    line: int
    top_level: bool  # at module level (runs on import), not inside a function

    @property
    def root(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def first_party() -> set[str]:
    """kovn's top-level packages: the repository's directories with an __init__.py."""
    return {p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name not in SKIP_DIRS}


def sources(package: str | None = None) -> list[Path]:
    """Every .py file of the repo (or of one top-level package)."""
    base = REPO / package if package else REPO
    return sorted(p for p in base.rglob("*.py")
                  if not SKIP_DIRS & set(p.relative_to(REPO).parts))


def _package_of(path: Path) -> str:
    """The dotted package a module is in (for a package's __init__.py, that package)."""
    return ".".join(path.relative_to(REPO).parent.parts)


def imports_of_source(text: str, file: str, package: str = "") -> list[Import]:
    """The imports of one source text; `package` (dotted) resolves relative imports.

    `from a import b` yields both `a` and `a.b` (b may be a submodule), so a rule against
    `northbound.connection` catches `from northbound import connection` too."""
    tree = ast.parse(text, filename=file)
    functions = {id(node) for fn in ast.walk(tree)
                 if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                 for node in ast.walk(fn) if node is not fn}
    found: list[Import] = []
    for node in ast.walk(tree):
        top = id(node) not in functions
        if isinstance(node, ast.Import):
            found += [Import(a.name, file, node.lineno, top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = parts[: len(parts) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append(Import(name, file, node.lineno, top))
            found += [Import(f"{name}.{a.name}", file, node.lineno, top)
                      for a in node.names if a.name != "*"]
    return found


def imports(package: str | None = None) -> list[Import]:
    """The imports of every module of the repo (or of one top-level package)."""
    found: list[Import] = []
    for path in sources(package):
        found += imports_of_source(path.read_text(), str(path.relative_to(REPO)),
                                   _package_of(path))
    return found


def is_stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names or name == "__future__"
