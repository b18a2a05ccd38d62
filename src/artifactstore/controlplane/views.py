"""The views as a whole: replaying the log into them, and the counts ``/metrics`` shows."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, select

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.eventlog import iter_events
from artifactstore.controlplane.projection import project

__all__ = ["ping", "rebuild", "stats"]

_REPLAY_BATCH = 1000


def rebuild(conn: Connection) -> int:
    """Empty every view and replay the whole log into it; returns events replayed."""
    for table in t.VIEW_TABLES:
        conn.execute(delete(table))
    count = after = 0
    while batch := list(iter_events(conn, after, _REPLAY_BATCH)):
        project(conn, batch)
        after = batch[-1].seq
        count += len(batch)
    return count


def stats(conn: Connection) -> dict[str, int]:
    blobs, blob_bytes = conn.execute(
        select(func.count(), func.coalesce(func.sum(t.blobs.c.size), 0))
    ).one()
    versions = conn.execute(
        select(func.count()).where(t.versions.c.deleted_seq.is_(None))
    ).scalar_one()
    uploads_open = conn.execute(
        select(func.count()).where(t.upload_sessions.c.state == "open")
    ).scalar_one()
    return {
        "blobs": int(blobs),
        "blob_bytes": int(blob_bytes),
        "versions": int(versions),
        "uploads_open": int(uploads_open),
    }


def ping(conn: Connection) -> None:
    """A round trip to the database (readiness)."""
    conn.execute(select(1))
