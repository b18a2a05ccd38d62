"""Outages of the database and of the object store, with real processes.

A real PostgreSQL outage cannot be provoked on a shared server, so ``serve``
reaches PostgreSQL through a TCP relay of the test's own (``tests/relay.py``) that
can refuse connections (a server that is down: connections reset) or
blackhole them (a host that stops answering: connections accepted, nothing
forwarded). The file store is made unable to take bytes the way a full disk
is, for real: the server process's file-size limit (``RLIMIT_FSIZE``) drops
to 0, so every write fails with ``EFBIG`` (see ``server/test_ready_probe.py``).

While a part is down: ``GET /ready`` answers 503 naming it within a few
seconds, pushes fail with a clear 503 problem (never a 500), and the CLI
exits 1 with one line and no traceback. Once it is back: ``/ready`` answers
200, every push acknowledged before pulls byte-identical, and pushes work.
Commands started with an unreachable or bad configuration fail the same way.
"""

from __future__ import annotations

import contextlib
import resource
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests import pg
from tests.cli.remote import run_remote
from tests.conftest import Cli, CliResult
from tests.relay import Relay
from tests.server.conftest import Server, assert_problem, free_port, push, serving

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit is Linux's")

#: The longest ``/ready`` may take while a part is down (its own timeout is 3 s).
READY_BOUND = 6.0


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A new PostgreSQL database of this test (skipped, or failed under CI, without one)."""
    with pg.new_database() as url:
        yield url


@pytest.fixture
def link(pg_database: str) -> Iterator[Relay]:
    info = psycopg.conninfo.conninfo_to_dict(pg_database)
    proxy = Relay(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    try:
        yield proxy
    finally:
        proxy.close()


def _through(url: str, link: Relay) -> str:
    """``url`` with its host and port replaced by the link's."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"postgresql://{info.get('user') or ''}@127.0.0.1:{link.port}/{info['dbname']}"


def _ready(client: httpx.Client) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = client.get("/ready")
    return response, time.monotonic() - start


def _assert_down(client: httpx.Client, part: str, other: str) -> str:
    """``/ready`` answers 503 naming ``part`` as down and ``other`` as up, in time."""
    response, took = _ready(client)
    assert took < READY_BOUND, f"/ready took {took:.1f} s"
    detail = str(assert_problem(response, 503, "not_ready")["detail"])
    assert f"{part} down" in detail and f"{other} up" in detail, detail
    return detail


def _await_ready(client: httpx.Client, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        response, _ = _ready(client)
        if response.status_code == 200:
            assert response.json()["status"] == "ready"
            return
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def _content(tag: str) -> dict[str, bytes]:
    return {"a.bin": secrets.token_bytes(3000) + tag.encode(), "dir/b.txt": tag.encode() * 50}


def _assert_pulls(client: httpx.Client, pushed: dict[str, dict[str, bytes]]) -> None:
    for ref, files in pushed.items():
        ns_name, version = ref.split(":")
        for path, data in files.items():
            got = client.get(f"/v1/packages/{ns_name}/{version}/files/{path}")
            assert got.status_code == 200, (ref, path, got.text[:300])
            assert got.content == data, (ref, path)


def _assert_one_clear_line(result: CliResult, *words: str) -> None:
    assert result.code == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


def _cli_push(tmp_path: Path, url: str, ref: str) -> CliResult:
    src = tmp_path / "src" / secrets.token_hex(4)
    src.mkdir(parents=True)
    (src / "f.bin").write_bytes(secrets.token_bytes(2048))
    return run_remote(tmp_path, url, ("push", ref, str(src / "f.bin")))


# --- the database ------------------------------------------------------------------------


def test_database_outage(tmp_path: Path, pg_database: str, link: Relay) -> None:
    env = {"ARTIFACTSTORE_DATABASE_URL": _through(pg_database, link)}
    with serving(tmp_path, env) as srv, srv.client() as c:
        pushed = {}
        for i in range(3):
            ref = f"ci/app:1.{i}"
            pushed[ref] = _content(ref)
            push(c, ref, pushed[ref])
        _await_ready(c)

        link.set("refuse")
        _assert_down(c, "database", "storage")
        late = _content("late")
        blob = c.post("/v1/blobs?namespace=ci", content=late["a.bin"])
        assert_problem(blob, 503, "database_unavailable")
        assert "database" in blob.json()["detail"]
        assert_problem(c.get("/v1/packages/ci/app/1.0"), 503, "database_unavailable")
        _assert_one_clear_line(_cli_push(tmp_path, srv.base_url, "ci/app:2.0"), "database")

        link.set("blackhole")  # a host gone silent: /ready must not hang on it
        for _ in range(3):  # later probes share the one still waiting
            _assert_down(c, "database", "storage")

        link.set("up")
        _await_ready(c)
        _assert_pulls(c, pushed)
        pushed["ci/app:3.0"] = late
        push(c, "ci/app:3.0", late)
        assert _cli_push(tmp_path, srv.base_url, "ci/app:3.1").code == 0
        _assert_pulls(c, pushed)


# --- the object store --------------------------------------------------------------------


@contextlib.contextmanager
def storage_refusing(srv: Server) -> Iterator[None]:
    """Every write of the server process fails with EFBIG until the block ends."""
    assert srv.process is not None
    pid = srv.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def test_storage_outage(tmp_path: Path, pg_database: str) -> None:
    # PostgreSQL: its writes are another process's, which the file-size limit spares.
    with serving(tmp_path, {"ARTIFACTSTORE_DATABASE_URL": pg_database}) as srv, srv.client() as c:
        pushed = {}
        for i in range(2):
            ref = f"ci/lib:0.{i}"
            pushed[ref] = _content(ref)
            push(c, ref, pushed[ref])

        with storage_refusing(srv):
            _assert_down(c, "storage", "database")
            late = _content("late")
            assert_problem(c.post("/v1/blobs?namespace=ci", content=late["a.bin"]), 503)
            _assert_one_clear_line(_cli_push(tmp_path, srv.base_url, "ci/lib:1.0"))
            _assert_pulls(c, pushed)  # reads still work: nothing acknowledged went away

        _await_ready(c)
        _assert_pulls(c, pushed)
        pushed["ci/lib:2.0"] = late
        push(c, "ci/lib:2.0", late)
        _assert_pulls(c, pushed)


# --- commands started with an unreachable or bad configuration -----------------------------


def _refused_database() -> str:
    """A PostgreSQL URL whose port nobody listens on (connections are refused)."""
    return f"postgresql://postgres:secret@127.0.0.1:{free_port()}/artifacts"


BAD_CONFIG = {
    "database refused": ({"DATABASE_URL": _refused_database()}, ("database", "unavailable")),
    "database scheme": ({"DATABASE_URL": "mysql://db/artifacts"}, ("DATABASE_URL",)),
    "database garbage": ({"DATABASE_URL": "not a url"}, ("DATABASE_URL",)),
    "storage scheme": ({"STORAGE_URL": "gs://bucket/x"}, ("STORAGE_URL",)),
    "storage unusable": ({"STORAGE_URL": "file:///dev/null/storage"}, ("storage",)),
    # No S3 server there: serve probes its storage before it serves (ls needs none).
    "storage unreachable": (
        {"STORAGE_URL": f"s3://b/p?endpoint=http://127.0.0.1:{free_port()}"},
        (),
    ),
}
#: ``migrate`` touches the database only: a storage setting is not its business; ``ls``
#: reads metadata only, so an unreachable (but well-formed) storage does not stop it.
CASES = [
    (case, command)
    for case in sorted(BAD_CONFIG)
    for command in ("serve", "migrate", "ls")
    if not (case.startswith("storage") and command == "migrate")
    and not (case == "storage unreachable" and command != "serve")
]


@pytest.mark.parametrize(("case", "command"), CASES)
def test_bad_configuration_fails_clearly(tmp_path: Path, case: str, command: str) -> None:
    settings, words = BAD_CONFIG[case]
    cli = Cli(tmp_path / "home", tmp_path)
    cli.env.update({f"ARTIFACTSTORE_{k}": v for k, v in settings.items()})
    args = ["serve", "--port", str(free_port())] if command == "serve" else [command]
    result = cli(*args)
    assert result.code == 1, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert "secret" not in result.stderr  # the password never reaches the terminal
    assert "serving" not in result.stderr  # a start that fails never announced itself


def test_blackholed_database_gives_up(tmp_path: Path, pg_database: str, link: Relay) -> None:
    """A database host that accepts and never answers: ``ls`` fails after the connect
    timeout (5 s) with one line, instead of waiting for the kernel to give up."""
    link.set("blackhole")
    cli = Cli(tmp_path / "home", tmp_path)
    cli.env["ARTIFACTSTORE_DATABASE_URL"] = _through(pg_database, link)
    start = time.monotonic()
    result = cli("ls")
    took = time.monotonic() - start
    _assert_one_clear_line(result, "database", "unavailable")
    assert took < 20, f"ls took {took:.1f} s"
