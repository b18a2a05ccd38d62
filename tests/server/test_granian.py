"""The same app under granian (``serve --asgi granian``): downloads go out through
``http.response.pathsend``, and the metrics still count their bytes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import Server, upload_blob
from tests.server.test_contract import metric

SENT = "artifactstore_http_sent_bytes_total"


@pytest.fixture(scope="module")
def granian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("granian", reason="granian is a dependency: pip install -e '.[dev]'")
    workdir = tmp_path_factory.mktemp("granian")
    srv = Server(workdir / "home", workdir, {}, args=["--asgi", "granian"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_downloads_through_pathsend_are_whole_and_counted(granian: Server) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    with granian.client() as http:
        b3 = upload_blob(http, data)["digest"]
        before = metric(http.get("/metrics").text, SENT)
        r = http.get(f"/v1/blobs/{b3}")
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-length"] == str(len(data))
        part = http.get(f"/v1/blobs/{b3}", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == data[10:20]
        head = http.head(f"/v1/blobs/{b3}")
        assert head.status_code == 200 and head.content == b""
        after = metric(http.get("/metrics").text, SENT)
    # The whole file, the range and the first scrape's own body; the HEAD adds nothing.
    assert len(data) + 10 <= after - before < len(data) + 10 + 100_000


def test_a_download_broken_off_does_not_disturb_the_server(granian: Server) -> None:
    data = os.urandom(8 * 1024 * 1024)
    with granian.client() as http:
        b3 = upload_blob(http, data)["digest"]
    with (
        httpx.Client(base_url=granian.base_url) as http,
        http.stream("GET", f"/v1/blobs/{b3}") as r,
    ):
        assert r.status_code == 200
        next(r.iter_raw())  # then close the connection mid-body
    with granian.client() as http:
        assert http.get(f"/v1/blobs/{b3}").content == data
