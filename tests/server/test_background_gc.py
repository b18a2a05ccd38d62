"""Background GC in ``serve``: collected on a schedule, by one replica at a time.

On a real SQLite database: a module server with GC every 0.5 s and no grace
period and one server with background GC switched off, both the served app in
this process (its lifespan runs the periodic jobs), and two replicas sharing
one data directory, which are real server processes: the lease is taken and
handed over between processes. Nothing here calls GC by hand.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from artifactstore.controlplane import leases
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database
from artifactstore.model.manifest import Manifest
from artifactstore.server.background import GC_ACTOR, Background, PeriodicJob, scheduled_jobs
from artifactstore.store import Store
from tests.server.conftest import (
    InProcessServer,
    Server,
    assert_problem,
    digests_of,
    make_manifest,
    post_blob,
    put_manifest,
)

GC_ENV = {"ARTIFACTSTORE_GC_INTERVAL": "500ms", "ARTIFACTSTORE_GC_GRACE": "0"}
DEADLINE = 30.0


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return dict(GC_ENV)


# --- helpers -----------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get("/v1/events", params={"after": after, "limit": 1000}).json()
        if not page["events"]:
            return out
        out.extend(page["events"])
        after = page["next_after"]


def collected(client: httpx.Client) -> list[str]:
    return [e["subject"] for e in all_events(client) if e["type"] == "blob.collected"]


def commit(client: httpx.Client, ref: str, files: Mapping[str, bytes]) -> Manifest:
    """Upload ``files`` and commit ``ref``.

    With no grace period, background GC may collect a blob between its upload
    and the commit, or even between an upload's publishing its bytes and
    recording them (gc.py, step 4); the commit or the upload then answers
    ``missing_blobs`` and, as any client would, we upload again (SPEC section 9).
    """
    manifest = make_manifest(ref, files)
    for _attempt in range(10):
        uploads = [post_blob(client, data, str(manifest.namespace)) for data in files.values()]
        refused = [r for r in uploads if r.status_code != 201]
        for r in refused:
            assert_problem(r, 409, "missing_blobs")
        if refused:
            continue
        response = put_manifest(client, manifest)
        if response.status_code == 201:
            return manifest
        assert_problem(response, 409, "missing_blobs")
    raise AssertionError(f"{ref} never committed")


def push_and_delete(client: httpx.Client, ref: str, files: Mapping[str, bytes]) -> set[str]:
    """Commit ``ref`` and delete it; returns its blobs' blake3 digests."""
    manifest = commit(client, ref, files)
    url = f"/v1/packages/{manifest.namespace}/{manifest.name}/{manifest.version}"
    assert client.delete(url).status_code == 204
    return {digests_of(data)[0] for data in files.values()}


def unique_files(n: int = 2) -> dict[str, bytes]:
    return {f"f{i}.bin": secrets.token_bytes(64 + i) for i in range(n)}


def job_lines(server: Server | InProcessServer, status: str | None = None) -> list[dict[str, Any]]:
    return [
        line
        for line in server.access_log()
        if line.get("event") == "background_job"
        and line.get("job") == "gc"
        and (status is None or line.get("status") == status)
    ]


def lease_rows(home: Path, name: str = "gc") -> list[tuple[str, str]]:
    """Lease ``name``'s row, if any (the upload sweep has a lease of its own)."""
    db = Database(f"sqlite:///{home.absolute() / 'artifactstore.db'}")
    try:
        with db.read() as conn:
            leases = select(t.leases).where(t.leases.c.name == name)
            return [(r.name, r.holder) for r in conn.execute(leases)]
    finally:
        db.dispose()


def assert_never_collected_twice(events: list[dict[str, Any]]) -> None:
    """Per digest, ``blob.collected`` only ever follows a ``blob.stored`` (or a ``blobs.stored``
    listing it; re-uploads allowed)."""
    stored: dict[str, bool] = {}
    for event in events:
        kind, payload = event["type"], event["payload"]
        if kind in ("blob.stored", "blobs.stored"):
            for blob in payload["blobs"] if kind == "blobs.stored" else [payload]:
                assert not stored.get(blob["blake3"]), f"{blob['blake3']} stored twice"
                stored[blob["blake3"]] = True
        elif kind == "blob.collected":
            assert stored.get(event["subject"]), f"{event['subject']} collected twice"
            stored[event["subject"]] = False


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server | InProcessServer]]:
    """Servers a test starts itself (stopped at teardown even when the test fails)."""
    started: list[Server | InProcessServer] = []
    try:
        yield started
    finally:
        for srv in started:
            srv.stop()


def start_server(
    servers: list[Server | InProcessServer], home: Path, name: str, env: Mapping[str, str]
) -> Server:
    """A server process."""
    workdir = home.parent / name
    workdir.mkdir()
    srv = Server(home, workdir, env)
    servers.append(srv)
    srv.start()
    return srv


def start_in_process(
    servers: list[Server | InProcessServer], home: Path, name: str, env: Mapping[str, str]
) -> InProcessServer:
    """The served app, in this process."""
    workdir = home.parent / name
    workdir.mkdir()
    srv = InProcessServer(home, workdir, env)
    servers.append(srv)
    srv.start()
    return srv


# --- one server ----------------------------------------------------------------------------


def test_deleted_package_blobs_are_collected_in_the_background(
    server: InProcessServer, http: httpx.Client
) -> None:
    blobs = push_and_delete(http, "ci/bg-gc:1", unique_files())
    wait_for("the blobs' blob.collected events", lambda: blobs <= set(collected(http)))
    events = all_events(http)
    for event in events:
        if event["type"] == "blob.collected" and event["subject"] in blobs:
            assert event["actor"] == GC_ACTOR
    assert_never_collected_twice(events)
    for digest in blobs:
        assert http.head(f"/v1/blobs/{digest}").status_code == 404
    wait_for("a log line of a GC run", lambda: bool(job_lines(server, "ok")))
    line = job_lines(server, "ok")[-1]
    for figure in ("collected", "bytes_freed", "orphans_removed", "protected_by_grace"):
        assert isinstance(line[figure], int), line
    assert line["duration_ms"] >= 0
    [(name, holder)] = lease_rows(server.home)
    assert name == "gc" and holder == line["holder"]


def test_live_packages_are_kept(server: InProcessServer, http: httpx.Client) -> None:
    files = unique_files()
    commit(http, "ci/bg-keep:1", files)
    runs = len(job_lines(server, "ok"))
    wait_for("two more GC runs", lambda: len(job_lines(server, "ok")) >= runs + 2)
    kept = {digests_of(data)[0] for data in files.values()}
    assert not kept & set(collected(http))
    assert http.get("/v1/packages/ci/bg-keep/1").status_code == 200


# --- two replicas ----------------------------------------------------------------------------


def test_two_replicas_one_collector_and_a_clean_handover(
    tmp_path: Path, servers: list[Server | InProcessServer]
) -> None:
    home = tmp_path / "home"
    a = start_server(servers, home, "a", GC_ENV)
    b = start_server(servers, home, "b", GC_ENV)
    wait_for("a lease holder", lambda: bool(lease_rows(home)))

    blobs: set[str] = set()
    with a.client() as ca, b.client() as cb:
        for i in range(4):
            client = ca if i % 2 else cb
            blobs |= push_and_delete(client, f"ci/replicas:{i}", unique_files())
        wait_for("every blob collected", lambda: blobs <= set(collected(ca)))

        [(name, holder)] = lease_rows(home)
        assert name == "gc"
        leader, follower = (a, b) if any(ln["holder"] == holder for ln in job_lines(a)) else (b, a)
        assert job_lines(leader, "ok"), leader.log()
        assert {ln["holder"] for ln in job_lines(leader, "ok")} == {holder}
        assert job_lines(follower, "ok") == [], "the replica without the lease ran GC"
        assert_never_collected_twice(all_events(ca))

        # A clean stop releases the lease; the other replica takes over.
        leader.stop()
        with follower.client() as client:
            more = push_and_delete(client, "ci/replicas:after", unique_files())
            wait_for("collection by the other replica", lambda: more <= set(collected(client)))
            wait_for("its GC run's log line", lambda: bool(job_lines(follower, "ok")))
            [(_, new_holder)] = lease_rows(home)
            assert new_holder != holder
            assert {ln["holder"] for ln in job_lines(follower, "ok")} == {new_holder}
            assert_never_collected_twice(all_events(client))
    assert any(ln["status"] == "lease_acquired" for ln in job_lines(follower))


# --- switched off --------------------------------------------------------------------------


def test_without_an_interval_nothing_runs(
    tmp_path: Path, servers: list[Server | InProcessServer]
) -> None:
    home = tmp_path / "home"
    srv = start_in_process(servers, home, "off", {"ARTIFACTSTORE_GC_GRACE": "0"})
    with srv.client() as client:
        blobs = push_and_delete(client, "ci/no-bg-gc:1", unique_files())
        time.sleep(2.0)  # four times the interval the other tests use
        assert not blobs & set(collected(client))
        for digest in blobs:
            assert client.head(f"/v1/blobs/{digest}").status_code == 200
    assert lease_rows(home) == []
    assert job_lines(srv) == []


def test_no_jobs_start_no_thread(clean_env: None, tmp_path: Path) -> None:
    with Store.open(
        tmp_path / "home",
        gc_grace=0.0,
        gc_interval=0.0,
        upload_sweep_interval=0.0,
        log_checkpoint_interval=0.0,
    ) as store:
        assert scheduled_jobs(store) == []
        before = set(threading.enumerate())
        background = Background(store, scheduled_jobs(store), logging.getLogger("test"))
        background.start()
        assert set(threading.enumerate()) == before
        background.stop()


# --- in process: failures, stop ------------------------------------------------------------


class Lines(logging.Handler):
    """Collects the JSON lines a Background logs."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


def capture() -> tuple[logging.Logger, Lines]:
    logger = logging.getLogger(f"test-background-{secrets.token_hex(4)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Lines()
    logger.addHandler(handler)
    return logger, handler


def test_a_failing_run_is_logged_and_the_job_goes_on(clean_env: None, tmp_path: Path) -> None:
    runs: list[int] = []

    def flaky() -> dict[str, Any]:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("storage unavailable")
        return {"attempt": len(runs), "status": "a figure may not replace the status"}

    logger, handler = capture()
    with Store.open(tmp_path / "home") as store:
        background = Background(store, [PeriodicJob("flaky", 0.05, flaky)], logger)
        background.start()
        try:
            wait_for("a run after the failure", lambda: len(runs) >= 3, timeout=10)
            assert background.holds("flaky")
            [(name, holder)] = lease_rows(tmp_path / "home", "flaky")
            assert (name, holder) == ("flaky", background.holder)
        finally:
            background.stop()
        assert lease_rows(tmp_path / "home", "flaky") == [], "stop releases the lease"
    lines = handler.lines
    assert lines[0]["status"] == "lease_acquired"
    error = next(ln for ln in lines if ln["status"] == "error")
    assert error["job"] == "flaky"
    assert "RuntimeError: storage unavailable" in error["error"]
    assert "Traceback" in error["traceback"]
    assert any(ln["status"] == "ok" and ln["attempt"] >= 2 for ln in lines)


def test_the_holder_renews_its_lease_during_a_run_longer_than_the_ttl(
    clean_env: None, tmp_path: Path
) -> None:
    ttl = 1.0
    running, finish = threading.Event(), threading.Event()

    def slow() -> dict[str, Any]:
        running.set()
        finish.wait(30)
        return {}

    logger, handler = capture()
    with Store.open(tmp_path / "home") as store:
        background = Background(store, [PeriodicJob("slow", 0.05, slow)], logger, lease_ttl=ttl)
        background.start()
        try:
            assert running.wait(10)
            until = time.monotonic() + 2.5 * ttl
            while time.monotonic() < until:
                assert not leases.acquire(store.db, "slow", "another replica", ttl, time.time())
                time.sleep(0.1)
        finally:
            finish.set()
            background.stop()
        assert leases.acquire(store.db, "slow", "another replica", ttl, time.time())
    assert not [ln for ln in handler.lines if ln["status"] == "lease_lost"]
