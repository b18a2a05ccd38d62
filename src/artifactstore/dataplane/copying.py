"""Copying stored objects from one backend to another, re-hashing every blob on the way.

``artifactstore copy`` moves a store to new engines. The event log records
each blob's storage location (backend name, key, pack offset), and the copy
keeps the log byte for byte, so every object must reach the target at the
very key it has in the source: a whole blob at its content address, a pack
(small blobs end to end, see ``blobs.py``) whole at its random key. A pack
has no digest of its own; what is checked are the spans of the blobs the
source still records in it, each hashed with both algorithms while the pack
streams past. One damaged span refuses the whole object: nothing is
published at the target, so no metadata can ever point at bad bytes there.
Bytes of collected blobs left in a pack are copied as they are (GC never
repacks: the source holds them too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from artifactstore.dataplane.backends import open_backend
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.dataplane.digests import DualHasher
from artifactstore.dataplane.protocol import Backend, WriteBatch
from artifactstore.errors import BlobNotFound
from artifactstore.model.identity import BlobDigests

__all__ = ["Batches", "Span", "check_object", "copy_object", "open_target"]


def open_target(
    source: DataPlane, storage_url: str, cold_storage_url: str | None, *, fsync: bool
) -> DataPlane:
    """The data plane a copy writes to: its backends take the names the source's have,
    because the copied events record locations by backend name."""
    hot = open_backend(
        storage_url, "--to-storage-url", fsync=fsync, name=source.backend.properties.name
    )
    cold = None
    if cold_storage_url is not None:
        name = source.cold.properties.name if source.cold is not None else "cold"
        cold = open_backend(cold_storage_url, "--to-cold-storage-url", fsync=fsync, name=name)
    return DataPlane(hot, primary=source.primary, cold=cold, pack_max=source.pack_max)


@dataclass(frozen=True, slots=True)
class Span:
    """A blob the object at a key holds: from ``offset`` (None: the whole object)."""

    digests: BlobDigests
    offset: int | None = None

    @property
    def start(self) -> int:
        return self.offset or 0

    @property
    def end(self) -> int:
        return self.start + self.digests.size


def _problems(
    chunks: Iterator[bytes],
    spans: Sequence[Span],
    pool: ThreadPoolExecutor,
    each: Callable[[bytes], None],
) -> list[tuple[str, str]]:
    """Feed ``chunks`` to ``each`` and every span's hashers in one pass; the
    (blake3, problem) of each span whose bytes do not match."""
    ordered = sorted(spans, key=lambda s: s.start)
    hashers = [DualHasher(pool if s.offset is None else None) for s in ordered]
    first = 0  # spans before this one ended before the current chunk
    pos = 0
    for chunk in chunks:
        each(chunk)
        end = pos + len(chunk)
        while first < len(ordered) and ordered[first].end <= pos:
            first += 1
        i = first
        while i < len(ordered) and ordered[i].start < end:
            span = ordered[i]
            lo, hi = max(span.start, pos), min(span.end, end)
            if lo < hi:
                hashers[i].update(memoryview(chunk)[lo - pos : hi - pos])
            i += 1
        pos = end
    out = []
    for span, hasher in zip(ordered, hashers, strict=True):
        actual = hasher.result()
        if actual != span.digests:
            out.append((str(span.digests.blake3), _mismatch(span.digests, actual)))
    return out


def _mismatch(expected: BlobDigests, actual: BlobDigests) -> str:
    if actual.size != expected.size:
        return f"stored bytes end after {actual.size} of its {expected.size} bytes"
    return f"stored bytes hash to {actual.blake3} and {actual.sha256}"


#: A batch of copied objects is committed (made durable, one flush on a local
#: disk; parallel PUTs on S3) once it holds this many objects or bytes.
_BATCH_OBJECTS, _BATCH_BYTES = 256, 256 << 20


class Batches:
    """The open write batch of the target backend being written, committed in turn."""

    def __init__(self) -> None:
        self._open: tuple[str, WriteBatch] | None = None
        self._objects = self._bytes = 0

    def of(self, name: str, backend: Backend) -> WriteBatch:
        if self._open is not None and (
            self._open[0] != name or self._objects >= _BATCH_OBJECTS or self._bytes >= _BATCH_BYTES
        ):
            self.commit()
        if self._open is None:
            self._open = (name, backend.batch())
        return self._open[1]

    def add(self, size: int) -> None:
        self._objects += 1
        self._bytes += size

    def commit(self) -> None:
        if self._open is not None:
            batch, self._open = self._open[1], None
            self._objects = self._bytes = 0
            batch.commit()

    def cancel(self) -> None:
        if self._open is not None:
            batch, self._open = self._open[1], None
            batch.cancel()


def copy_object(
    source: Backend,
    batch: WriteBatch,
    key: str,
    spans: Sequence[Span],
    pool: ThreadPoolExecutor,
    progress: Callable[[int], None],
) -> list[tuple[str, str]]:
    """Stage the object at ``key`` of ``source`` for the same key in ``batch``.

    Returns the damaged spans as (blake3, problem); if there is any, or the
    source has no such object, nothing is staged. Bytes reach the batch's
    writer as they are hashed (memory stays at one chunk plus the hashers'
    hand-off); like any staged write, the copy is visible and durable only
    once the caller commits the batch, so an interrupted copy leaves nothing
    at ``key``.
    """
    writer = batch.writer()

    def out(chunk: bytes) -> None:
        writer.write(chunk)
        progress(len(chunk))

    try:
        damaged = _problems(source.read(key), spans, pool, out)
    except BlobNotFound:
        damaged = [
            (str(s.digests.blake3), f"missing from the source storage ({key})") for s in spans
        ]
    except BaseException:
        writer.cancel()
        raise
    if damaged:
        writer.cancel()
        return damaged
    writer.commit(key)
    return []


def check_object(
    backend: Backend, key: str, spans: Sequence[Span], pool: ThreadPoolExecutor
) -> list[tuple[str, str]]:
    """Re-hash the spans of the object at ``key`` (a copy an interrupted run left)."""
    try:
        return _problems(backend.read(key), spans, pool, lambda _: None)
    except BlobNotFound:
        return [(str(s.digests.blake3), f"missing ({key})") for s in spans]
