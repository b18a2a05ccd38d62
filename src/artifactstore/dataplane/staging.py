"""Resumable-upload staging: an optional backend capability.

An upload session's bytes live in the backend (not in a server's memory or
local disk) so that a session survives a restart and can be continued by
another replica. The protocol is deliberately narrow: append at the
acknowledged offset, read back, promote to a content-addressed key, discard.

Acknowledgement rule: :meth:`StagedAppend.close` (or :meth:`StagedAppend.sync`
during a long append) returns only after the bytes are durable, and the caller
records the new offset after that. Bytes beyond
the recorded offset (a request cut off before it was acknowledged) are
discarded by the next append, which truncates to the offset it is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["StagedAppend", "Staging"]


class StagedAppend(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes. Raises StorageError."""

    def sync(self) -> int:
        """Make the bytes appended so far durable and go on appending; return the size."""

    def close(self) -> int:
        """Make the appended bytes durable; return the staged object's size."""

    def abort(self) -> int:
        """Stop appending, keep and flush what was written; return the size."""


class Staging(Protocol):
    def create(self, upload_id: str) -> None:
        """Create an empty staged object. Idempotent."""

    def append(self, upload_id: str, offset: int) -> StagedAppend:
        """Start appending at ``offset`` (the last acknowledged size).

        Bytes beyond ``offset`` are discarded first. Raises StorageError when
        the staged object is absent or shorter than ``offset``.
        """

    def staged_size(self, upload_id: str) -> int | None:
        """Current size, or None when absent."""

    def read_staged(self, upload_id: str) -> Iterator[bytes]:
        """Stream the staged bytes from the start."""

    def promote(self, upload_id: str, key: str) -> None:
        """Make the staged bytes the durable object at ``key`` and drop the staging.

        If ``key`` already exists the staged copy is discarded (same key, same
        bytes). Atomic: ``key`` never holds a partial object.
        """

    def discard(self, upload_id: str) -> None:
        """Remove the staged object. Idempotent."""

    def staged_ids(self) -> Iterator[str]:
        """Every staged upload id (to clean up sessions the database forgot)."""
