"""Writing to S3: a batch's writers, and what each leaves for the batch to publish.

A writer buffers one part (``PART_SIZE``). An object that outgrows it becomes
a multipart upload to a staging key under ``tmp/`` whose parts go up
concurrently: up to ``PARTS_IN_FLIGHT`` per upload on the backend's part
threads (as boto3's ``upload_file`` sends 10), so a writer holds at most
``(PARTS_IN_FLIGHT + 1) * PART_SIZE`` bytes and a slow part no longer stalls
the stream feeding it. An incomplete multipart upload is invisible, so
concurrency changes nothing for crash safety: nothing is visible before
``complete``, which waits for every part first. The final key is a content
address, usually known only at ``Writer.commit``, and S3 cannot rename; but
when the caller names it up front (``WriteBatch.writer(key)``: a client that
sent the digest) the upload goes to that key itself and the batch completes
it there (``If-None-Match: *``, aborted if the key exists), which spares the
server-side copy of every byte. A smaller object stays in memory until the batch commits, up
to ``BATCH_MEMORY`` per batch; past that it is written to a ``tmp/`` staging
key too, so a batch's memory stays bounded. ``WriteBatch.commit()`` hands
each finished object to the backend's publishing (``S3Backend._publish``),
up to ``_PUBLISHERS`` at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from artifactstore.dataplane.backends.s3_client import s3_error
from artifactstore.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from artifactstore.dataplane.backends.s3 import S3Backend

__all__ = [
    "BATCH_MEMORY",
    "PARTS_IN_FLIGHT",
    "PART_SIZE",
    "STAGING",
    "PartUpload",
    "S3Batch",
    "S3Writer",
    "Staged",
]

#: One multipart part, and the most a writer buffers. S3 wants >= 5 MiB parts
#: (but the last) and at most 10,000 of them: 8 MiB parts carry 78 GiB.
PART_SIZE = 8 << 20
#: Parts of one multipart upload sent at once. A part is one request whose
#: latency (the server hashing and storing 8 MiB) would otherwise stall the
#: stream; a few in flight keep the link busy. Memory per upload: this many parts.
PARTS_IN_FLIGHT = 4
#: Small objects a batch keeps in memory until it commits; past it they go to ``tmp/``.
BATCH_MEMORY = 64 << 20
#: Objects a batch publishes at once: S3 latency, not bandwidth, bounds small objects.
_PUBLISHERS = 16
#: Where in-flight writes live under the backend's prefix; not addressable.
STAGING = "tmp/"


class PartUpload:
    """A multipart upload to ``key``, created with its first part (or by ``begin``).

    Shared by the batch writers, the upload staging's segments and large
    copies. ``send`` and ``copy`` hand a part to the backend's part threads
    and return once fewer than ``PARTS_IN_FLIGHT`` are in flight; a part's
    failure is raised by a later ``send``, ``copy``, ``finished`` or
    ``complete``. Part numbers are given in call order, so the object's bytes
    are in the order they were handed over whatever order the parts finish in.
    One thread drives an upload.
    """

    def __init__(self, backend: S3Backend, key: str, failure: str) -> None:
        self._b = backend
        self.key = key
        self._failure = failure  # what a StorageError from here says first
        self.upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []  # acknowledged
        self._flying: set[Future[CompletedPartTypeDef]] = set()
        self._numbers = 0  # part numbers given out
        self.sent = 0  # bytes handed over as parts (acknowledged or in flight)

    def begin(self) -> str:
        """The upload's id, created now unless it exists."""
        if self.upload_id is None:
            b = self._b
            try:
                created = b.client.create_multipart_upload(Bucket=b.bucket, Key=self.key)
            except (ClientError, BotoCoreError) as exc:
                raise s3_error(self._failure, exc) from exc
            self.upload_id = created["UploadId"]
        return self.upload_id

    def _submit(self, call: Callable[[str, int], CompletedPartTypeDef]) -> None:
        """Run ``call(upload_id, part_number)`` on a part thread, once there is room."""
        upload_id = self.begin()
        self._reap(PARTS_IN_FLIGHT - 1)
        self._numbers += 1
        self._flying.add(self._b.part_pool.submit(call, upload_id, self._numbers))

    def _reap(self, most: int) -> None:
        """Wait until at most ``most`` parts are in flight; raise the first failure."""
        failed: BaseException | None = None
        while self._flying and (len(self._flying) > most or failed is not None):
            done, self._flying = wait(self._flying, return_when=FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                if exc is None:
                    self._parts.append(future.result())
                elif failed is None:
                    failed = exc
            if failed is not None:
                break
        if failed is not None:
            raise failed

    def send(self, body: bytes | bytearray | memoryview) -> None:
        """Upload ``body`` (copied now: the caller may reuse it) as the next part."""
        data = bytes(body)
        b = self._b

        def call(upload_id: str, number: int) -> CompletedPartTypeDef:
            try:
                sent = b.client.upload_part(
                    Bucket=b.bucket, Key=self.key, UploadId=upload_id, PartNumber=number, Body=data
                )
            except (ClientError, BotoCoreError) as exc:
                raise s3_error(self._failure, exc) from exc
            return {"ETag": sent["ETag"], "PartNumber": number}

        self._submit(call)
        self.sent += len(data)

    def copy(self, source_key: str, first: int, last: int) -> None:
        """Copy bytes ``first`` to ``last`` (inclusive) of ``source_key`` in the bucket,
        server-side, as the next part."""
        b = self._b

        def call(upload_id: str, number: int) -> CompletedPartTypeDef:
            try:
                copied = b.client.upload_part_copy(
                    Bucket=b.bucket,
                    Key=self.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": b.bucket, "Key": source_key},
                    CopySourceRange=f"bytes={first}-{last}",
                )
            except (ClientError, BotoCoreError) as exc:
                raise s3_error(self._failure, exc) from exc
            return {"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": number}

        self._submit(call)

    def send_full(self, buf: bytearray) -> None:
        """Send the whole ``PART_SIZE`` parts at the front of ``buf``, and drop them from it."""
        while len(buf) >= PART_SIZE:
            self.send(memoryview(buf)[:PART_SIZE])
            del buf[:PART_SIZE]

    def finished(self) -> list[CompletedPartTypeDef]:
        """Wait for every part; the parts in order (raises the first failure)."""
        self._reap(0)
        return sorted(self._parts, key=lambda p: p["PartNumber"])

    def complete(self) -> None:
        """Complete the upload: ``key`` holds the parts' bytes (the caller aborts on failure)."""
        b = self._b
        parts = self.finished()
        try:
            b.client.complete_multipart_upload(
                Bucket=b.bucket,
                Key=self.key,
                UploadId=self.begin(),
                MultipartUpload={"Parts": parts},
            )
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(self._failure, exc) from exc

    def abort(self) -> None:
        """Abort the upload, if one was created (best effort: the sweep finds what stays).

        Parts in flight are waited for first: one landing after the abort
        could otherwise leave its bytes behind on some servers.
        """
        flying, self._flying = self._flying, set()
        wait(flying)
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            self._b._abort(self.key, upload_id)


class S3Writer:
    def __init__(self, batch: S3Batch, key: str | None = None) -> None:
        self._batch = batch
        self._buf: bytearray | None = bytearray()
        self._key = key
        # A small object spilled from memory goes here, never to its key: a
        # plain PUT there would publish it before the batch commits.
        self._spill = batch._b._full(f"{STAGING}{secrets.token_hex(12)}.part")
        # Unless the key is known now, a large object uploads to a staging key
        # (S3 cannot rename), copied to its key at publish.
        target = self._spill if key is None else batch._b._object(key)
        self._upload = PartUpload(batch._b, target, "uploading a part failed")

    def write(self, data: bytes | memoryview) -> None:
        if self._buf is None:
            raise StorageError("write after commit or cancel")
        self._buf += data  # a copy: the caller reuses its buffer
        try:
            self._upload.send_full(self._buf)
        except StorageError:
            self.cancel()
            raise

    def commit(self, key: str) -> None:
        if self._buf is None:
            raise StorageError("commit after commit or cancel")
        if self._key is not None and key != self._key:
            self.cancel()
            raise StorageError(f"object begun for {self._key} committed as {key}")
        self._batch._b._object(key)  # refuse a bad key now, not at batch commit
        buf, self._buf = self._buf, None
        upload = self._upload
        if upload.upload_id is None:
            self._batch._stage_small(key, buf, self._spill)
            return
        try:
            if buf:
                upload.send(buf)
            parts = upload.finished()
        except StorageError:
            self.cancel()
            raise
        staged = Staged(
            key, b"", upload.key, upload.upload_id, parts, upload.sent, self._key is not None
        )
        self._batch._staged.append(staged)
        upload.upload_id = None  # the batch owns it now

    def cancel(self) -> None:
        self._buf = None
        self._upload.abort()


@dataclass(slots=True)
class Staged:
    """A finished object waiting for its batch: bytes in memory, or an upload to complete."""

    key: str
    data: bytes
    upload_key: str | None
    upload_id: str | None
    parts: list[CompletedPartTypeDef]
    size: int
    #: The upload is at the object's own key: completing it publishes, no copy.
    direct: bool = False


class S3Batch:
    def __init__(self, backend: S3Backend) -> None:
        self._b = backend
        self._staged: list[Staged] = []
        self._open: list[S3Writer] = []
        self._held = 0  # bytes of small objects kept in memory

    def _stage_small(self, key: str, data: bytearray, spill_key: str) -> None:
        """Keep a small object in memory, or past ``BATCH_MEMORY`` a batch holds, in ``tmp/``."""
        if self._held + len(data) <= BATCH_MEMORY:
            self._held += len(data)
            self._staged.append(Staged(key, bytes(data), None, None, [], len(data)))
            return
        self._b._put_staging(spill_key, bytes(data))
        self._staged.append(Staged(key, b"", spill_key, None, [], len(data)))

    def writer(self, key: str | None = None) -> S3Writer:
        w = S3Writer(self, key)
        self._open.append(w)
        return w

    def commit(self) -> None:
        """Publish every staged object, up to ``_PUBLISHERS`` at once (each is one request).

        Every object is attempted; the first failure is raised once all have
        finished, and each failed object has already cleaned up its upload.
        """
        staged, self._staged = self._staged, []
        self._open = []
        self._held = 0
        if len(staged) <= 1:
            for item in staged:
                self._b._publish(item)
            return
        with ThreadPoolExecutor(min(_PUBLISHERS, len(staged))) as pool:
            done = [pool.submit(self._b._publish, item) for item in staged]
        for future in done:
            future.result()

    def cancel(self) -> None:
        for w in self._open:
            w.cancel()
        self._open = []
        staged, self._staged = self._staged, []
        for item in staged:
            self._b._discard(item)
