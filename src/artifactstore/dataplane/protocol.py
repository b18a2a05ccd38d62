"""The data plane's storage protocol: opaque bytes at string keys.

This is the one interface between "what bytes mean" (digests, packages, the
control plane) and "where bytes live" (a directory, an S3 bucket, memory).
A backend never hashes, never parses and never decides a key; it only makes
writes durable and atomic and serves reads. Keys come from ``layout.py``.

Writes are two-phase and batched: a :class:`WriteBatch` hands out writers;
``Writer.commit(key)`` stages a finished object, and ``WriteBatch.commit()``
makes every staged object durable and visible at once. Nothing is visible
before the batch commits, and when it returns every object is durable. The
batch is what lets a push of 10,000 small files pay for one flush instead of
10,000 (see ``backends/local.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Backend", "BackendProperties", "WriteBatch", "Writer"]


@dataclass(frozen=True, slots=True)
class BackendProperties:
    """What a backend can do beyond the protocol, declared instead of stubbed."""

    name: str
    #: Objects are plain files under this directory (enables zero-copy sends).
    local_root: Path | None = None


class Writer(Protocol):
    """One object being written. Not thread-safe; one writer per stream."""

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes. Raises StorageError on I/O failure."""

    def commit(self, key: str) -> None:
        """Finish the object and stage it for ``key``; visible only when the batch commits.

        If ``key`` already exists the staged copy is discarded at batch commit
        (keys are content addresses: same key, same bytes).
        """

    def cancel(self) -> None:
        """Discard the object. Idempotent; safe after a failed write."""


class WriteBatch(Protocol):
    """A group of writes made durable together."""

    def writer(self, key: str | None = None) -> Writer:
        """Start a new object in this batch.

        ``key``: the key ``commit`` will be given, when the caller knows it
        before the bytes (the client named the digest). A backend that cannot
        rename (S3) then writes there directly instead of copying a staged
        object at publish; still nothing is visible before the batch commits.
        ``commit`` with another key raises StorageError and discards the object.
        """

    def commit(self) -> None:
        """Make every staged object durable, then visible at its key.

        Atomic per object (never a partial object at a key), not across the
        batch. A failure (including a failed fsync) raises StorageError and is
        never retried-then-acknowledged; objects already published remain.
        """

    def cancel(self) -> None:
        """Discard every object in the batch that is not yet published. Idempotent."""


class Backend(Protocol):
    """Bytes at keys. Every method may raise StorageError; none returns partial data."""

    @property
    def properties(self) -> BackendProperties:
        """Static facts about this backend."""

    def batch(self) -> WriteBatch:
        """Start a batch of writes."""

    def stat(self, key: str) -> int | None:
        """The object's size, or None when absent."""

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream ``length`` bytes (all when None) from ``offset``.

        Raises BlobNotFound when absent. Memory stays constant whatever the size.
        """

    def delete(self, key: str) -> None:
        """Remove the object durably. Idempotent: deleting an absent key succeeds."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every published key starting with ``prefix`` (staging objects excluded)."""

    def health(self) -> None:
        """Raise StorageError unless the backend can read and write now."""

    def sweep_staging(self, older_than: float) -> int:
        """Remove staging objects older than ``older_than`` seconds; return how many.

        They are what a crash leaves of writes that never committed; nothing
        visible is touched. A backend that stages nothing outside memory returns 0.
        """
