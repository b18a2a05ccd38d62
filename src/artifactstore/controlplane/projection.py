"""Projection: how each event changes the views.

This is the only code that writes view tables. Live mutations run it inside
the transaction that appends the event (``eventlog.append``, which hands over
the typed events it logged); ``rebuild`` empties the views and runs it again
over the whole log (:func:`project`, which parses each logged payload into its
type). So it must depend on nothing but the event: no clock, no storage, no
other tables than views. It imports only the database tables and the model:
the control plane's modules that append events import the log, which imports
this, never the other way round.

Handlers take the event's record (``seq``, ``time``, ``actor``) and its typed
value; :data:`_PROJECTIONS` is the table from event type to handler.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import in_batches, insert_new, insert_rows, values_in
from artifactstore.model.cbor import dumps_validated
from artifactstore.model.envelope import Envelope
from artifactstore.model.events import (
    BlobClaimed,
    BlobCollected,
    BlobRestoreRequested,
    BlobsStored,
    BlobStored,
    BlobTiered,
    Event,
    HoldPlaced,
    HoldReleased,
    JsonObject,
    Location,
    NamespaceUpdated,
    PackageCommitted,
    PackageDeleted,
    RetentionLocked,
    RetentionSet,
    SchemaRegistered,
    SignatureAdded,
    TagMoved,
    TokenCreated,
    TokenRevoked,
    TypedEvent,
    stored_blobs,
)
from artifactstore.model.identity import BlobDigests

__all__ = ["PROJECTED_TYPES", "Recorded", "project", "project_recorded"]

#: An event's record in the log and its typed value.
Recorded = tuple[Event, TypedEvent]

E = TypeVar("E", bound=TypedEvent)


def _location_row(blake3: str, loc: Location) -> dict[str, Any]:
    """A ``storage_locations`` row from a location as events carry it."""
    return {
        "blake3": blake3,
        "backend": loc.backend,
        "key": loc.key,
        "representation": loc.representation,
        "retrieval_tier": loc.retrieval_tier,
        "restore_status": loc.restore_status,
        "restore_ready_at": None,
        "pack_offset": loc.offset,
    }


def _recorded(conn: Connection, blake3s: Iterable[str]) -> set[str]:
    """Which of these blobs have a row."""
    return values_in(conn, t.blobs.c.blake3, t.blobs.c.blake3, blake3s)


def _blobs_stored(conn: Connection, items: Sequence[Recorded]) -> None:
    """Batch handler: a push records thousands of blobs in one transaction."""
    # By digest: the record of the event that recorded it, and the blob.
    stored = {b.blake3: (at, b) for at, e in items for b in stored_blobs(e)}
    # A blobs.stored event lists only blobs that had no row (record_stored), so
    # only single blob.stored events need the lookup; a row that exists after
    # all fails the insert below rather than passing unnoticed.
    present = _recorded(conn, (e.blake3 for _, e in items if isinstance(e, BlobStored)))
    new_blobs = [
        {
            "blake3": name,
            "sha256": b.sha256,
            "size": b.size,
            "stored_seq": at.seq,
            "stored_at": at.time,
        }
        for name, (at, b) in stored.items()
        if name not in present
    ]
    if new_blobs:
        insert_rows(conn, t.blobs, new_blobs)
    locations = [_location_row(name, loc) for name, (_, b) in stored.items() for loc in b.locations]
    for name in present:  # re-recorded content: its locations are replaced
        conn.execute(delete(t.storage_locations).where(t.storage_locations.c.blake3 == name))
    if locations:
        insert_rows(conn, t.storage_locations, locations)
    # A blob is stored (recorded) only while it has no row, and collecting a row
    # drops its holdings: the holdings of a new blob are new rows, inserted at once.
    holdings = [
        {"namespace": b.namespace, "blake3": name, "held_seq": at.seq, "held_at": at.time}
        for name, (at, b) in stored.items()
        if b.namespace and name not in present
    ]
    if holdings:
        insert_rows(conn, t.namespace_blobs, holdings)
    for name, (at, b) in stored.items():
        if b.namespace and name in present:
            _hold(conn, b.namespace, name, at.seq, at.time)


def _hold(conn: Connection, namespace: str, blake3: str, seq: int, time: str) -> None:
    """The namespace holds the blob: its uploader proved possession at ``time``."""
    conn.execute(
        delete(t.namespace_blobs).where(
            t.namespace_blobs.c.namespace == namespace, t.namespace_blobs.c.blake3 == blake3
        )
    )
    conn.execute(
        insert(t.namespace_blobs).values(
            namespace=namespace, blake3=blake3, held_seq=seq, held_at=time
        )
    )


def _blob_claimed(conn: Connection, at: Event, e: BlobClaimed) -> None:
    _hold(conn, e.namespace, e.blake3, at.seq, at.time)


def _token_created(conn: Connection, at: Event, e: TokenCreated) -> None:
    conn.execute(
        insert(t.tokens).values(
            id=e.id,
            name=e.name,
            secret_hash=e.secret_hash,
            scopes=json.dumps(list(e.scopes)),
            created_at=at.time,
            created_by=at.actor,
            expires_at=e.expires_at,
            revoked_at=None,
            revoked_by=None,
        )
    )


def _token_revoked(conn: Connection, at: Event, e: TokenRevoked) -> None:
    conn.execute(
        update(t.tokens)
        .where(t.tokens.c.id == e.id)
        .values(revoked_at=at.time, revoked_by=at.actor)
    )


def _namespace_updated(conn: Connection, at: Event, e: NamespaceUpdated) -> None:
    conn.execute(delete(t.namespaces).where(t.namespaces.c.name == e.namespace))
    conn.execute(
        insert(t.namespaces).values(
            name=e.namespace,
            settings=json.dumps(dict(e.settings), sort_keys=True),
            updated_seq=at.seq,
        )
    )


def _blob_collected(conn: Connection, at: Event, e: BlobCollected) -> None:
    conn.execute(delete(t.namespace_blobs).where(t.namespace_blobs.c.blake3 == e.blake3))
    conn.execute(delete(t.storage_locations).where(t.storage_locations.c.blake3 == e.blake3))
    conn.execute(delete(t.blobs).where(t.blobs.c.blake3 == e.blake3))


def _blob_tiered(conn: Connection, at: Event, e: BlobTiered) -> None:
    conn.execute(delete(t.storage_locations).where(t.storage_locations.c.blake3 == e.blake3))
    conn.execute(insert(t.storage_locations).values(_location_row(e.blake3, e.location)))


def _blob_restore_requested(conn: Connection, at: Event, e: BlobRestoreRequested) -> None:
    conn.execute(
        update(t.storage_locations)
        .where(t.storage_locations.c.blake3 == e.blake3)
        .values(restore_status="restoring", restore_ready_at=e.ready_at)
    )


def _scalar_text(value: object) -> str | None:
    """Top-level metadata values that ``--where key=value`` can match."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _commit(conn: Connection, items: Sequence[tuple[Event, JsonObject]]) -> None:
    """The rows of committed manifests (``package.committed``, ``tag.moved``): one
    statement per table for all of them (a group commit appends several at once).
    Writes only, no reads: ``packages.apply`` pipelines them (``bulk.pipelined``)."""
    # The map is read as it stands, not parsed into a Manifest again: only
    # manifests validated by ``Manifest.from_map`` (or built by it) are ever
    # appended, and the chain proves the log unaltered since. Parsing 10,000
    # entries again took a quarter of a 10,000-file push's commit.
    gone: list[dict[str, Any]] = []
    packages: dict[tuple[str, str], dict[str, Any]] = {}
    versions: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    for at, m in items:
        seq, cbor = at.seq, dumps_validated(dict(m))
        digests = BlobDigests.of(cbor)
        package, entries = m["package"], m["files"]
        ns, name, ver = package["namespace"], package["name"], package["version"]
        gone.append({"b_ns": ns, "b_name": name, "b_ver": ver})
        # The package's first version creates it.
        packages.setdefault((ns, name), {"namespace": ns, "name": name, "created_seq": seq})
        packages[ns, name].setdefault("created_at", at.time)
        # The metadata a query can match: rows of ``version_meta`` (SQLite's index) and
        # the same pairs as one object in ``versions.meta`` (PostgreSQL's GIN index).
        queryable = {
            k: v
            for k, raw in m["metadata"].items()
            if (v := _scalar_text(raw)) is not None and len(k) <= 256
        }
        meta.extend({"version_id": seq, "key": k, "value": v} for k, v in queryable.items())
        versions.append(
            {
                "id": seq,
                "namespace": ns,
                "name": name,
                "version": ver,
                "digest": str(digests.blake3),
                "sha256": str(digests.sha256),
                "manifest": cbor,
                "variant": m["variant"],
                "created": m["created"],
                "committed_at": at.time,
                "actor": at.actor,
                "size": sum(f["size"] for f in entries),
                "meta": queryable or None,
                "file_count": len(entries),
                "deleted_seq": None,
                "deleted_at": None,
            }
        )
        files.extend(
            {
                "version_id": seq,
                "path": f["path"],
                "size": f["size"],
                "media_type": f["media_type"],
                "blake3": f["digests"]["blake3"],
                "sha256": f["digests"]["sha256"],
            }
            for f in entries
        )
    # A tombstoned earlier version of the same name gives way to the new commit.
    c = t.versions.c
    key = (c.namespace == bindparam("b_ns")) & (c.name == bindparam("b_name"))
    conn.execute(delete(t.versions).where(key, c.version == bindparam("b_ver")), gone)
    insert_new(conn, t.packages, list(packages.values()))
    conn.execute(insert(t.versions), versions)
    insert_rows(conn, t.files, files)
    if meta:
        conn.execute(insert(t.version_meta), meta)


def _packages_committed(conn: Connection, items: Sequence[tuple[Event, PackageCommitted]]) -> None:
    _commit(conn, [(at, e.manifest) for at, e in items])


def _tag_moved(conn: Connection, at: Event, e: TagMoved) -> None:
    """The previous version under a movable tag goes (as a deletion would) and the new comes."""
    previous = e.previous_version_id
    conn.execute(delete(t.files).where(t.files.c.version_id == previous))
    conn.execute(delete(t.version_meta).where(t.version_meta.c.version_id == previous))
    _commit(conn, [(at, e.manifest)])


def _packages_deleted(conn: Connection, items: Sequence[tuple[Event, PackageDeleted]]) -> None:
    """Batch handler: retention apply tombstones thousands of versions in one transaction."""
    ids = [e.version_id for _, e in items]
    for chunk in in_batches(ids):
        conn.execute(delete(t.files).where(t.files.c.version_id.in_(chunk)))
        conn.execute(delete(t.version_meta).where(t.version_meta.c.version_id.in_(chunk)))
    conn.execute(
        update(t.versions)
        .where(t.versions.c.id == bindparam("b_id"))
        .values(deleted_seq=bindparam("b_seq"), deleted_at=bindparam("b_at"), meta=None),
        [{"b_id": e.version_id, "b_seq": at.seq, "b_at": at.time} for at, e in items],
    )


def _hold_placed(conn: Connection, at: Event, e: HoldPlaced) -> None:
    conn.execute(
        insert(t.holds).values(
            id=at.seq,
            version_id=e.version_id,
            reference=e.reference,
            reason=e.reason,
            actor=at.actor,
            placed_at=at.time,
            released_seq=None,
            released_at=None,
            release_reason=None,
            released_by=None,
        )
    )


def _hold_released(conn: Connection, at: Event, e: HoldReleased) -> None:
    conn.execute(
        update(t.holds)
        .where(t.holds.c.id == e.hold_id)
        .values(
            released_seq=at.seq,
            released_at=at.time,
            release_reason=e.reason,
            released_by=at.actor,
        )
    )


def _policy_row(conn: Connection, namespace: str, package: str) -> Any:
    rp = t.retention_policies
    return conn.execute(
        select(rp).where(rp.c.namespace == namespace, rp.c.package == package)
    ).first()


def _retention_set(conn: Connection, at: Event, e: RetentionSet) -> None:
    """A policy replaces the row's policy; a null policy removes it (a lock stays)."""
    rp = t.retention_policies
    ns, package, policy = e.namespace, e.package, e.policy
    text = (
        None if policy is None else json.dumps(dict(policy), sort_keys=True, separators=(",", ":"))
    )
    row = _policy_row(conn, ns, package)
    key = (rp.c.namespace == ns) & (rp.c.package == package)
    if row is None:
        if text is not None:
            conn.execute(
                insert(rp).values(
                    namespace=ns,
                    package=package,
                    policy=text,
                    locked=False,
                    updated_seq=at.seq,
                    lock_days=None,
                    locked_at=None,
                )
            )
    elif text is None and not row.locked:
        conn.execute(delete(rp).where(key))
    else:
        conn.execute(update(rp).where(key).values(policy=text, updated_seq=at.seq))


def _retention_locked(conn: Connection, at: Event, e: RetentionLocked) -> None:
    rp = t.retention_policies
    ns = e.namespace
    if _policy_row(conn, ns, "") is None:
        conn.execute(
            insert(rp).values(
                namespace=ns,
                package="",
                policy=None,
                locked=True,
                updated_seq=at.seq,
                lock_days=e.keep_days,
                locked_at=at.time,
            )
        )
    else:
        conn.execute(
            update(rp)
            .where(rp.c.namespace == ns, rp.c.package == "")
            .values(locked=True, lock_days=e.keep_days, locked_at=at.time, updated_seq=at.seq)
        )


def _schema_registered(conn: Connection, at: Event, e: SchemaRegistered) -> None:
    conn.execute(
        insert(t.schemas).values(
            id=e.id,
            schema=json.dumps(
                dict(e.schema), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ),
            digest=e.digest,
            registered_seq=at.seq,
            registered_at=at.time,
        )
    )


def _signature_added(conn: Connection, at: Event, e: SignatureAdded) -> None:
    """One recorded envelope: the canonical text the API serves, its digest, its key ids."""
    envelope = Envelope.from_json(e.envelope)
    conn.execute(
        insert(t.signatures).values(
            id=at.seq,
            version_id=e.version_id,
            envelope=envelope.canonical(),
            envelope_sha256=envelope.digest(),
            key_ids=json.dumps(list(envelope.key_ids)),
            actor=at.actor,
            added_at=at.time,
        )
    )


#: A handler of a run of consecutive events of one type.
_Apply = Callable[[Connection, Sequence[Recorded]], None]


def _each(cls: type[E], handler: Callable[[Connection, Event, E], None]) -> _Apply:
    """A handler of one event of type ``cls``, applied to each event of a run in turn."""

    def run(conn: Connection, items: Sequence[Recorded]) -> None:
        for at, e in items:
            if not isinstance(e, cls):
                raise TypeError(f"event {at.seq} is {type(e).__name__}, not {cls.__name__}")
            handler(conn, at, e)

    return run


def _batch(
    cls: type[E], handler: Callable[[Connection, Sequence[tuple[Event, E]]], None]
) -> _Apply:
    """A handler that takes a whole run of events of type ``cls`` at once."""

    def run(conn: Connection, items: Sequence[Recorded]) -> None:
        typed: list[tuple[Event, E]] = []
        for at, e in items:
            if not isinstance(e, cls):
                raise TypeError(f"event {at.seq} is {type(e).__name__}, not {cls.__name__}")
            typed.append((at, e))
        handler(conn, typed)

    return run


#: Every event type and how it changes the views. Runs of consecutive events of one
#: type go to their handler together (a push's blobs, retention's deletions).
_PROJECTIONS: dict[str, _Apply] = {
    BlobStored.type: _blobs_stored,
    BlobsStored.type: _blobs_stored,
    BlobClaimed.type: _each(BlobClaimed, _blob_claimed),
    BlobCollected.type: _each(BlobCollected, _blob_collected),
    BlobTiered.type: _each(BlobTiered, _blob_tiered),
    BlobRestoreRequested.type: _each(BlobRestoreRequested, _blob_restore_requested),
    TokenCreated.type: _each(TokenCreated, _token_created),
    TokenRevoked.type: _each(TokenRevoked, _token_revoked),
    NamespaceUpdated.type: _each(NamespaceUpdated, _namespace_updated),
    PackageCommitted.type: _batch(PackageCommitted, _packages_committed),
    TagMoved.type: _each(TagMoved, _tag_moved),
    PackageDeleted.type: _batch(PackageDeleted, _packages_deleted),
    SchemaRegistered.type: _each(SchemaRegistered, _schema_registered),
    HoldPlaced.type: _each(HoldPlaced, _hold_placed),
    HoldReleased.type: _each(HoldReleased, _hold_released),
    RetentionSet.type: _each(RetentionSet, _retention_set),
    RetentionLocked.type: _each(RetentionLocked, _retention_locked),
    SignatureAdded.type: _each(SignatureAdded, _signature_added),
}

#: The event types the projection knows (a test holds it equal to ``EVENT_CLASSES``).
PROJECTED_TYPES = frozenset(_PROJECTIONS)


def project_recorded(conn: Connection, items: Sequence[Recorded]) -> None:
    """Apply typed events, in order, to the views. Unknown types are refused, never skipped."""
    i = 0
    while i < len(items):
        kind = items[i][1].type
        handler = _PROJECTIONS.get(kind)
        if handler is None:
            raise ValueError(f"no projection for event type {kind!r} (seq {items[i][0].seq})")
        j = i + 1
        while j < len(items) and items[j][1].type == kind:
            j += 1
        handler(conn, items[i:j])
        i = j


def project(conn: Connection, events: Sequence[Event]) -> None:
    """Replay logged events (``rebuild``): parse each payload into its type, then apply it.

    An unknown type or a payload that does not parse raises ValueError naming the seq.
    """
    project_recorded(conn, [(e, e.typed()) for e in events])
