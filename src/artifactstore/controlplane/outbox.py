"""The event stream's outbox: the event log itself, and a cursor per stream.

Events are never queued anywhere else: a commit appends its events to the log
and that is all it does, so a commit never waits for NATS and a crash can lose
nothing that was committed. The publisher (``services/stream.py``) reads the
events after the cursor of its stream, publishes them in ``seq`` order and,
once JetStream has acknowledged them, moves the cursor forward here.

A crash between the acknowledgement and :func:`advance` leaves the cursor
behind the stream; the publisher then publishes those events again, and the
stream drops them as duplicates of their message id (the ``seq``), or the
publisher skips them after asking the stream for its last message. The cursor
only ever moves forward: a stale publisher (one whose lease expired while it
was paused) cannot move it back.

The cursor is operational state, not history: ``rebuild`` leaves it alone,
and losing its last write (SQLite's non-durable commit, a power cut) only
makes the publisher repeat what the stream then drops.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from artifactstore.controlplane import eventlog
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database
from artifactstore.model.events import Event

__all__ = ["Backlog", "advance", "backlog", "pending", "rewind"]


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far stream ``stream`` is behind the log: events ``published + 1 .. head``."""

    head: int
    published: int

    @property
    def unpublished(self) -> int:
        return max(0, self.head - self.published)


def backlog(db: Database, stream: str) -> Backlog:
    """The log's last ``seq`` and the stream's cursor, read in one snapshot."""
    with db.read() as conn:
        head = conn.execute(select(t.chain_head.c.seq).where(t.chain_head.c.id == 1)).scalar()
        published = conn.execute(
            select(t.stream_cursors.c.published_seq).where(t.stream_cursors.c.stream == stream)
        ).scalar()
    return Backlog(int(head or 0), int(published or 0))


def pending(db: Database, after: int, limit: int) -> list[Event]:
    """Up to ``limit`` committed events after ``after``, in ``seq`` order.

    A reader sees only committed transactions, so nothing uncommitted can be
    published; appends are serialised, so ``seq`` order is commit order and no
    later commit can slip in below an event already read.
    """
    with db.read() as conn:
        return list(eventlog.iter_events(conn, after, limit))


def advance(db: Database, stream: str, seq: int) -> int:
    """Move ``stream``'s cursor up to ``seq`` (never back); returns the cursor after.

    Not flushed on SQLite (``durable=False``): a cursor that a crash forgets
    only costs a re-publish that the stream deduplicates.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    insert = (sqlite.insert if db.is_sqlite else postgresql.insert)(t.stream_cursors)
    upsert = insert.values(stream=stream, published_seq=seq).on_conflict_do_update(
        index_elements=["stream"],
        set_={"published_seq": insert.excluded.published_seq},
        where=t.stream_cursors.c.published_seq < insert.excluded.published_seq,
    )
    with db.write(durable=False) as conn:
        conn.execute(upsert)
        current = conn.execute(
            select(t.stream_cursors.c.published_seq).where(t.stream_cursors.c.stream == stream)
        ).scalar_one()
    return int(current)


def rewind(db: Database, stream: str, seq: int) -> int:
    """Set ``stream``'s cursor back to ``seq``: the stream lost (or never had) the
    events after it, and they are published again. Only the lease holder calls it."""
    with db.write() as conn:
        conn.execute(
            update(t.stream_cursors)
            .where(t.stream_cursors.c.stream == stream)
            .values(published_seq=seq)
        )
    return seq
