"""The data plane: ingest streams as content-addressed blobs, serve and verify them.

This is the one named interface the control plane uses for bytes (docs/architecture.md,
durability). It hashes (both digests, one pass, off the caller's critical
path), decides keys through ``layout``, and delegates storage to a
:class:`~artifactstore.dataplane.protocol.Backend`. It knows nothing of
packages, namespaces or the database.
"""

from __future__ import annotations

import io
import mmap
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from artifactstore.dataplane import layout
from artifactstore.dataplane.digests import DualHasher
from artifactstore.dataplane.protocol import Backend, WriteBatch, Writer
from artifactstore.errors import BlobNotFound, CorruptBlob, DigestMismatch, StorageError
from artifactstore.model.identity import Algorithm, BlobDigests, Digest
from artifactstore.model.records import Placement

__all__ = [
    "BlobIngest",
    "DataPlane",
    "IngestBatch",
    "Readable",
    "SmallBlob",
]

CHUNK = 1 << 20
#: Pieces of a local file: each costs two thread hand-offs (one per hasher), so
#: fewer, larger pieces keep SHA-256 (the ceiling) busier. 4 MiB against 1 MiB:
#: 0.62-0.69 s against 0.74 s per GiB in-process (BENCHMARKS.md). A small file
#: reads only its own bytes into the batch's buffers, so one size serves all.
FILE_CHUNK = 4 << 20
#: By default, files of at most this size are appended to their batch's pack
#: instead of becoming objects of their own (setting ``pack_max_bytes``). A
#: push of 10,000 small files then creates one file instead of 10,000: on
#: these VMs creating files in a fresh directory varied 0.26-4.35 s per
#: 10,000 (BENCHMARKS.md), and that, not hashing, set the pace of a tree
#: push. Larger files stay whole objects, which the server sends with
#: ``sendfile``.
PACK_MAX_BLOB = 256 << 10
#: A pack grows to about this size before the batch starts another.
PACK_TARGET = 64 << 20
_PACK_WRITE = 1 << 20  # appended blobs reach the backend in writes this large


@dataclass(frozen=True, slots=True)
class SmallBlob:
    """A file small enough for a pack: hashed, its bytes held until it is packed or skipped."""

    digests: BlobDigests
    data: bytes


class _Pack:
    """One object of a batch that small blobs are appended to, end to end."""

    def __init__(self, writer: Writer) -> None:
        self.key = layout.pack_key()
        self.size = 0
        self._writer = writer
        self._pending = bytearray()

    def append(self, data: bytes) -> int:
        offset = self.size
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= _PACK_WRITE:
            self._flush()
        return offset

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._writer.write(memoryview(pending))

    def seal(self) -> None:
        self._flush()
        self._writer.commit(self.key)


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
        # Two buffers per piece size, reused by every ingest of the batch; mapped,
        # so page-aligned, which lets the local backend write them with O_DIRECT.
        self._buffers: dict[int, tuple[memoryview, memoryview]] = {}
        self._pack: _Pack | None = None
        self._packed: dict[str, Placement] = {}  # by primary digest: stored once per batch

    def begin(self, expected: Digest | None = None) -> BlobIngest:
        """A blob to write; ``expected`` (its digest, if the caller knows it) lets a
        backend that cannot rename write at the blob's key at once (``Writer``)."""
        key = None if expected is None else self._plane.known_key(expected)
        return BlobIngest(self._plane, self._batch.writer(key))

    def ingest(self, source: Readable, expected: Digest | None = None) -> BlobDigests:
        """Copy a readable (file, socket) into a new blob, pipelining read, hash and write."""
        return self._stream(self.begin(), source, expected)

    def _buffers_of(self, chunk: int) -> tuple[memoryview, memoryview]:
        buffers = self._buffers.get(chunk)
        if buffers is None:
            buffers = self._buffers[chunk] = (
                memoryview(mmap.mmap(-1, chunk)),
                memoryview(mmap.mmap(-1, chunk)),
            )
        return buffers

    def _stream(
        self,
        blob: BlobIngest,
        source: Readable,
        expected: Digest | None,
        chunk: int = CHUNK,
        read: Sequence[int] = (),
    ) -> BlobDigests:
        """``read``: sizes of pieces the caller already read into the buffers, in turn."""
        buffers = self._buffers_of(chunk)
        i = 0
        try:
            for n in read:
                blob.write(buffers[i][:n])
                i ^= 1
            n = source.readinto(buffers[i]) or 0
            while n:
                blob.write(buffers[i][:n])
                i ^= 1  # the other buffer is free: its hashing was awaited by write()
                n = source.readinto(buffers[i]) or 0
            digests = blob.finish(expected)
        except BaseException:
            blob.cancel()
            raise
        return digests

    def ingest_file(
        self, src: io.FileIO, progress: Callable[[int], None]
    ) -> tuple[BlobDigests, Placement] | SmallBlob:
        """Ingest a regular file opened unbuffered (``open(path, "rb", buffering=0)``).

        A file that ends within the plane's ``pack_max`` bytes comes back as a
        :class:`SmallBlob`, hashed but not yet stored: the caller :meth:`pack`s
        it, or skips it if the store already holds it (a pack's key is random,
        so nothing else would keep a re-push from storing its bytes again).
        What it holds, not what a directory walk said, decides. What is hashed
        is the buffer that is written, so bytes stored under a key always
        match it, even if the source changes during the push. (An in-kernel
        ``copy_file_range`` with the hashers reading the stored copy through a
        map was tried and removed: on these VMs its page faults cost the
        SHA-256 thread more than the copy it saved.)
        """
        source = _Reporting(src, progress)
        first, second = self._buffers_of(FILE_CHUNK)
        n = source.readinto(first) or 0
        read = [n]
        if self._plane.pack_max and n <= self._plane.pack_max:
            m = source.readinto(second) or 0
            if not m:
                # Hashed here: a hand-off to the hashing threads costs more.
                data = bytes(first[:n])
                return SmallBlob(BlobDigests.of(data), data)
            read.append(m)
        digests = self._stream(self.begin(), source, None, FILE_CHUNK, read)
        return digests, Placement(self._plane.key(digests))

    def pack(self, blob: SmallBlob) -> Placement:
        """Append a small blob to the batch's pack, unless this batch already holds it."""
        primary = str(blob.digests.get(self._plane.primary))
        place = self._packed.get(primary)
        if place is None:
            data = blob.data
            pack = self._pack
            if pack is None or pack.size + len(data) > PACK_TARGET:
                if pack is not None:
                    pack.seal()
                pack = self._pack = _Pack(self._batch.writer())
            place = self._packed[primary] = Placement(pack.key, pack.append(data), len(data))
        return place

    def ingest_bytes(self, data: bytes, expected: Digest | None = None) -> BlobDigests:
        return self.ingest(io.BytesIO(data), expected)

    def commit(self) -> None:
        try:
            if self._pack is not None:
                pack, self._pack = self._pack, None
                pack.seal()
        except BaseException:
            self._batch.cancel()
            raise
        self._batch.commit()

    def cancel(self) -> None:
        self._pack = None
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
        self,
        backend: Backend,
        *,
        primary: Algorithm = "blake3",
        cold: Backend | None = None,
        pack_max: int = PACK_MAX_BLOB,
    ) -> None:
        self.backend = backend
        self.cold = cold
        self.primary: Algorithm = primary
        # 0: every file a whole object. At most one piece of a file: the first
        # read must find its end.
        self.pack_max = min(pack_max, FILE_CHUNK)
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

    def known_key(self, expected: Digest) -> str | None:
        """The key of the blob with digest ``expected``, if that digest decides it
        (it is a primary digest); None for a digest of the other algorithm."""
        return layout.blob_key(expected) if expected.algorithm == self.primary else None

    def batch(self) -> IngestBatch:
        return IngestBatch(self, self.backend.batch())

    def ingest(self, source: Readable, expected: Digest | None = None) -> BlobDigests:
        """Ingest one blob and make it durable before returning."""
        with self.batch() as batch:
            return batch.ingest(source, expected)

    def stat(self, key: str, backend: str | None = None) -> int | None:
        return self.named(backend).stat(key)

    def read(
        self,
        place: Placement,
        offset: int = 0,
        length: int | None = None,
        backend: str | None = None,
    ) -> Iterator[bytes]:
        """``length`` bytes (None: the rest) of the blob at ``place``, from ``offset``."""
        start, n = place.span(offset, length)
        return self.named(backend).read(place.key, start, n)

    def verify(self, place: Placement, expected: BlobDigests, backend: str | None = None) -> None:
        """Re-read and re-hash one blob; raise CorruptBlob unless both digests and size match."""
        hasher = DualHasher(self._pool)
        try:
            for chunk in self.read(place, backend=backend):
                hasher.update(chunk)
        except BlobNotFound as exc:
            raise CorruptBlob(
                f"blob {expected.blake3} is missing from storage ({place.key})"
            ) from exc
        _check(hasher.result(), expected)

    def transfer(self, place: Placement, expected: BlobDigests, source: str, target: str) -> None:
        """Copy a blob between backends, re-hashing it on the way; durable when it returns.

        The copy is a whole object at the blob's own key, wherever it came
        from (a pack's other blobs stay). Damaged source bytes raise
        CorruptBlob and leave nothing at the target: a move between tiers
        never launders corruption into a fresh copy.
        """
        with IngestBatch(self, self.named(target).batch()) as batch:
            blob = batch.begin()
            try:
                for chunk in self.read(place, backend=source):
                    blob.write(chunk)
            except BlobNotFound as exc:
                blob.cancel()
                raise CorruptBlob(
                    f"blob {expected.blake3} is missing from storage ({place.key})"
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
