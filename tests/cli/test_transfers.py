"""Remote transfers as a user sees them: Ctrl-C, and the progress bars on a terminal.

A real ``artifactstore serve`` runs behind a small throttling proxy on
loopback, so that a push or a pull takes seconds and can be interrupted
in the middle; the proxy counts the bytes that go through it, which is what
shows that a rerun of an interrupted push sends only the rest.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.remote import remote_env, run_remote
from tests.conftest import ARTIFACTSTORE, make_tree
from tests.server.conftest import Server

MiB = 1024 * 1024
SIZE = 64 * MiB
RATE = 8 * MiB  # bytes a second through the proxy, each way, while it throttles
#: How soon an interrupted command must have exited (generous: the machine is shared).
PROMPT = 5.0


class ThrottlingProxy:
    """Forwards loopback connections to ``upstream`` at ``rate`` bytes a second per
    direction (None: as fast as it can), counting what it forwards each way."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.rate: float | None = RATE
        self.to_server = 0
        self.to_client = 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.to_server = self.to_client = 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, up), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(64 * 1024):
                with self._lock:
                    if up:
                        self.to_server += len(data)
                    else:
                        self.to_client += len(data)
                if self.rate is not None:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("transfers")
    (root / "run").mkdir()
    server = Server(root / "home", root / "run", {"ARTIFACTSTORE_GC_GRACE": "0"})
    server.start()
    yield server  # pytest resumes here at teardown, whatever the tests did
    server.stop()


@pytest.fixture
def proxy(server: Server) -> Iterator[ThrottlingProxy]:
    p = ThrottlingProxy(server.port)
    yield p
    p.close()


def interrupt_when(proc: subprocess.Popen[bytes], ready: object) -> tuple[int, str, float]:
    """SIGINT once ``ready()`` holds; the exit status, stderr and seconds it took to exit."""
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - sent


def test_ctrl_c_stops_a_push_at_once_and_the_rerun_resumes(
    server: Server, proxy: ThrottlingProxy, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    src = make_tree(tmp_path / "big", {"big.bin": data})
    env = remote_env(proxy.url, tmp_path)
    proc = subprocess.Popen(
        [str(ARTIFACTSTORE), "push", "ctrl/c:1", str(src)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    code, err, took = interrupt_when(proc, lambda: proxy.to_server > 8 * MiB)
    assert code == 130, (code, err)
    assert took < PROMPT, f"the push took {took:.1f} s to stop (it ran on to the end?)"
    assert err.strip() == "interrupted; run the same command to resume", err
    sent_before = proxy.to_server
    assert sent_before < SIZE, "the upload was not stopped"

    proxy.rate = None
    proxy.reset()
    rerun = run_remote(tmp_path, proxy.url, ("push", "ctrl/c:1", str(src)))
    assert rerun.code == 0, rerun.stderr
    # The session the interrupted push opened was resumed: only the rest went up.
    assert proxy.to_server < SIZE, (proxy.to_server, sent_before)
    got = httpx.get(f"{server.base_url}/v1/packages/ctrl/c/1/files/big.bin", timeout=60)
    assert got.content == data


def test_ctrl_c_stops_a_pull_at_once_leaving_nothing(
    server: Server, proxy: ThrottlingProxy, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    src = make_tree(tmp_path / "big", {"big.bin": data, "small.txt": "small\n"})
    pushed = run_remote(tmp_path, server.base_url, ("push", "ctrl/pull:1", str(src)))
    assert pushed.code == 0, pushed.stderr
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(ARTIFACTSTORE), "pull", "ctrl/pull:1", "-o", str(out)],
        cwd=tmp_path,
        env=remote_env(proxy.url, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    code, err, took = interrupt_when(proc, lambda: proxy.to_client > 8 * MiB)
    assert code == 130, (code, err)
    assert took < PROMPT, took
    assert err.strip().startswith("interrupted"), err
    assert not out.exists() or not any(out.iterdir()), list(out.rglob("*"))


def run_on_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run with stderr on a pseudo-terminal (as in a shell); what it drew there."""
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=child, stdin=subprocess.DEVNULL
    )
    os.close(child)
    drawn = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(parent, 65536):
            drawn += chunk
    os.close(parent)
    assert proc.wait(timeout=300) == 0, drawn
    return drawn.decode(errors="replace")


def test_a_remote_push_shows_hashing_then_sending_in_binary_units(
    server: Server, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "big", {"big.bin": os.urandom(SIZE)})
    env = remote_env(server.base_url, tmp_path, COLUMNS="200", TERM="xterm")
    drawn = run_on_terminal([str(ARTIFACTSTORE), "push", "bars/app:1", str(src)], env, tmp_path)
    assert "hash bars/app:1" in drawn and "push bars/app:1" in drawn, drawn[-2000:]
    assert "64.0 MiB" in drawn, drawn[-2000:]
    assert " MB" not in drawn and "MB/s" not in drawn, "decimal units in the bar"


def test_no_bar_in_a_pipe(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "big", {"big.bin": os.urandom(16 * MiB)})
    done = run_remote(tmp_path, server.base_url, ("push", "bars/pipe:1", str(src)))
    assert done.code == 0 and done.stderr == "", done.stderr
