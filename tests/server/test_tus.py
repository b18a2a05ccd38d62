"""A stock tus client (tuspy) against the server: a large upload, and one cut off by a crash."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import blake3
import httpx
import pytest
from tusclient import client as tus

from artifactstore.controlplane.uploads import CLAIM_SECONDS
from tests.server.conftest import Server

MiB = 1024 * 1024


def make_file(path: Path, size: int, seed: bytes) -> tuple[str, str]:
    """Write ``size`` pseudo-random bytes; returns their (blake3, sha256) addresses."""
    b3, sha = blake3.blake3(), hashlib.sha256()
    block = hashlib.sha256(seed).digest() * (MiB // 32)
    with path.open("wb") as f:
        for i in range(0, size, MiB):
            chunk = (i.to_bytes(8, "big") + block)[: min(MiB, size - i)]
            f.write(chunk)
            b3.update(chunk)
            sha.update(chunk)
    return f"blake3:{b3.hexdigest()}", f"sha256:{sha.hexdigest()}"


def check_blob(server: Server, upload_url: str, path: Path, b3: str, sha: str) -> None:
    with server.client() as http:
        status = http.get(upload_url).json()
        assert status["state"] == "completed", status
        assert status["digest"] == b3
        assert status["offset"] == path.stat().st_size
        head = http.head(f"/v1/blobs/{sha}")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(path.stat().st_size)
        got_b3, got_sha, size = blake3.blake3(), hashlib.sha256(), 0
        with http.stream("GET", f"/v1/blobs/{b3}") as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes(MiB):
                got_b3.update(chunk)
                got_sha.update(chunk)
                size += len(chunk)
        assert (f"blake3:{got_b3.hexdigest()}", f"sha256:{got_sha.hexdigest()}") == (b3, sha)
        assert size == path.stat().st_size


def test_tuspy_uploads_50_mb(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    b3, sha = make_file(path, 50 * 1000 * 1000, b"fifty")
    uploader = tus.TusClient(f"{server.base_url}/v1/uploads").uploader(
        file_path=str(path),
        chunk_size=4 * MiB,
        metadata={"namespace": "ci", "filename": "big.bin"},
        upload_checksum=True,
    )
    uploader.upload()
    assert uploader.url is not None
    check_blob(server, uploader.url, path, b3, sha)


def test_tuspy_resumes_after_server_crash(server: Server, tmp_path: Path) -> None:
    size = 48 * MiB
    path = tmp_path / "resume.bin"
    b3, sha = make_file(path, size, b"resume")
    uploader = tus.TusClient(f"{server.base_url}/v1/uploads").uploader(
        file_path=str(path), chunk_size=1 * MiB, metadata={"namespace": "ci"}
    )
    uploader.set_url(uploader.create_url())
    url = uploader.url
    assert url is not None
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            uploader.upload()
            outcome.append(None)
        except BaseException as exc:  # the crash cuts the connection
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    offset = 0
    while time.monotonic() < deadline:
        try:
            offset = int(
                httpx.head(url, headers={"Tus-Resumable": "1.0.0"}).headers["upload-offset"]
            )
        except (httpx.TransportError, KeyError):
            offset = 0
        if offset >= 4 * MiB:
            break
        time.sleep(0.02)
    assert 0 < offset < size, f"no progress to interrupt (offset {offset})"
    server.kill()  # mid-upload: the client's connection is cut
    thread.join(60)
    assert outcome and outcome[0] is not None, "the upload finished before the crash"
    server.start()  # same port, same data directory

    with httpx.Client() as http:
        resumed_from = int(
            http.head(url, headers={"Tus-Resumable": "1.0.0"}).headers["upload-offset"]
        )
    assert resumed_from >= offset  # acknowledged bytes survived the crash
    assert resumed_from < size
    # A stock client resumes from the stored URL: HEAD for the offset, then PATCHes.
    # The crashed request's claim on the session lapses within CLAIM_SECONDS
    # (until then a PATCH gets 409 upload_busy, which tuspy retries).
    restarted = time.monotonic()
    again = tus.TusClient(f"{server.base_url}/v1/uploads").uploader(
        file_path=str(path), url=url, chunk_size=4 * MiB, retries=40, retry_delay=0.5
    )
    assert again.offset == resumed_from
    again.upload()
    assert time.monotonic() - restarted < CLAIM_SECONDS + 15
    check_blob(server, url, path, b3, sha)


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ARTIFACTSTORE_FSYNC": "true"}


@pytest.fixture(scope="module")
def server(live_server: Server) -> Server:
    """A real process: tuspy talks HTTP over sockets, and a test kills the server."""
    return live_server
