"""Writing to S3: a batch's writers, and what each leaves for the batch to publish.

A writer keeps at most one part (``PART_SIZE``) in memory. An object that
outgrows it becomes a multipart upload to a staging key under ``tmp/`` (the
final key is a content address, known only at ``Writer.commit``, and S3
cannot rename). A smaller object stays in memory until the batch commits, up
to ``BATCH_MEMORY`` per batch; past that it is written to a ``tmp/`` staging
key too, so a batch's memory stays bounded. ``WriteBatch.commit()`` hands
each finished object to the backend's publishing (``S3Backend._publish``),
up to ``_PUBLISHERS`` at once.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from artifactstore.dataplane.backends.s3_client import s3_error
from artifactstore.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from artifactstore.dataplane.backends.s3 import S3Backend

__all__ = ["BATCH_MEMORY", "PART_SIZE", "STAGING", "S3Batch", "S3Writer", "Staged"]

#: One multipart part, and the most a writer buffers. S3 wants >= 5 MiB parts
#: (but the last) and at most 10,000 of them: 8 MiB parts carry 78 GiB.
PART_SIZE = 8 << 20
#: Small objects a batch keeps in memory until it commits; past it they go to ``tmp/``.
BATCH_MEMORY = 64 << 20
#: Objects a batch publishes at once: S3 latency, not bandwidth, bounds small objects.
_PUBLISHERS = 16
#: Where in-flight writes live under the backend's prefix; not addressable.
STAGING = "tmp/"


class S3Writer:
    def __init__(self, batch: S3Batch) -> None:
        self._batch = batch
        self._buf: bytearray | None = bytearray()
        self._upload_id: str | None = None
        # The key is not known before commit(), and S3 cannot rename: a large
        # object uploads to a staging key, copied to its key at publish.
        self._upload_key = batch._b._full(f"{STAGING}{secrets.token_hex(12)}.part")
        self._parts: list[CompletedPartTypeDef] = []
        self._size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._buf is None:
            raise StorageError("write after commit or cancel")
        self._buf += data  # a copy: the caller reuses its buffer
        self._size += len(data)
        try:
            while len(self._buf) >= PART_SIZE:
                self._send_part(memoryview(self._buf)[:PART_SIZE])
                del self._buf[:PART_SIZE]
        except StorageError:
            self.cancel()
            raise

    def _send_part(self, body: bytes | bytearray | memoryview) -> None:
        b = self._batch._b
        try:
            if self._upload_id is None:
                created = b._client.create_multipart_upload(Bucket=b._bucket, Key=self._upload_key)
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            sent = b._client.upload_part(
                Bucket=b._bucket,
                Key=self._upload_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(body),
            )
            self._parts.append({"ETag": sent["ETag"], "PartNumber": number})
        except (ClientError, BotoCoreError) as exc:
            raise s3_error("uploading a part failed", exc) from exc

    def commit(self, key: str) -> None:
        if self._buf is None:
            raise StorageError("commit after commit or cancel")
        self._batch._b._object(key)  # refuse a bad key now, not at batch commit
        buf, self._buf = self._buf, None
        if self._upload_id is None:
            self._batch._stage_small(key, buf, self._upload_key)
            return
        try:
            if buf:
                self._buf = buf  # let cancel() see the upload if the last part fails
                self._send_part(buf)
                self._buf = None
        except StorageError:
            self.cancel()
            raise
        self._batch._staged.append(
            Staged(key, b"", self._upload_key, self._upload_id, self._parts, self._size)
        )
        self._upload_id = None  # the batch owns it now

    def cancel(self) -> None:
        self._buf = None
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._batch._b._abort(self._upload_key, upload_id)


@dataclass(slots=True)
class Staged:
    """A finished object waiting for its batch: bytes in memory, or an upload to complete."""

    key: str
    data: bytes
    upload_key: str | None
    upload_id: str | None
    parts: list[CompletedPartTypeDef]
    size: int


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

    def writer(self) -> S3Writer:
        w = S3Writer(self)
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
