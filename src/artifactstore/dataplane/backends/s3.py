"""S3 backend: objects under one bucket and key prefix of an S3-compatible store.

URL: ``s3://BUCKET/PREFIX?endpoint=URL&region=R&retry_mode=M&max_attempts=N``
(``s3_client.py``). Credentials come the standard AWS way (``AWS_*``
variables, ``~/.aws`` files, instance roles); the URL never holds a secret.

Two phases, as the protocol asks:

* Writers and batches (``s3_writes.py``) keep at most a few parts per writer
  (``PARTS_IN_FLIGHT`` going up at once on the backend's part threads, plus the
  one filling) and ``BATCH_MEMORY`` per batch in memory; larger objects go to
  ``tmp/`` keys.
* ``WriteBatch.commit()`` publishes here: a small object with one
  ``PUT ... If-None-Match: *``: the first copy of a key wins, atomically on the
  server, which is what content addresses need (a ``412`` means the key
  already holds the same bytes). A large (or spilled) object's upload is
  completed at its staging key, copied server-side to its key unless a
  ``HEAD`` finds it there (``CopyObject`` takes no ``If-None-Match``; two
  racing copies of one key write the same bytes), and the staging object
  deleted. A large object whose key was named before its bytes (a client that
  sent the digest) was uploaded at that key: its upload is completed there
  with ``If-None-Match: *`` (aborted if the key exists), and nothing is copied.

S3 acknowledges a write only once it is durable, so there is no flush step;
``fsync`` does not apply. Transient errors (throttling, 5xx, dropped
connections) are retried with backoff by botocore (``s3_client.py``); a
failure that survives the retries raises StorageError saying what to fix.

Upload sessions are staged under ``uploads/`` (``s3_staging.py``).

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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from artifactstore.dataplane.backends.s3_client import (
    RetryMode,
    S3Location,
    code,
    make_client,
    parse_s3_url,
    s3_error,
)
from artifactstore.dataplane.backends.s3_reads import ReadAhead
from artifactstore.dataplane.backends.s3_writes import (
    BATCH_MEMORY,
    PART_SIZE,
    PARTS_IN_FLIGHT,
    STAGING,
    PartUpload,
    S3Batch,
    Staged,
)
from artifactstore.dataplane.protocol import BackendProperties
from artifactstore.errors import BlobNotFound, InvalidInput, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

__all__ = ["BATCH_MEMORY", "COPY_LIMIT", "COPY_PART", "PART_SIZE", "S3Backend", "open_s3"]

#: The largest object one CopyObject may copy; larger ones copy in parts of ``COPY_PART``.
COPY_LIMIT = 5 << 30
COPY_PART = 512 << 20
#: Threads that send multipart parts, shared by every upload of the backend (each
#: keeps at most PARTS_IN_FLIGHT there): a few uploads at once all make progress.
_PART_THREADS = 3 * PARTS_IN_FLIGHT
_ABSENT = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS = frozenset({"412", "PreconditionFailed"})
_PAST_END = frozenset({"416", "InvalidRange"})


class S3Backend:
    """Objects in an S3 bucket; see the module docstring for the write protocol."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        retry_mode: RetryMode = "standard",
        max_attempts: int = 5,
        name: str = "s3",
    ) -> None:
        if not bucket:
            raise InvalidInput("an s3:// URL names a bucket: s3://BUCKET/PREFIX")
        self._bucket = bucket
        self._endpoint = (endpoint or "").rstrip("/")
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: S3Client = make_client(
            S3Location(bucket, prefix, endpoint, region, retry_mode, max_attempts)
        )
        self._properties = BackendProperties(name=name)
        # Threads start on first use: a store that never uploads a large object has none.
        self._parts = ThreadPoolExecutor(_PART_THREADS, thread_name_prefix="s3-parts")

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
    def part_pool(self) -> ThreadPoolExecutor:
        """Where multipart parts are sent (``PartUpload``); its tasks never wait on each other."""
        return self._parts

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
        if key.startswith(STAGING) or key == STAGING[:-1]:
            raise StorageError("the staging area is not addressable")
        return self._full(key)

    def batch(self) -> S3Batch:
        return S3Batch(self)

    # --- publishing ---------------------------------------------------------------

    def _publish(self, item: Staged) -> None:
        dest = self._object(item.key)
        if item.upload_key is None:
            self._put_if_absent(dest, item.data)
            return
        if item.direct:
            self._complete_if_absent(item)
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
                raise s3_error(f"completing the upload of {item.key} failed", exc) from exc
        try:
            self._copy_if_absent(item.upload_key, dest, item.size)
        finally:
            self._delete_raw(item.upload_key)

    def _complete_if_absent(self, item: Staged) -> None:
        """Complete an upload made at its object's own key, unless the key exists.

        ``If-None-Match: *`` makes the first completion win on the server (a
        412: the key holds the same bytes, so this upload is aborted, never
        overwriting); the HEAD before spares the completion when the blob was
        stored already, and covers a server that ignores the condition.
        """
        dest, upload_id = item.upload_key, item.upload_id
        if dest is None or upload_id is None:
            raise StorageError(f"the upload of {item.key} was completed or discarded already")
        item.upload_id = None
        try:
            if self._head(dest) is not None:
                self._abort(dest, upload_id)
                return
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=dest,
                UploadId=upload_id,
                MultipartUpload={"Parts": item.parts},
                IfNoneMatch="*",
            )
        except ClientError as exc:
            self._abort(dest, upload_id)
            if code(exc) in _EXISTS:
                return  # a concurrent upload of the same bytes completed first
            raise s3_error(f"completing the upload of {item.key} failed", exc) from exc
        except BaseException as exc:
            self._abort(dest, upload_id)
            if isinstance(exc, BotoCoreError):
                raise s3_error(f"completing the upload of {item.key} failed", exc) from exc
            raise

    def _put_staging(self, full_key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self._bucket, Key=full_key, Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error("writing a staging object failed", exc) from exc

    def _put_if_absent(self, dest: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self._bucket, Key=dest, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if code(exc) in _EXISTS:
                return  # same key, same bytes: the first copy stays
            raise s3_error(f"writing {dest} failed", exc) from exc
        except BotoCoreError as exc:
            raise s3_error(f"writing {dest} failed", exc) from exc

    def _copy_if_absent(self, src: str, dest: str, size: int) -> None:
        """Server-side copy of a completed upload to its key, unless the key exists.

        CopyObject takes no ``If-None-Match`` on the destination, so this is
        HEAD-then-copy: two racing copies of one key both write, and either
        leaves a whole object of the same content (keys are content addresses).
        """
        if self._head(dest) is not None:
            return
        if size <= COPY_LIMIT:
            source: CopySourceTypeDef = {"Bucket": self._bucket, "Key": src}
            try:
                self._client.copy_object(Bucket=self._bucket, Key=dest, CopySource=source)
            except (ClientError, BotoCoreError) as exc:
                raise s3_error(f"publishing {dest} failed", exc) from exc
            return
        upload = PartUpload(self, dest, f"publishing {dest} failed")
        upload.begin()
        try:
            for start in range(0, size, COPY_PART):
                upload.copy(src, start, min(size, start + COPY_PART) - 1)
            upload.complete()
        except StorageError:
            upload.abort()
            raise

    def _discard(self, item: Staged) -> None:
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
            raise s3_error(f"delete {full_key} failed", exc) from exc

    # --- reads and the rest -----------------------------------------------------------

    def _head(self, full_key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=full_key)
        except ClientError as exc:
            if code(exc) in _ABSENT:
                return None
            raise s3_error(f"stat {full_key} failed", exc) from exc
        except BotoCoreError as exc:
            raise s3_error(f"stat {full_key} failed", exc) from exc
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
            if code(exc) in _ABSENT:
                raise BlobNotFound(f"object {key} is absent") from exc
            if code(exc) in _PAST_END:
                return self._empty(full, key)
            raise s3_error(f"reading {key} failed", exc) from exc
        except BotoCoreError as exc:
            raise s3_error(f"reading {key} failed", exc) from exc
        return self._stream(got["Body"], key)

    def _empty(self, full: str, key: str) -> Iterator[bytes]:
        if self._head(full) is None:
            raise BlobNotFound(f"object {key} is absent")
        return iter(())

    @staticmethod
    def _stream(body: Any, key: str) -> Iterator[bytes]:
        """The body's bytes, read ahead on a thread of their own (``s3_reads.py``)."""
        ahead = ReadAhead(body, key)
        try:
            yield from ahead
        finally:
            ahead.stop()

    def presign_get(self, key: str, seconds: float) -> str:
        """A URL that GETs the object at ``key`` (and honours Range) for ``seconds``,
        signed with this client's credentials: no request to S3 is made."""
        try:
            return self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": self._object(key)},
                ExpiresIn=max(1, int(seconds)),
            )
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(f"presigning {key} failed", exc) from exc

    def delete(self, key: str) -> None:
        self._delete_raw(self._object(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        return self._list(self._prefix + prefix, skip_staging=True)

    def _list(self, full_prefix: str, *, skip_staging: bool) -> Iterator[str]:
        staging = self._prefix + STAGING
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    full = obj["Key"]
                    if skip_staging and full.startswith(staging):
                        continue
                    yield full[len(self._prefix) :]
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(f"listing {full_prefix!r} failed", exc) from exc

    def staging(self) -> builtins.list[str]:
        """Every in-flight object: open multipart uploads and ``tmp/`` objects."""
        return sorted(
            [u["Key"] for u in self._uploads()]
            + [self._prefix + k for k in self._list(self._prefix + STAGING, skip_staging=False)]
        )

    def _uploads(self) -> builtins.list[dict[str, Any]]:
        paginator = self._client.get_paginator("list_multipart_uploads")
        found: builtins.list[dict[str, Any]] = []
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                found.extend(dict(u) for u in page.get("Uploads", []))
        except (ClientError, BotoCoreError) as exc:
            raise s3_error("listing multipart uploads failed", exc) from exc
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
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + STAGING):
                for obj in page.get("Contents", []):
                    if obj["LastModified"] < cutoff:
                        self._delete_raw(obj["Key"])
                        removed += 1
        except (ClientError, BotoCoreError) as exc:
            raise s3_error("sweeping staging failed", exc) from exc
        return removed

    def health(self) -> None:
        """Write a probe object under ``tmp/`` and remove it: fails unless we can write now."""
        probe = self._prefix + f"{STAGING}health-{secrets.token_hex(8)}"
        try:
            self._client.put_object(Bucket=self._bucket, Key=probe, Body=b"ok")
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(f"bucket {self._bucket} is not writable", exc) from exc
        self._delete_raw(probe)


def open_s3(url_text: str, name: str) -> S3Backend:
    """The backend of ``s3://BUCKET/PREFIX?endpoint=URL&region=R&retry_mode=M&max_attempts=N``."""
    loc = parse_s3_url(url_text)
    return S3Backend(
        loc.bucket,
        loc.prefix,
        endpoint=loc.endpoint,
        region=loc.region,
        retry_mode=loc.retry_mode,
        max_attempts=loc.max_attempts,
        name=name,
    )
