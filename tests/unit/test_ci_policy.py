"""tests/conftest.py: under CI=true a skipped e2e test fails the run; elsewhere it skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
SAMPLE = '''
import pytest

@pytest.fixture
def kube():
    pytest.skip("Kubernetes binaries missing in .cache/k8s/bin: run sandbox/k8s/build.sh")

@pytest.mark.e2e
@pytest.mark.skipif(True, reason="e2e tests need ovsdb-server")
def test_marker_skip():
    pass

@pytest.mark.e2e
def test_fixture_skip(kube):
    pass

def test_unit_skip():
    pytest.skip("not an e2e test: skips stay skips")

@pytest.mark.e2e
def test_runs():
    pass
'''


def run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    e2e: sandbox\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rfEs", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_skips_outside_ci(tmp_path: Path, ci: str | None) -> None:
    proc = run(tmp_path, ci)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 3 skipped" in proc.stdout


def test_e2e_skips_fail_under_ci(tmp_path: Path) -> None:
    proc = run(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    # Skips happen at setup, so the failures are reported as errors: exit code 1 all the same.
    assert "1 passed, 1 skipped, 2 errors" in proc.stdout
    assert "this e2e test must run, but it was skipped: Kubernetes binaries missing" \
        in proc.stdout
    assert "e2e tests need ovsdb-server" in proc.stdout
