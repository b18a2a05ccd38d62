"""Upload staging in the bucket: a session is a chain of segment objects.

S3 cannot append, and a session must survive its replica (issue 18), so its
bytes live in the bucket as one object per acknowledged stretch, named by the
offset it starts at::

    <prefix>uploads/<id>/<start offset, 16 hex digits>

An append streams into one new segment through a multipart upload at the
segment's own key (memory: one ``PART_SIZE`` buffer); ``sync()`` and
``close()`` complete it, which is when S3 acknowledges it durable, and the
next bytes start a new segment. So every acknowledged offset is the end of a
segment, and truncating to it (``append`` after a cut-off request) is deleting
the segments that start at or after it. ``create`` writes an empty segment at
offset 0 so that an empty session differs from an absent one.

The staged size is where the chain that starts at 0 ends: a segment past a
gap (what a crash between deletions can leave) counts for nothing and is
deleted by the next append. A crash mid-segment leaves an open multipart
upload, invisible to the chain; the backend's ``sweep_staging`` aborts it
once it is older than the staging age, and ``discard`` aborts it at once.

``promote`` is HEAD-then-write like the backend's publishing: one segment is
copied server-side, a few small ones are joined in memory (at most
``PART_SIZE``) and put with ``If-None-Match``, and a large chain becomes one
multipart upload whose parts are server-side copies of the segments of
5 MiB or more (``UploadPartCopy``) and streamed copies of the rest.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from artifactstore.dataplane.backends.s3 import COPY_PART, PART_SIZE, S3Backend
from artifactstore.dataplane.backends.s3_client import s3_error
from artifactstore.dataplane.backends.s3_writes import PartUpload
from artifactstore.errors import StorageError

__all__ = ["MIN_PART", "UPLOADS", "S3Staging"]

#: Where sessions live under the backend's prefix (as ``uploads/`` in a local store).
UPLOADS = "uploads/"
#: S3's smallest multipart part (but the last): smaller segments are stream-copied.
MIN_PART = 5 << 20
_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_SEGMENT = re.compile(r"[0-9a-f]{16}")
#: Segment keys listed or deleted per request (S3's DeleteObjects limit).
_DELETE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class _Segment:
    start: int
    size: int
    key: str  # the whole S3 key

    @property
    def end(self) -> int:
        return self.start + self.size


def _chain(segments: list[_Segment]) -> list[_Segment]:
    """The segments that follow each other from offset 0 (``segments`` sorted by start)."""
    chain: list[_Segment] = []
    end = 0
    for seg in segments:
        if seg.start != end:
            break
        chain.append(seg)
        end = seg.end
    return chain


class _SegmentAppend:
    """Appends into one segment at a time; each ``sync`` ends a segment."""

    def __init__(self, staging: S3Staging, upload_id: str, offset: int) -> None:
        self._s = staging
        self._id = upload_id
        self._start = offset  # where the segment being written starts: the durable size
        self._buf = bytearray()
        self._upload = self._segment()
        self._closed = False
        self._failed = False

    def _segment(self) -> PartUpload:
        """The segment that starts at ``_start``, sent in parts once it outgrows one."""
        key = self._s.segment_key(self._id, self._start)
        return PartUpload(self._s.backend, key, f"staging upload {self._id} failed")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self._failed:
            raise StorageError("append after close" if self._closed else "append after a failure")
        self._buf += data  # a copy: the caller reuses its buffer
        try:
            self._upload.send_full(self._buf)
        except StorageError:
            self._fail()
            raise

    def _fail(self) -> None:
        """Drop the unfinished segment: its bytes were never acknowledged."""
        self._failed = True
        self._buf = bytearray()
        self._upload.abort()

    def _finish(self) -> int:
        """Complete the segment being written (durable once S3 answers); the staged size."""
        if self._failed:
            raise StorageError(f"staging upload {self._id} failed; its last bytes are lost")
        upload = self._upload
        size = upload.sent + len(self._buf)
        if size == 0:
            return self._start
        b = self._s.backend
        try:
            if upload.upload_id is None:
                b.client.put_object(Bucket=b.bucket, Key=upload.key, Body=bytes(self._buf))
            else:
                if self._buf:
                    upload.send(self._buf)
                upload.complete()
        except StorageError:
            self._fail()
            raise
        except (ClientError, BotoCoreError) as exc:
            self._fail()
            raise s3_error(f"staging upload {self._id} failed", exc) from exc
        self._start += size
        self._buf = bytearray()
        self._upload = self._segment()
        return self._start

    def sync(self) -> int:
        if self._closed:
            raise StorageError("sync after close")
        return self._finish()

    def close(self) -> int:
        if self._closed:
            raise StorageError("close after close")
        self._closed = True
        return self._finish()

    def abort(self) -> int:
        """Keep what arrived; after a failed write, only what was acknowledged before it."""
        if self._failed:
            self._closed = True
            return self._start
        return self.close()


class S3Staging:
    """The :class:`~artifactstore.dataplane.staging.Staging` capability of an S3Backend."""

    def __init__(self, backend: S3Backend) -> None:
        self.backend = backend
        self._root = backend.prefix + UPLOADS

    def _dir(self, upload_id: str) -> str:
        if not _ID.fullmatch(upload_id):
            raise StorageError(f"invalid upload id {upload_id[:80]!r}")
        return f"{self._root}{upload_id}/"

    def segment_key(self, upload_id: str, start: int) -> str:
        """The S3 key of the segment of ``upload_id`` that starts at ``start``."""
        return f"{self._dir(upload_id)}{start:016x}"

    def _segments(self, upload_id: str) -> builtins.list[_Segment]:
        directory = self._dir(upload_id)
        b = self.backend
        found: builtins.list[_Segment] = []
        try:
            pages = b.client.get_paginator("list_objects_v2").paginate(
                Bucket=b.bucket, Prefix=directory
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(directory) :]
                    if _SEGMENT.fullmatch(name):
                        found.append(_Segment(int(name, 16), int(obj["Size"]), obj["Key"]))
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(f"listing upload {upload_id} failed", exc) from exc
        return sorted(found, key=lambda s: s.start)

    def _present(self, upload_id: str) -> builtins.list[_Segment]:
        segments = self._segments(upload_id)
        if not segments:
            raise StorageError(f"upload {upload_id} has no staged bytes")
        return segments

    def create(self, upload_id: str) -> None:
        try:
            self.backend._put_if_absent(self.segment_key(upload_id, 0), b"")
        except StorageError as exc:
            raise StorageError(f"cannot create upload staging: {exc}") from exc

    def append(self, upload_id: str, offset: int) -> _SegmentAppend:
        segments = self._present(upload_id)
        chain = _chain(segments)
        size = chain[-1].end if chain else 0
        if size < offset:
            raise StorageError(
                f"upload {upload_id} holds {size} bytes, fewer than its offset {offset}"
            )
        if offset != 0 and offset not in {seg.end for seg in chain}:
            raise StorageError(
                f"upload {upload_id}'s offset {offset} falls inside a staged segment; "
                "acknowledged offsets end segments"
            )
        # Unacknowledged bytes of a cut-off request: the last segments first, so a
        # crash between deletions leaves a chain that still starts at 0.
        for seg in reversed(segments):
            if seg.start > offset or (seg.start == offset and offset != 0):
                self.backend._delete_raw(seg.key)
        first = segments[0]
        if offset == 0 and first.start == 0 and first.size:
            self.backend._put_staging(first.key, b"")  # truncate, and still present
        return _SegmentAppend(self, upload_id, offset)

    def staged_size(self, upload_id: str) -> int | None:
        segments = self._segments(upload_id)
        if not segments:
            return None
        chain = _chain(segments)
        return chain[-1].end if chain else 0

    def read_staged(self, upload_id: str) -> Iterator[bytes]:
        chain = _chain(self._present(upload_id))
        return self._read(chain)

    def _read(self, chain: builtins.list[_Segment]) -> Iterator[bytes]:
        for seg in chain:
            if seg.size:
                yield from self._span(seg, 0, seg.size)

    def _span(self, seg: _Segment, start: int, length: int) -> Iterator[bytes]:
        return self.backend.read(seg.key[len(self.backend.prefix) :], start, length)

    def promote(self, upload_id: str, key: str) -> None:
        b = self.backend
        dest = b._object(key)
        if b._head(dest) is not None:  # same key, same bytes
            self.discard(upload_id)
            return
        chain = [seg for seg in _chain(self._present(upload_id)) if seg.size]
        total = sum(seg.size for seg in chain)
        if len(chain) == 1:
            b._copy_if_absent(chain[0].key, dest, total)
        elif total <= PART_SIZE:
            b._put_if_absent(dest, b"".join(self._read(chain)))
        else:
            self._compose(chain, dest)
        self.discard(upload_id)

    def _compose(self, chain: builtins.list[_Segment], dest: str) -> None:
        """One multipart upload of the chain at ``dest``; every part but the last >= 5 MiB."""
        b = self.backend
        upload = PartUpload(b, dest, f"publishing {dest} failed")

        def copy(seg: _Segment, start: int) -> None:
            """Server-side copies of ``seg`` from ``start``, in pieces of 5 MiB or more."""
            length = seg.size - start
            pieces = -(-length // COPY_PART)
            step = -(-length // pieces)
            for first in range(start, seg.size, step):
                upload.copy(seg.key, first, min(seg.size, first + step) - 1)

        buf = bytearray()
        try:
            for seg in chain:
                start = 0
                if buf:  # top the pending part up from this segment
                    start = min(seg.size, PART_SIZE - len(buf))
                    for chunk in self._span(seg, 0, start):
                        buf += chunk
                    upload.send_full(buf)
                if start == seg.size:
                    continue
                if not buf and seg.size - start >= MIN_PART:
                    copy(seg, start)
                    continue
                for chunk in self._span(seg, start, seg.size - start):
                    buf += chunk
                    upload.send_full(buf)
            if buf:
                upload.send(buf)
            upload.complete()
        except (ClientError, BotoCoreError) as exc:
            upload.abort()
            raise s3_error(f"publishing {dest} failed", exc) from exc
        except BaseException:
            upload.abort()
            raise

    def discard(self, upload_id: str) -> None:
        b = self.backend
        directory = self._dir(upload_id)
        keys = [seg.key for seg in self._segments(upload_id)]
        try:
            for i in range(0, len(keys), _DELETE_BATCH):
                b.client.delete_objects(
                    Bucket=b.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys[i : i + _DELETE_BATCH]]},
                )
            pages = b.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=b.bucket, Prefix=directory
            )
            for page in pages:
                for up in page.get("Uploads", []):
                    b._abort(up["Key"], up["UploadId"])
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(f"discarding upload {upload_id} failed", exc) from exc

    def staged_ids(self) -> Iterator[str]:
        b = self.backend
        try:
            pages = b.client.get_paginator("list_objects_v2").paginate(
                Bucket=b.bucket, Prefix=self._root, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(self._root) :].rstrip("/")
                    if _ID.fullmatch(name):
                        yield name
        except (ClientError, BotoCoreError) as exc:
            raise s3_error("listing staged uploads failed", exc) from exc
