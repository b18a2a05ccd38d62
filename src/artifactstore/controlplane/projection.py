"""Projection: how each event changes the views.

This is the only code that writes view tables. Live mutations run it inside
the transaction that appends the event (``eventlog.append``); ``rebuild``
empties the views and runs it again over the whole log. So it must depend on
nothing but the event: no clock, no storage, no other tables than views.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from artifactstore.controlplane.db import tables as t
from artifactstore.model.manifest import Manifest

__all__ = ["EVENT_TYPES", "project"]


def _blob_stored(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    exists = conn.execute(select(t.blobs.c.blake3).where(t.blobs.c.blake3 == p["blake3"])).first()
    if exists is None:
        conn.execute(
            insert(t.blobs).values(
                blake3=p["blake3"],
                sha256=p["sha256"],
                size=p["size"],
                stored_seq=seq,
                stored_at=time,
            )
        )
    for loc in p["locations"]:
        conn.execute(
            delete(t.storage_locations).where(
                t.storage_locations.c.blake3 == p["blake3"],
                t.storage_locations.c.backend == loc["backend"],
            )
        )
        conn.execute(
            insert(t.storage_locations).values(
                blake3=p["blake3"],
                backend=loc["backend"],
                key=loc["key"],
                representation=loc["representation"],
                retrieval_tier=loc["retrieval_tier"],
                restore_status=loc["restore_status"],
            )
        )


def _blob_collected(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    conn.execute(delete(t.storage_locations).where(t.storage_locations.c.blake3 == p["blake3"]))
    conn.execute(delete(t.blobs).where(t.blobs.c.blake3 == p["blake3"]))


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
    m = Manifest.from_map(p["manifest"])
    cbor = m.to_cbor()
    digests = m.digests()
    ns, name, ver = str(m.namespace), str(m.name), str(m.version)
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
            variant=m.variant,
            created=m.created,
            committed_at=time,
            actor=actor,
            size=m.total_size,
            file_count=len(m.files),
            deleted_seq=None,
            deleted_at=None,
        )
    )
    if m.files:
        conn.execute(
            insert(t.files),
            [
                {
                    "version_id": seq,
                    "path": f.path.value,
                    "size": f.size,
                    "media_type": f.media_type,
                    "blake3": str(f.blake3),
                    "sha256": str(f.sha256),
                }
                for f in m.files
            ],
        )
    meta = [
        {"version_id": seq, "key": k, "value": v}
        for k, raw in m.metadata.items()
        if (v := _scalar_text(raw)) is not None and len(k) <= 256
    ]
    if meta:
        conn.execute(insert(t.version_meta), meta)


def _package_deleted(conn: Connection, seq: int, time: str, actor: str, p: dict[str, Any]) -> None:
    vid = p["version_id"]
    conn.execute(delete(t.files).where(t.files.c.version_id == vid))
    conn.execute(delete(t.version_meta).where(t.version_meta.c.version_id == vid))
    conn.execute(
        update(t.versions).where(t.versions.c.id == vid).values(deleted_seq=seq, deleted_at=time)
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

_HANDLERS: dict[str, _Handler] = {
    "blob.stored": _blob_stored,
    "blob.collected": _blob_collected,
    "package.committed": _package_committed,
    "package.deleted": _package_deleted,
    "schema.registered": _schema_registered,
}

#: Every event type the log may hold, with what it means (documented in docs/events.md).
EVENT_TYPES = {
    "blob.stored": "bytes became durable and were recorded with both digests and a location",
    "blob.collected": "garbage collection removed an unreferenced blob",
    "package.committed": "a package version (manifest) was committed",
    "package.deleted": "a package version was deleted (tombstone); its bytes wait for GC",
    "schema.registered": "a metadata JSON Schema was registered for a variant id",
}


def project(conn: Connection, event: Any) -> None:
    """Apply one event to the views. Unknown types are refused, never skipped."""
    handler = _HANDLERS.get(event.type)
    if handler is None:
        raise ValueError(f"no projection for event type {event.type!r} (seq {event.seq})")
    handler(conn, event.seq, event.time, event.actor, event.payload)
