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
from tests.matrix import (
    CONFIGS,
    ENGINES,
    StoreConfig,
    StoreConfigs,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_sessionstart,
    scaleout,
)
from tests.pg import (
    empty_postgresql,
    postgresql_session,
    postgresql_template,
    postgresql_url,
)
from tests.s3 import s3_server_fixture
from tests.stored import Stored

__all__ = [  # fixtures and hooks for all
    "empty_postgresql",
    "postgresql_session",
    "postgresql_template",
    "postgresql_url",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "s3_server_fixture",  # ``s3_server``
]

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
        "configs(*names): run the test in each store configuration named ('embedded': "
        "SQLite + file://, 'scaleout': PostgreSQL + S3) through the `config` fixture; "
        "unmarked tests run embedded only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``config`` over the configurations a test, class or module is marked with.

    Module scope, so that a module's server (a module fixture) follows it too: the
    module runs once per configuration, its tests grouped by it.
    """
    marker = metafunc.definition.get_closest_marker("configs")
    if marker is not None and "config" in metafunc.fixturenames:
        unknown = set(marker.args) - set(CONFIGS)
        assert not unknown, f"unknown configuration(s) {sorted(unknown)}: use {CONFIGS}"
        metafunc.parametrize("config", marker.args, scope="module")


@pytest.fixture(scope="session")
def config() -> str:
    """The store configuration of an unmarked test (see ``pytest_generate_tests``)."""
    return "embedded"


@pytest.fixture
def engine(config: str) -> str:
    """The metadata database engine of the test's configuration."""
    return ENGINES[config]


@pytest.fixture
def store_config(config: str, request: pytest.FixtureRequest) -> StoreConfig:
    """Where the test's store keeps its metadata and bytes: the defaults under its home
    (embedded), or the session's PostgreSQL database emptied for it and scale-out storage."""
    if config == "embedded":
        return StoreConfig(config, None, None)
    url = request.getfixturevalue("postgresql_url")
    assert isinstance(url, str)
    return scaleout(url, request)


@pytest.fixture(scope="module")
def store_configs(config: str, request: pytest.FixtureRequest) -> Iterator[StoreConfigs]:
    """New stores of the module's configuration, one per server or extra store (on
    scale-out each its own database, dropped at the module's end)."""
    with StoreConfigs(config, request) as configs:
        yield configs


@pytest.fixture
def database_url(store_config: StoreConfig) -> str | None:
    """The database URL a test's store uses: None for the default SQLite file under its home."""
    return store_config.database_url


@pytest.fixture
def store(clean_env: None, tmp_path: Path, store_config: StoreConfig) -> Iterator[Store]:
    """A fresh store (GC grace 0, so collection needs no waiting), closed at teardown."""
    s = Store.open(tmp_path / "home", gc_grace=0.0, **store_config.overrides())
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def whole_store(clean_env: None, tmp_path: Path, store_config: StoreConfig) -> Iterator[Store]:
    """The same, with no packs: every file's bytes are an object at the blob's own key,
    for tests that follow those bytes (packs have tests/test_packs.py)."""
    s = Store.open(tmp_path / "home", gc_grace=0.0, pack_max_bytes=0, **store_config.overrides())
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def cli(tmp_path: Path, store_config: StoreConfig) -> Cli:
    """The CLI on the test's home, and on its store's database and storage where the
    configuration names them."""
    work = tmp_path / "work"
    work.mkdir()
    runner = Cli(tmp_path / "home", work)
    runner.env.update(store_config.env())
    return runner


class StoredSpan(NamedTuple):
    """Where a blob's bytes lie, as its storage location records them: the object at
    ``key`` of the store's backend ``tier``, from ``offset`` (a pack holds many blobs)."""

    tier: str
    key: str
    offset: int
    length: int


def stored_span(store: Store, digest: str) -> StoredSpan:
    from artifactstore.controlplane import blobs as blob_records
    from artifactstore.model.identity import Digest

    with store.db.read() as conn:
        rec = blob_records.find(conn, Digest.parse(digest))
    assert rec is not None, f"{digest} is not recorded"
    place = rec.place
    offset, length = (0, rec.digests.size) if place.offset is None else (place.offset, place.length)
    return StoredSpan(rec.backend, place.key, offset, length)


def flip_stored_byte(store: Store, digest: str, at: int = 0) -> None:
    """Damage byte ``at`` of a blob where it is stored (whole or inside its pack)."""
    span = stored_span(store, digest)
    Stored.of(store, span.tier).flip(span.key, span.offset + at)
