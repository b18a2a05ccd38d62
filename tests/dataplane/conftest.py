"""The data-plane tests' harness: one plane over each backend, and a way to damage bytes."""

from __future__ import annotations

import hashlib
import http.server
import io
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest

from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.dataplane.backends.memory import MemoryBackend
from artifactstore.dataplane.backends.s3 import S3Backend
from artifactstore.dataplane.blobs import (
    DataPlane,
    IngestBatch,
    SmallBlob,
)
from artifactstore.model.identity import Algorithm, BlobDigests, Digest
from artifactstore.model.records import Placement
from artifactstore.testing.targets import ContractTarget, local_target, memory_target, s3_target
from tests.dataplane.s3server import S3Server


class _Throttled(http.server.BaseHTTPRequestHandler):
    """Answers 503 Slow Down to the first ``failures`` requests, then a HEAD's 200."""

    failures = 2
    seen: list[str] = []

    def do_HEAD(self) -> None:
        self.seen.append(self.command)
        if len(self.seen) <= self.failures:
            self.send_response(503)
            self.send_header("Content-Length", "0")
        else:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.send_header("ETag", '"abc"')
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@dataclass(frozen=True)
class Throttled:
    endpoint: str
    seen: list[str]  # the requests it had; clear() to be throttled again


@pytest.fixture
def throttled(s3_server: S3Server) -> Iterator[Throttled]:
    """A loopback endpoint that throttles twice (s3_server only for its dummy credentials)."""
    _Throttled.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Throttled)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Throttled(f"http://127.0.0.1:{server.server_address[1]}", _Throttled.seen)
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class Harness:
    target: ContractTarget
    flip: Callable[[str, int], None]  # damage one byte of a stored object

    def plane(self, primary: Algorithm = "blake3") -> DataPlane:
        return DataPlane(self.target.backend, primary=primary)

    def keys(self) -> list[str]:
        return sorted(self.target.backend.list())


def _flip_file(backend: LocalBackend) -> Callable[[str, int], None]:
    def flip(key: str, position: int) -> None:
        with backend.path(key).open("r+b") as f:
            f.seek(position)
            byte = f.read(1)
            f.seek(position)
            f.write(bytes([byte[0] ^ 0xFF]))

    return flip


def _flip_object(backend: S3Backend) -> Callable[[str, int], None]:
    def flip(key: str, position: int) -> None:
        data = bytearray(b"".join(backend.read(key)))
        data[position] ^= 0xFF
        backend.client.put_object(Bucket=backend.bucket, Key=backend.prefix + key, Body=bytes(data))

    return flip


@pytest.fixture(params=["memory", "local", "s3"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "memory":
        target = memory_target()
        assert isinstance(target.backend, MemoryBackend)
        h = Harness(target, target.backend.corrupt)
    elif request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        target = s3_target(server.bucket, server.endpoint, f"plane-{uuid.uuid4().hex}")
        assert isinstance(target.backend, S3Backend)
        h = Harness(target, _flip_object(target.backend))
    else:
        target = local_target(tmp_path / "storage")
        assert isinstance(target.backend, LocalBackend)
        h = Harness(target, _flip_file(target.backend))
    yield h
    assert target.staging() == [], "a test left staging files behind"


@pytest.fixture
def plane(harness: Harness) -> Iterator[DataPlane]:
    p = harness.plane()
    yield p
    p.close()


def reference(data: bytes) -> BlobDigests:
    return BlobDigests(
        blake3=Digest("blake3", blake3.blake3(data).hexdigest()),
        sha256=Digest("sha256", hashlib.sha256(data).hexdigest()),
        size=len(data),
    )


def data_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def read_all(plane: DataPlane, key: str | Placement) -> bytes:
    return b"".join(plane.read(key if isinstance(key, Placement) else Placement(key)))


def ingest_file(
    batch: IngestBatch, src: io.FileIO, progress: Callable[[int], None] = lambda _n: None
) -> tuple[BlobDigests, Placement]:
    """``batch.ingest_file``, packing what comes back small (as a push with nothing known)."""
    got = batch.ingest_file(src, progress)
    if isinstance(got, SmallBlob):
        return got.digests, batch.pack(got)
    return got
