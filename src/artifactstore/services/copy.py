"""Moving a store to new engines: ``artifactstore copy`` (docs/cli.md, "Moving a store").

The copy is the source's history, not a re-enactment of it. Events go to the
target database exactly as logged (seq, time, actor, payload text, both
chain hashes), so the copy's chain verifies and equals the source's, and
signed checkpoints of the source stay valid for the copy; each batch is
projected into the target's views by the very code ``rebuild`` runs. Every
object the source's storage locations name is copied to the same key of the
target's backend of the same name (hot or cold), re-hashed on the way
(``dataplane/copying.py``): the target's location rows, projected from the
same events, then point at what really is in the target storage.

Which blobs: every blob the source still records (a row in ``blobs``): those
live versions reference, those held ones reference, and unreferenced ones not
collected yet (within their grace period, or waiting for the next GC). Their
GC leases (``blob_activity``) are copied too, so that the target's GC gives
them the grace the source would. A collected blob has no row and its bytes
are not copied; its events are.

Order and resumption (SPEC 11, bytes before metadata): all bytes of the
source as of one snapshot (its last event then, ``source_seq``) are copied
and verified first, then the events up to that seq, in batches of
:data:`EVENT_BATCH`, each one transaction. A rerun skips the events the
target already has (by seq; the target must hold a prefix of the source's
log, checked by hash) and the objects it already holds: those its database
records are trusted (they were verified before their metadata was written),
others that an interrupted run left are re-hashed, and replaced if damaged.
So a rerun after a SIGKILL, or after the source went on (events appended
since are copied by the next run), ends with the same target.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, inspect, select, update

from artifactstore.config import Settings
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import in_batches, insert_rows
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.eventlog import serialise
from artifactstore.controlplane.projection import project
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.dataplane.copying import Batches, Span, check_object, copy_object
from artifactstore.errors import ChainBroken, Conflict, CorruptBlob, InvalidInput
from artifactstore.model.events import GENESIS, Event, event_hash
from artifactstore.model.identity import BlobDigests
from artifactstore.model.records import Progress, no_progress

__all__ = ["EVENT_BATCH", "CopyReport", "check_target_urls", "copy_store", "copy_to"]

#: Events copied per target transaction: a rerun after a kill redoes at most one batch.
EVENT_BATCH = 1000

#: An object of a backend: (backend name, key).
_Where = tuple[str, str]


@dataclass
class CopyReport:
    """What one run of ``copy`` did (``--json`` prints :meth:`to_json`)."""

    #: Events copied by this run, and the target's log after it.
    events: int = 0
    events_total: int = 0
    #: Blobs copied by this run, their bytes, and those the target already held.
    blobs: int = 0
    bytes: int = 0
    blobs_present: int = 0
    #: The source's last event when the copy started: the target ends there.
    source_seq: int = 0
    #: Events the source appended during the copy: the next run copies them.
    behind: int = 0
    damaged: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Snapshot:
    """The source as of one read: its head, its stored objects and their leases."""

    seq: int
    objects: dict[_Where, list[Span]]
    leases: list[dict[str, Any]]
    usage: list[dict[str, Any]]


@contextmanager
def _snapshot_read(db: Database) -> Iterator[Connection]:
    """One consistent read: SQLite's read transaction is a snapshot; PostgreSQL's
    default (READ COMMITTED) is not, so ask for REPEATABLE READ."""
    if db.is_sqlite:
        with db.read() as conn:
            yield conn
        return
    with db.engine.connect() as raw:
        conn = raw.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(select(t.chain_head.c.seq, t.chain_head.c.hash)).first()
    return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))


def _snapshot(db: Database) -> _Snapshot:
    objects: dict[_Where, list[Span]] = defaultdict(list)
    loc, blobs = t.storage_locations, t.blobs
    with _snapshot_read(db) as conn:
        seq, _ = _head(conn)
        rows = conn.execute(
            select(
                loc.c.backend,
                loc.c.key,
                loc.c.pack_offset,
                blobs.c.blake3,
                blobs.c.sha256,
                blobs.c.size,
            )
            .join(blobs, blobs.c.blake3 == loc.c.blake3)
            .order_by(loc.c.backend, loc.c.key, loc.c.pack_offset)
        )
        for r in rows:
            digests = BlobDigests.computed(
                r.blake3.removeprefix("blake3:"), r.sha256.removeprefix("sha256:"), r.size
            )
            objects[(r.backend, r.key)].append(Span(digests, r.pack_offset))
        keys = {key for _, key in objects}
        leases = [dict(r._mapping) for r in conn.execute(select(t.blob_activity)) if r.key in keys]
        usage = [dict(r._mapping) for r in conn.execute(select(t.token_usage))]
    return _Snapshot(seq, dict(objects), leases, usage)


def _check_target(source: Database, target: Database, snap: _Snapshot) -> int:
    """The target's last event: it must hold nothing, or a prefix of the source's log."""
    if target.current_revision() is None:
        with target.read() as conn:
            foreign = [n for n in inspect(conn).get_table_names() if n != "alembic_version"]
        if foreign:
            raise Conflict(
                f"the target database holds tables that are not an artifact store's "
                f"({', '.join(sorted(foreign)[:5])}): copy needs an empty database "
                "or an earlier copy of this store"
            )
    target.migrate()
    with target.read() as conn:
        seq, tip = _head(conn)
        first = conn.execute(select(t.events.c.hash).where(t.events.c.seq == 1)).scalar()
        if seq == 0 and conn.execute(select(t.blobs.c.blake3).limit(1)).first() is not None:
            raise Conflict("the target database records blobs but no event: it is not empty")
    if seq == 0:
        return 0
    with source.read() as conn:
        query = select(t.events.c.seq, t.events.c.hash).where(t.events.c.seq.in_([1, seq]))
        mine = {int(r.seq): str(r.hash) for r in conn.execute(query)}
    if mine.get(1) != first:
        raise Conflict(
            f"the target database holds another store's event log (its event 1 is {first}, "
            f"the source's {mine.get(1)}): copy needs an empty database or an earlier copy "
            "of this store"
        )
    if seq > snap.seq or mine.get(seq) != tip:
        raise Conflict(
            f"the target's event log (up to seq {seq}) is not a prefix of the source's "
            f"(up to seq {snap.seq}): it has events the source does not; copy refuses "
            "to overwrite it"
        )
    return seq


def _recorded(target: Database) -> set[tuple[str, str, str, int | None]]:
    """The target's location rows: objects whose bytes an earlier run verified."""
    loc = t.storage_locations
    with target.read() as conn:
        rows = conn.execute(select(loc.c.blake3, loc.c.backend, loc.c.key, loc.c.pack_offset))
        return {(r.blake3, r.backend, r.key, r.pack_offset) for r in rows}


def _copy_blobs(
    source: DataPlane,
    target: DataPlane,
    snap: _Snapshot,
    recorded: set[tuple[str, str, str, int | None]],
    report: CopyReport,
    progress: Progress,
) -> None:
    present = {name: set(target.named(name).list()) for name in {b for b, _ in snap.objects}}
    batches = Batches()
    try:
        for (backend, key), spans in snap.objects.items():
            size = sum(s.digests.size for s in spans)
            dst = target.named(backend)
            if key in present[backend]:
                known = all(
                    (str(s.digests.blake3), backend, key, s.offset) in recorded for s in spans
                )
                if known or not check_object(dst, key, spans, target.pool):
                    report.blobs_present += len(spans)
                    progress(size)
                    continue
                dst.delete(key)  # damaged bytes an earlier run left: copied again below
            # A pack's progress is counted when it is done (it may hold bytes of
            # collected blobs).
            whole = len(spans) == 1 and spans[0].offset is None
            batch = batches.of(backend, dst)
            damaged = copy_object(
                source.named(backend),
                batch,
                key,
                spans,
                target.pool,
                progress if whole else no_progress,
            )
            if damaged:
                report.damaged.extend({"digest": d, "problem": p} for d, p in damaged)
                continue
            batches.add(size)
            if not whole:
                progress(size)
            report.blobs += len(spans)
            report.bytes += size
        batches.commit()
    except BaseException:
        batches.cancel()
        raise


def _upsert_max(
    conn: Connection, table: Any, key: str, value: str, rows: list[dict[str, Any]]
) -> None:
    """Copy operational rows, keeping the later time where the target has one already."""
    col = table.c[key]
    for chunk in in_batches(rows):
        query = select(col, table.c[value]).where(col.in_([r[key] for r in chunk]))
        have = {r[0]: r[1] for r in conn.execute(query)}
        fresh = [r for r in chunk if r[key] not in have]
        insert_rows(conn, table, fresh)
        for r in chunk:
            if r[key] in have and have[r[key]] < r[value]:
                conn.execute(update(table).where(col == r[key]).values({value: r[value]}))


def _copy_events(source: Database, target: Database, after: int, snap: _Snapshot) -> int:
    """Copy events ``after`` < seq <= ``snap.seq`` as logged, checking the chain on the way."""
    copied = 0
    with target.read() as conn:
        _, prev = _head(conn)
    while after < snap.seq:
        with source.read() as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(
                    select(t.events)
                    .where(t.events.c.seq > after, t.events.c.seq <= snap.seq)
                    .order_by(t.events.c.seq)
                    .limit(EVENT_BATCH)
                )
            ]
        batch = []
        for r in rows:
            seq = r["seq"]
            if seq != after + 1 or r["prev_hash"] != prev:
                raise ChainBroken(
                    f"the source's event {after + 1} is missing or out of order", after + 1
                )
            actual = event_hash(
                seq, r["time"], r["actor"], r["type"], r["subject"], r["payload"], r["prev_hash"]
            )
            if actual != r["hash"]:
                raise ChainBroken(f"the source's event {seq} was altered: not copied", seq)
            batch.append(
                Event(
                    seq,
                    r["time"],
                    r["actor"],
                    r["type"],
                    r["subject"],
                    json.loads(r["payload"]),
                    r["prev_hash"],
                    r["hash"],
                )
            )
            after, prev = seq, r["hash"]
        if not batch:
            raise ChainBroken(f"the source's log ends before its head ({snap.seq})", after + 1)
        with target.write() as conn:
            serialise(conn)
            seq, _ = _head(conn)
            if seq != batch[0].seq - 1:
                raise Conflict(f"the target's log moved to seq {seq} meanwhile: another copy runs")
            insert_rows(conn, t.events, rows)
            project(conn, batch)
            conn.execute(delete(t.chain_head))
            conn.execute(insert(t.chain_head).values(id=1, seq=after, hash=prev))
        copied += len(batch)
    return copied


def copy_store(
    source: tuple[Database, DataPlane],
    target: tuple[Database, DataPlane],
    *,
    progress: Progress = no_progress,
    on_total: Callable[[int], None] = no_progress,
) -> CopyReport:
    """Copy the source store into the target (empty, or an earlier copy of it).

    Raises CorruptBlob (nothing of the damaged blobs copied, no event copied)
    when source bytes do not match their digests, Conflict when the target is
    another store's or the source changed under the copy, InvalidInput when
    the target lacks a backend the source's locations name.
    """
    (src_db, src_plane), (dst_db, dst_plane) = source, target
    snap = _snapshot(src_db)
    names = {b.properties.name for b in dst_plane.backends}
    missing = sorted({backend for backend, _ in snap.objects} - names)
    if missing:
        count = sum(len(v) for (b, _), v in snap.objects.items() if b in missing)
        hint = " (give --to-cold-storage-url)" if missing == ["cold"] else ""
        raise InvalidInput(
            f"the source holds {count} blobs on storage {', '.join(missing)}, "
            f"which the target does not have{hint}"
        )
    report = CopyReport(source_seq=snap.seq)
    done = _check_target(src_db, dst_db, snap)  # DatabaseUnavailable: the target's is down
    on_total(sum(s.digests.size for spans in snap.objects.values() for s in spans))
    _copy_blobs(src_plane, dst_plane, snap, _recorded(dst_db), report, progress)
    if report.damaged:
        with src_db.read() as conn:
            moved = _head(conn)[0] != snap.seq
        if moved:
            raise Conflict(
                "the source changed during the copy (blobs it recorded are gone): "
                "stop writes to it and run copy again"
            )
        listed = "; ".join(f"{d['digest']}: {d['problem']}" for d in report.damaged[:10])
        more = len(report.damaged) - 10
        raise CorruptBlob(
            f"{len(report.damaged)} damaged source blobs were not copied, nor any event "
            f"({listed}{f'; and {more} more' if more > 0 else ''}); "
            "'artifactstore verify --all' on the source lists them"
        )
    with dst_db.write() as conn:
        _upsert_max(conn, t.blob_activity, "key", "touched_at", snap.leases)
        _upsert_max(conn, t.token_usage, "id", "last_used_at", snap.usage)
    report.events = _copy_events(src_db, dst_db, done, snap)
    report.events_total = snap.seq
    with src_db.read() as conn:
        report.behind = _head(conn)[0] - snap.seq
    return report


def check_target_urls(
    settings: Settings, database_url: str, storage_url: str, cold_storage_url: str | None
) -> None:
    """Refuse (InvalidInput) a target that is the source's own database or storage."""
    if database_url == settings.database_url:
        raise InvalidInput("--to-database-url names the source's own database")
    ours = {settings.storage_url, settings.cold_storage_url}
    if storage_url in ours or cold_storage_url in ours:
        raise InvalidInput("the target storage must differ from the source's")
    if cold_storage_url is not None and cold_storage_url == storage_url:
        raise InvalidInput("--to-cold-storage-url must differ from --to-storage-url")


def copy_to(
    source: tuple[Database, DataPlane],
    database_url: str,
    plane: DataPlane,
    *,
    progress: Progress = no_progress,
    on_total: Callable[[int], None] = no_progress,
) -> CopyReport:
    """:func:`copy_store` into the database at ``database_url`` (a new SQLite file's
    directory is created) and ``plane``, both closed afterwards."""
    try:
        if database_url.startswith("sqlite:///"):
            Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        db = Database(database_url)
        try:
            return copy_store(source, (db, plane), progress=progress, on_total=on_total)
        finally:
            db.dispose()
    finally:
        plane.close()
