"""RemoteStore asks again, once, when a read's connection is reset under it."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactstore.client import RemoteStore
from artifactstore.errors import StorageError

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class ResettingServer:
    """Resets the first ``resets`` connections after reading a request, then answers 200."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.requests.append(conn.recv(65536))
                if len(self.requests) <= self.resets:
                    # SO_LINGER 0: close() sends RST, as a server dropping the socket does.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                conn.sendall(OK)

    def close(self) -> None:
        self.sock.close()


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
    with pytest.raises(StorageError, match="cannot reach"):
        client._request("POST", "/v1/blobs", content=b"x")
    assert len(server.requests) == 1


def test_only_once(tmp_path: Path) -> None:
    server = ResettingServer(resets=2)
    client = RemoteStore(server.url, state_path=tmp_path / "state.json", timeout=10)
    try:
        with pytest.raises(StorageError, match="cannot reach"):
            client._request("GET", "/v1/schemas")
        assert len(server.requests) == 2
    finally:
        client.close()
        server.close()
