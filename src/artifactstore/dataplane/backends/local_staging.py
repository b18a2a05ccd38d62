"""Upload staging for the local backend: one file per session under ``uploads/``.

Promotion is a rename into the backend's blob tree on the same file system:
a completed upload is never copied, only fsynced and renamed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

from artifactstore.dataplane.backends.local import LocalBackend, fsync_dir
from artifactstore.dataplane.reserve import storage_error
from artifactstore.errors import StorageError

__all__ = ["LocalStaging"]

_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_READ_CHUNK = 1 << 20


class _Append:
    def __init__(self, fd: int, fsync: bool) -> None:
        self._fd: int | None = fd
        self._fsync = fsync

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise StorageError("append after close")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise storage_error("writing upload staging failed", exc) from exc

    def sync(self) -> int:
        if self._fd is None:
            raise StorageError("sync after close")
        return self._flush(self._fd)

    def _flush(self, fd: int) -> int:
        try:
            if self._fsync:
                os.fsync(fd)
            return os.fstat(fd).st_size
        except OSError as exc:
            raise storage_error("flushing upload staging failed", exc) from exc

    def close(self) -> int:
        if self._fd is None:
            raise StorageError("close after close")
        fd, self._fd = self._fd, None
        try:
            return self._flush(fd)
        finally:
            os.close(fd)

    def abort(self) -> int:
        return self.close()


class LocalStaging:
    """The :class:`~artifactstore.dataplane.staging.Staging` capability of a LocalBackend."""

    def __init__(self, backend: LocalBackend, root: Path, *, fsync: bool = True) -> None:
        self._backend = backend
        self._dir = root / "uploads"
        self._fsync = fsync
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, upload_id: str) -> Path:
        if not _ID.fullmatch(upload_id):
            raise StorageError(f"invalid upload id {upload_id[:80]!r}")
        return self._dir / upload_id

    def create(self, upload_id: str) -> None:
        path = self._path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.close(fd)
            if self._fsync:
                fsync_dir(self._dir)
        except OSError as exc:
            raise storage_error("cannot create upload staging", exc) from exc

    def append(self, upload_id: str, offset: int) -> _Append:
        path = self._path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise StorageError(f"upload {upload_id} has no staged bytes") from exc
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise StorageError(
                    f"upload {upload_id} holds {size} bytes, fewer than its offset {offset}"
                )
            if size > offset:
                os.ftruncate(fd, offset)  # unacknowledged bytes of a cut-off request
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return _Append(fd, self._fsync)

    def staged_size(self, upload_id: str) -> int | None:
        try:
            return self._path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def read_staged(self, upload_id: str) -> Iterator[bytes]:
        try:
            f = io.FileIO(self._path(upload_id), "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"upload {upload_id} has no staged bytes") from exc
        with f:
            while chunk := f.read(_READ_CHUNK):
                yield chunk

    def promote(self, upload_id: str, key: str) -> None:
        src = self._path(upload_id)
        dest = self._backend.path(key)
        try:
            if dest.exists():
                src.unlink()
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            if self._fsync:
                fd = os.open(src, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.rename(src, dest)
            if self._fsync:
                for level in (dest.parent, dest.parent.parent, dest.parent.parent.parent):
                    fsync_dir(level)
                fsync_dir(self._dir)
        except OSError as exc:
            raise storage_error(f"promoting upload {upload_id} failed", exc) from exc

    def discard(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(upload_id).unlink()

    def staged_ids(self) -> Iterator[str]:
        for entry in os.scandir(self._dir):
            if _ID.fullmatch(entry.name):
                yield entry.name
