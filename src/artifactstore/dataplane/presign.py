"""Presigned downloads: an optional capability of a backend whose objects a client can
fetch without the server (S3), declared as its own small protocol instead of a stub.

A server that hands out such URLs sends no blob bytes itself: the client reads
them from the object store, which scales with it. The URL is a bearer secret
for its lifetime, so the server answers with one only after its own access
check, and only for a whole blob (a packed blob is a span of a shared object).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Presigner"]


@runtime_checkable
class Presigner(Protocol):
    def presign_get(self, key: str, seconds: float) -> str:
        """A URL that GETs ``key`` (honouring Range) for ``seconds``. Raises StorageError."""
