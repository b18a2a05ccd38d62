"""S3 backend: objects under one bucket and key prefix of an S3-compatible store.

URL: ``s3://BUCKET/PREFIX?endpoint=URL&region=R``. Credentials come the
standard AWS way (``AWS_*`` variables, ``~/.aws`` files, instance roles); the
URL never holds a secret.

Two phases, as the protocol asks:

* A writer keeps at most one part (``PART_SIZE``) in memory. An object that
  outgrows it becomes a multipart upload to a staging key under ``tmp/``
  (the final key is a content address, known only at ``Writer.commit``, and
  S3 cannot rename). A smaller object stays in memory until the batch
  commits, up to ``BATCH_MEMORY`` per batch; past that it is written to a
  ``tmp/`` staging key too, so a batch's memory stays bounded.
* ``WriteBatch.commit()`` publishes a small object with one
  ``PUT ... If-None-Match: *``: the first copy of a key wins, atomically on the
  server, which is what content addresses need (a ``412`` means the key
  already holds the same bytes). A large (or spilled) object's upload is completed at its
  staging key, copied server-side to its key unless a ``HEAD`` finds it there
  (``CopyObject`` takes no ``If-None-Match``; two racing copies of one key
  write the same bytes), and the staging object deleted.

S3 acknowledges a write only once it is durable, so there is no flush step;
``fsync`` does not apply. Transient errors (throttling, 5xx, dropped
connections) are retried with backoff by botocore's ``standard`` retry mode;
a failure that survives the retries raises StorageError.

Keys under ``tmp/`` are reserved (as on the local backend): the health probe
writes there, and listing skips them.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from artifactstore.dataplane.protocol import BackendProperties
from artifactstore.errors import BlobNotFound, InvalidInput, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef

__all__ = ["BATCH_MEMORY", "COPY_LIMIT", "COPY_PART", "PART_SIZE", "S3Backend", "open_s3"]

#: One multipart part, and the most a writer buffers. S3 wants >= 5 MiB parts
#: (but the last) and at most 10,000 of them: 8 MiB parts carry 78 GiB.
PART_SIZE = 8 << 20
#: The largest object one CopyObject may copy; larger ones copy in parts of ``COPY_PART``.
COPY_LIMIT = 5 << 30
COPY_PART = 512 << 20
_READ_CHUNK = 1 << 20
#: Objects a batch publishes at once: S3 latency, not bandwidth, bounds small objects.
_PUBLISHERS = 16
#: Small objects a batch keeps in memory until it commits; past it they go to ``tmp/``.
BATCH_MEMORY = 64 << 20
_STAGING = "tmp/"
_ABSENT = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS = frozenset({"412", "PreconditionFailed"})
_PAST_END = frozenset({"416", "InvalidRange"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error(what: str, exc: Exception) -> StorageError:
    """The library error for a failed S3 call (after botocore's retries)."""
    return StorageError(f"{what}: {exc}")


class _S3Writer:
    def __init__(self, batch: _S3Batch) -> None:
        self._batch = batch
        self._buf: bytearray | None = bytearray()
        self._upload_id: str | None = None
        # The key is not known before commit(), and S3 cannot rename: a large
        # object uploads to a staging key, copied to its key at publish.
        self._upload_key = batch._b._full(f"{_STAGING}{secrets.token_hex(12)}.part")
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
            raise _error("uploading a part failed", exc) from exc

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
            _Staged(key, b"", self._upload_key, self._upload_id, self._parts, self._size)
        )
        self._upload_id = None  # the batch owns it now

    def cancel(self) -> None:
        self._buf = None
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._batch._b._abort(self._upload_key, upload_id)


@dataclass(slots=True)
class _Staged:
    """A finished object waiting for its batch: bytes in memory, or an upload to complete."""

    key: str
    data: bytes
    upload_key: str | None
    upload_id: str | None
    parts: list[CompletedPartTypeDef]
    size: int


class _S3Batch:
    def __init__(self, backend: S3Backend) -> None:
        self._b = backend
        self._staged: list[_Staged] = []
        self._open: list[_S3Writer] = []
        self._held = 0  # bytes of small objects kept in memory

    def _stage_small(self, key: str, data: bytearray, spill_key: str) -> None:
        """Keep a small object in memory, or past ``BATCH_MEMORY`` a batch holds, in ``tmp/``."""
        if self._held + len(data) <= BATCH_MEMORY:
            self._held += len(data)
            self._staged.append(_Staged(key, bytes(data), None, None, [], len(data)))
            return
        self._b._put_staging(spill_key, bytes(data))
        self._staged.append(_Staged(key, b"", spill_key, None, [], len(data)))

    def writer(self) -> _S3Writer:
        w = _S3Writer(self)
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


class S3Backend:
    """Objects in an S3 bucket; see the module docstring for the write protocol."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        name: str = "s3",
    ) -> None:
        if not bucket:
            raise InvalidInput("an s3:// URL names a bucket: s3://BUCKET/PREFIX")
        self._bucket = bucket
        self._endpoint = (endpoint or "").rstrip("/")
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
            connect_timeout=10,
            read_timeout=60,
        )
        try:
            self._client: S3Client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=region, config=config
            )
        except (BotoCoreError, ValueError) as exc:
            raise InvalidInput(f"cannot configure the S3 client: {exc}") from exc
        self._properties = BackendProperties(name=name)

    @property
    def properties(self) -> BackendProperties:
        return self._properties

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def endpoint(self) -> str:
        """The endpoint URL ("" for AWS's own): with the bucket, where the objects live."""
        return self._endpoint

    @property
    def prefix(self) -> str:
        """The key prefix every object of this backend lives under ("" or ending in "/")."""
        return self._prefix

    @property
    def client(self) -> S3Client:
        """The boto3 client (tests look at open uploads with it)."""
        return self._client

    def _full(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
            raise StorageError(f"invalid storage key {key[:200]!r}")
        return self._prefix + key

    def _object(self, key: str) -> str:
        """The S3 key of a published object; the staging area is not addressable."""
        if key.startswith(_STAGING) or key == _STAGING[:-1]:
            raise StorageError("the staging area is not addressable")
        return self._full(key)

    def batch(self) -> _S3Batch:
        return _S3Batch(self)

    # --- publishing ---------------------------------------------------------------

    def _publish(self, item: _Staged) -> None:
        dest = self._object(item.key)
        if item.upload_key is None:
            self._put_if_absent(dest, item.data)
            return
        if item.upload_id is not None:
            upload_id, item.upload_id = item.upload_id, None
            try:
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=item.upload_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": item.parts},
                )
            except (ClientError, BotoCoreError) as exc:
                self._abort(item.upload_key, upload_id)
                raise _error(f"completing the upload of {item.key} failed", exc) from exc
        try:
            self._copy_if_absent(item.upload_key, dest, item.size)
        finally:
            self._delete_raw(item.upload_key)

    def _put_staging(self, full_key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self._bucket, Key=full_key, Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise _error("writing a staging object failed", exc) from exc

    def _put_if_absent(self, dest: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self._bucket, Key=dest, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) in _EXISTS:
                return  # same key, same bytes: the first copy stays
            raise _error(f"writing {dest} failed", exc) from exc
        except BotoCoreError as exc:
            raise _error(f"writing {dest} failed", exc) from exc

    def _copy_if_absent(self, src: str, dest: str, size: int) -> None:
        """Server-side copy of a completed upload to its key, unless the key exists.

        CopyObject takes no ``If-None-Match`` on the destination, so this is
        HEAD-then-copy: two racing copies of one key both write, and either
        leaves a whole object of the same content (keys are content addresses).
        """
        if self._head(dest) is not None:
            return
        source: CopySourceTypeDef = {"Bucket": self._bucket, "Key": src}
        try:
            if size <= COPY_LIMIT:
                self._client.copy_object(Bucket=self._bucket, Key=dest, CopySource=source)
                return
            upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=dest)[
                "UploadId"
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"publishing {dest} failed", exc) from exc
        try:
            parts: builtins.list[CompletedPartTypeDef] = []
            for number, start in enumerate(range(0, size, COPY_PART), start=1):
                end = min(size, start + COPY_PART) - 1
                copied = self._client.upload_part_copy(
                    Bucket=self._bucket,
                    Key=dest,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": number})
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=dest,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except (ClientError, BotoCoreError) as exc:
            self._abort(dest, upload_id)
            raise _error(f"publishing {dest} failed", exc) from exc

    def _discard(self, item: _Staged) -> None:
        if item.upload_key is None:
            return
        if item.upload_id is not None:
            upload_id, item.upload_id = item.upload_id, None
            self._abort(item.upload_key, upload_id)
            return
        with contextlib.suppress(StorageError):  # the sweep finds what stays
            self._delete_raw(item.upload_key)

    def _abort(self, upload_key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):  # the sweep finds what stays
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=upload_key, UploadId=upload_id
            )

    def _delete_raw(self, full_key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=full_key)
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"delete {full_key} failed", exc) from exc

    # --- reads and the rest -----------------------------------------------------------

    def _head(self, full_key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=full_key)
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return None
            raise _error(f"stat {full_key} failed", exc) from exc
        except BotoCoreError as exc:
            raise _error(f"stat {full_key} failed", exc) from exc
        return int(head["ContentLength"])

    def stat(self, key: str) -> int | None:
        return self._head(self._object(key))

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """One GET (ranged unless the whole object is asked for); a HEAD only when empty.

        S3 answers 416 to a range that starts at or past the end (or any range
        of an empty object): the HEAD then tells an empty answer from an absent key.
        """
        full = self._object(key)
        if length == 0:
            return self._empty(full, key)
        whole = offset == 0 and length is None
        ranged = f"bytes={offset}-{'' if length is None else offset + length - 1}"
        try:
            if whole:
                got = self._client.get_object(Bucket=self._bucket, Key=full)
            else:
                got = self._client.get_object(Bucket=self._bucket, Key=full, Range=ranged)
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                raise BlobNotFound(f"object {key} is absent") from exc
            if _code(exc) in _PAST_END:
                return self._empty(full, key)
            raise _error(f"reading {key} failed", exc) from exc
        except BotoCoreError as exc:
            raise _error(f"reading {key} failed", exc) from exc
        return self._stream(got["Body"], key)

    def _empty(self, full: str, key: str) -> Iterator[bytes]:
        if self._head(full) is None:
            raise BlobNotFound(f"object {key} is absent")
        return iter(())

    @staticmethod
    def _stream(body: Any, key: str) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(_READ_CHUNK)
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"reading {key} failed: {exc}") from exc
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self._delete_raw(self._object(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        return self._list(self._prefix + prefix, skip_staging=True)

    def _list(self, full_prefix: str, *, skip_staging: bool) -> Iterator[str]:
        staging = self._prefix + _STAGING
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    full = obj["Key"]
                    if skip_staging and full.startswith(staging):
                        continue
                    yield full[len(self._prefix) :]
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"listing {full_prefix!r} failed", exc) from exc

    def staging(self) -> builtins.list[str]:
        """Every in-flight object: open multipart uploads and ``tmp/`` objects."""
        return sorted(
            [u["Key"] for u in self._uploads()]
            + [self._prefix + k for k in self._list(self._prefix + _STAGING, skip_staging=False)]
        )

    def _uploads(self) -> builtins.list[dict[str, Any]]:
        paginator = self._client.get_paginator("list_multipart_uploads")
        found: builtins.list[dict[str, Any]] = []
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                found.extend(dict(u) for u in page.get("Uploads", []))
        except (ClientError, BotoCoreError) as exc:
            raise _error("listing multipart uploads failed", exc) from exc
        return found

    def sweep_staging(self, older_than: float) -> int:
        """Abort uploads and remove ``tmp/`` objects older than ``older_than`` seconds."""
        cutoff = datetime.fromtimestamp(time.time() - older_than, UTC)
        removed = 0
        for upload in self._uploads():
            if upload["Initiated"] < cutoff:
                self._abort(upload["Key"], upload["UploadId"])
                removed += 1
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + _STAGING):
                for obj in page.get("Contents", []):
                    if obj["LastModified"] < cutoff:
                        self._delete_raw(obj["Key"])
                        removed += 1
        except (ClientError, BotoCoreError) as exc:
            raise _error("sweeping staging failed", exc) from exc
        return removed

    def health(self) -> None:
        """Write a probe object under ``tmp/`` and remove it: fails unless we can write now."""
        probe = self._prefix + f"{_STAGING}health-{secrets.token_hex(8)}"
        try:
            self._client.put_object(Bucket=self._bucket, Key=probe, Body=b"ok")
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"bucket {self._bucket} is not writable", exc) from exc
        self._delete_raw(probe)


def open_s3(url_text: str, name: str) -> S3Backend:
    """The backend of ``s3://BUCKET/PREFIX?endpoint=URL&region=R``."""
    url = urlparse(url_text)
    query = parse_qs(url.query)
    unknown = sorted(set(query) - {"endpoint", "region"})
    if unknown:
        raise InvalidInput(f"unknown s3:// URL parameter(s) {', '.join(unknown)}")
    endpoint = query.get("endpoint", [None])[-1]
    region = query.get("region", [None])[-1]
    return S3Backend(url.netloc, url.path, endpoint=endpoint, region=region, name=name)
