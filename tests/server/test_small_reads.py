"""Small whole blobs are read on the event loop and sent with their headers.

``server/serving.py`` reads a local blob of at most ``SMALL_READ`` bytes itself
instead of handing the file to ``sendfile`` on a thread; the bytes it sends must
be the recorded ones, and a file that no longer holds them is reported, never
sent as if it were the blob.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from artifactstore.server.serving import SMALL_READ
from tests.server.conftest import InProcessServer, Server, assert_problem, upload_blob

pytestmark = pytest.mark.configs("embedded", "scaleout")


def _stored_file(server: InProcessServer | Server, digest: str) -> Path:
    (path,) = (server.home / "storage" / "blobs").rglob(digest.split(":")[1])
    return path


@pytest.mark.parametrize("size", [0, 1, 4096, SMALL_READ, SMALL_READ + 1])
def test_whole_blobs_around_the_threshold_are_sent_whole(http: httpx.Client, size: int) -> None:
    data = os.urandom(size)
    stored = upload_blob(http, data)
    got = http.get(f"/v1/blobs/{stored['digest']}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-length"] == str(size)
    assert got.headers["docker-content-digest"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert got.headers["etag"] == f'"{stored["digest"]}"'


@pytest.mark.configs("embedded")  # the event loop's read of a blob's own file: S3 has none
@pytest.mark.parametrize("damage", ["truncate", "extend", "remove"])
def test_a_small_blob_whose_file_changed_is_reported_not_sent(
    server: InProcessServer | Server, http: httpx.Client, damage: str
) -> None:
    data = os.urandom(4096)
    digest = upload_blob(http, data)["digest"]
    assert http.get(f"/v1/blobs/{digest}").content == data  # looked up (and remembered)
    path = _stored_file(server, digest)
    if damage == "remove":
        path.unlink()
    else:
        path.write_bytes(data[:-10] if damage == "truncate" else data + b"more")
    assert_problem(http.get(f"/v1/blobs/{digest}"), 500, "corrupt_blob")
