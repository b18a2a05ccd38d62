"""The S3 backend's own promises, beyond the conformance suite, against moto's real server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from artifactstore.dataplane.backends import open_backend, s3_writes
from artifactstore.dataplane.backends import s3 as s3_module
from artifactstore.dataplane.backends.s3 import PART_SIZE, S3Backend
from artifactstore.dataplane.backends.s3_staging import S3Staging
from artifactstore.errors import InvalidInput, StorageError
from artifactstore.store import Store
from artifactstore.testing.targets import assert_absent, assert_holds, get, payload, put, s3_target
from tests.conftest import make_tree
from tests.dataplane.conftest import Throttled
from tests.dataplane.s3server import S3Server

MiB = 1 << 20


def _fresh(server: S3Server) -> S3Backend:
    backend = s3_target(server.bucket, server.endpoint, f"own-{uuid.uuid4().hex}").backend
    assert isinstance(backend, S3Backend)
    return backend


def _large(backend: S3Backend, key: str, data: bytes) -> None:
    """Write ``data`` (larger than a part) in 1 MiB pieces: the multipart path."""
    assert len(data) > PART_SIZE
    put(backend, key, data, chunk=MiB)


def test_the_url_names_bucket_prefix_endpoint_and_region(s3_server: S3Server) -> None:
    prefix = f"url-{uuid.uuid4().hex}/nested"
    url = f"s3://{s3_server.bucket}/{prefix}?endpoint={s3_server.endpoint}&region=us-east-1"
    backend = open_backend(url, "COLD_STORAGE_URL", fsync=True, name="cold")
    assert isinstance(backend, S3Backend)
    assert backend.properties.name == "cold"
    assert backend.properties.local_root is None
    put(backend, "blobs/x", b"bytes")
    listed = backend.client.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)
    assert [o["Key"] for o in listed["Contents"]] == [f"{prefix}/blobs/x"]
    assert list(backend.list()) == ["blobs/x"]
    backend.delete("blobs/x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3:///prefix?endpoint=http://127.0.0.1:1", "names a bucket"),
        ("s3://bucket/p?endpoint=http://127.0.0.1:1&secret=x", "unknown s3:// URL parameter"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        open_backend(url, "STORAGE_URL", fsync=True, name="local")


def test_a_large_object_is_an_upload_until_its_batch_commits(s3_server: S3Server) -> None:
    b = _fresh(s3_server)
    data = payload(1, PART_SIZE + 3 * MiB + 5)
    batch = b.batch()
    writer = batch.writer()
    writer.write(data[:PART_SIZE])
    writer.write(data[PART_SIZE:])
    assert len(b.staging()) == 1, "the first full part opens a multipart upload"
    writer.commit("big")
    assert_absent(b, "big")
    batch.commit()
    assert_holds(b, "big", data)
    assert b.staging() == []
    b.delete("big")

    cancelled = b.batch()
    writer = cancelled.writer()
    writer.write(data)
    writer.commit("big")
    assert b.staging() != []
    cancelled.cancel()
    assert b.staging() == []
    assert_absent(b, "big")


def test_a_large_copy_never_replaces_the_first(s3_server: S3Server) -> None:
    b = _fresh(s3_server)
    put(b, "first", b"original")
    _large(b, "first", payload(2, PART_SIZE + 1))
    assert_holds(b, "first", b"original")
    assert b.staging() == []
    b.delete("first")


def test_objects_past_the_copy_limit_are_copied_in_parts(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CopyObject stops at 5 GiB: larger objects are copied with UploadPartCopy.
    # The limit is lowered so a small object takes that path.
    monkeypatch.setattr(s3_module, "COPY_LIMIT", 10 * MiB)
    monkeypatch.setattr(s3_module, "COPY_PART", 5 * MiB)
    b = _fresh(s3_server)
    data = payload(3, 2 * PART_SIZE + 123)
    _large(b, "huge", data)
    assert_holds(b, "huge", data)
    etag = b.client.head_object(Bucket=b.bucket, Key=b.prefix + "huge")["ETag"]
    assert etag.strip('"').endswith("-4"), f"{etag} is not a 4-part copy"
    assert get(b, "huge", 5 * MiB - 2, 4) == data[5 * MiB - 2 : 5 * MiB + 2]
    assert b.staging() == []
    b.delete("huge")


def test_sweep_removes_old_staging_only(s3_server: S3Server) -> None:
    b = _fresh(s3_server)
    # What a crash between completing an upload and copying it leaves.
    b.client.put_object(Bucket=b.bucket, Key=b.prefix + "tmp/left.part", Body=b"x")
    assert b.sweep_staging(3600) == 0
    assert b.staging() == [b.prefix + "tmp/left.part"]
    time.sleep(1.1)
    assert b.sweep_staging(0.5) == 1
    assert b.staging() == []


def test_sweep_aborts_abandoned_uploads(s3_server: S3Server) -> None:
    # moto reports every upload as initiated in 2010, so only "old" is testable here.
    b = _fresh(s3_server)
    batch = b.batch()
    writer = batch.writer()
    writer.write(payload(4, PART_SIZE))  # a crash would leave this upload open
    assert len(b.staging()) == 1
    assert b.sweep_staging(3600) == 1
    assert b.staging() == []


def test_a_missing_bucket_is_a_storage_error_not_an_absent_object(s3_server: S3Server) -> None:
    b = S3Backend(f"missing-{uuid.uuid4().hex[:12]}", endpoint=s3_server.endpoint)
    with pytest.raises(StorageError):
        b.health()
    with pytest.raises(StorageError):
        put(b, "k", b"data")
    with pytest.raises(StorageError):
        list(b.list())


def test_reserved_staging_keys_are_refused(s3_server: S3Server) -> None:
    b = _fresh(s3_server)
    for key in ("tmp", "tmp/x", "", "a//b", "../x", "a/./b"):
        with pytest.raises(StorageError):
            b.stat(key)
    batch = b.batch()
    writer = batch.writer()
    writer.write(b"x")
    with pytest.raises(StorageError):
        writer.commit("tmp/x")  # refused at once, not when the batch publishes
    batch.cancel()
    b.health()
    assert list(b.list()) == []
    assert b.staging() == []


def test_a_store_keeps_its_cold_tier_in_s3(s3_server: S3Server, tmp_path: Path) -> None:
    prefix = f"cold-{uuid.uuid4().hex}"
    url = f"s3://{s3_server.bucket}/{prefix}?endpoint={s3_server.endpoint}"
    files = {"small": "s" * 40, "big": "b" * (PART_SIZE + 100)}
    with Store.open(tmp_path / "home", cold_storage_url=url) as store:
        store.push("ci/app:1", [make_tree(tmp_path / "tree", files)])
        store.tier_move("ci/app:1", "cold")
        cold = store.plane.cold
        assert cold is not None and isinstance(cold, S3Backend)
        stored = sorted(len(get(cold, key)) for key in cold.list())
        assert stored == sorted(len(v) for v in files.values())
        store.tier_restore("ci/app:1")
        store.pull("ci/app:1", tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / name).read_text() == content


def test_transient_errors_are_retried(throttled: Throttled) -> None:
    b = S3Backend("bucket", "p", endpoint=throttled.endpoint, region="us-east-1")
    assert b.stat("k") == 5
    assert len(throttled.seen) == 3, "two 503s, then the answer"


def test_a_batch_past_its_memory_spills_small_objects_to_staging(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A push of many medium files must not hold them all in memory until commit.
    monkeypatch.setattr(s3_writes, "BATCH_MEMORY", 250_000)
    b = _fresh(s3_server)
    contents = {f"f{i}": payload(50 + i, 100_000) for i in range(5)}
    for cancel in (True, False):
        batch = b.batch()
        for key, data in contents.items():
            writer = batch.writer()
            writer.write(data)
            writer.commit(key)
        assert len(b.staging()) == 3, "two objects in memory, three spilled to tmp/"
        assert list(b.list()) == []
        if cancel:
            batch.cancel()
            assert b.staging() == []
            continue
        batch.commit()
        for key, data in contents.items():
            assert_holds(b, key, data)
    assert b.staging() == []
    for key in contents:
        b.delete(key)


def test_staged_segments_past_a_gap_count_for_nothing(s3_server: S3Server) -> None:
    """A segment that does not follow the chain from 0 (a zombie writer finishing after a
    truncation) is neither size nor bytes, and the next append deletes it."""
    staging = S3Staging(_fresh(s3_server))
    upload_id = "gapped-0001"
    staging.create(upload_id)
    staging.append(upload_id, 0).close()
    sink = staging.append(upload_id, 0)
    sink.write(b"0123456789")
    assert sink.close() == 10
    b = staging.backend
    stray = staging.segment_key(upload_id, 20)
    b.client.put_object(Bucket=b.bucket, Key=stray, Body=b"stray")
    assert staging.staged_size(upload_id) == 10
    assert b"".join(staging.read_staged(upload_id)) == b"0123456789"
    sink = staging.append(upload_id, 10)
    sink.write(b"x" * 10)
    assert sink.close() == 20
    assert staging.staged_size(upload_id) == 20, "the stray segment is gone, not chained"
    assert b"".join(staging.read_staged(upload_id)) == b"0123456789" + b"x" * 10
    staging.discard(upload_id)
    assert list(b.list()) == []


def test_parts_in_flight_keep_their_order_whatever_order_they_finish_in(
    s3_server: S3Server,
) -> None:
    """The first part is held back until the later ones were acknowledged: the object
    still holds the bytes in the order they were written."""
    b = _fresh(s3_server)
    real = b.client.upload_part
    later_done = threading.Event()

    def upload_part(**kw: Any) -> Any:
        if kw["PartNumber"] == 1:
            assert later_done.wait(30), "the later parts never went up while part 1 waited"
        answer = real(**kw)
        if kw["PartNumber"] == s3_writes.PARTS_IN_FLIGHT:
            later_done.set()
        return answer

    data = payload(9, s3_writes.PARTS_IN_FLIGHT * PART_SIZE + 5)
    with patch.object(b.client, "upload_part", upload_part):
        _large(b, "ordered", data)
    assert get(b, "ordered") == data
    assert b.staging() == []


def test_a_failed_part_in_flight_fails_the_write_and_leaves_no_upload(
    s3_server: S3Server,
) -> None:
    """The upload is aborted behind the writer's back: a part in flight fails, and a
    later write (or the commit) says so; nothing is published, nothing stays open."""
    b = _fresh(s3_server)
    batch = b.batch()
    writer = batch.writer()
    piece = payload(10, MiB)
    with pytest.raises(StorageError, match="uploading a part failed"):
        for i in range(6 * PART_SIZE // MiB):
            writer.write(piece)
            if i == PART_SIZE // MiB:  # the first part is on its way: pull the rug
                for up in b.client.list_multipart_uploads(Bucket=b.bucket, Prefix=b.prefix).get(
                    "Uploads", []
                ):
                    b.client.abort_multipart_upload(
                        Bucket=b.bucket, Key=up["Key"], UploadId=up["UploadId"]
                    )
        writer.commit("never")
    batch.cancel()
    assert_absent(b, "never")
    assert b.staging() == []


def test_a_read_stopped_early_ends_its_read_ahead_thread(s3_server: S3Server) -> None:
    b = _fresh(s3_server)
    _large(b, "big", payload(11, PART_SIZE + MiB))
    before = {t for t in threading.enumerate() if t.name == "s3-read"}
    chunks = b.read("big")
    assert isinstance(chunks, Generator)
    first = next(chunks)
    assert len(first) == MiB
    chunks.close()  # a client gone mid-download
    deadline = time.monotonic() + 10
    while {t for t in threading.enumerate() if t.name == "s3-read"} - before:
        assert time.monotonic() < deadline, "the read-ahead thread outlived its read"
        time.sleep(0.05)


def _requests(b: S3Backend) -> list[tuple[str, str, str]]:
    """Every request the backend's client sends from now on: (method, URL, copy source)."""
    sent: list[tuple[str, str, str]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append((request.method, request.url, request.headers.get("x-amz-copy-source", "")))

    b.client.meta.events.register("before-send.s3", record)
    return sent


def test_a_named_large_object_is_uploaded_at_its_key_and_never_copied(
    s3_server: S3Server,
) -> None:
    b = _fresh(s3_server)
    data = payload(50, 2 * PART_SIZE + 3)
    sent = _requests(b)
    batch = b.batch()
    writer = batch.writer("blobs/named")
    pieces = [data[i : i + MiB] for i in range(0, len(data), MiB)]
    for piece in pieces:
        writer.write(piece)
    writer.commit("blobs/named")
    [upload] = b.client.list_multipart_uploads(Bucket=b.bucket, Prefix=b.prefix)["Uploads"]
    assert upload["Key"] == b.prefix + "blobs/named", "the upload is at the key itself"
    assert_absent(b, "blobs/named")
    batch.commit()
    assert_holds(b, "blobs/named", data)
    assert b.staging() == []
    assert [s for s in sent if s[2] or "/tmp/" in s[1]] == [], "no copy, no staging key"
    b.delete("blobs/named")


def test_a_named_upload_losing_a_race_at_completion_is_aborted(s3_server: S3Server) -> None:
    """Another upload of the key completes between our HEAD and our completion: the
    conditional completion is refused (412), ours is aborted, the first copy stays."""
    b = _fresh(s3_server)
    first = b"the first copy"
    batch = b.batch()
    writer = batch.writer("blobs/raced")
    writer.write(payload(51, PART_SIZE + 1))
    writer.commit("blobs/raced")

    def sneak_in(**_: Any) -> None:
        b.client.meta.events.unregister("before-call.s3.CompleteMultipartUpload", sneak_in)
        put(b, "blobs/raced", first)

    b.client.meta.events.register("before-call.s3.CompleteMultipartUpload", sneak_in)
    batch.commit()
    assert_holds(b, "blobs/raced", first)
    assert b.staging() == []
    b.delete("blobs/raced")
