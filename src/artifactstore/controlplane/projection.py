"""Projection: how each event changes the views.

This is the only code that writes view tables. Live mutations run it inside
the transaction that appends the event (``eventlog.append``); ``rebuild``
empties the views and runs it again over the whole log. So it must depend on
nothing but the event: no clock, no storage, no other tables than views.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from artifactstore.controlplane.blobs import recorded
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import in_batches, insert_rows
from artifactstore.model.cbor import dumps_validated
from artifactstore.model.identity import BlobDigests

__all__ = ["EVENT_TYPES", "project", "stored_blobs"]


def _location_row(blake3: str, loc: dict[str, Any]) -> dict[str, Any]:
    """A ``storage_locations`` row from a location as events carry it."""
    return {
        "blake3": blake3,
        "backend": loc["backend"],
        "key": loc["key"],
        "representation": loc["representation"],
        "retrieval_tier": loc["retrieval_tier"],
        "restore_status": loc["restore_status"],
        "restore_ready_at": None,
        "pack_offset": loc.get("offset"),
    }


def stored_blobs(event: Any) -> list[dict[str, Any]]:
    """The ``blob.stored`` payloads an event stands for: its own, a ``blobs.stored``
    event's list (a push's blobs, recorded in one transaction), or none."""
    if event.type == "blobs.stored":
        return list(event.payload["blobs"])
    return [event.payload] if event.type == "blob.stored" else []


def _blobs_stored(conn: Connection, events: Sequence[Any]) -> None:
    """Batch handler: a push records thousands of blobs in one transaction."""
    # By digest: the seq and time of the event that recorded it, and its payload.
    payloads = {p["blake3"]: ((e.seq, e.time), p) for e in events for p in stored_blobs(e)}
    # A blobs.stored event lists only blobs that had no row (record_stored), so
    # only single blob.stored events need the lookup; a row that exists after
    # all fails the insert below rather than passing unnoticed.
    present = recorded(conn, (e.payload["blake3"] for e in events if e.type == "blob.stored"))
    new_blobs = [
        {
            "blake3": name,
            "sha256": p["sha256"],
            "size": p["size"],
            "stored_seq": seq,
            "stored_at": time,
        }
        for name, ((seq, time), p) in payloads.items()
        if name not in present
    ]
    if new_blobs:
        insert_rows(conn, t.blobs, new_blobs)
    locations = [
        _location_row(name, loc) for name, (_e, p) in payloads.items() for loc in p["locations"]
    ]
    for name in present:  # re-recorded content: its locations are replaced
        conn.execute(delete(t.storage_locations).where(t.storage_locations.c.blake3 == name))
    if locations:
        insert_rows(conn, t.storage_locations, locations)
    # A blob is stored (recorded) only while it has no row, and collecting a row
    # drops its holdings: the holdings of a new blob are new rows, inserted at once.
    holdings = [
        {"namespace": p["namespace"], "blake3": name, "held_seq": seq, "held_at": time}
        for name, ((seq, time), p) in payloads.items()
        if p.get("namespace") and name not in present
    ]
    if holdings:
        insert_rows(conn, t.namespace_blobs, holdings)
    for name, ((seq, time), p) in payloads.items():
        if p.get("namespace") and name in present:
            _hold(conn, p["namespace"], name, seq, time)


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


def _blob_claimed(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    _hold(conn, p["namespace"], p["blake3"], seq, time)


def _token_created(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    conn.execute(
        insert(t.tokens).values(
            id=p["id"],
            name=p["name"],
            secret_hash=p["secret_hash"],
            scopes=json.dumps(p["scopes"]),
            created_at=time,
            created_by=actor,
            expires_at=p["expires_at"],
            revoked_at=None,
            revoked_by=None,
        )
    )


def _token_revoked(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    conn.execute(
        update(t.tokens).where(t.tokens.c.id == p["id"]).values(revoked_at=time, revoked_by=actor)
    )


def _namespace_updated(
    conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]
) -> None:
    conn.execute(delete(t.namespaces).where(t.namespaces.c.name == p["namespace"]))
    conn.execute(
        insert(t.namespaces).values(
            name=p["namespace"],
            settings=json.dumps(p["settings"], sort_keys=True),
            updated_seq=seq,
        )
    )


def _blob_collected(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    conn.execute(delete(t.namespace_blobs).where(t.namespace_blobs.c.blake3 == p["blake3"]))
    conn.execute(delete(t.storage_locations).where(t.storage_locations.c.blake3 == p["blake3"]))
    conn.execute(delete(t.blobs).where(t.blobs.c.blake3 == p["blake3"]))


def _blob_tiered(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    conn.execute(delete(t.storage_locations).where(t.storage_locations.c.blake3 == p["blake3"]))
    conn.execute(insert(t.storage_locations).values(_location_row(p["blake3"], p["location"])))


def _blob_restore_requested(
    conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]
) -> None:
    conn.execute(
        update(t.storage_locations)
        .where(t.storage_locations.c.blake3 == p["blake3"])
        .values(restore_status="restoring", restore_ready_at=p["ready_at"])
    )


def _scalar_text(value: object) -> str | None:
    """Top-level metadata values that ``--where key=value`` can match."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _package_committed(
    conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]
) -> None:
    # The map is read as it stands, not parsed into a Manifest again: only
    # manifests validated by ``Manifest.from_map`` (or built by it) are ever
    # appended, and the chain proves the log unaltered since. Parsing 10,000
    # entries again took a quarter of a 10,000-file push's commit.
    m = p["manifest"]
    cbor = dumps_validated(m)
    digests = BlobDigests.of(cbor)
    package, files = m["package"], m["files"]
    ns, name, ver = package["namespace"], package["name"], package["version"]
    # A tombstoned earlier version of the same name gives way to the new commit.
    conn.execute(
        delete(t.versions).where(
            t.versions.c.namespace == ns, t.versions.c.name == name, t.versions.c.version == ver
        )
    )
    if (
        conn.execute(
            select(t.packages.c.name).where(t.packages.c.namespace == ns, t.packages.c.name == name)
        ).first()
        is None
    ):
        conn.execute(
            insert(t.packages).values(namespace=ns, name=name, created_seq=seq, created_at=time)
        )
    conn.execute(
        insert(t.versions).values(
            id=seq,
            namespace=ns,
            name=name,
            version=ver,
            digest=str(digests.blake3),
            sha256=str(digests.sha256),
            manifest=cbor,
            variant=m["variant"],
            created=m["created"],
            committed_at=time,
            actor=actor,
            size=sum(f["size"] for f in files),
            file_count=len(files),
            deleted_seq=None,
            deleted_at=None,
        )
    )
    if files:
        insert_rows(
            conn,
            t.files,
            [
                {
                    "version_id": seq,
                    "path": f["path"],
                    "size": f["size"],
                    "media_type": f["media_type"],
                    "blake3": f["digests"]["blake3"],
                    "sha256": f["digests"]["sha256"],
                }
                for f in files
            ],
        )
    meta = [
        {"version_id": seq, "key": k, "value": v}
        for k, raw in m["metadata"].items()
        if (v := _scalar_text(raw)) is not None and len(k) <= 256
    ]
    if meta:
        conn.execute(insert(t.version_meta), meta)


def _tag_moved(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    """The previous version under a movable tag goes (as a deletion would) and the new comes."""
    previous = p["previous"]["version_id"]
    conn.execute(delete(t.files).where(t.files.c.version_id == previous))
    conn.execute(delete(t.version_meta).where(t.version_meta.c.version_id == previous))
    _package_committed(conn, seq, time, actor, p)


def _packages_deleted(conn: Connection, events: Sequence[Any]) -> None:
    """Batch handler: retention apply tombstones thousands of versions in one transaction."""
    ids = [e.payload["version_id"] for e in events]
    for chunk in in_batches(ids):
        conn.execute(delete(t.files).where(t.files.c.version_id.in_(chunk)))
        conn.execute(delete(t.version_meta).where(t.version_meta.c.version_id.in_(chunk)))
    conn.execute(
        update(t.versions)
        .where(t.versions.c.id == bindparam("b_id"))
        .values(deleted_seq=bindparam("b_seq"), deleted_at=bindparam("b_at")),
        [{"b_id": e.payload["version_id"], "b_seq": e.seq, "b_at": e.time} for e in events],
    )


def _hold_placed(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    conn.execute(
        insert(t.holds).values(
            id=seq,
            version_id=p["version_id"],
            reference=p["reference"],
            reason=p["reason"],
            actor=actor,
            placed_at=time,
            released_seq=None,
            released_at=None,
            release_reason=None,
            released_by=None,
        )
    )


def _hold_released(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    conn.execute(
        update(t.holds)
        .where(t.holds.c.id == p["hold_id"])
        .values(released_seq=seq, released_at=time, release_reason=p["reason"], released_by=actor)
    )


def _policy_row(conn: Connection, namespace: str, package: str) -> Any:
    rp = t.retention_policies
    return conn.execute(
        select(rp).where(rp.c.namespace == namespace, rp.c.package == package)
    ).first()


def _retention_set(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    """A policy replaces the row's policy; a null policy removes it (a lock stays)."""
    rp = t.retention_policies
    ns, package, policy = p["namespace"], p["package"], p["policy"]
    text = None if policy is None else json.dumps(policy, sort_keys=True, separators=(",", ":"))
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
                    updated_seq=seq,
                    lock_days=None,
                    locked_at=None,
                )
            )
    elif text is None and not row.locked:
        conn.execute(delete(rp).where(key))
    else:
        conn.execute(update(rp).where(key).values(policy=text, updated_seq=seq))


def _retention_locked(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    rp = t.retention_policies
    ns = p["namespace"]
    if _policy_row(conn, ns, "") is None:
        conn.execute(
            insert(rp).values(
                namespace=ns,
                package="",
                policy=None,
                locked=True,
                updated_seq=seq,
                lock_days=p["keep_days"],
                locked_at=time,
            )
        )
    else:
        conn.execute(
            update(rp)
            .where(rp.c.namespace == ns, rp.c.package == "")
            .values(locked=True, lock_days=p["keep_days"], locked_at=time, updated_seq=seq)
        )


def _schema_registered(
    conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]
) -> None:
    conn.execute(
        insert(t.schemas).values(
            id=p["id"],
            schema=json.dumps(
                p["schema"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ),
            digest=p["digest"],
            registered_seq=seq,
            registered_at=time,
        )
    )


_Handler = Callable[[Connection, int, str, str, dict[str, Any]], None]

#: Handlers that take a run of consecutive events of their type at once.
_BATCH_HANDLERS: dict[str, Callable[[Connection, Sequence[Any]], None]] = {
    "blob.stored": _blobs_stored,
    "blobs.stored": _blobs_stored,
    "package.deleted": _packages_deleted,
}

_HANDLERS: dict[str, _Handler] = {
    "blob.claimed": _blob_claimed,
    "blob.collected": _blob_collected,
    "blob.tiered": _blob_tiered,
    "blob.restore_requested": _blob_restore_requested,
    "token.created": _token_created,
    "token.revoked": _token_revoked,
    "namespace.updated": _namespace_updated,
    "package.committed": _package_committed,
    "tag.moved": _tag_moved,
    "schema.registered": _schema_registered,
    "hold.placed": _hold_placed,
    "hold.released": _hold_released,
    "retention.set": _retention_set,
    "retention.locked": _retention_locked,
}

#: Every event type the log may hold, with what it means (documented in docs/events.md).
EVENT_TYPES = {
    "blob.stored": "bytes became durable and were recorded with both digests and a location",
    "blobs.stored": "several blobs were recorded in one transaction (a push): a list of "
    "blob.stored payloads, projected as that many blob.stored events",
    "blob.collected": "garbage collection removed an unreferenced blob",
    "blob.tiered": "a blob's bytes moved to another storage tier (hot or cold), or a restore "
    "completed",
    "blob.restore_requested": "a restore of a blob from the cold tier started; it completes at "
    "ready_at",
    "blob.claimed": "a namespace proved possession of bytes the store already held",
    "token.created": "an API token was created (its secret's hash only)",
    "token.revoked": "an API token was revoked",
    "namespace.updated": "a namespace's settings changed (anonymous read, quota, movable tags)",
    "package.committed": "a package version (manifest) was committed",
    "tag.moved": "a movable tag (e.g. latest) now names a new manifest; the previous one is gone",
    "package.deleted": "a package version was deleted (tombstone); its bytes wait for GC",
    "schema.registered": "a metadata JSON Schema was registered for a variant id",
    "hold.placed": "a legal hold was placed on a version (its id is the event's seq)",
    "hold.released": "a legal hold was released",
    "retention.set": "a namespace's or package's retention policy was set or cleared",
    "retention.locked": "a namespace's retention lock (minimum keep-days) was set or extended",
}


def project(conn: Connection, events: Sequence[Any]) -> None:
    """Apply events, in order, to the views. Unknown types are refused, never skipped."""
    i = 0
    while i < len(events):
        kind = events[i].type
        batch = _BATCH_HANDLERS.get(kind)
        if batch is not None:
            j = i
            while j < len(events) and events[j].type == kind:
                j += 1
            batch(conn, events[i:j])
            i = j
            continue
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise ValueError(f"no projection for event type {kind!r} (seq {events[i].seq})")
        e = events[i]
        handler(conn, e.seq, e.time, e.actor, e.payload)
        i += 1
