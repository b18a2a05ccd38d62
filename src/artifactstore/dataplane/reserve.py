"""A full disk: recognising it, and the space kept for the operations that free it.

On a full disk every write fails, including the ones that free space: ``rm``
appends an event before ``gc`` may delete bytes, and even opening a SQLite
database in WAL mode creates its ``-shm`` and ``-wal`` files. So the store
keeps a :class:`Reserve`, a preallocated file beside its database, released
only while an operation that frees space runs (and to open the database on a
full disk), and allocated again afterwards, as far as the disk allows.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from artifactstore.errors import StorageError, StorageFull

__all__ = ["DISK_FULL_ERRNOS", "Reserve", "is_full", "storage_error"]

#: What the kernel answers a write on a full disk, or past the user's quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Less free space than this is a full disk; also the margin a short reserve leaves.
_SMALLEST = 64 * 1024


def storage_error(what: str, exc: OSError) -> StorageError:
    """The library error for a failed file operation: StorageFull when the disk is full."""
    if exc.errno in DISK_FULL_ERRNOS:
        return StorageFull(
            f"{what}: the disk is full ({exc.strerror}); free space ('artifactstore rm', "
            "then 'artifactstore gc') or grow the disk"
        )
    return StorageError(f"{what}: {exc.strerror or exc}")


def _room(directory: Path) -> int | None:
    """Bytes the file system holding ``directory`` has free for us (None: unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_full(directory: Path) -> bool:
    """Whether the file system holding ``directory`` has (almost) no space left for us."""
    room = _room(directory)
    return room is not None and room < _SMALLEST


class Reserve:
    """A preallocated file of ``size`` bytes at ``path`` (None: a database with no file
    of its own, which has no reserve).

    Releasing and keeping are best effort and never raise: the reserve only
    ever adds a chance to free space, and a store without one works as before.
    """

    def __init__(self, path: Path | None, size: int) -> None:
        self.path = path
        self.size = size if path is not None else 0

    def keep(self) -> None:
        """Allocate the reserve if it is absent or short: the full size, else as much
        as the disk has room for. With no reserve wanted, one left from an earlier
        setting is removed."""
        if self.path is None or self.size <= 0:
            self.release()
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return
        try:
            have = os.fstat(fd).st_size
            if have >= self.size:
                return
            room = _room(self.path.parent) or 0
            # The full size; else all the room there is (a reserve released to open
            # the database on a full disk shrinks by only what opening took); else
            # all but a margin, for file systems that need blocks of their own.
            for size in (self.size, have + room, have + room - _SMALLEST):
                if size > have:
                    with contextlib.suppress(OSError):
                        os.posix_fallocate(fd, 0, min(size, self.size))
                        return
        except OSError:
            pass
        finally:
            os.close(fd)

    def release(self) -> bool:
        """Free the reserve's space; whether there was any to free."""
        if self.path is None:
            return False
        try:
            self.path.unlink()
            return True
        except OSError:
            return False

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Run an operation that frees space with the reserve's space free, then keep it.

        While the disk still has the reserve's size free, releasing it would add
        nothing that matters and cost its allocation again: it is left alone.
        """
        room = None if self.path is None else _room(self.path.parent)
        if room is None or room >= self.size:
            yield
            return
        self.release()
        try:
            yield
        finally:
            self.keep()
