"""One-shot uploads (``POST /v1/blobs``) to a server whose hot storage is S3 (moto).

With a BLAKE3 ``?digest=`` (what the project's client sends) the blob's key is
known before its bytes, so they stream as a multipart upload to the key itself
and the upload is completed only once both digests are checked: no staging
object, no server-side copy. Whatever goes wrong before that leaves nothing
visible: a wrong digest or a client gone mid-body aborts the upload at once; a
server killed mid-body leaves it open (invisible), for the sweep that
``serve`` runs on a timer (``UploadService.expire`` -> ``sweep_staging``).
"""

from __future__ import annotations

import hashlib
import random
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import blake3
import httpx
import pytest

from artifactstore.dataplane import layout
from artifactstore.dataplane.backends.s3 import PART_SIZE, S3Backend
from artifactstore.model.identity import Digest
from tests.dataplane.s3server import S3Server
from tests.s3 import s3_url
from tests.server.conftest import Server

MiB = 1 << 20
SIZE = 2 * PART_SIZE + 5  # three parts


def _blob(seed: int, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


def _b3(data: bytes) -> str:
    return f"blake3:{blake3.blake3(data).hexdigest()}"


class _Served:
    """A server on a fresh prefix of the bucket, and the backend that looks at it."""

    def __init__(self, s3: S3Server, tmp: Path) -> None:
        self.prefix = f"oneshot-{uuid.uuid4().hex}"
        env = {"ARTIFACTSTORE_STORAGE_URL": s3_url(s3, self.prefix)}
        self.server = Server(tmp / "home", tmp, env)
        self.hot = S3Backend(s3.bucket, self.prefix, endpoint=s3.endpoint, region="us-east-1")

    def key(self, data: bytes) -> str:
        return layout.blob_key(Digest.parse(_b3(data)))

    def post(self, data: bytes, digest: str) -> httpx.Response:
        with self.server.client() as http:
            return http.post("/v1/blobs", params={"digest": digest}, content=_pieces(data))

    def uploads(self) -> list[str]:
        """Open multipart uploads under the prefix (keys without the prefix)."""
        return [k[len(self.hot.prefix) :] for k in self.hot.staging()]


def _pieces(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), MiB):
        yield data[start : start + MiB]


@pytest.fixture
def served(s3_server: S3Server, tmp_path: Path) -> Iterator[_Served]:
    s = _Served(s3_server, tmp_path)
    s.server.start()
    try:
        yield s
    finally:
        s.server.stop()


def test_a_named_upload_is_completed_at_its_key_without_a_copy(served: _Served) -> None:
    data, other = _blob(1), _blob(2)
    r = served.post(data, _b3(data))
    assert r.status_code == 201, r.text
    assert r.json() == {
        "digest": _b3(data),
        "sha256": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "size": len(data),
    }
    head = served.hot.client.head_object(
        Bucket=served.hot.bucket, Key=served.hot.prefix + served.key(data)
    )
    # A completed three-part upload has a "-3" ETag; a server-side copy of it would not.
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    # A SHA-256 digest does not name the key: that upload is staged, then copied.
    copied = served.post(other, f"sha256:{hashlib.sha256(other).hexdigest()}")
    assert copied.status_code == 201, copied.text
    etag = served.hot.client.head_object(
        Bucket=served.hot.bucket, Key=served.hot.prefix + served.key(other)
    )["ETag"]
    assert "-" not in etag, etag
    assert served.uploads() == []
    with served.server.client() as http:
        assert http.get(f"/v1/blobs/{_b3(data)}").content == data
        assert http.get(f"/v1/blobs/{_b3(other)}").content == other


def test_a_wrong_digest_leaves_no_object_no_row_and_no_upload(served: _Served) -> None:
    data, claimed = _blob(3), _blob(4)
    r = served.post(data, _b3(claimed))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "digest_mismatch"
    assert list(served.hot.list("blobs/")) == []
    assert served.uploads() == [], "the upload at the claimed key is aborted"
    with served.server.client() as http:
        for digest in (_b3(data), _b3(claimed)):
            assert http.head(f"/v1/blobs/{digest}").status_code == 404
    with served.server.open_store() as store:  # no row (a HEAD of a row answers from it)
        assert store.find_blob(Digest.parse(_b3(data))) is None
        assert store.find_blob(Digest.parse(_b3(claimed))) is None


def test_an_already_stored_blob_uploaded_again_is_not_overwritten(served: _Served) -> None:
    data = _blob(5)
    first = served.post(data, _b3(data))
    assert first.status_code == 201, first.text
    key = served.hot.prefix + served.key(data)
    before = served.hot.client.head_object(Bucket=served.hot.bucket, Key=key)["LastModified"]
    time.sleep(1.1)  # S3 times have whole seconds: an overwrite would show
    again = served.post(data, _b3(data))
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    after = served.hot.client.head_object(Bucket=served.hot.bucket, Key=key)["LastModified"]
    assert after == before, "the first copy stays"
    assert served.uploads() == [], "the second upload is aborted"
    assert list(served.hot.list("blobs/")) == [served.key(data)]


def _send_part_of(served: _Served, data: bytes, sent: int) -> socket.socket:
    """A raw POST announcing all of ``data`` that sends only its first ``sent`` bytes,
    once the server shows an open upload at the blob's key (the parts went up)."""
    sock = socket.create_connection(("127.0.0.1", served.server.port))
    head = (
        f"POST /v1/blobs?digest={_b3(data)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data[:sent])
    deadline = time.monotonic() + 30
    while served.uploads() != [served.key(data)]:
        assert time.monotonic() < deadline, f"no upload at the blob's key: {served.uploads()}"
        time.sleep(0.1)
    return sock


def test_a_client_gone_mid_body_leaves_nothing(served: _Served) -> None:
    data = _blob(6)
    sock = _send_part_of(served, data, PART_SIZE + MiB)
    sock.close()
    deadline = time.monotonic() + 30
    while served.uploads():
        assert time.monotonic() < deadline, f"the upload was not aborted: {served.uploads()}"
        time.sleep(0.1)
    assert list(served.hot.list("blobs/")) == []
    with served.server.client() as http:
        assert http.head(f"/v1/blobs/{_b3(data)}").status_code == 404


def test_a_server_killed_mid_body_leaves_an_invisible_upload_the_sweep_aborts(
    served: _Served,
) -> None:
    data = _blob(7)
    sock = _send_part_of(served, data, PART_SIZE + MiB)
    served.server.kill()
    sock.close()
    assert served.uploads() == [served.key(data)], "left open: nobody is there to abort it"
    assert list(served.hot.list("blobs/")) == [], "and invisible"
    assert served.hot.sweep_staging(0) == 1  # what serve's expiry timer runs (after an hour)
    assert served.uploads() == []
    served.server.start()
    with served.server.client() as http:
        assert http.head(f"/v1/blobs/{_b3(data)}").status_code == 404
