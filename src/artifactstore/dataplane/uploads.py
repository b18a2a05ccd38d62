"""The bytes of upload sessions: appending to staging, hashing on the way, hashing at the end.

A session's bytes live in the backend's staging (``staging.py``), so any
process can continue it. The hashers here are only a shortcut: when this
process saw every byte of a session in order, completion reuses its running
hash instead of reading the staged bytes again; otherwise it re-reads them.
The rows that say who may append and at which offset are the control
plane's (``controlplane/uploads.py``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from artifactstore.dataplane.digests import DualHasher
from artifactstore.dataplane.staging import StagedAppend, Staging
from artifactstore.errors import LimitExceeded, StorageError
from artifactstore.model.identity import BlobDigests

__all__ = ["SessionHashers", "StagedBody"]


class SessionHashers:
    """Running hashes of the sessions this process has seen every byte of (thread-safe)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._hashers: dict[str, DualHasher] = {}
        self._lock = threading.Lock()

    def start(self, upload_id: str) -> None:
        with self._lock:
            self._hashers[upload_id] = DualHasher(self._pool)

    def at(self, upload_id: str, offset: int) -> DualHasher | None:
        """The session's hasher if it has seen exactly ``offset`` bytes (else it is dropped)."""
        with self._lock:
            hasher = self._hashers.get(upload_id)
            if hasher is not None and hasher.size != offset:
                del self._hashers[upload_id]
                return None
            return hasher

    def drop(self, upload_ids: Iterable[str]) -> None:
        with self._lock:
            for upload_id in upload_ids:
                self._hashers.pop(upload_id, None)

    def digests(self, staging: Staging, upload_id: str, size: int) -> BlobDigests:
        """The staged object's digests: from the running hash when it saw all ``size``
        bytes, else by reading the staged bytes. StorageError if they are not ``size``."""
        with self._lock:
            hasher = self._hashers.pop(upload_id, None)
        if hasher is None or hasher.size != size:
            hasher = DualHasher(self._pool)
            for chunk in staging.read_staged(upload_id):
                hasher.update(chunk)
        digests = hasher.result()
        if digests.size != size:
            raise StorageError(
                f"upload {upload_id} staged {digests.size} bytes but acknowledged {size}"
            )
        return digests


class StagedBody:
    """One request's body appended to a session's staging, up to ``limit`` bytes in all.

    ``checksum`` (tus ``Upload-Checksum``: algorithm and expected digest) is
    checked over this body alone by :meth:`checksum_ok`.
    """

    def __init__(
        self,
        sink: StagedAppend,
        *,
        offset: int,
        limit: int,
        hasher: DualHasher | None,
        checksum: tuple[str, bytes] | None,
    ) -> None:
        self._sink = sink
        self._offset = offset
        self._limit = limit
        self._hasher = hasher
        self._checksum = checksum
        self._body_hash = hashlib.new(checksum[0]) if checksum else None
        self.written = 0

    @property
    def checksum_algorithm(self) -> str | None:
        return self._checksum[0] if self._checksum is not None else None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._offset + self.written + len(data) > self._limit:
            raise LimitExceeded(
                f"appending {len(data)} bytes at offset {self._offset + self.written} "
                f"passes the upload's length of {self._limit} bytes"
            )
        self._sink.write(data)
        if self._hasher is not None:
            self._hasher.update(bytes(data))
        if self._body_hash is not None:
            self._body_hash.update(data)
        self.written += len(data)

    def sync(self) -> int:
        """Make the bytes appended so far durable (a checkpoint); the staged object's size.

        The running hash needs no checkpoint: a process that did not see every
        byte re-reads the staged ones at completion (``SessionHashers.digests``).
        """
        return self._sink.sync()

    def close(self) -> int:
        """Make the appended bytes durable; the staged object's size."""
        return self._sink.close()

    def abort(self) -> int:
        """Stop appending; keep and flush what arrived; the staged object's size."""
        return self._sink.abort()

    def checksum_ok(self) -> bool:
        if self._checksum is None or self._body_hash is None:
            return True
        return self._body_hash.digest() == self._checksum[1]
