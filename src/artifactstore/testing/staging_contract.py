"""The conformance suite every upload staging passes (the ``Staging`` protocol).

:class:`StagingContract` pins what :mod:`artifactstore.dataplane.staging`
promises and what ``services/uploads.py`` relies on: an empty session differs
from an absent one, appends resume at the acknowledged offset and discard what
lies beyond it, an offset past the staged bytes is refused, ``sync`` makes a
checkpoint and goes on, ``promote`` makes the key atomically (and keeps a key
that already holds the bytes), ``discard`` is idempotent, bad ids are refused.
A test module provides one fixture, ``staging_target``, and subclasses::

    @pytest.fixture(params=["local", "s3"])
    def staging_target(request: pytest.FixtureRequest, tmp_path: Path) -> StagingTarget:
        return local_staging_target(tmp_path / "storage")

    class TestStagingContract(StagingContract):
        pass

The ``target`` fixture fails a test that leaves a staged session, a published
object or a backend staging entry (an open multipart upload) behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.dataplane.backends.local_staging import LocalStaging
from artifactstore.dataplane.backends.s3 import S3Backend
from artifactstore.dataplane.backends.s3_staging import S3Staging
from artifactstore.dataplane.backends.s3_writes import PART_SIZE, PARTS_IN_FLIGHT
from artifactstore.dataplane.protocol import Backend
from artifactstore.dataplane.staging import Staging
from artifactstore.errors import StorageError
from artifactstore.testing.targets import (
    ContractTarget,
    content_key,
    get,
    local_target,
    payload,
    put,
    s3_target,
    traced_peak,
)

__all__ = [
    "StagingContract",
    "StagingTarget",
    "local_staging_target",
    "s3_staging_target",
]

MiB = 1 << 20
UID = "upload-0001"


@dataclass(frozen=True, slots=True)
class StagingTarget:
    """A staging under test and the backend it promotes into (with its staging view).

    ``append_memory``: the most one append may hold at once, as the staging
    documents it (S3: the parts in flight and the one filling).
    """

    staging: Staging
    store: ContractTarget
    append_memory: int = 24 * MiB

    @property
    def backend(self) -> Backend:
        return self.store.backend


def local_staging_target(root: Path) -> StagingTarget:
    """A :class:`LocalStaging` over a fresh :class:`LocalBackend` under ``root``."""
    store = local_target(root)
    assert isinstance(store.backend, LocalBackend)
    return StagingTarget(LocalStaging(store.backend, root), store)


def s3_staging_target(bucket: str, endpoint: str, prefix: str) -> StagingTarget:
    """An :class:`S3Staging` over an :class:`S3Backend` under a fresh ``prefix``."""
    store = s3_target(bucket, endpoint, prefix)
    assert isinstance(store.backend, S3Backend)
    # Parts in flight, the one filling, and the copy being handed over.
    return StagingTarget(S3Staging(store.backend), store, (PARTS_IN_FLIGHT + 3) * PART_SIZE)


def staged(target: StagingTarget, upload_id: str = UID) -> bytes:
    return b"".join(target.staging.read_staged(upload_id))


def append(target: StagingTarget, offset: int, data: bytes, upload_id: str = UID) -> int:
    """Append ``data`` at ``offset`` in 1 MiB writes; the size ``close`` acknowledges."""
    sink = target.staging.append(upload_id, offset)
    view = memoryview(data)
    for start in range(0, len(data), MiB):
        sink.write(view[start : start + MiB])
    return sink.close()


class StagingContract:
    """The tests every staging passes; subclass it and provide ``staging_target``."""

    @pytest.fixture
    def target(self, staging_target: StagingTarget) -> Iterator[StagingTarget]:
        t = staging_target
        yield t
        ids = sorted(t.staging.staged_ids())
        for upload_id in ids:
            t.staging.discard(upload_id)
        published = sorted(t.backend.list())
        for key in published:
            t.backend.delete(key)
        leftovers = t.store.staging()
        if ids or published or leftovers:
            pytest.fail(
                f"test left staging behind: sessions {ids[:5]}, objects {published[:5]}, "
                f"staging entries {leftovers[:5]}"
            )

    # --- sessions ---------------------------------------------------------------------

    def test_created_session_is_empty_not_absent(self, target: StagingTarget) -> None:
        s = target.staging
        assert s.staged_size(UID) is None
        s.create(UID)
        s.create(UID)  # idempotent
        assert s.staged_size(UID) == 0
        assert staged(target) == b""
        assert list(s.staged_ids()) == [UID]
        s.discard(UID)
        assert s.staged_size(UID) is None
        assert list(s.staged_ids()) == []

    def test_create_keeps_staged_bytes(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        append(target, 0, b"kept")
        target.staging.create(UID)
        assert staged(target) == b"kept"
        target.staging.discard(UID)

    def test_absent_session_is_refused(self, target: StagingTarget) -> None:
        s = target.staging
        with pytest.raises(StorageError, match="no staged bytes"):
            s.append(UID, 0)
        with pytest.raises(StorageError):
            b"".join(s.read_staged(UID))
        with pytest.raises(StorageError):
            s.promote(UID, "contract/absent")
        s.discard(UID)  # idempotent on an absent session
        assert target.backend.stat("contract/absent") is None

    def test_ids_list_every_session(self, target: StagingTarget) -> None:
        ids = [f"session-{i:04d}" for i in range(5)]
        for upload_id in ids:
            target.staging.create(upload_id)
        append(target, 0, b"x" * 10, ids[2])
        assert sorted(target.staging.staged_ids()) == ids
        for upload_id in ids:
            target.staging.discard(upload_id)

    @pytest.mark.parametrize(
        "bad",
        ["", "short", "../../etc", "a/b-cdefgh", "x" * 65, "sp ace-id", "dot.dot.id", "\0" * 9],
    )
    def test_bad_ids_are_refused(self, target: StagingTarget, bad: str) -> None:
        s = target.staging
        with pytest.raises(StorageError, match="invalid upload id"):
            s.create(bad)
        with pytest.raises(StorageError, match="invalid upload id"):
            s.append(bad, 0)
        with pytest.raises(StorageError, match="invalid upload id"):
            s.staged_size(bad)
        with pytest.raises(StorageError, match="invalid upload id"):
            b"".join(s.read_staged(bad))
        with pytest.raises(StorageError, match="invalid upload id"):
            s.promote(bad, "contract/bad")
        with pytest.raises(StorageError, match="invalid upload id"):
            s.discard(bad)

    # --- appending --------------------------------------------------------------------

    def test_append_and_resume_at_offset(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        first, second = payload(1, 300_000), payload(2, 200_000)
        assert append(target, 0, first) == len(first)
        assert target.staging.staged_size(UID) == len(first)
        assert append(target, len(first), second) == len(first) + len(second)
        assert staged(target) == first + second
        target.staging.discard(UID)

    def test_sync_is_a_checkpoint_that_goes_on(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        sink = target.staging.append(UID, 0)
        sink.write(b"a" * 1000)
        assert sink.sync() == 1000
        assert target.staging.staged_size(UID) == 1000  # durable and visible
        assert sink.sync() == 1000  # nothing new: still a checkpoint
        sink.write(b"b" * 500)
        assert sink.close() == 1500
        assert staged(target) == b"a" * 1000 + b"b" * 500
        with pytest.raises(StorageError):
            sink.write(b"after close")
        target.staging.discard(UID)

    def test_resume_at_a_checkpoint(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        sink = target.staging.append(UID, 0)
        sink.write(b"a" * 1000)
        sink.sync()
        sink.write(b"b" * 1000)
        sink.sync()
        sink.write(b"not acknowledged")
        sink.abort()  # a request cut off; its last checkpoint was at 2000
        assert append(target, 2000, b"c" * 10) == 2010
        assert staged(target) == b"a" * 1000 + b"b" * 1000 + b"c" * 10
        assert append(target, 1000, b"d") == 1001
        assert staged(target) == b"a" * 1000 + b"d"
        target.staging.discard(UID)

    def test_append_discards_bytes_beyond_offset(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        append(target, 0, b"acknowledged")
        append(target, 12, b"-never acknowledged")  # the offset stayed at 12
        assert append(target, 12, b"+resumed") == 20
        assert staged(target) == b"acknowledged+resumed"
        target.staging.discard(UID)

    def test_bytes_past_a_resumed_offset_never_come_back(self, target: StagingTarget) -> None:
        """Discarded bytes stay discarded when later appends grow the session past them."""
        target.staging.create(UID)
        sink = target.staging.append(UID, 0)
        for fill in (b"a", b"b", b"x"):
            sink.write(fill * 1000)
            sink.sync()
        assert sink.close() == 3000  # the offset recorded stayed at 1000
        assert append(target, 1000, b"c" * 500) == 1500
        assert append(target, 1500, b"d" * 500) == 2000
        assert target.staging.staged_size(UID) == 2000
        assert append(target, 2000, b"e") == 2001
        assert staged(target) == b"a" * 1000 + b"c" * 500 + b"d" * 500 + b"e"
        target.staging.discard(UID)

    def test_append_at_zero_truncates_everything(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        append(target, 0, b"first request")
        append(target, 13, b", second")
        sink = target.staging.append(UID, 0)
        assert target.staging.staged_size(UID) == 0  # still present, and empty
        assert sink.close() == 0
        assert staged(target) == b""
        assert append(target, 0, b"again") == 5
        assert staged(target) == b"again"
        target.staging.discard(UID)

    def test_offset_past_the_staged_bytes_is_refused(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        append(target, 0, b"12345")
        with pytest.raises(StorageError, match="fewer than its offset"):
            target.staging.append(UID, 6)
        assert staged(target) == b"12345"  # the refusal changed nothing
        target.staging.discard(UID)

    def test_abort_keeps_what_arrived(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        sink = target.staging.append(UID, 0)
        sink.write(b"partial body")
        assert sink.abort() == 12
        assert staged(target) == b"partial body"
        target.staging.discard(UID)

    def test_large_append_streams_in_bounded_memory(self, target: StagingTarget) -> None:
        """Memory stays within the staging's own bound whatever the size: no
        whole-object buffering (the body is at least twice the bound)."""
        size = max(40 * MiB, 2 * target.append_memory)
        chunk = payload(3, MiB)
        target.staging.create(UID)
        with traced_peak() as peak:
            sink = target.staging.append(UID, 0)
            for i in range(size // MiB):
                sink.write(chunk)
                if i == 20:
                    sink.sync()
            assert sink.close() == size
        assert peak.size < target.append_memory, (
            f"appending {size} bytes allocated {peak.size} bytes at once"
        )
        expected = hashlib.sha256(chunk * (size // MiB)).hexdigest()
        actual = hashlib.sha256()
        for part in target.staging.read_staged(UID):
            actual.update(part)
        assert actual.hexdigest() == expected
        target.staging.discard(UID)

    # --- promotion ----------------------------------------------------------------------

    @pytest.mark.parametrize(
        "pieces",
        [
            [],
            [7],
            [1000, 2000, 3000],
            [9 * MiB],
            [6 * MiB, 100, 6 * MiB, 3 * MiB, 2 * MiB, 9 * MiB],
        ],
        ids=["empty", "one-small", "small-pieces", "one-large", "mixed-large"],
    )
    def test_promote_makes_the_key(self, target: StagingTarget, pieces: list[int]) -> None:
        target.staging.create(UID)
        data = b""
        for i, size in enumerate(pieces):
            piece = payload(10 + i, size)
            assert append(target, len(data), piece) == len(data) + size
            data += piece
        key = content_key(data)
        target.staging.promote(UID, key)
        assert target.backend.stat(key) == len(data)
        assert hashlib.sha256(get(target.backend, key)).digest() == hashlib.sha256(data).digest()
        assert target.staging.staged_size(UID) is None
        assert list(target.staging.staged_ids()) == []
        target.backend.delete(key)

    def test_promote_onto_existing_key_keeps_it(self, target: StagingTarget) -> None:
        data = b"the first copy"
        key = content_key(data)
        put(target.backend, key, data)
        target.staging.create(UID)
        # A later copy, in two segments past a part (the multipart path), and different
        # bytes only so that the test sees which copy won.
        append(target, 0, payload(4, 6 * MiB))
        append(target, 6 * MiB, payload(5, 3 * MiB))
        target.staging.promote(UID, key)
        assert get(target.backend, key) == data
        assert target.staging.staged_size(UID) is None
        target.backend.delete(key)

    def test_promote_to_a_bad_key_is_refused(self, target: StagingTarget) -> None:
        target.staging.create(UID)
        append(target, 0, b"bytes")
        for key in ("../escape", "tmp/staging", "a//b"):
            with pytest.raises(StorageError):
                target.staging.promote(UID, key)
        assert staged(target) == b"bytes"
        target.staging.discard(UID)
