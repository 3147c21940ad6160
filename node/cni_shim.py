"""Install `kovn-cni` into a CNI bin directory: the compiled fast path and the Python shim.

`kovn-cni` is node/cni_shim.c compiled (by the machine's C compiler, ~0.2 s, at install or
sandbox start); `kovn-cni-py` beside it is the Python shim's launcher (node/cni_plugin.py
under `python3 -I -S`), to which the compiled one hands every case but the common one. Why
compiled: a runtime execs the plugin for every pod's ADD and DEL, on the pod's path to Ready;
the Python shim costs ~18 ms of CPU per exec, the compiled one well under 1 ms (measured by
bench.pod_ready). Without a compiler `kovn-cni` is the Python launcher itself: the same
behaviour, only slower to start.

    python -m node.cni_shim DIR     (what scripts/install.sh runs, for /usr/local/bin)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from node.cni_plugin import launcher

SOURCE = Path(__file__).with_name("cni_shim.c")
ROOT = str(Path(__file__).resolve().parent.parent)
PLUGIN = "kovn-cni"
FALLBACK = "kovn-cni-py"  # node/cni_shim.c execs this name, from its own directory
CFLAGS = ("-O2", "-Wall", "-Wextra")


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def build(out: Path) -> str | None:
    """Compile node/cni_shim.c to `out`; None on success, else why not (no compiler, or its
    error), for the caller to print."""
    cc = compiler()
    if cc is None:
        return "no C compiler (cc) on PATH: apt-get install gcc libc6-dev"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        done = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(SOURCE)],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            return f"{cc} failed: {done.stderr.strip()[-2000:]}"
        os.replace(tmp, out)
        return None
    finally:
        tmp.unlink(missing_ok=True)


def cached_build(cache: Path) -> Path | str:
    """The compiled shim in `cache`, built once per version of the source; or why not."""
    digest = hashlib.sha1(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    binary = cache / f"kovn-cni-{digest}"
    if binary.exists():
        return binary
    problem = build(binary)
    return binary if problem is None else problem


def install(directory: Path, python: str, cache: Path) -> str | None:
    """Write `kovn-cni` and `kovn-cni-py` into `directory`, compiling into (or reusing from)
    `cache`. None if `kovn-cni` is the compiled shim; else why it is the Python launcher."""
    directory.mkdir(parents=True, exist_ok=True)
    fallback = directory / FALLBACK
    _write_atomically(fallback, launcher(python, ROOT).encode())
    built = cached_build(cache)
    if isinstance(built, str):
        _write_atomically(directory / PLUGIN, fallback.read_bytes())
        return built
    _write_atomically(directory / PLUGIN, built.read_bytes())
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by a new file (never write into a file a runtime may be executing)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m node.cni_shim DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    with tempfile.TemporaryDirectory() as cache:
        problem = install(directory, os.path.realpath(sys.executable), Path(cache))
    if problem is None:
        print(f"kovn-cni: compiled ({directory / PLUGIN}, Python shim {directory / FALLBACK})")
    else:
        print(f"kovn-cni: the Python shim only ({problem}); pods start ~18 ms of CPU slower")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
