"""Shared fixtures: an in-process Store, the real CLI as a subprocess, a tree builder."""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from artifactstore.store import Store
from tests.pg import empty_postgresql, postgresql_session, postgresql_url

__all__ = ["empty_postgresql", "postgresql_session", "postgresql_url"]  # fixtures for all

#: The installed console script of this virtual environment.
ARTIFACTSTORE = Path(sys.executable).parent / "artifactstore"

#: The user's cache directory as it was before the suite replaced it (``private_home``):
#: what a test may look at, to prove that nothing was written there.
REAL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home and cache directory of the suite's own, for every test and every process
    a test starts (they inherit the environment): tests never write the user's files.

    The CLI keeps its upload sessions under ``$XDG_CACHE_HOME`` (else ``~/.cache``);
    a test that forgot to point it elsewhere used to leave them in the real home.
    Session-scoped, so it is in place before any module-scoped fixture copies the
    environment for a subprocess.
    """
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        for variable, sub in (
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_STATE_HOME", ".local/state"),
        ):
            patch.setenv(variable, str(home / sub))
        yield home


@functools.cache
def tls() -> ssl.SSLContext:
    """The TLS context every httpx client of the tests shares (``verify=tls()``).

    httpx builds a fresh one, loading the CA bundle, for each client it makes:
    about 50 ms here, more than most HTTP tests take. Our servers speak plain
    HTTP on loopback, so the context is never used; it is built once, with
    httpx's defaults, so that nothing about verification changes.
    """
    return httpx.create_ssl_context()


#: File contents by relative path; ``None`` makes an (empty) directory.
Tree = Mapping[str, bytes | str | None]


def make_tree(root: Path, files: Tree) -> Path:
    """Create ``files`` under ``root`` (created too) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        target = root / rel
        if content is None:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by its relative POSIX path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class CliResult(NamedTuple):
    code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()


class Cli:
    """Runs ``artifactstore`` against one data directory, from one working directory."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home = home
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
        self.env["ARTIFACTSTORE_HOME"] = str(home)

    def __call__(self, *args: str | Path, stdin: bytes | None = None) -> CliResult:
        proc = subprocess.run(
            [str(ARTIFACTSTORE), *map(str, args)],
            cwd=self.cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            timeout=300,
            check=False,
        )
        result = CliResult(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(self, *args: str | Path) -> CliResult:
        """Run and require exit 0."""
        result = self(*args)
        assert result.code == 0, (args, result)
        return result

    def fails(self, code: int, *args: str | Path) -> CliResult:
        """Run and require exit ``code`` with a message on stderr."""
        result = self(*args)
        assert result.code == code, (args, result)
        assert result.stderr.strip(), (args, "no message on stderr")
        return result


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on loopback answering with ``handler`` (a thread per request),
    for what a real artifact-store server never does (lie, refuse); yields its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class FakeClock:
    """An injected clock (``Store.open(clock=...)``) that tests move instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ARTIFACTSTORE_* setting or ./artifactstore.toml of the caller leaks into Store.open."""
    for key in list(os.environ):
        if key.startswith("ARTIFACTSTORE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engines(*names): run the test on each metadata database engine named "
        "('sqlite', 'postgresql') through the `engine` fixture; unmarked tests use SQLite",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``engine`` over the engines a test, class or module is marked with."""
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is not None and "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", marker.args)


@pytest.fixture
def engine() -> str:
    """The metadata database engine of an unmarked test (see ``pytest_generate_tests``)."""
    return "sqlite"


@pytest.fixture
def database_url(engine: str, request: pytest.FixtureRequest) -> str | None:
    """The database URL a test's store uses: None for the default SQLite file under its
    home, else an emptied PostgreSQL database of the session's own (``tests/pg.py``)."""
    if engine == "sqlite":
        return None
    assert engine == "postgresql", engine
    url = request.getfixturevalue("postgresql_url")
    assert isinstance(url, str)
    return url


@pytest.fixture
def store(clean_env: None, tmp_path: Path, database_url: str | None) -> Iterator[Store]:
    """A fresh store (GC grace 0, so collection needs no waiting), closed at teardown."""
    s = Store.open(tmp_path / "home", gc_grace=0.0, database_url=database_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def whole_store(clean_env: None, tmp_path: Path, database_url: str | None) -> Iterator[Store]:
    """The same, with no packs: every file's bytes are an object at the blob's own key,
    for tests that follow those bytes (packs have tests/test_packs.py)."""
    s = Store.open(tmp_path / "home", gc_grace=0.0, pack_max_bytes=0, database_url=database_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def cli(tmp_path: Path, database_url: str | None) -> Cli:
    """The CLI on the test's home, and on its store's database where that is PostgreSQL."""
    work = tmp_path / "work"
    work.mkdir()
    runner = Cli(tmp_path / "home", work)
    if database_url is not None:
        runner.env["ARTIFACTSTORE_DATABASE_URL"] = database_url
    return runner


def stored_objects(root: Path) -> set[str]:
    """Keys of the published objects under a local backend's ``root``: blobs and packs."""
    return {
        p.relative_to(root).as_posix()
        for sub in ("blobs", "packs")
        for p in (root / sub).rglob("*")
        if p.is_file()
    }


class StoredSpan(NamedTuple):
    """Where a blob's bytes lie on disk, as its storage location records them."""

    path: Path
    offset: int
    length: int


def stored_span(store: Store, digest: str) -> StoredSpan:
    from artifactstore.controlplane import blobs as blob_records
    from artifactstore.model.identity import Digest

    with store.db.read() as conn:
        rec = blob_records.find(conn, Digest.parse(digest))
    assert rec is not None, f"{digest} is not recorded"
    root = store.plane.named(rec.backend).properties.local_root
    assert root is not None
    place = rec.place
    offset, length = (0, rec.digests.size) if place.offset is None else (place.offset, place.length)
    return StoredSpan(root / place.key, offset, length)


def flip_stored_byte(store: Store, digest: str, at: int = 0) -> None:
    """Damage byte ``at`` of a blob where it is stored (whole or inside its pack)."""
    span = stored_span(store, digest)
    span.path.chmod(0o644)
    with span.path.open("r+b") as f:
        f.seek(span.offset + at)
        byte = f.read(1)
        f.seek(span.offset + at)
        f.write(bytes([byte[0] ^ 0x01]))
