"""Garbage collection that is safe against concurrent pushes.

The protocol (docs/architecture.md, "Garbage collection"), for a blob B stored at key K:

1. **Lease.** Every ingest renews K's lease (``blob_activity.touched_at``) in
   its own committed transaction *before* it publishes the bytes; existence
   answers and dereferences (package deletion) renew it too.
2. **Decide** (one write transaction): B is a candidate only if no live file
   references it and its lease is older than the grace period. Its row is
   re-checked under lock (``FOR UPDATE``; on SQLite the write lock
   serialises the same way), and once every row of the batch is locked the
   references are looked for again, ``blob.collected`` is appended and the
   row goes. Rows are locked before the log's append lock, the order every
   commit takes them in (docs/architecture.md, "Replicas").
   From then on a commit that references B fails with "missing": commits
   re-check their blobs' rows under a shared lock in their own transaction,
   so no manifest can point at B.
3. **Unlink** (one write transaction per blob): K's lease is read again under
   lock; only if nobody touched K since the decision, and no ingest recorded
   B again, are the bytes deleted, while the lock is held. An ingest that
   renewed the lease after the decision keeps its bytes; one that renews it
   after the unlink publishes its bytes afterwards.
4. **Record** (the ingest's side): the transaction that records B renews the
   lease again and re-checks that B's bytes exist before it appends
   ``blob.stored``; bytes that vanished in between (possible only when the
   grace period is shorter than the ingest) make it ingest them again. A
   recorded B is never unlinked, so its commit is safe. If B was already
   recorded, the lease renewed is its recorded location's (a pack, perhaps,
   that this ingest did not write), and a push that skipped B's bytes because
   the store had them stages them after all if B was collected meanwhile.

Steps 2 and 3 run in batches of :data:`BATCH` blobs, each a whole run of
them: on a full disk, a batch's unlinks make room for the next one's events.

A pack (many small blobs at one key) shares one lease and is unlinked only
once no location names it.

A crash between 2 and 3 leaves bytes without a row (an orphan). **Orphans**
(stored keys with no row whose lease is absent or expired) go through step 3
on every run. Staging leftovers are swept once they are older than the grace
period *and* :data:`STAGING_MIN_AGE`: an upload in progress writes its staging
files before it takes any lease, so a short grace (``gc --grace 0s``) must not
delete them under a running push.

GC fails closed: first it checks that every live file's blob is recorded and
present in storage; if not, it deletes nothing and raises CorruptBlob.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, delete, exists, select

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import values_in
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.eventlog import append_many
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.dataplane.layout import BLOB_PREFIX, PACK_PREFIX
from artifactstore.errors import CorruptBlob
from artifactstore.model.events import BlobCollected
from artifactstore.model.records import GcReport

__all__ = [
    "BATCH",
    "STAGING_MIN_AGE",
    "collect",
    "collect_orphans",
    "decide",
    "unlink_if_untouched",
]

#: Staging files younger than this are never swept, whatever the grace period: they may
#: belong to an upload in progress, which holds no lease until its bytes are all staged.
STAGING_MIN_AGE = 3600.0

#: Blobs decided in one transaction (see :func:`collect`).
BATCH = 1000


def _check_live_references(conn: Connection, plane: DataPlane) -> None:
    live = (
        select(t.files.c.blake3, t.versions.c.namespace, t.versions.c.name, t.versions.c.version)
        .join(t.versions, t.versions.c.id == t.files.c.version_id)
        .where(t.versions.c.deleted_seq.is_(None))
    )
    bad = conn.execute(
        live.where(~exists().where(t.blobs.c.blake3 == t.files.c.blake3)).limit(1)
    ).first()
    if bad is not None:
        raise CorruptBlob(
            f"{bad.namespace}/{bad.name}:{bad.version} references {bad.blake3}, which is not "
            "recorded: GC deleted nothing (run 'artifactstore verify --all')"
        )
    loc = t.storage_locations
    referenced = select(loc.c.blake3, loc.c.key, loc.c.backend).where(
        exists().where(t.files.c.blake3 == loc.c.blake3)
    )
    present: dict[tuple[str, str], bool] = {}  # a pack holds many blobs: one stat each
    for row in conn.execute(referenced):
        where = (row.key, row.backend)
        if where not in present:
            present[where] = plane.stat(row.key, row.backend) is not None
        if not present[where]:
            raise CorruptBlob(
                f"live blob {row.blake3} is missing from storage: GC deleted nothing "
                "(run 'artifactstore verify --all')"
            )


#: A blob GC may collect: (blake3, storage key, backend, size).
_Candidate = tuple[str, str, str, int]


def _candidates(conn: Connection, cutoff: float) -> tuple[list[_Candidate], int]:
    """Unreferenced blobs as (collectable, count still within grace)."""
    lease = t.blob_activity
    loc = t.storage_locations
    rows = conn.execute(
        select(t.blobs.c.blake3, loc.c.key, loc.c.backend, t.blobs.c.size, lease.c.touched_at)
        .join(t.storage_locations, t.storage_locations.c.blake3 == t.blobs.c.blake3)
        .outerjoin(lease, lease.c.key == t.storage_locations.c.key)
        .where(~exists().where(t.files.c.blake3 == t.blobs.c.blake3))
        .order_by(t.blobs.c.blake3)
    )
    ready, young = [], 0
    for row in rows:
        if row.touched_at is not None and row.touched_at >= cutoff:
            young += 1
        else:
            ready.append((row.blake3, row.key, row.backend, row.size))
    return ready, young


def unlink_if_untouched(
    conn: Connection, plane: DataPlane, key: str, since: float, backend: str | None = None
) -> bool:
    """Step 3: delete the bytes at ``key`` of ``backend`` (None: the hot one) unless
    touched at or after ``since`` or recorded there."""
    backend = backend or plane.backend.properties.name
    lease = conn.execute(
        select(t.blob_activity.c.touched_at).where(t.blob_activity.c.key == key).with_for_update()
    ).first()
    if lease is not None and lease.touched_at >= since:
        return False
    loc = t.storage_locations
    recorded = select(loc.c.key).where(loc.c.key == key, loc.c.backend == backend)
    if conn.execute(recorded).first() is not None:
        return False  # recorded again by a concurrent ingest or move: live data
    plane.delete(key, backend)
    conn.execute(delete(t.blob_activity).where(t.blob_activity.c.key == key))
    return True


def decide(
    conn: Connection,
    plane: DataPlane,
    report: GcReport,
    *,
    cutoff: float,
    actor: str,
    limit: int | None = None,
    check: bool = True,
) -> list[tuple[str, str]]:
    """Step 2 inside the caller's write transaction; returns the (key, backend) pairs
    step 3 must visit: of at most ``limit`` blobs (None: all).

    Fails closed first (CorruptBlob, nothing changed) unless ``check`` is off (a
    later batch of a run that checked). In a dry run it only fills ``report``
    and returns no key.
    """
    if check:
        _check_live_references(conn, plane)
    ready, report.protected_by_grace = _candidates(conn, cutoff)
    if report.dry_run:
        report.collected = [b for b, _, _, _ in ready]
        report.bytes_freed = sum(size for _, _, _, size in ready)
        return []
    # Every row is locked (in blake3 order) before the first event is appended, which
    # takes the log's append lock: commits take their blob rows and then that lock, so
    # taking them in the other order would deadlock with a commit on PostgreSQL.
    chosen = []
    for blake3, key, backend, size in ready[:limit]:
        still = conn.execute(
            select(t.blobs.c.blake3)
            .where(t.blobs.c.blake3 == blake3, ~exists().where(t.files.c.blake3 == blake3))
            .with_for_update()
        ).first()
        if still is not None:
            chosen.append((blake3, key, backend, size))
    # A commit that held a row's shared lock when GC asked for it was invisible to the
    # statement that then waited for it (PostgreSQL's READ COMMITTED re-checks only the
    # row itself): look for references again, now that no commit can add one.
    referenced = values_in(conn, t.files.c.blake3, t.files.c.blake3, [c[0] for c in chosen])
    chosen = [c for c in chosen if c[0] not in referenced]
    append_many(conn, [BlobCollected(blake3, size) for blake3, _, _, size in chosen], actor)
    report.collected.extend(blake3 for blake3, _, _, _ in chosen)
    report.bytes_freed += sum(size for _, _, _, size in chosen)
    return [(key, backend) for _, key, backend, _ in chosen]


def collect(
    db: Database,
    plane: DataPlane,
    *,
    grace: float,
    dry_run: bool,
    actor: str,
    now: Callable[[], float] = time.time,
    on_decided: Callable[[], None] = lambda: None,
) -> GcReport:
    """Run the protocol of the module docstring; ``on_decided`` runs as soon as a
    decision is committed (caches of "present" answers drop what it removed).

    Steps 2 and 3 run in batches of :data:`BATCH` blobs, each a whole run of the
    protocol: a batch's unlinks free space before the next batch writes its
    events, so GC works on a full disk with a small reserve (engine.py), and
    one transaction never has to hold every decision of a large collection.
    """
    report = GcReport(dry_run=dry_run, grace_seconds=grace)
    first = True
    while True:
        decided_at = now()
        with db.write() as conn:
            decided = decide(
                conn,
                plane,
                report,
                cutoff=decided_at - grace,
                actor=actor,
                limit=BATCH,
                check=first,
            )
        if dry_run:
            return report
        first = False
        on_decided()
        for key, backend in decided:
            with db.write() as conn:
                unlink_if_untouched(conn, plane, key, decided_at, backend)
        if len(decided) < BATCH:
            break
    report.orphans_removed = collect_orphans(db, plane, decided_at - grace)
    for store_backend in plane.backends:
        store_backend.sweep_staging(max(grace, STAGING_MIN_AGE))
    return report


def collect_orphans(db: Database, plane: DataPlane, cutoff: float) -> int:
    """Stored keys no location records at their backend whose lease is absent or older
    than ``cutoff``: a crash mid-GC, the old copy of a blob moved between tiers, or a
    pack whose last blob was collected or moved."""
    removed = 0
    for backend in plane.backends:
        name = backend.properties.name
        loc = t.storage_locations
        with db.read() as conn:
            known = {r.key for r in conn.execute(select(loc.c.key).where(loc.c.backend == name))}
        stored = [k for k in backend.list() if k.startswith((BLOB_PREFIX, PACK_PREFIX))]
        for key in [k for k in stored if k not in known]:
            with db.write() as conn:
                if unlink_if_untouched(conn, plane, key, cutoff, name):
                    removed += 1
    return removed
