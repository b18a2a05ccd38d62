"""A stock tus client (tuspy) against the server: a large upload, and one cut off by a crash;
and one long PATCH cut off by SIGKILL, which keeps the bytes it had made durable (issue 17)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import httpx
import pytest
from tusclient import client as tus

from artifactstore.controlplane.uploads import CLAIM_SECONDS
from tests.server.conftest import Server, assert_problem

pytestmark = pytest.mark.configs("embedded", "scaleout")

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


TUS_BYTES = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}


def upload_offset(url: str) -> int:
    head = httpx.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=30)
    return int(head.headers["upload-offset"])


def open_session(server: Server, size: int) -> str:
    with server.client() as http:
        created = http.post(
            "/v1/uploads",
            params={"namespace": "ci"},
            headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size)},
        )
        assert created.status_code == 201, created.text
    return created.headers["Location"]


#: How long a body whose bytes are never checkpointed (sent with Upload-Checksum) is given
#: to reach the server once the client has sent it: nothing on the server shows them.
UNSEEN_ARRIVAL = 1.0


def kill_mid_patch(
    server: Server,
    url: str,
    data: bytes,
    first: int,
    headers: dict[str, str],
    *,
    checkpointed: bool = True,
) -> None:
    """PATCH ``data`` from offset 0, stall after ``first`` bytes, SIGKILL the server once
    it has them (``checkpointed``: once it shows a checkpoint near them; else after
    ``UNSEEN_ARRIVAL``), and restart it."""
    sent = 0
    stall = threading.Event()

    def body() -> Iterator[bytes]:
        nonlocal sent
        for start in range(0, first, MiB):
            yield data[start : start + MiB]
            sent += MiB
        stall.wait(120)  # a client that stops sending, until the server dies

    def patch() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the kill cuts the connection
            httpx.patch(url, content=body(), headers={**headers, "Upload-Offset": "0"}, timeout=120)

    thread = threading.Thread(target=patch, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        sent < first or (checkpointed and upload_offset(url) < first - CHECKPOINT)
    ):
        time.sleep(0.05)  # the checkpoints show while the PATCH runs
    assert sent == first, "the body did not reach the server"
    if not checkpointed:
        time.sleep(UNSEEN_ARRIVAL)
    assert thread.is_alive(), "the PATCH ended before the kill"
    server.kill()
    stall.set()
    thread.join(30)
    server.start()


def test_sigkill_mid_patch_keeps_the_durable_prefix(server: Server, tmp_path: Path) -> None:
    """One PATCH of 32 MiB stalls after 12 MiB and the server is SIGKILLed: the session
    resumes from the last checkpoint (every CHECKPOINT bytes), not from 0."""
    size, first = 32 * MiB, 12 * MiB
    path = tmp_path / "long-patch.bin"
    b3, sha = make_file(path, size, b"long patch")
    data = path.read_bytes()
    url = open_session(server, size)
    kill_mid_patch(server, url, data, first, TUS_BYTES)

    resumed = upload_offset(url)
    assert 0 < resumed <= first, resumed
    assert resumed >= first - 2 * CHECKPOINT, resumed  # no more lost than the last checkpoints
    finish = {**TUS_BYTES, "Upload-Offset": str(resumed)}
    deadline = time.monotonic() + CLAIM_SECONDS + 30
    while True:  # the killed request's claim lapses within CLAIM_SECONDS
        rest = httpx.patch(url, content=data[resumed:], headers=finish, timeout=120)
        if rest.status_code != 409 or time.monotonic() > deadline:
            break
        assert_problem(rest, 409, "upload_busy")
        time.sleep(0.5)
    assert rest.status_code == 204, rest.text
    check_blob(server, url, path, b3, sha)
    verified = server.local_cli(tmp_path)("verify", "--all")
    assert verified.code == 0, verified


def test_sigkill_mid_patch_with_a_checksum_keeps_nothing_of_it(server: Server) -> None:
    """A body sent with Upload-Checksum is verified whole: none of it is checkpointed, so a
    crash mid-body leaves the session where the body started."""
    size, first = 16 * MiB, 8 * MiB
    data = bytes(range(256)) * (size // 256)
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    url = open_session(server, size)
    with_checksum = {**TUS_BYTES, "Upload-Checksum": f"sha256 {checksum}"}
    kill_mid_patch(server, url, data, first, with_checksum, checkpointed=False)
    assert upload_offset(url) == 0


def test_completion_waits_for_a_running_patch(server: Server) -> None:
    """A session of deferred length shows its checkpoints while a PATCH runs; completing
    it then must not hash or move bytes still being written: 409 upload_busy."""
    data = bytes(range(256)) * (6 * MiB // 256)
    tus_headers = TUS_BYTES
    with server.client() as http:
        created = http.post(
            "/v1/uploads",
            params={"namespace": "ci"},
            headers={"Tus-Resumable": "1.0.0", "Upload-Defer-Length": "1"},
        )
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        more = threading.Event()
        answers: list[httpx.Response] = []

        def body() -> Iterator[bytes]:
            yield data[: 4 * MiB]
            more.wait(60)
            yield data[4 * MiB :]

        def patch() -> None:
            headers = {**tus_headers, "Upload-Offset": "0"}
            answers.append(httpx.patch(url, content=body(), headers=headers, timeout=120))

        thread = threading.Thread(target=patch, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while http.get(url).json()["offset"] < CHECKPOINT and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http.get(url).json()["offset"] >= CHECKPOINT
        assert_problem(http.post(f"{url}/complete"), 409, "upload_busy")
        more.set()
        thread.join(60)
        assert answers and answers[0].status_code == 204, answers
        done = http.post(f"{url}/complete")
        assert done.status_code == 200, done.text
        assert done.json()["digest"] == f"blake3:{blake3.blake3(data).hexdigest()}"
        assert done.json()["size"] == len(data)


#: The module server's checkpoint interval (``upload_checkpoint_bytes``).
CHECKPOINT = 2 * MiB


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {
        "ARTIFACTSTORE_FSYNC": "true",
        "ARTIFACTSTORE_UPLOAD_CHECKPOINT_BYTES": str(CHECKPOINT),
        # Longer than any wait here: a stalled body is cut off by the kill, not the server.
        "ARTIFACTSTORE_BODY_IDLE_TIMEOUT": "10m",
    }


@pytest.fixture(scope="module")
def server(live_server: Server) -> Server:
    """A real process: tuspy talks HTTP over sockets, and a test kills the server."""
    return live_server
