"""The CI guard of the test matrix (``tests/matrix.py``): under ``CI`` a session in which
no scale-out test ran and passed fails, whatever else passed.

Each case runs pytest in a subprocess on a tiny test directory of its own, with the
guard loaded as a plugin and nothing of this suite's configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

EMBEDDED_ONLY = """
def test_embedded():
    pass
"""

#: A scale-out store as ``tests/matrix.py`` makes it, with an ``s3_server`` of the tiny
#: session's own (an address only: nothing is stored) and the database URL ``{database}``.
SCALEOUT = """
from typing import NamedTuple

import pytest

from tests.matrix import scaleout


class S3Server(NamedTuple):
    endpoint: str
    bucket: str


@pytest.fixture(scope="session")
def s3_server():
    return S3Server("http://127.0.0.1:9", "tiny")


@pytest.mark.parametrize("config", ["embedded", "scaleout"])
def test_both(config, request):
    if config == "scaleout":
        scaleout("{database}", request)
    {body}
"""
POSTGRESQL = "postgresql://artifacts@127.0.0.1/tiny"


def scaleout_source(body: str = "pass", database: str = POSTGRESQL) -> str:
    return SCALEOUT.format(body=body, database=database)


def _run(tmp_path: Path, source: str, *, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_tiny.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # hypothesis, schemathesis: seconds each
    if ci:
        env["CI"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.matrix"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_under_ci_a_run_without_scaleout_fails(tmp_path: Path) -> None:
    result = _run(tmp_path, EMBEDDED_ONLY, ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "not one test ran and passed in the scale-out configuration" in result.stdout


def test_without_ci_the_same_run_passes(tmp_path: Path) -> None:
    result = _run(tmp_path, EMBEDDED_ONLY, ci=False)
    assert result.returncode == pytest.ExitCode.OK, result.stdout + result.stderr
    assert "scale-out" not in result.stdout


def test_under_ci_a_passing_scaleout_test_satisfies_it(tmp_path: Path) -> None:
    result = _run(tmp_path, scaleout_source(), ci=True)
    assert result.returncode == pytest.ExitCode.OK, result.stdout + result.stderr


def test_under_ci_a_skipped_scaleout_test_does_not(tmp_path: Path) -> None:
    body = 'if config == "scaleout":\n        pytest.skip("no PostgreSQL")'
    result = _run(tmp_path, scaleout_source(body), ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout


def test_under_ci_a_scaleout_test_without_a_scaleout_store_does_not(tmp_path: Path) -> None:
    """Marked scale-out, but its store was never made by ``tests/matrix.py``: it proves
    nothing about PostgreSQL + S3."""
    source = scaleout_source().replace('scaleout("', 'print("')
    result = _run(tmp_path, source, ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "not one test ran and passed in the scale-out configuration" in result.stdout


def test_under_ci_a_scaleout_store_on_another_engine_does_not(tmp_path: Path) -> None:
    """A scale-out store whose metadata is not PostgreSQL's (S3 beside SQLite) does not count."""
    result = _run(tmp_path, scaleout_source(database="sqlite:///tiny.db"), ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_under_ci_a_failing_run_keeps_its_own_status(tmp_path: Path) -> None:
    result = _run(tmp_path, "def test_fails():\n    assert False\n", ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 failed" in result.stdout
