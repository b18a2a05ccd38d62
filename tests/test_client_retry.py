"""RemoteStore asks again: once when a read's connection is reset under it, and an
upload when the server answers that GC took its bytes."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactstore.client.http import HttpClient
from artifactstore.client.remote import RemoteStore
from artifactstore.client.uploads import SESSION_THRESHOLD, UPLOAD_ATTEMPTS, Uploader
from artifactstore.errors import MissingBlobs, ServerUnreachable
from artifactstore.model.identity import BlobDigests
from artifactstore.model.paths import PackagePath
from artifactstore.model.records import LocalFile

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class LoopbackServer:
    """One request per connection on 127.0.0.1, each answered by :meth:`answer`."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()

    def uploads(self) -> list[bytes]:
        return [r for r in self.requests if r.startswith(b"POST /v1/blobs")]


class ResettingServer(LoopbackServer):
    """Resets the first ``resets`` connections after reading a request, then answers 200."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        self.requests.append(conn.recv(65536))
        if len(self.requests) <= self.resets:
            # SO_LINGER 0: close() sends RST, as a server dropping the socket does.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        conn.sendall(OK)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[ResettingServer, RemoteStore]]:
    server = ResettingServer(resets=1)
    client = RemoteStore(server.url, state_path=tmp_path / "state.json", timeout=10)
    try:
        yield server, client
    finally:
        client.close()
        server.close()


def test_a_reset_read_is_asked_again(remote: tuple[ResettingServer, RemoteStore]) -> None:
    server, client = remote
    assert client._request("GET", "/v1/schemas").json() == {}
    assert len(server.requests) == 2


def test_a_reset_write_is_not_repeated(remote: tuple[ResettingServer, RemoteStore]) -> None:
    server, client = remote
    with pytest.raises(ServerUnreachable, match="broke off"):
        client._request("POST", "/v1/blobs", content=b"x")
    assert len(server.requests) == 1


def test_only_once(tmp_path: Path) -> None:
    server = ResettingServer(resets=2)
    client = RemoteStore(server.url, state_path=tmp_path / "state.json", timeout=10)
    try:
        with pytest.raises(ServerUnreachable, match="broke off"):
            client._request("GET", "/v1/schemas")
        assert len(server.requests) == 2
    finally:
        client.close()
        server.close()


# --- uploads answered missing_blobs ---------------------------------------------------------


def _response(status: int, body: dict[str, object]) -> bytes:
    text = json.dumps(body).encode()
    kind = "application/problem+json" if status >= 400 else "application/json"
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(text)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + text


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class ScriptedServer(LoopbackServer):
    """Answers each request with the next answer scripted for the first prefix of
    ``routes`` it starts with (the last answer from then on)."""

    def __init__(self, routes: dict[bytes, list[bytes]]) -> None:
        self.routes = routes
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        request = _read_request(conn)
        self.requests.append(request)
        answers = next(a for prefix, a in self.routes.items() if request.startswith(prefix))
        conn.sendall(answers.pop(0) if len(answers) > 1 else answers[0])


def _collected(digest: str) -> bytes:
    """What a server answers when GC removed an upload's bytes before they were recorded."""
    return _response(
        409,
        {
            "type": "https://artifactstore.dev/problems/missing_blobs",
            "title": "Referenced blobs are missing",
            "status": 409,
            "detail": "1 blob(s) were garbage-collected while being stored: ingest them again",
            "code": "missing_blobs",
            "missing": [digest],
        },
    )


def _upload(tmp_path: Path, server: ScriptedServer, data: bytes) -> list[int]:
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    digests = BlobDigests.of(data)
    http = HttpClient(server.url, token=None, timeout=10, connections=2)
    advanced: list[int] = []
    try:
        file = LocalFile(PackagePath("f.bin"), str(source), len(data))
        Uploader(http, 1, tmp_path / "state.json").upload("ci", file, digests, advanced.append)
    finally:
        http.close()
        server.close()
    return advanced


def test_an_upload_refused_as_collected_is_sent_again(tmp_path: Path) -> None:
    data = b"bytes GC took between publishing and recording"
    digest = str(BlobDigests.of(data).blake3)
    server = ScriptedServer({b"": [_collected(digest), _response(201, {"digest": digest})]})
    advanced = _upload(tmp_path, server, data)
    assert [r.endswith(data) for r in server.uploads()] == [True, True]
    assert sum(advanced) == len(data), "the progress bar counts the bytes once"


def test_an_upload_refused_every_time_fails_after_its_attempts(tmp_path: Path) -> None:
    data = b"collected again and again"
    server = ScriptedServer({b"": [_collected(str(BlobDigests.of(data).blake3))]})
    with pytest.raises(MissingBlobs, match="garbage-collected"):
        _upload(tmp_path, server, data)
    assert len(server.uploads()) == UPLOAD_ATTEMPTS


def test_a_commit_refused_as_collected_uploads_again_counted_once(tmp_path: Path) -> None:
    data = b"bytes GC took between their upload and the commit"
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f.bin").write_bytes(data)
    digests = BlobDigests.of(data)
    digest = str(digests.blake3)
    version = {
        "reference": "ci/app:1",
        "digest": digest,  # any valid digest: the client only parses it
        "sha256": str(digests.sha256),
        "committed_at": "2026-12-03T00:00:00Z",
        "actor": "test",
        "size": len(data),
        "file_count": 1,
        "created_now": True,
    }
    server = ScriptedServer(
        {
            b"POST /v1/blobs": [_response(201, {"digest": digest})],
            # the first commit says what is missing; the second finds it collected
            b"PUT /v1/packages/ci/app/1": [
                _collected(digest),
                _collected(digest),
                _response(201, version),
            ],
        }
    )
    client = RemoteStore(server.url, state_path=tmp_path / "state.json", timeout=10)
    advanced: list[int] = []
    try:
        result = client.push("ci/app:1", [tmp_path / "tree"], progress=advanced.append)
    finally:
        client.close()
        server.close()
    assert [data in r for r in server.uploads()] == [True, True]  # a batch both times
    assert result.created
    assert sum(advanced) == len(data), "the progress bar counts the bytes once"


def test_a_completion_answered_busy_is_asked_again(tmp_path: Path) -> None:
    """Completion claims the session as a PATCH does, so a completion cut off by a
    server crash leaves a claim that lapses in CLAIM_SECONDS: the client waits it out."""
    data = bytes(SESSION_THRESHOLD)  # large enough for a resumable session
    digest = str(BlobDigests.of(data).blake3)
    busy = _response(
        409,
        {
            "type": "https://artifactstore.dev/problems/upload_busy",
            "title": "Upload busy",
            "status": 409,
            "detail": "another request is appending to upload s1: retry later",
            "code": "upload_busy",
        },
    )
    close = "Content-Length: 0\r\nConnection: close\r\n\r\n"
    created = f"HTTP/1.1 201 X\r\nLocation: /v1/uploads/s1\r\n{close}".encode()
    appended = f"HTTP/1.1 204 X\r\nUpload-Offset: {len(data)}\r\n{close}".encode()
    server = ScriptedServer(
        {
            b"POST /v1/uploads/s1/complete": [busy, _response(200, {"digest": digest})],
            b"POST /v1/uploads": [created],
            b"PATCH /v1/uploads/s1": [appended],
        }
    )
    advanced = _upload(tmp_path, server, data)
    completions = [r for r in server.requests if r.startswith(b"POST /v1/uploads/s1/complete")]
    assert len(completions) == 2
    assert sum(advanced) == len(data)
