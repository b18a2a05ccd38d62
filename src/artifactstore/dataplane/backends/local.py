"""Local file-system backend: objects are files under one root directory.

Durability protocol (docs/architecture.md: bytes durable before metadata points at
them). A writer streams into ``tmp/<random>``; the batch commit then makes the
data durable *before* any name points at it, and the names durable before it
returns:

* small batches: ``fsync(file)``, ``rename(tmp, key)``, ``fsync(dir)`` per object;
* large batches: one ``syncfs`` (all staged data), every rename, one more
  ``syncfs`` (all renames). Two flushes instead of two per file is what makes
  a 10,000-file push fast, and the ordering is the same.

A crash at any instant leaves at a key either nothing or the whole object;
orphan staging files are swept by :meth:`LocalBackend.sweep_staging`.
With ``fsync=False`` (benchmarks only) nothing is flushed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from stat import S_ISREG

from artifactstore.dataplane.protocol import BackendProperties
from artifactstore.dataplane.reserve import storage_error
from artifactstore.errors import BlobNotFound, StorageError

__all__ = ["LocalBackend", "fsync_dir"]

_READ_CHUNK = 1 << 20
_SYNCFS_THRESHOLD = 8  # batches larger than this flush the file system once


def _load_syncfs() -> Callable[[int], int] | None:
    # The symbols of the running process include libc's (no ldconfig lookup).
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "syncfs", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


#: Start writeback of a large object every this many bytes (see ``_LocalWriter``).
_WRITEBACK_EVERY = 16 << 20
#: Pieces at least this large, at offsets and of lengths in these units, may go
#: to the disk with O_DIRECT once an object is past ``_WRITEBACK_EVERY``.
_DIRECT_MIN = 1 << 20
_DIRECT_ALIGN = 4096
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "sync_file_range", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalWriter:
    """Streams one object into its staging file.

    With fsync on, a large object's pages are handed to the disk every 16 MiB
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which starts writeback and
    does not wait), so the disk works while later chunks are read and hashed
    and the final ``fsync`` has little left to flush. That is a head start,
    not durability: the ``fsync`` at publish still decides. Measured on the
    shared VM (1 GiB in 1 MiB writes, then fsync): 390-630 MB/s without,
    620-740 MB/s with.

    Past those first 16 MiB, large aligned pieces (the ingest's page-aligned
    4 MiB buffers) go to the disk directly, through a second descriptor
    opened with ``O_DIRECT``: no copy into the page cache and no writeback
    left for the kernel. A durable 1 GiB CLI push, alternated with the
    buffered code: best 943 against 810 MB/s, median 812 against 664
    (BENCHMARKS.md, "O_DIRECT for large objects"). Every other write (small
    objects, an upload's odd-sized pieces, a tail) stays buffered, and a file
    system that refuses ``O_DIRECT`` turns it off for the backend. Durability
    is unchanged: ``O_DIRECT`` promises none, the ``fsync`` at publish does.
    """

    def __init__(self, batch: _LocalBatch, fd: int, tmp: str, key: str | None) -> None:
        self._batch = batch
        self._fd: int | None = fd
        self._tmp = tmp
        self._key = key  # a rename costs nothing here: the hint is only checked
        self._written = 0
        self._handed = 0  # bytes whose writeback was started
        self._direct_fd: int | None = None
        self._direct = batch._b._direct  # False once a direct write is refused
        self.direct_bytes = 0  # written with O_DIRECT (the tests look)

    def write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            raise StorageError("write after commit or cancel")
        view = memoryview(data)
        try:
            while view:
                n = self._write_direct(view) or os.pwrite(self._fd, view, self._written)
                view = view[n:]
                self._written += n
        except OSError as exc:
            self.cancel()
            raise storage_error("writing staging file failed", exc) from exc
        self._start_writeback()

    def _write_direct(self, view: memoryview) -> int:
        """Bytes written with ``O_DIRECT``; 0 where this piece must be buffered."""
        n = len(view)
        if (
            not self._direct
            or self._written < _WRITEBACK_EVERY
            or n < _DIRECT_MIN
            or self._written % _DIRECT_ALIGN
        ):
            return 0
        n -= n % _DIRECT_ALIGN
        if self._direct_fd is None:
            try:
                self._direct_fd = os.open(self._tmp, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as exc:
                # Never a reason to fail a write the buffered descriptor can do
                # (out of descriptors, say); a file system that refuses O_DIRECT
                # turns it off for the backend.
                self._direct = False
                if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                    self._batch._b._direct = False
                return 0
        try:
            written = os.pwrite(self._direct_fd, view[:n], self._written)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._direct = False  # a buffer not aligned in memory: this object stays buffered
            return 0
        self.direct_bytes += written
        return written

    def _close_direct(self) -> None:
        if self._direct_fd is not None:
            fd, self._direct_fd = self._direct_fd, None
            os.close(fd)

    def _start_writeback(self) -> None:
        start_writeback = self._batch._b._sync_file_range
        if (
            start_writeback is not None
            and self._fd is not None
            and self._written - self._handed >= _WRITEBACK_EVERY
        ):
            start_writeback(
                self._fd, self._handed, self._written - self._handed, _SYNC_FILE_RANGE_WRITE
            )
            self._handed = self._written

    def commit(self, key: str) -> None:
        if self._fd is None:
            raise StorageError("commit after commit or cancel")
        if self._key is not None and key != self._key:
            self.cancel()
            raise StorageError(f"object begun for {self._key} committed as {key}")
        fd, self._fd = self._fd, None
        try:
            try:
                self._close_direct()
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink(self._tmp)
            raise storage_error("closing staging file failed", exc) from exc
        self._batch._stage(self._tmp, key)

    def cancel(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                self._close_direct()
            with contextlib.suppress(OSError):
                os.close(fd)
            _unlink(self._tmp)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _LocalBatch:
    def __init__(self, backend: LocalBackend) -> None:
        self._b = backend
        # Paths are strings here: pathlib costs more than the syscalls on a
        # 10,000-file batch.
        self._staged: list[tuple[str, str]] = []
        self._open: list[_LocalWriter] = []

    def writer(self, key: str | None = None) -> _LocalWriter:
        tmp = f"{self._b._tmp}/{secrets.token_hex(12)}.part"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise storage_error(f"cannot create staging file in {self._b._tmp}", exc) from exc
        w = _LocalWriter(self, fd, tmp, key)
        self._open.append(w)
        return w

    def _stage(self, tmp: str, key: str) -> None:
        self._staged.append((tmp, key))

    def commit(self) -> None:
        staged, self._staged = self._staged, []
        renamed: set[str] = set()
        try:
            self._b._publish(staged, renamed)
        finally:
            for tmp, _ in staged:
                if tmp not in renamed:
                    _unlink(tmp)  # duplicates, or what a failure left

    def cancel(self) -> None:
        for w in self._open:
            w.cancel()
        staged, self._staged = self._staged, []
        for tmp, _ in staged:
            _unlink(tmp)


class LocalBackend:
    """Objects as files; see the module docstring for the durability protocol."""

    def __init__(self, root: Path, *, fsync: bool = True, name: str = "local") -> None:
        self._root = root
        self._root_text = str(root)
        self._tmp = root / "tmp"
        self._fsync = fsync
        self._syncfs = _load_syncfs() if fsync else None
        self._sync_file_range = _load_sync_file_range() if fsync else None
        # Without fsync (benchmarks) the page cache is the point: no O_DIRECT.
        self._direct = fsync and hasattr(os, "O_DIRECT")
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create storage directory {root}: {exc}") from exc
        self._properties = BackendProperties(name=name, local_root=root)
        # Fan-out directories known to exist (they are never removed): saves a
        # mkdir per object on large batches.
        self._dirs: set[str] = set()
        self._durable_dirs: set[Path] = set()  # entries above a leaf known flushed

    @property
    def properties(self) -> BackendProperties:
        return self._properties

    def path(self, key: str) -> Path:
        """The file behind ``key``; refuses keys that would leave the root."""
        return Path(self._fs_path(key))

    def _fs_path(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
            raise StorageError(f"invalid storage key {key[:200]!r}")
        if parts[0] == "tmp":
            raise StorageError("the staging area is not addressable")
        return f"{self._root_text}/{key}"

    def batch(self) -> _LocalBatch:
        return _LocalBatch(self)

    def _flush_fs(self) -> None:
        if self._syncfs is None:
            os.sync()
            return
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise StorageError(f"syncfs failed: {os.strerror(err)}")
        finally:
            os.close(fd)

    def _levels(self, directory: Path) -> list[Path]:
        """``directory`` and each of its parents up to and including the root."""
        rel = directory.relative_to(self._root)
        return [self._root / p for p in (rel, *rel.parents)]

    def _publish(self, staged: list[tuple[str, str]], renamed: set[str]) -> None:
        """Make ``staged`` durable at their keys; adds each tmp it renamed to ``renamed``."""
        if not staged:
            return
        bulk = self._fsync and len(staged) > _SYNCFS_THRESHOLD
        try:
            if bulk:
                self._flush_fs()
            dirs: set[str] = set()
            for tmp, key in staged:
                dest = self._fs_path(key)
                parent = os.path.dirname(dest)
                if os.path.isfile(dest):
                    # Content-addressed: the bytes are already there. A commit that
                    # failed, or is still running, may have renamed them without
                    # flushing the name yet: flush it before acknowledging it here.
                    dirs.add(parent)
                    continue
                if self._fsync and not bulk:
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                if parent not in self._dirs:
                    os.makedirs(parent, exist_ok=True)
                    self._dirs.add(parent)
                os.rename(tmp, dest)
                renamed.add(tmp)
                dirs.add(parent)
            if bulk:
                self._flush_fs()
                self._durable_dirs.update(p for d in dirs for p in self._levels(Path(d))[1:])
            elif self._fsync:
                # The leaf directory holds the new names: flush it every time. New
                # directories may sit at any level above it (``blobs/`` itself on the
                # first write): flush those once per process, then remember them.
                for leaf in dirs:
                    fsync_dir(leaf)
                upper = {p for d in dirs for p in self._levels(Path(d))[1:]} - self._durable_dirs
                for level in upper:
                    fsync_dir(level)
                self._durable_dirs.update(upper)
        except OSError as exc:
            raise storage_error("publishing objects failed", exc) from exc

    def stat(self, key: str) -> int | None:
        try:
            st = os.stat(self._fs_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"stat {key} failed: {exc.strerror}") from exc
        # A directory is a key prefix, not an object.
        return st.st_size if S_ISREG(st.st_mode) else None

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            f = io.FileIO(self.path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise BlobNotFound(f"object {key} is absent") from exc
        except OSError as exc:
            raise StorageError(f"open {key} failed: {exc.strerror}") from exc
        return self._stream(f, offset, length)

    @staticmethod
    def _stream(f: io.FileIO, offset: int, length: int | None) -> Iterator[bytes]:
        with f:
            try:
                f.seek(offset)
                remaining = length
                while remaining is None or remaining > 0:
                    n = _READ_CHUNK if remaining is None else min(_READ_CHUNK, remaining)
                    chunk = f.read(n)
                    if not chunk:
                        break
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk
            except OSError as exc:
                raise StorageError(f"reading failed: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"delete {key} failed: {exc.strerror}") from exc
        if self._fsync:
            fsync_dir(path.parent)

    def list(self, prefix: str = "") -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self._root):
            rel = Path(dirpath).relative_to(self._root).as_posix()
            if rel == "tmp":
                dirnames.clear()
                continue
            base = "" if rel == "." else rel + "/"
            dirnames.sort()
            for name in sorted(filenames):
                key = base + name
                if key.startswith(prefix):
                    yield key

    def sweep_staging(self, older_than: float) -> int:
        """Remove staging files older than ``older_than`` seconds (crash leftovers)."""
        cutoff = time.time() - older_than
        removed = 0
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise StorageError(f"sweeping {entry.path} failed: {exc}") from exc
        return removed

    def health(self) -> None:
        """Write two bytes to a fresh file and remove it: a full or read-only disk fails.

        The file is removed whatever the write did (a full disk creates the
        file and then refuses its bytes), so no probe is ever left behind.
        """
        try:
            fd, probe = tempfile.mkstemp(prefix="health-", dir=self._tmp)
            try:
                with os.fdopen(fd, "wb", buffering=0) as f:
                    f.write(b"ok")
            finally:
                os.unlink(probe)
        except OSError as exc:
            raise StorageError(f"storage directory {self._root} is not writable: {exc}") from exc
