"""Zero-copy downloads (``http.response.pathsend``) under both ASGI servers.

granian implements the extension itself; under uvicorn our wire protocol
(``server/wire.py``) advertises it and answers it with ``os.sendfile``. Both
must send whole files correctly, count their bytes in the metrics, survive
clients that read slowly or go away, and keep the connection usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from artifactstore.server.wire import BoundedHttpToolsProtocol
from tests.server.conftest import Server, free_port, upload_blob
from tests.server.test_contract import metric

SENT = "artifactstore_http_sent_bytes_total"


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def asgi(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    if request.param == "granian":
        pytest.importorskip("granian", reason="granian is a dependency: pip install -e '.[dev]'")
    workdir = tmp_path_factory.mktemp(request.param)
    srv = Server(workdir / "home", workdir, {}, args=["--asgi", request.param])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_downloads_through_pathsend_are_whole_and_counted(asgi: Server) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    with asgi.client() as http:
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


def test_a_download_broken_off_does_not_disturb_the_server(asgi: Server) -> None:
    """The client leaves mid-body: no error logged, and the next reader gets it all."""
    data = os.urandom(48 * 1024 * 1024)  # more than loopback's socket buffers hold
    with asgi.client() as http:
        b3 = upload_blob(http, data)["digest"]
    logged = asgi.log_path.stat().st_size
    for _ in range(3):
        with (
            httpx.Client(base_url=asgi.base_url) as http,
            http.stream("GET", f"/v1/blobs/{b3}") as r,
        ):
            assert r.status_code == 200
            next(r.iter_raw())  # then close the connection mid-body
    with asgi.client() as http:
        assert http.get(f"/v1/blobs/{b3}").content == data
    assert _not_access_lines(asgi, logged) == []


def test_clients_that_hang_up_at_once_leave_no_error(asgi: Server) -> None:
    """A client gone before the response starts (wrk's end of a run does this)."""
    data = os.urandom(4096)
    with asgi.client() as http:
        b3 = upload_blob(http, data)["digest"]
    logged = asgi.log_path.stat().st_size
    port = int(asgi.base_url.rsplit(":", 1)[1])
    request = f"GET /v1/blobs/{b3} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(request)  # then reset the connection at once
    with asgi.client() as http:
        assert http.get(f"/v1/blobs/{b3}").content == data
    assert _not_access_lines(asgi, logged) == []


def test_a_slow_reader_gets_every_byte_and_the_connection_stays_usable(asgi: Server) -> None:
    """A client that reads slowly fills the socket: the sender must wait, not fail."""
    data = os.urandom(6 * 1024 * 1024 + 5)
    with asgi.client() as http:
        b3 = upload_blob(http, data)["digest"]
    port = int(asgi.base_url.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        request = f"GET /v1/blobs/{b3} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        s.sendall(request + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
        time.sleep(1.0)  # let the server fill the socket and wait for room
        received = bytearray()
        while len(received) < len(data) + 100_000:
            chunk = s.recv(256 * 1024)
            if not chunk:
                break
            received += chunk
            if received.count(b"HTTP/1.1 200") == 2 and received.endswith(b"}"):
                break
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert rest[: len(data)] == data
    assert rest[len(data) :].startswith(b"HTTP/1.1 200")  # the second response follows intact


def test_many_downloads_at_once_are_each_whole(asgi: Server) -> None:
    blobs = [os.urandom(1024 * 1024 + k) for k in range(4)]
    with asgi.client() as http:
        digests = [upload_blob(http, b)["digest"] for b in blobs]
    failures: list[str] = []

    def fetch(k: int) -> None:
        with httpx.Client(base_url=asgi.base_url, timeout=30) as http:
            for _ in range(3):
                got = http.get(f"/v1/blobs/{digests[k % 4]}").content
                if got != blobs[k % 4]:
                    failures.append(f"client {k}: {len(got)} bytes")

    threads = [threading.Thread(target=fetch, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def _not_access_lines(server: Server, offset: int) -> list[str]:
    """What the server logged after ``offset`` besides JSON access lines: errors."""
    with server.log_path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    return [line for line in lines if not line.startswith("{")]


# The wire protocol on its own: a tiny ASGI app served by uvicorn with our protocol.


class _PathApp:
    """Answers every request with one file through pathsend, if the server offers it."""

    def __init__(self, path: Path, declared: int | None) -> None:
        self.path = path
        self.declared = declared  # the Content-Length sent; None: none at all
        self.extensions: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.extensions.append(scope.get("extensions", {}))
        headers = (
            [] if self.declared is None else [(b"content-length", str(self.declared).encode())]
        )
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(self.path)})


@contextlib.contextmanager
def _served(app: _PathApp) -> Iterator[int]:
    """uvicorn with our protocol serving ``app`` on a thread; yields its port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=BoundedHttpToolsProtocol, log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def _get_until_closed(port: int) -> bytes:
    """One GET on a raw socket, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return received


def test_uvicorn_protocol_offers_and_answers_pathsend(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    (tmp_path / "f").write_bytes(data)
    app = _PathApp(tmp_path / "f", len(data))
    with _served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        assert http.get("/").content == data
        assert http.get("/again").content == data  # same keep-alive connection
    assert app.extensions == [{"http.response.pathsend": {}}] * 2


def test_uvicorn_protocol_closes_a_response_whose_file_is_short(tmp_path: Path) -> None:
    """A file shorter than its Content-Length must not leave the client waiting."""
    (tmp_path / "f").write_bytes(b"x" * 1000)
    with _served(_PathApp(tmp_path / "f", 5000)) as port:
        received = _get_until_closed(port)
    assert received.endswith(b"x" * 1000)  # then the server closed the connection


def test_uvicorn_protocol_refuses_pathsend_without_a_length(tmp_path: Path) -> None:
    """Chunked framing has no room for a file sent around it: the connection ends."""
    (tmp_path / "f").write_bytes(b"y" * 1000)
    with _served(_PathApp(tmp_path / "f", None)) as port:
        received = _get_until_closed(port)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"y" not in body and not body.endswith(b"0\r\n\r\n")  # never a complete body


def test_uvicorn_protocol_reports_a_file_it_cannot_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A vanished file is the server's fault: logged as an error, never taken for a lost client."""
    with caplog.at_level(logging.ERROR), _served(_PathApp(tmp_path / "gone", 100)) as port:
        received = _get_until_closed(port)
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"\r\n\r\n")
    assert any("cannot open" in str(r.exc_info and r.exc_info[1]) for r in caplog.records)
