"""What a backend under test is (:class:`ContractTarget`) and the byte helpers of its suite.

Shared by the conformance suite (``backend_contract.py``) and by tests of one
backend's own behaviour.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from artifactstore.dataplane import layout
from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.dataplane.backends.memory import MemoryBackend
from artifactstore.dataplane.backends.s3 import S3Backend
from artifactstore.dataplane.protocol import Backend
from artifactstore.errors import BlobNotFound
from artifactstore.model.identity import Digest

__all__ = [
    "ContractTarget",
    "Peak",
    "assert_absent",
    "assert_holds",
    "content_key",
    "get",
    "local_target",
    "memory_target",
    "payload",
    "put",
    "s3_target",
    "traced_peak",
]


def _no_staging() -> list[str]:
    return []


@dataclass(frozen=True, slots=True)
class ContractTarget:
    """A backend under test and a way to see its staging area.

    ``staging`` names every in-flight (unpublished) object the backend holds
    outside its keys: temporary files, open multipart uploads. The suite
    requires it to be empty after every commit and cancel.
    """

    backend: Backend
    staging: Callable[[], list[str]] = field(default=_no_staging)


def memory_target() -> ContractTarget:
    """A fresh :class:`MemoryBackend` (its staging lives in batch objects only)."""
    return ContractTarget(MemoryBackend())


def local_target(root: Path, *, fsync: bool = True) -> ContractTarget:
    """A fresh :class:`LocalBackend` under ``root``; staging is ``root/tmp``."""
    backend = LocalBackend(root, fsync=fsync)
    staging_dir = root / "tmp"

    def staging() -> list[str]:
        return sorted(p.name for p in staging_dir.iterdir())

    return ContractTarget(backend, staging)


# --- helpers ----------------------------------------------------------------------


def payload(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes: different seeds give different content."""
    return random.Random(seed).randbytes(size)


def content_key(data: bytes) -> str:
    """The layout key of ``data`` under its SHA-256 (realistic fan-out directories)."""
    return layout.blob_key(Digest("sha256", hashlib.sha256(data).hexdigest()))


def put(backend: Backend, key: str, data: bytes, chunk: int = 256 * 1024) -> None:
    """Write one object in its own batch, in ``chunk``-sized writes."""
    batch = backend.batch()
    writer = batch.writer()
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        writer.write(view[start : start + chunk])
    writer.commit(key)
    batch.commit()


def get(backend: Backend, key: str, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join(backend.read(key, offset, length))


def assert_absent(backend: Backend, key: str) -> None:
    assert backend.stat(key) is None, f"{key} should be absent"
    assert key not in set(backend.list()), f"{key} should not be listed"
    with pytest.raises(BlobNotFound):
        get(backend, key)


@dataclass(slots=True)
class Peak:
    """What :func:`traced_peak` measured once its block ended."""

    size: int = 0  # the most bytes allocated at once, over what was held at the start


@contextlib.contextmanager
def traced_peak() -> Iterator[Peak]:
    """Measure the block's peak allocation with tracemalloc (started and stopped here
    unless it was already tracing)."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    peak = Peak()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        yield peak
        peak.size = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        if not tracing:
            tracemalloc.stop()


def assert_holds(backend: Backend, key: str, data: bytes) -> None:
    assert backend.stat(key) == len(data), f"{key} has the wrong size"
    assert get(backend, key) == data, f"{key} has the wrong content"


def s3_target(bucket: str, endpoint: str, prefix: str) -> ContractTarget:
    """An :class:`S3Backend` under a fresh ``prefix`` of ``bucket`` at ``endpoint``.

    Its staging is the open multipart uploads and ``tmp/`` objects under the
    prefix, so every test gets an empty backend from one shared bucket.
    """
    backend = S3Backend(bucket, prefix, endpoint=endpoint, region="us-east-1")
    return ContractTarget(backend, backend.staging)
