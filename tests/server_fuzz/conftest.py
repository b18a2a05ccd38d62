"""A real ``artifactstore serve`` process for the fuzz and crash tests.

The server runs as its own process group (``serve`` forks uvicorn), listens
on a loopback port and logs one JSON line per request to a file, which the
tests read back: the access log is the server's own count of what it was
sent and what it answered. Tests that need no process (no fuzzer or CLI in
another process, no kill) use ``in_process_store``, the served app in this
process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTSTORE, tls
from tests.server.inprocess import InProcessServer

__all__ = ["ServerProcess", "access_log", "free_port", "server_env"]

START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(home: Path) -> dict[str, str]:
    """The caller's environment without ARTIFACTSTORE_* settings, with HOME set to ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env["ARTIFACTSTORE_HOME"] = str(home)
    return env


def access_log(path: Path) -> list[dict[str, Any]]:
    """The server's JSON access-log lines (other output, such as warnings, is skipped)."""
    entries: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "request_id" in entry:
            entries.append(entry)
    return entries


class ServerProcess:
    """``artifactstore serve --no-auth`` on 127.0.0.1:``port`` over the store at ``home``."""

    def __init__(
        self, home: Path, port: int, log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.env = {**server_env(home), **(env or {})}  # ``env``: more ARTIFACTSTORE_* settings
        self.home = home
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> float:
        """Start the server and wait until ``GET /health`` answers; returns the seconds taken."""
        assert self._proc is None, "server already started"
        began = time.monotonic()
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(ARTIFACTSTORE),
                    "serve",
                    "--no-auth",
                    "--workers",  # one process: a kill takes the server down, not a worker
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: a kill takes uvicorn too
            )
        deadline = began + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                self._proc = None
                raise AssertionError(f"server exited while starting:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1.0, verify=tls()).status_code == 200:
                    return time.monotonic() - began
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server did not answer /health within {START_TIMEOUT} s")

    def kill(self) -> None:
        """SIGKILL the whole process group (no shutdown code runs) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM to the group), or kill after 15 s."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        self.kill()


@pytest.fixture
def served_store(tmp_path: Path) -> Iterator[ServerProcess]:
    """A started server over a fresh store in ``tmp_path/home``; stopped at teardown."""
    server = ServerProcess(tmp_path / "home", free_port(), tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def in_process_store(tmp_path: Path) -> Iterator[InProcessServer]:
    """The app ``serve --no-auth`` runs, in this process, over a fresh store in
    ``tmp_path/home``; stopped at teardown."""
    server = InProcessServer(tmp_path / "home", tmp_path, {})
    server.start()
    try:
        yield server
    finally:
        server.stop()
