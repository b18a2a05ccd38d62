"""Group commit: the small write transactions of concurrent requests, written as one.

Every upload must record its blob durably before it is answered. Alone, that
is a turn at SQLite's single writer and an fsync per upload, and under load
the turns queue: throughput is one transaction at a time. Here the requests
that arrive while a batch is being written wait for the writer's turn; the
next one to get it writes everything pending, theirs included, in one
transaction with one fsync (the technique databases use for their own logs).
No thread waits for a timer: a lone request is written at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")


@dataclass(eq=False)
class _Entry(Generic[T]):
    item: T
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Batches ``submit`` calls of many threads into calls of ``write``.

    ``write(items)`` runs one transaction for all ``items`` and returns, per
    item, None or the error that refused that item alone (the others still
    commit). An exception it raises fails every item of the batch.
    """

    def __init__(self, write: Callable[[Sequence[T]], Sequence[BaseException | None]]) -> None:
        self._write = write
        self._pending: list[_Entry[T]] = []
        self._mutex = threading.Lock()  # guards _pending
        self._turn = threading.Lock()  # one batch written at a time

    def submit(self, item: T) -> None:
        """Return once ``item`` is committed; raise the error that refused it."""
        entry = _Entry(item)
        with self._mutex:
            self._pending.append(entry)
        with self._turn:
            if not entry.done:  # else an earlier writer took it in its batch
                with self._mutex:
                    batch, self._pending = self._pending, []
                self._write_batch(batch)
        if entry.error is not None:
            raise entry.error

    def _write_batch(self, batch: list[_Entry[T]]) -> None:
        errors: Sequence[BaseException | None]
        try:
            errors = self._write([e.item for e in batch])
            if len(errors) != len(batch):
                raise RuntimeError(f"{len(errors)} results for a batch of {len(batch)}")
        except BaseException as exc:  # the transaction failed: so did every item in it
            errors = [exc] * len(batch)
        for e, error in zip(batch, errors, strict=True):
            e.error = error
            e.done = True
