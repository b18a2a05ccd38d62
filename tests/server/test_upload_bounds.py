"""Upload sessions are bounded (issue 17): open sessions per token and per namespace,
and what expired sessions and crashes leave is swept by ``serve`` without GC.

The quota checked as a session's bytes arrive is in ``test_quota_http.py``; a
PATCH cut off by SIGKILL keeping its durable prefix is in ``test_tus.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.gc import STAGING_MIN_AGE
from tests.server.conftest import InProcessServer, assert_problem

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"
PER_ACTOR, PER_NAMESPACE = 5, 3


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {
        "ARTIFACTSTORE_MAX_OPEN_UPLOADS_PER_ACTOR": str(PER_ACTOR),
        "ARTIFACTSTORE_MAX_OPEN_UPLOADS_PER_NAMESPACE": str(PER_NAMESPACE),
    }


def create(http: httpx.Client, namespace: str, length: int = 4) -> httpx.Response:
    return http.post(
        "/v1/uploads",
        params={"namespace": namespace},
        headers={**TUS, "Upload-Length": str(length)},
    )


def created(http: httpx.Client, namespace: str, length: int = 4) -> str:
    response = create(http, namespace, length)
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_open_sessions_are_capped_per_namespace_and_per_token(
    server: InProcessServer, http: httpx.Client
) -> None:
    in_a = [created(http, "cap-a") for _ in range(PER_NAMESPACE)]
    body = assert_problem(create(http, "cap-a"), 413, "too_many_uploads")
    assert "namespace cap-a" in body["detail"] and str(PER_NAMESPACE) in body["detail"]
    # Another namespace has room, until the token holds PER_ACTOR open sessions.
    in_b = [created(http, "cap-b") for _ in range(PER_ACTOR - PER_NAMESPACE)]
    body = assert_problem(create(http, "cap-c"), 413, "too_many_uploads")
    assert "token" in body["detail"] and str(PER_ACTOR) in body["detail"]
    # An aborted session and a completed one no longer count.
    assert http.delete(in_a[0], headers=TUS).status_code == 204
    done = http.patch(
        in_b[0], content=b"full", headers={**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE}
    )
    assert done.status_code == 204, done.text
    assert http.get(in_b[0]).json()["state"] == "completed"
    created(http, "cap-a")
    created(http, "cap-c")
    assert_problem(create(http, "cap-c"), 413, "too_many_uploads")


@pytest.fixture
def sweeping(tmp_path: Path, request: pytest.FixtureRequest) -> InProcessServer:
    """``serve`` with sessions that expire after 1 s, swept every 200 ms, and no GC."""
    env = {
        "ARTIFACTSTORE_UPLOAD_TTL": "1s",
        "ARTIFACTSTORE_UPLOAD_SWEEP_INTERVAL": "200ms",
        "ARTIFACTSTORE_GC_INTERVAL": "0",
    }
    srv = InProcessServer(tmp_path / "home", tmp_path, env)
    srv.start()
    request.addfinalizer(srv.stop)
    return srv


def test_expired_sessions_and_crash_leftovers_are_swept_without_gc(
    sweeping: InProcessServer,
) -> None:
    storage = sweeping.home / "storage"
    old = time.time() - STAGING_MIN_AGE - 60
    crashed_part = storage / "tmp" / "0123456789abcdef01234567.part"  # a killed push's
    crashed_part.write_bytes(b"x" * 1024)
    os.utime(crashed_part, (old, old))
    live_part = storage / "tmp" / "fedcba9876543210fedcba98.part"  # a push in progress
    live_part.write_bytes(b"y" * 1024)
    no_row = storage / "uploads" / "orphan-without-a-session-row"
    no_row.write_bytes(b"z" * 1024)
    with sweeping.client() as http:
        url = created(http, "sweep", 1 << 20)
        appended = http.patch(
            url,
            content=b"s" * 4096,
            headers={**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE},
        )
        assert appended.status_code == 204, appended.text
        staged = storage / "uploads" / url.rsplit("/", 1)[1]
        assert staged.stat().st_size == 4096
        wait_for("the expired session's bytes to go", lambda: not staged.exists())
        assert_problem(http.get(url), 404, "upload_not_found")
    assert not crashed_part.exists() and not no_row.exists()
    assert live_part.exists()  # younger than STAGING_MIN_AGE: never swept
    jobs = [line for line in sweeping.access_log() if line.get("job") == "uploads"]
    assert any(line["status"] == "ok" and line["removed"] >= 1 for line in jobs), jobs
    db = Database(f"sqlite:///{sweeping.home.absolute() / 'artifactstore.db'}")
    try:
        with db.read() as conn:  # one replica at a time, like GC
            assert [r.name for r in conn.execute(select(t.leases.c.name))] == ["uploads"]
    finally:
        db.dispose()
