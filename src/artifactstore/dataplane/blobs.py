"""The data plane: ingest streams as content-addressed blobs, serve and verify them.

This is the one named interface the control plane uses for bytes (SPEC
section 11). It hashes (both digests, one pass, off the caller's critical
path), decides keys through ``layout``, and delegates storage to a
:class:`~artifactstore.dataplane.protocol.Backend`. It knows nothing of
packages, namespaces or the database.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Protocol

from artifactstore.dataplane import layout
from artifactstore.dataplane.digests import DualHasher
from artifactstore.dataplane.protocol import Backend, WriteBatch, Writer
from artifactstore.errors import BlobNotFound, CorruptBlob, DigestMismatch, StorageError
from artifactstore.model.identity import Algorithm, BlobDigests, Digest

__all__ = ["BlobIngest", "DataPlane", "IngestBatch", "Readable"]

CHUNK = 1 << 20
#: Pieces of a local file: each costs two thread hand-offs (one per hasher), so
#: fewer, larger pieces keep SHA-256 (the ceiling) busier. 4 MiB against 1 MiB:
#: 0.62-0.69 s against 0.74 s per GiB in-process (BENCHMARKS.md). A small file
#: reads only its own bytes into the batch's buffers, so one size serves all.
FILE_CHUNK = 4 << 20


class Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


class BlobIngest:
    """One blob being written: bytes go to the backend and both hashers together.

    The caller must not modify a buffer passed to :meth:`write` until the next
    ``write`` or ``finish`` returns (hashing may still be reading it).
    """

    def __init__(self, plane: DataPlane, writer: Writer) -> None:
        self._plane = plane
        self._writer = writer
        self._hasher = DualHasher(plane._pool)
        self._done = False

    @property
    def size(self) -> int:
        return self._hasher.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._hasher.update(data)
        self._writer.write(data if not isinstance(data, bytearray) else memoryview(data))

    def finish(self, expected: Digest | None = None) -> BlobDigests:
        """Stage the blob under its primary digest; refuse it if ``expected`` differs."""
        digests = self._hasher.result()
        self._done = True
        if expected is not None and not digests.matches(expected):
            self._writer.cancel()
            raise DigestMismatch(
                f"content has digest {digests.get(expected.algorithm)}, expected {expected}"
            )
        self._writer.commit(self._plane.key(digests))
        return digests

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._hasher.result()  # let in-flight hashing finish before dropping buffers
            self._writer.cancel()


class IngestBatch:
    """Blobs ingested together and made durable together by :meth:`commit`."""

    def __init__(self, plane: DataPlane, batch: WriteBatch) -> None:
        self._plane = plane
        self._batch = batch
        # Two buffers per piece size, reused by every ingest of the batch.
        self._buffers: dict[int, tuple[bytearray, bytearray]] = {}

    def begin(self) -> BlobIngest:
        return BlobIngest(self._plane, self._batch.writer())

    def ingest(self, source: Readable, expected: Digest | None = None) -> BlobDigests:
        """Copy a readable (file, socket) into a new blob, pipelining read, hash and write."""
        return self._stream(self.begin(), source, expected)

    def _stream(
        self, blob: BlobIngest, source: Readable, expected: Digest | None, chunk: int = CHUNK
    ) -> BlobDigests:
        buffers = self._buffers.get(chunk)
        if buffers is None:
            buffers = self._buffers[chunk] = (bytearray(chunk), bytearray(chunk))
        i = 0
        try:
            n = source.readinto(buffers[0]) or 0
            while n:
                blob.write(memoryview(buffers[i])[:n])
                i ^= 1  # the other buffer is free: its hashing was awaited by write()
                n = source.readinto(buffers[i]) or 0
            digests = blob.finish(expected)
        except BaseException:
            blob.cancel()
            raise
        return digests

    def ingest_file(self, src: io.FileIO, progress: Callable[[int], None]) -> BlobDigests:
        """Ingest a regular file opened unbuffered (``open(path, "rb", buffering=0)``).

        What is hashed is the buffer that is written, so bytes stored under a
        key always match it, even if the source changes during the push.
        (An in-kernel ``copy_file_range`` with the hashers reading the stored
        copy through a map was tried and removed: on these VMs its page faults
        cost the SHA-256 thread more than the copy it saved.)
        """
        return self._stream(self.begin(), _Reporting(src, progress), None, FILE_CHUNK)

    def ingest_bytes(self, data: bytes, expected: Digest | None = None) -> BlobDigests:
        return self.ingest(io.BytesIO(data), expected)

    def commit(self) -> None:
        self._batch.commit()

    def cancel(self) -> None:
        self._batch.cancel()

    def __enter__(self) -> IngestBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.cancel()


class DataPlane:
    """Content-addressed blobs over a hot backend, and optionally a cold one.

    Every method that touches stored bytes takes the ``backend`` name a
    storage location records (None: the hot backend, where ingest writes).
    The cold backend holds blobs moved to the cold tier; it is never read to
    serve clients (the control plane answers ``restore_required``), only to
    verify them and to move them back.
    """

    def __init__(
        self, backend: Backend, *, primary: Algorithm = "blake3", cold: Backend | None = None
    ) -> None:
        self.backend = backend
        self.cold = cold
        self.primary: Algorithm = primary
        self._backends = {backend.properties.name: backend}
        if cold is not None:
            if cold.properties.name in self._backends:
                raise ValueError("the cold backend needs a name of its own")
            self._backends[cold.properties.name] = cold
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hash")

    def named(self, backend: str | None = None) -> Backend:
        """The backend a storage location names (None: the hot one)."""
        if backend is None:
            return self.backend
        try:
            return self._backends[backend]
        except KeyError:
            raise StorageError(f"no storage backend named {backend!r} is configured") from None

    @property
    def backends(self) -> list[Backend]:
        return list(self._backends.values())

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The two hashing threads, for callers that feed a DualHasher themselves."""
        return self._pool

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def key(self, digests: BlobDigests) -> str:
        return layout.blob_key(digests.get(self.primary))

    def batch(self) -> IngestBatch:
        return IngestBatch(self, self.backend.batch())

    def ingest(self, source: Readable, expected: Digest | None = None) -> BlobDigests:
        """Ingest one blob and make it durable before returning."""
        with self.batch() as batch:
            return batch.ingest(source, expected)

    def stat(self, key: str, backend: str | None = None) -> int | None:
        return self.named(backend).stat(key)

    def read(
        self, key: str, offset: int = 0, length: int | None = None, backend: str | None = None
    ) -> Iterator[bytes]:
        return self.named(backend).read(key, offset, length)

    def verify(self, key: str, expected: BlobDigests, backend: str | None = None) -> None:
        """Re-read and re-hash one blob; raise CorruptBlob unless both digests and size match."""
        hasher = DualHasher(self._pool)
        try:
            for chunk in self.named(backend).read(key):
                hasher.update(chunk)
        except BlobNotFound as exc:
            raise CorruptBlob(f"blob {expected.blake3} is missing from storage ({key})") from exc
        _check(hasher.result(), expected)

    def transfer(self, key: str, expected: BlobDigests, source: str, target: str) -> None:
        """Copy a blob between backends, re-hashing it on the way; durable when it returns.

        Damaged source bytes raise CorruptBlob and leave nothing at the target:
        a move between tiers never launders corruption into a fresh copy.
        """
        with IngestBatch(self, self.named(target).batch()) as batch:
            blob = batch.begin()
            try:
                for chunk in self.named(source).read(key):
                    blob.write(chunk)
            except BlobNotFound as exc:
                blob.cancel()
                raise CorruptBlob(
                    f"blob {expected.blake3} is missing from storage ({key})"
                ) from exc
            except BaseException:
                blob.cancel()
                raise
            # Staged at the key of what was read; the check below cancels the batch.
            _check(blob.finish(), expected)

    def delete(self, key: str, backend: str | None = None) -> None:
        self.named(backend).delete(key)

    def health(self) -> None:
        try:
            for backend in self._backends.values():
                backend.health()
        except StorageError:
            raise
        except OSError as exc:
            raise StorageError(f"storage health check failed: {exc}") from exc


class _Reporting:
    """A readable that reports the bytes read to a progress callback."""

    def __init__(self, inner: Readable, progress: Callable[[int], None]) -> None:
        self._inner = inner
        self._progress = progress

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._inner.readinto(buffer) or 0
        self._progress(n)
        return n


def _check(actual: BlobDigests, expected: BlobDigests) -> None:
    if actual != expected:
        raise CorruptBlob(
            f"blob {expected.blake3} is damaged: stored bytes hash to {actual.blake3} "
            f"({actual.size} bytes, expected {expected.size})"
        )
