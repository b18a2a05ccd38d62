"""The real CLI in remote mode, as the tests of this package run it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ARTIFACTSTORE, CliResult

__all__ = ["remote_env", "run_remote"]


def remote_env(url: str, work: Path, **more: str) -> dict[str, str]:
    """The caller's environment without its ARTIFACTSTORE_* settings, talking to ``url``,
    with its upload-session state under ``work`` (never the user's home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env.update(ARTIFACTSTORE_URL=url, XDG_CACHE_HOME=str(work / "cache"), **more)
    return env


def run_remote(work: Path, url: str, args: tuple[str, ...], **env: str) -> CliResult:
    """Run ``artifactstore ARGS`` in ``work`` against ``url``; its exit status and output."""
    proc = subprocess.run(
        [str(ARTIFACTSTORE), *args],
        cwd=work,
        env=remote_env(url, work, **env),
        capture_output=True,
        timeout=300,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
