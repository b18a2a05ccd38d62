"""DataPlane: content-addressed ingest with both digests, dedup, verification, cancellation."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from artifactstore.dataplane import layout
from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.dataplane.blobs import (
    CHUNK,
    FILE_CHUNK,
    PACK_MAX_BLOB,
    DataPlane,
)
from artifactstore.errors import CorruptBlob, DigestMismatch
from artifactstore.model.identity import Algorithm, BlobDigests, Digest
from artifactstore.model.records import Placement
from tests.dataplane.conftest import Harness, data_of, ingest_file, read_all, reference

EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("primary", ["blake3", "sha256"])
@pytest.mark.parametrize("size", [1, 1000, CHUNK - 1, CHUNK, 3 * CHUNK + 7])
def test_ingest_records_both_digests_and_stores_under_the_primary(
    harness: Harness, primary: Algorithm, size: int
) -> None:
    data = data_of(size, size)
    plane = harness.plane(primary)
    try:
        digests = plane.ingest(io.BytesIO(data))
    finally:
        plane.close()
    assert digests == reference(data)
    key = layout.blob_key(digests.get(primary))
    assert plane.key(digests) == key
    assert harness.keys() == [key]
    assert layout.digest_from_key(key) == digests.get(primary)
    assert plane.stat(key) == size
    assert read_all(plane, key) == data


def test_identical_content_is_stored_once(harness: Harness, plane: DataPlane) -> None:
    data = data_of(1, 2 * CHUNK + 5)
    first = plane.ingest(io.BytesIO(data))
    second = plane.ingest(io.BytesIO(data))
    with plane.batch() as batch:
        third = batch.ingest_bytes(data)
        fourth = batch.ingest_bytes(data)
    assert first == second == third == fourth
    assert harness.keys() == [plane.key(first)]
    assert read_all(plane, plane.key(first)) == data


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_expected_digest_is_checked(
    harness: Harness, plane: DataPlane, algorithm: Algorithm
) -> None:
    data = data_of(2, CHUNK + 1)
    right = reference(data)
    wrong = reference(data + b"!")
    with pytest.raises(DigestMismatch):
        plane.ingest(io.BytesIO(data), expected=wrong.get(algorithm))
    assert harness.keys() == []
    assert harness.target.staging() == []
    assert plane.ingest(io.BytesIO(data), expected=right.get(algorithm)) == right
    assert harness.keys() == [plane.key(right)]


def test_mismatch_in_a_batch_cancels_the_batch(harness: Harness, plane: DataPlane) -> None:
    good, bad = data_of(3, 5000), data_of(4, 5000)
    with pytest.raises(DigestMismatch), plane.batch() as batch:
        batch.ingest_bytes(good)
        batch.ingest_bytes(bad, expected=reference(good).blake3)
    assert harness.keys() == []
    assert harness.target.staging() == []


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_verify_detects_a_flipped_byte(harness: Harness, plane: DataPlane, where: str) -> None:
    data = data_of(5, 2 * CHUNK + 333)
    digests = plane.ingest(io.BytesIO(data))
    key = plane.key(digests)
    plane.verify(Placement(key), digests)  # intact
    position = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    harness.flip(key, position)
    with pytest.raises(CorruptBlob):
        plane.verify(Placement(key), digests)
    assert plane.stat(key) == len(data)  # same size, different bytes


def test_verify_detects_a_missing_blob(harness: Harness, plane: DataPlane) -> None:
    digests = plane.ingest(io.BytesIO(b"soon gone"))
    key = plane.key(digests)
    plane.delete(key)
    with pytest.raises(CorruptBlob):
        plane.verify(Placement(key), digests)


def test_verify_detects_the_wrong_blob_at_a_key(harness: Harness, plane: DataPlane) -> None:
    a = plane.ingest(io.BytesIO(b"a" * 100))
    b = plane.ingest(io.BytesIO(b"b" * 101))
    with pytest.raises(CorruptBlob):
        plane.verify(Placement(plane.key(a)), b)


def test_zero_byte_blob(harness: Harness, plane: DataPlane) -> None:
    digests = plane.ingest(io.BytesIO(b""))
    assert digests == BlobDigests(
        blake3=Digest("blake3", EMPTY_BLAKE3), sha256=Digest("sha256", EMPTY_SHA256), size=0
    )
    key = plane.key(digests)
    assert harness.keys() == [key]
    assert plane.stat(key) == 0
    assert read_all(plane, key) == b""
    plane.verify(Placement(key), digests)


def test_batch_cancelled_by_an_exception_leaves_nothing(harness: Harness, plane: DataPlane) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), plane.batch() as batch:
        batch.ingest_bytes(data_of(6, 3 * CHUNK))
        batch.ingest_bytes(data_of(7, 10))
        raise Boom
    assert harness.keys() == []
    assert harness.target.staging() == []


class _FailingSource:
    """A readable that breaks after ``limit`` bytes (a dropped connection)."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._source = io.BytesIO(data)
        self._left = limit

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None:
        if self._left <= 0:
            raise ConnectionResetError("peer went away")
        view = memoryview(buffer)[: self._left]
        n = self._source.readinto(view)
        self._left -= n
        return n


def test_a_failing_source_cancels_only_its_blob(harness: Harness, plane: DataPlane) -> None:
    broken, good = data_of(8, 3 * CHUNK), data_of(9, CHUNK + 9)
    with plane.batch() as batch:
        with pytest.raises(ConnectionResetError):
            batch.ingest(_FailingSource(broken, CHUNK + CHUNK // 2))
        digests = batch.ingest_bytes(good)
    assert harness.keys() == [plane.key(digests)]
    assert read_all(plane, plane.key(digests)) == good


def test_many_blobs_in_one_batch(harness: Harness, plane: DataPlane) -> None:
    contents = [data_of(100 + i, 500 * i) for i in range(20)]
    with plane.batch() as batch:
        results = [batch.ingest_bytes(data) for data in contents]
    assert results == [reference(data) for data in contents]
    assert harness.keys() == sorted(plane.key(d) for d in results)
    for digests in results:
        plane.verify(Placement(plane.key(digests)), digests)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_writes_give_the_same_digests_as_ingest(
    harness: Harness, plane: DataPlane, seed: int
) -> None:
    # BlobIngest is the HTTP upload path: chunks of any size and buffer type.
    rng = random.Random(seed)
    chunks = [
        rng.randbytes(rng.choice([0, 1, 100, 64 * 1024, 300 * 1024, CHUNK + 3]))
        for _ in range(rng.randint(0, 12))
    ]
    data = b"".join(chunks)
    with plane.batch() as batch:
        blob = batch.begin()
        written = 0
        for i, chunk in enumerate(chunks):
            blob.write((chunk, bytearray(chunk), memoryview(chunk))[i % 3])
            written += len(chunk)
            assert blob.size == written
        incremental = blob.finish()
    assert incremental == reference(data)
    assert plane.ingest(io.BytesIO(data)) == incremental
    assert harness.keys() == [plane.key(incremental)]
    assert read_all(plane, plane.key(incremental)) == data


def test_incremental_blob_with_wrong_digest_or_cancelled_leaves_nothing(
    harness: Harness, plane: DataPlane
) -> None:
    data = data_of(10, 2 * CHUNK)
    with plane.batch() as batch:
        refused = batch.begin()
        refused.write(data)
        with pytest.raises(DigestMismatch):
            refused.finish(expected=reference(b"other").sha256)
        abandoned = batch.begin()
        abandoned.write(data[:CHUNK])
        abandoned.write(data[CHUNK:])
        abandoned.cancel()
        abandoned.cancel()  # idempotent
    assert harness.keys() == []
    assert harness.target.staging() == []


def test_health(harness: Harness, plane: DataPlane) -> None:
    plane.health()
    assert harness.keys() == []


# --- regular files ---------------------------------------------------------------------


def _file_of(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "size", [0, 5, CHUNK, CHUNK + 1, FILE_CHUNK - 1, FILE_CHUNK, 3 * FILE_CHUNK + 7]
)
def test_ingest_file_stores_and_hashes_like_a_stream(
    harness: Harness, plane: DataPlane, tmp_path: Path, size: int
) -> None:
    data = data_of(size, size)
    reported: list[int] = []
    with plane.batch() as batch, _file_of(tmp_path, data).open("rb", buffering=0) as src:
        digests, place = ingest_file(batch, src, reported.append)
    assert digests == reference(data)
    assert read_all(plane, place) == data
    assert sum(reported) == size
    if size <= PACK_MAX_BLOB:
        assert place.representation == "packed" and place.length == size
    else:
        assert place == Placement(plane.key(digests))


def test_files_of_both_piece_sizes_in_one_batch(
    harness: Harness, plane: DataPlane, tmp_path: Path
) -> None:
    """A batch reuses its buffers: a small file after a large one must not see its bytes."""
    sizes = [3 * FILE_CHUNK + 1, 10, CHUNK + 5, 2 * FILE_CHUNK, 0, 77]
    datas = [data_of(20 + i, n) for i, n in enumerate(sizes)]
    with plane.batch() as batch:
        got = []
        for data in datas:
            with _file_of(tmp_path, data).open("rb", buffering=0) as src:
                got.append(ingest_file(batch, src))
    for data, (digests, place) in zip(datas, got, strict=True):
        assert digests == reference(data)
        assert read_all(plane, place) == data


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


def test_ingest_file_memory_stays_flat(tmp_path: Path) -> None:
    """A large file streams through two fixed buffers: memory does not grow with its size."""
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists():
        pytest.skip("needs Linux /proc to read the peak RSS")
    size = 24 * FILE_CHUNK
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        for i in range(size // (1 << 20)):
            f.write(random.Random(i).randbytes(1 << 20))
    plane = DataPlane(LocalBackend(tmp_path / "storage", fsync=False))
    try:
        clear_refs.write_text("5")  # the peak RSS starts again from the current RSS
        before = _status_kib("VmHWM")
        with plane.batch() as batch, source.open("rb", buffering=0) as src:
            batch.ingest_file(src, lambda _n: None)
        grown = _status_kib("VmHWM") - before
    finally:
        plane.close()
    assert grown < 8 * FILE_CHUNK // 1024, f"peak RSS grew by {grown} KiB"
