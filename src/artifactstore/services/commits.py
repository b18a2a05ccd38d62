"""Group commit of package versions: concurrent commits of one process, one transaction.

Every commit appends to the event log under its append lock, which one
transaction at a time holds on any number of replicas, from the check that the
version is new through the projection's writes to the COMMIT's WAL flush. Alone,
each commit is a turn at that lock and a flush: under load the commits queue
on it while the cores idle (docs/architecture.md, "Group commit"). Here the
commits that arrive while a batch is being written wait for the writer's turn
(``db/group.py``); the next one to get it writes them all in one transaction:
one turn at the lock, one flush, the log's head read once.

Each commit still fails alone. It runs in a SAVEPOINT of its own, so a refusal
(409 version exists, 422 missing blobs, 423 hold, quota, signatures) rolls back
that commit's writes only and the others commit. A lone commit needs no
savepoint: its refusal rolls back the whole transaction, as before.

Locks keep GC's order (``gc.py``): the blob rows that every commit of the batch
references, in blake3 order, then the append lock, then the commits in turn.
An error that is not a refusal (the database failing) fails the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from artifactstore.controlplane.blobs import lock_rows
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.db.group import GroupCommit
from artifactstore.controlplane.eventlog import serialise
from artifactstore.errors import ArtifactStoreError

__all__ = ["CommitGroup", "Locked"]

R = TypeVar("R")

#: Blob rows a batch holds under a shared lock: blake3 to (sha256, size).
Locked = Mapping[str, tuple[str, int]]


@dataclass(eq=False)
class _Work(Generic[R]):
    blobs: Sequence[str]
    run: Callable[[Connection, Locked], R]
    result: list[R] = field(default_factory=list)


class CommitGroup:
    """Runs commits of many threads in shared write transactions of ``db``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._group: GroupCommit[_Work[Any]] = GroupCommit(self._write)

    def run(self, blobs: Iterable[str], work: Callable[[Connection, Locked], R]) -> R:
        """Run ``work`` in a write transaction holding ``blobs``' rows and the append lock;
        return its result once committed (durably), or raise the error that refused it."""
        item = _Work(sorted(set(blobs)), work)
        self._group.submit(item)
        return item.result[0]

    def _write(self, batch: Sequence[_Work[Any]]) -> list[BaseException | None]:
        with self._db.write() as conn:
            locked = lock_rows(conn, (b for w in batch for b in w.blobs))
            serialise(conn)
            if len(batch) == 1:
                batch[0].result.append(batch[0].run(conn, locked))
                return [None]
            return [_attempt(conn, w, locked) for w in batch]


def _attempt(conn: Connection, work: _Work[Any], locked: Locked) -> BaseException | None:
    """Run one commit of a batch in its own savepoint; its refusal, or None."""
    savepoint = conn.begin_nested()
    try:
        work.result.append(work.run(conn, locked))
    except ArtifactStoreError as exc:
        savepoint.rollback()
        return exc
    savepoint.commit()
    return None
