"""Cached token checks and blob lookups across real server processes.

Two ``artifactstore serve`` processes share one store, as two workers or two
replicas do. Each process answers a token it verified, and a blob lookup it
made, from memory while nothing has been committed to the database
(``Store.known_token``, ``Store.known_blob``); a revocation or a deletion
through the other process must still be effective on the very next request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import push
from tests.server_auth.test_permissions import SERVER_ENV, AuthServer, _client, _start, _stop
from tests.server_auth.test_permissions import _token as new_token

#: Uploads hold a blob for a second only, so that a test can outlive the holding and
#: see the blob held by its live version alone.
GRACE = 1.0
WARM = 5  # requests that make sure the answer is cached (the first records the token's use)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthServer, AuthServer]]:
    root = tmp_path_factory.mktemp("two-servers")
    env = {**SERVER_ENV, "ARTIFACTSTORE_GC_GRACE": f"{GRACE}s"}
    log = root / "server.log"  # one log: the second start finds the first's admin token
    a = _start(root / "home", log, env)
    try:
        b = _start(root / "home", log, env)
    except BaseException:
        _stop(a)
        raise
    try:
        yield a, b
    finally:
        _stop(a)
        _stop(b)


def test_a_revocation_through_another_process_is_effective_on_the_next_request(
    servers: tuple[AuthServer, AuthServer],
) -> None:
    a, b = servers
    token_id, secret = new_token(a, "cached", ["ci:read"])
    with _client(a, secret) as reader:
        for _ in range(WARM):
            assert reader.get("/v1/packages?namespace=ci").status_code == 200
        with _client(b, b.admin) as admin:
            assert admin.delete(f"/v1/tokens/{token_id}").status_code == 200
        assert reader.get("/v1/packages?namespace=ci").status_code == 401


def test_a_revocation_through_the_same_process_is_effective_on_the_next_request(
    servers: tuple[AuthServer, AuthServer],
) -> None:
    a, _ = servers
    token_id, secret = new_token(a, "cached-here", ["ci:read"])
    with _client(a, secret) as reader, _client(a, a.admin) as admin:
        for _ in range(WARM):
            assert reader.get("/v1/packages?namespace=ci").status_code == 200
        assert admin.delete(f"/v1/tokens/{token_id}").status_code == 200
        assert reader.get("/v1/packages?namespace=ci").status_code == 401


def test_a_blob_deleted_through_another_process_is_not_served_from_a_cache(
    servers: tuple[AuthServer, AuthServer], tmp_path: Path
) -> None:
    a, b = servers
    _, writer = new_token(a, "pusher", ["ci:write", "ci:read"])
    with _client(a, writer) as c:
        push(c, "ci/cached:1", {"f.txt": b"bytes only a live version holds"})
        digest = c.get("/v1/packages/ci/cached/1").json()["manifest"]["files"][0]["digests"][
            "blake3"
        ]
    time.sleep(GRACE + 0.2)  # the upload's holding is over: the live version alone holds it
    _, secret = new_token(a, "blob-reader", ["ci:read"])
    with _client(a, secret) as reader:
        for _ in range(WARM):
            got = reader.get(f"/v1/blobs/{digest}")
            assert got.status_code == 200 and got.content == b"bytes only a live version holds"
            assert reader.head(f"/v1/blobs/{digest}").status_code == 200
        with _client(b, b.admin) as admin:
            assert admin.delete("/v1/packages/ci/cached/1").status_code == 204
        assert reader.get(f"/v1/blobs/{digest}").status_code == 404
        assert reader.head(f"/v1/blobs/{digest}").status_code == 404
