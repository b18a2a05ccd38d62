"""Group commit of package versions: concurrent commits of one process, one transaction.

Every commit appends to the event log under its append lock, which one
transaction at a time holds on any number of replicas, from the check that the
version is new through the projection's writes to the COMMIT's WAL flush. Alone,
each commit is a turn at that lock and a flush: under load the commits queue
on it while the cores idle (docs/architecture.md, group commit). Here the
commits that arrive while a batch is being written wait for the writer's turn
(``db/group.py``); the next one to get it writes them all in one transaction:
one turn at the lock, one flush, the log's head read once.

A commit of a manifest (the HTTP path) is checked first (``packages.prepare``:
every refusal, 409 version exists, 422 missing blobs, 423 hold, quota,
signatures, is raised before anything is written), and the checked commits
are written together (``packages.apply``: one append, one statement per table),
so the lock is held for a few statements per batch rather than a dozen per
commit. A check that commits not yet written could change (another commit of
the same version, a namespace with a quota) writes them first; a refused one
is checked again after writing them (the blobs they make the namespace hold).
A push, which records its blobs as it goes, runs in a SAVEPOINT of its own
(none when alone in its batch), so that its refusal rolls back its writes only.
So each commit fails alone, and the others commit.

Locks keep GC's order (``gc.py``): the blob rows that every commit of the batch
references, in blake3 order, then the append lock, then the commits in turn.
An error that is not a refusal (the database failing) fails the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from artifactstore.controlplane import namespaces
from artifactstore.controlplane.blobs import lock_rows
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.db.group import GroupCommit
from artifactstore.controlplane.eventlog import serialise
from artifactstore.controlplane.packages import Plan, apply, live
from artifactstore.errors import ArtifactStoreError
from artifactstore.model.identity import Reference
from artifactstore.model.records import NamespaceSettings
from artifactstore.model.versions import CommitResult, VersionRecord

__all__ = ["CommitGroup", "Locked", "Prepare", "Versions"]

R = TypeVar("R")

#: Blob rows a batch holds under a shared lock: blake3 to (sha256, size).
Locked = Mapping[str, tuple[str, int]]
#: Live versions a batch has read (``packages.live``): ``NS/NAME:VERSION`` to the
#: version, None if there is none; a reference that is not a key was not read.
Versions = Mapping[str, VersionRecord | None]
#: Checks one commit (``packages.prepare``), given the batch's locked rows, the
#: namespace's settings and the live versions read; raises its refusal.
Prepare = Callable[[Connection, Locked, NamespaceSettings, Versions], Plan]


@dataclass(eq=False)
class _Work(Generic[R]):
    blobs: Sequence[str]
    run: Callable[[Connection, Locked], R] | None = None  # writes as it goes (a push)
    prepare: Prepare | None = None  # writes nothing until the batch applies its plan
    ref: Reference | None = None
    result: list[R] = field(default_factory=list)


class CommitGroup:
    """Runs commits of many threads in shared write transactions of ``db``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._group: GroupCommit[_Work[Any]] = GroupCommit(self._write)

    def commit(self, blobs: Iterable[str], ref: Reference, prepare: Prepare) -> CommitResult:
        """Check a commit of ``ref`` with ``prepare`` and write it with the batch's others;
        return once committed (durably), or raise the error that refused it."""
        item: _Work[CommitResult] = _Work(sorted(set(blobs)), None, prepare, ref)
        self._group.submit(item)
        return item.result[0]

    def run(self, blobs: Iterable[str], work: Callable[[Connection, Locked], R]) -> R:
        """Run ``work`` in a write transaction holding ``blobs``' rows and the append lock;
        return its result once committed (durably), or raise the error that refused it."""
        item = _Work(sorted(set(blobs)), work)
        self._group.submit(item)
        return item.result[0]

    def _write(self, batch: Sequence[_Work[Any]]) -> list[BaseException | None]:
        with self._db.write() as conn:
            writing = _Batch(conn, lock_rows(conn, (b for w in batch for b in w.blobs)))
            serialise(conn)
            writing.versions.update(live(conn, [w.ref for w in batch if w.ref is not None]))
            errors = [writing.add(w, alone=len(batch) == 1) for w in batch]
            writing.flush()
        return errors


class _Batch:
    """One batch's transaction: the plans checked and not yet written."""

    def __init__(self, conn: Connection, locked: Locked) -> None:
        self.conn, self.locked = conn, locked
        self.pending: list[tuple[_Work[Any], Plan]] = []
        self._settings: dict[str, NamespaceSettings] = {}
        self.versions: dict[str, VersionRecord | None] = {}

    def add(self, work: _Work[Any], *, alone: bool) -> BaseException | None:
        """Check (a plan) or run (a push) one commit; its refusal, or None."""
        if work.run is not None:
            self.flush()  # it must see every commit before it
            self.versions.clear()  # and it may commit any version: read them again
            if alone:  # its refusal rolls back the transaction: no savepoint needed
                work.result.append(work.run(self.conn, self.locked))
                return None
            return _attempt(self.conn, work, self.locked)
        assert work.prepare is not None and work.ref is not None
        ns = str(work.ref.namespace)
        if ns not in self._settings:
            self._settings[ns] = namespaces.get(self.conn, work.ref.namespace)
        settings = self._settings[ns]
        # Checks that pending commits would change: one of the same version, a quota.
        if settings.quota_bytes is not None or any(w.ref == work.ref for w, _ in self.pending):
            self.flush()
        try:
            plan = work.prepare(self.conn, self.locked, settings, self.versions)
        except ArtifactStoreError as exc:
            if not self.pending:
                return exc
            self.flush()  # a refusal that the pending commits may lift (blobs they hold)
            try:
                plan = work.prepare(self.conn, self.locked, settings, self.versions)
            except ArtifactStoreError as again:
                return again
        self.pending.append((work, plan))
        return None

    def flush(self) -> None:
        """Write the pending plans: their events in one append, their rows in one statement
        per table. Nothing here refuses a commit: an error fails the whole batch."""
        if self.pending:
            results = apply(self.conn, [plan for _, plan in self.pending])
            for (work, _), result in zip(self.pending, results, strict=True):
                work.result.append(result)
                self.versions[str(result.record.reference)] = result.record  # now live
            self.pending = []


def _attempt(conn: Connection, work: _Work[Any], locked: Locked) -> BaseException | None:
    """Run one commit that writes as it goes in its own savepoint; its refusal, or None."""
    assert work.run is not None
    savepoint = conn.begin_nested()
    try:
        work.result.append(work.run(conn, locked))
    except ArtifactStoreError as exc:
        savepoint.rollback()
        return exc
    savepoint.commit()
    return None
