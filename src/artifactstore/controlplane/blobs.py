"""Blob records: which content the store holds, where, and GC leases.

``blob_activity`` is the lease table of the GC protocol (``gc.py``), keyed by
storage key: a row's ``touched_at`` is the last upload, existence answer or
dereference of the blob stored there.
It is written *before* bytes are published, in its own transaction, so that
GC's final check before unlinking bytes always sees it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Row, Select, bindparam, exists, func, select

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import in_batches, values_in
from artifactstore.controlplane.eventlog import append, append_many, serialise
from artifactstore.errors import MissingBlobs
from artifactstore.model.events import BlobClaimed, BlobsStored, BlobStored, Location
from artifactstore.model.identity import BlobDigests, Digest
from artifactstore.model.records import AVAILABLE, BlobRecord, Placement

__all__ = [
    "RecentBlobs",
    "SeenBlobs",
    "Visible",
    "dereference",
    "find",
    "find_visible",
    "located",
    "location",
    "lock_rows",
    "not_held",
    "placement",
    "record_stored",
    "recorded",
    "touch",
]


class RecentBlobs:
    """Blob records this process recorded or looked up lately, to answer ``HEAD``.

    Only existence and size come from here, never a location to read: a blob's
    digests and size never change, but another process may move it between
    tiers or collect it. A stale "present" (collected elsewhere within ``ttl``)
    is the case the GC protocol already covers for a client told "present"
    just before a collection: its commit re-checks every blob and answers 409
    ``missing_blobs``, and the client uploads them. This process's own GC and
    tier moves clear it. Bounded: when full it starts over.

    A clear also starts a new ``generation``: a lookup that read the database
    before the clear passes the generation it began in to :meth:`put`, which
    then caches nothing (GC clears right after it commits its decision, so a
    HEAD racing it never caches a blob the decision removed).
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 100_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._items: dict[str, tuple[float, BlobRecord]] = {}
        self.generation = 0

    def get(self, digest: str, now: float) -> BlobRecord | None:
        hit = self._items.get(digest)
        if hit is None or hit[0] + self._ttl < now:
            return None
        return hit[1]

    def put(self, record: BlobRecord, now: float, generation: int | None = None) -> None:
        """Cache ``record``; not if a clear came after ``generation`` (when the lookup began)."""
        if generation is not None and generation != self.generation:
            return
        if len(self._items) >= self._max:
            self._items.clear()
        entry = (now, record)
        self._items[str(record.digests.blake3)] = entry
        self._items[str(record.digests.sha256)] = entry

    def clear(self) -> None:
        self.generation += 1
        self._items.clear()


@dataclass(frozen=True, slots=True)
class Visible:
    """A blob a lookup found, and until when the namespaces it looked through hold it.

    ``held_at`` is None when the blob is held for as long as nothing changes
    (a global admin's lookup, or a live version of one of the namespaces
    references it); otherwise it is the latest upload into one of them, and
    the blob is held while ``held_at >= held_since`` (the grace period).
    """

    record: BlobRecord
    held_at: str | None = None


#: (the digest looked up, the namespaces looked through: None for all)
LookupKey = tuple[str, frozenset[str] | None]


class SeenBlobs:
    """Blob lookups this process answered, each trusted only while the database's
    ``data_version`` (``Database.data_version``) is what it was before the lookup.

    An unchanged version means nothing at all was committed since the lookup's
    snapshot, by any process: no GC, tier move, deletion, upload or namespace
    change can have altered the answer. Only time can, and it is checked: the
    grace period of an upload's holding (``Visible.held``). Only readable
    (``available``) records are kept, since a restore completes by time.
    Where there is no version (PostgreSQL) nothing is kept. Bounded: when full
    or when the version moves on, it starts over.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._version: int | None = None
        self._items: dict[LookupKey, tuple[int, Visible]] = {}

    def get(
        self, key: LookupKey, version: int | None, held_since: Callable[[], str]
    ) -> BlobRecord | None:
        """The record kept for ``key`` if ``version`` is still the database's and the
        namespaces still hold it at ``held_since()`` (asked only if a holding ends)."""
        if version is None:
            return None
        hit = self._items.get(key)
        if hit is None or hit[0] != version:
            return None
        found = hit[1]
        if found.held_at is not None and found.held_at < held_since():
            return None
        return found.record

    def put(self, key: LookupKey, found: Visible, version: int | None) -> None:
        """Keep ``found``; ``version`` must have been read before the lookup's snapshot."""
        if version is None or found.record.restore_status != AVAILABLE:
            return
        if version != self._version or len(self._items) >= self._max:
            self._items.clear()
            self._version = version
        self._items[key] = (version, found)


def located() -> Select[Any]:
    """Blobs joined with their storage location: every column either table has."""
    loc = t.storage_locations
    return select(
        t.blobs.c.blake3,
        t.blobs.c.sha256,
        t.blobs.c.size,
        loc.c.key,
        loc.c.backend,
        loc.c.representation,
        loc.c.retrieval_tier,
        loc.c.restore_status,
        loc.c.restore_ready_at,
        loc.c.pack_offset,
    ).join(loc, loc.c.blake3 == t.blobs.c.blake3)


def placement(key: str, pack_offset: int | None, size: int) -> Placement:
    """A location row's placement (a pack's span is as long as the blob)."""
    return Placement(key) if pack_offset is None else Placement(key, pack_offset, size)


def location(backend: str, place: Placement, tier: str, status: str) -> Location:
    """A storage location as events carry it; ``offset`` only for a packed blob."""
    return Location(backend, place.key, place.representation, tier, status, place.offset)


def find(conn: Connection, digest: Digest, *, lock: bool = False) -> BlobRecord | None:
    """Look a blob up by either digest; ``lock`` holds its row until the transaction ends."""
    col = t.blobs.c.blake3 if digest.algorithm == "blake3" else t.blobs.c.sha256
    query = located().where(col == str(digest)).limit(1)
    if lock:
        query = query.with_for_update(read=True, of=t.blobs)
    row = conn.execute(query).first()
    return None if row is None else _record(row)


def _record(row: Row[Any]) -> BlobRecord:
    return BlobRecord(
        BlobDigests(Digest.parse(row.blake3), Digest.parse(row.sha256), row.size),
        placement(row.key, row.pack_offset, row.size),
        row.backend,
        row.retrieval_tier,
        row.restore_status,
        row.restore_ready_at,
    )


def find_visible(
    conn: Connection, digest: Digest, readable: Collection[str] | None, held_since: str
) -> Visible | None:
    """A blob by either digest, if one of ``readable`` holds it (None: any blob).

    One statement: the record, its location and whether the namespaces hold
    it (blob visibility, docs/security.md: a live version of theirs references
    it, or bytes were uploaded into one of them at or after ``held_since``).
    A digest is not a capability, so a blob they do not hold is absent.
    """
    query = _visible_query(digest.algorithm, scoped=readable is not None)
    params: dict[str, Any] = {"digest": str(digest)}
    if readable is not None:
        params.update(names=sorted(readable), held_since=held_since)
    row = conn.execute(query, params).first()
    if row is None:
        return None
    if readable is None or row.live:
        return Visible(_record(row))
    return None if row.held_at is None else Visible(_record(row), row.held_at)


@functools.cache
def _visible_query(algorithm: str, *, scoped: bool) -> Select[Any]:
    """``find_visible``'s statement, built once: building one costs more than running it
    (SQLAlchemy's expression objects and cache key), and it is run on most reads."""
    col = t.blobs.c.blake3 if algorithm == "blake3" else t.blobs.c.sha256
    query = located().where(col == bindparam("digest")).limit(1)
    if not scoped:
        return query
    nb, files, versions = t.namespace_blobs, t.files, t.versions
    names: BindParameter[str] = bindparam("names", expanding=True)
    upload = (
        select(func.max(nb.c.held_at))
        .where(
            nb.c.blake3 == t.blobs.c.blake3,
            nb.c.namespace.in_(names),
            nb.c.held_at >= bindparam("held_since"),
        )
        .scalar_subquery()
    )
    live = exists().where(
        files.c.blake3 == t.blobs.c.blake3,
        versions.c.id == files.c.version_id,
        versions.c.namespace.in_(names),
        versions.c.deleted_seq.is_(None),
    )
    return query.add_columns(upload.label("held_at"), live.label("live"))


def touch(conn: Connection, keys: Iterable[str], now: float) -> None:
    """Renew the GC lease of each stored object (upsert ``touched_at``), by storage key."""
    rows = [{"key": k, "touched_at": now} for k in sorted(set(keys))]
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt: Any = sqlite_insert(t.blob_activity)
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(t.blob_activity)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.blob_activity.c.key], set_={"touched_at": stmt.excluded.touched_at}
        ),
        rows,
    )


def dereference(conn: Connection, blake3s: Iterable[str], now: float) -> None:
    """Renew the leases of these blobs' recorded locations (gc.py, step 1).

    A deletion that stopped referencing them starts the grace period (a client
    told "present" just before may still commit a manifest that references
    them), as does an upload or push that found them already stored.
    """
    loc = t.storage_locations
    touch(conn, values_in(conn, loc.c.key, loc.c.blake3, blake3s), now)


def record_stored(
    conn: Connection,
    blobs: Sequence[tuple[BlobDigests, Placement | None]],
    backend: str,
    actor: str,
    *,
    exists: Callable[[str], bool],
    now: float,
    namespace: str | None = None,
) -> list[str]:
    """Record every blob not yet recorded; returns their digests.

    One blob is a ``blob.stored`` event; several (a push) one ``blobs.stored``
    whose payload lists what each ``blob.stored`` would carry.

    The bytes were published in an earlier step, and with a short grace
    period GC may have collected them since (its orphan pass, or a decision
    on an unused row). So, inside this write transaction: renew every lease
    first (GC's unlink step locks the same lease rows), then check that the
    bytes of each blob about to be recorded are still there. A blob that
    already has a row is safe: GC never unlinks a recorded key. Missing bytes
    raise MissingBlobs and the caller ingests them again.

    ``namespace`` is where the uploader sent the bytes (proof of possession):
    new blobs carry it in ``blob.stored``; blobs the store already had get a
    ``blob.claimed`` unless the namespace already holds them.
    """
    touch(conn, (place.key for _, place in blobs if place is not None), now)
    # Which blobs are new is decided under the log's append lock (after the lease
    # rows, the order GC takes them in): two replicas recording the same new blob
    # at once then append one blob.stored and one claim, not two rows of one key.
    serialise(conn)
    wanted = {str(d.blake3): (d, place) for d, place in blobs}
    names = sorted(wanted)
    present = recorded(conn, names)
    # The blobs already stored stay where they are: renew the leases of their
    # recorded locations, which may be a pack this push did not write.
    dereference(conn, present, now)
    added = [name for name in names if name not in present]
    # A blob staged as already stored (placement None) that is not stored now
    # was collected since: it has no bytes in this batch.
    places = {name: p for name in added if (p := wanted[name][1]) is not None}
    there = {key: exists(key) for key in {p.key for p in places.values()}}  # a pack: once
    vanished = [name for name in added if name not in places or not there[places[name].key]]
    if vanished:
        raise MissingBlobs(
            f"{len(vanished)} blob(s) were garbage-collected while being stored: ingest them again",
            vanished,
        )
    entries = [
        BlobStored(
            name,
            str(wanted[name][0].sha256),
            wanted[name][0].size,
            (location(backend, places[name], "hot", "available"),),
            namespace,
        )
        for name in added
    ]
    if len(entries) == 1:
        append(conn, entries[0], actor)
    elif entries:
        # One event for a push's blobs: 10,000 events cost a 10,000-file push a
        # quarter of its recording time and 6 MB of log (BENCHMARKS.md).
        append(conn, BlobsStored(tuple(entries)), actor)
    if namespace is not None:
        existing = sorted(present)
        nb = t.namespace_blobs
        held = values_in(conn, nb.c.blake3, nb.c.blake3, existing, nb.c.namespace == namespace)
        append_many(
            conn, [BlobClaimed(name, namespace) for name in existing if name not in held], actor
        )
    return added


def lock_rows(conn: Connection, blake3s: Iterable[str]) -> dict[str, tuple[str, int]]:
    """Hold these blobs' rows (those that exist) under a shared lock until the
    transaction ends, in blake3 order; returns each locked blob's sha256 and size.

    A transaction that will need them after it takes the log's append lock
    (a push records its blobs, then commits a manifest naming them) takes them
    first: GC locks rows and then that lock, and on PostgreSQL the opposite
    order is a deadlock.
    """
    b = t.blobs.c
    out: dict[str, tuple[str, int]] = {}
    for chunk in in_batches(sorted(set(blake3s))):
        # ORDER BY is what orders the locks: PostgreSQL locks rows as the scan returns
        # them, so an IN list alone locks in heap order, crossing GC's blake3 order.
        query = select(b.blake3, b.sha256, b.size).where(b.blake3.in_(chunk))
        rows = conn.execute(query.order_by(b.blake3).with_for_update(read=True))
        out.update((r.blake3, (r.sha256, r.size)) for r in rows)
    return out


def recorded(conn: Connection, blake3s: Iterable[str]) -> set[str]:
    """Which of these blobs have a row."""
    return values_in(conn, t.blobs.c.blake3, t.blobs.c.blake3, blake3s)


def not_held(
    conn: Connection, namespace: str, blake3s: Iterable[str], held_since: str
) -> list[str]:
    """Which blobs ``namespace`` does not hold (blob visibility, docs/security.md).

    A namespace holds a blob when a live version of it references the blob,
    or when bytes were uploaded into it at or after ``held_since`` (the
    grace period).
    """
    names = sorted(set(blake3s))
    held: set[str] = set()
    for chunk in in_batches(names):
        held.update(
            r.blake3
            for r in conn.execute(
                select(t.namespace_blobs.c.blake3).where(
                    t.namespace_blobs.c.namespace == namespace,
                    t.namespace_blobs.c.blake3.in_(chunk),
                    t.namespace_blobs.c.held_at >= held_since,
                )
            )
        )
        held.update(
            r.blake3
            for r in conn.execute(
                select(t.files.c.blake3)
                .join(t.versions, t.versions.c.id == t.files.c.version_id)
                .where(
                    t.versions.c.namespace == namespace,
                    t.versions.c.deleted_seq.is_(None),
                    t.files.c.blake3.in_(chunk),
                )
            )
        )
    return [n for n in names if n not in held]
