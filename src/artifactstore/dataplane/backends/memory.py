"""In-memory backend: the reference implementation of the protocol, for tests.

It keeps the same two-phase semantics as the durable backends (nothing visible
before the batch commits) so that the conformance suite means the same thing
for every backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from artifactstore.dataplane.protocol import BackendProperties
from artifactstore.errors import BlobNotFound, StorageError

__all__ = ["MemoryBackend"]

_READ_CHUNK = 1 << 20


class _MemoryWriter:
    def __init__(self, batch: _MemoryBatch, key: str | None) -> None:
        self._batch = batch
        self._key = key
        self._buf: bytearray | None = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        if self._buf is None:
            raise StorageError("write after commit or cancel")
        self._buf += data

    def commit(self, key: str) -> None:
        if self._buf is None:
            raise StorageError("commit after commit or cancel")
        if self._key is not None and key != self._key:
            self._buf = None
            raise StorageError(f"object begun for {self._key} committed as {key}")
        self._batch.staged.append((key, bytes(self._buf)))
        self._buf = None

    def cancel(self) -> None:
        self._buf = None


class _MemoryBatch:
    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        self.staged: list[tuple[str, bytes]] = []

    def writer(self, key: str | None = None) -> _MemoryWriter:
        return _MemoryWriter(self, key)

    def commit(self) -> None:
        staged, self.staged = self.staged, []
        with self._backend._lock:
            for key, data in staged:
                self._backend._objects.setdefault(key, data)

    def cancel(self) -> None:
        self.staged = []


class MemoryBackend:
    """Objects in a dict; thread-safe; lost with the process."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._properties = BackendProperties(name="memory")

    @property
    def properties(self) -> BackendProperties:
        return self._properties

    def batch(self) -> _MemoryBatch:
        return _MemoryBatch(self)

    def stat(self, key: str) -> int | None:
        data = self._objects.get(key)
        return None if data is None else len(data)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        data = self._objects.get(key)
        if data is None:
            raise BlobNotFound(f"object {key} is absent")
        end = len(data) if length is None else min(len(data), offset + length)
        return (data[i : min(i + _READ_CHUNK, end)] for i in range(offset, end, _READ_CHUNK))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(k for k in list(self._objects) if k.startswith(prefix)))

    def health(self) -> None:
        return None

    def sweep_staging(self, older_than: float) -> int:
        """Uncommitted writes live only in their batch's memory: nothing to sweep."""
        return 0

    def corrupt(self, key: str, position: int) -> None:
        """Flip one byte of an object (tests of integrity checking only)."""
        with self._lock:
            data = bytearray(self._objects[key])
            data[position] ^= 0xFF
            self._objects[key] = bytes(data)
