"""The append-only, hash-chained event log: the source of truth (docs/events.md).

Each event's hash covers its predecessor's hash and the canonical CBOR of its
own fields, so editing, removing or reordering any event breaks the chain at
that event. Appends are serialised (:func:`serialise`), which keeps ``seq``
gapless and the chain linear under concurrent writers, in one process or many:
on SQLite the database's write lock does it, on PostgreSQL a transaction-level
advisory lock. Not a row lock on ``chain_head``: before the first event there
is no row to lock, and replicas racing to append it both wrote ``seq`` 1.

An event and its effect on the views are written in the same transaction:
:func:`append` records the typed event and immediately runs the projection,
the very code ``rebuild`` replays (``projection.project`` over the parsed log).

The values (the :class:`Event` record, :data:`GENESIS`, :func:`event_hash`,
the time format) live in ``artifactstore.model``; they are re-exported here
for the code that still imports them from this module.

Within one transaction that holds the lock, the chain's head is read once:
a group commit appends for many requests in one transaction (one turn at the
lock, one WAL flush), and each later append starts from the head the previous
one wrote (kept in the connection's ``info``, tied to the transaction, and
dropped when any savepoint is rolled back, which may have undone an append).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, select, text, update

from artifactstore.controlplane.db.bulk import insert_rows, pipelined
from artifactstore.controlplane.db.tables import chain_head, events
from artifactstore.controlplane.projection import Recorded, project_recorded
from artifactstore.errors import ChainBroken
from artifactstore.model.clock import utc_now
from artifactstore.model.events import GENESIS, Event, TypedEvent, event_hash, payload_text

__all__ = ["append", "append_all", "append_many", "iter_events", "serialise", "verify_chain"]

#: The PostgreSQL advisory lock (a 64-bit key of our choosing) that appends take turns on.
_APPEND_LOCK = 0x4152_5453_4556_4E54  # "ARTSEVNT"

#: Keys of ``Connection.info`` (which outlives a transaction: each value names its own).
_LOCKED, _HEAD = "artifactstore.append_lock", "artifactstore.chain_head"


def serialise(conn: Connection) -> None:
    """Take the log's append lock, held until the caller's transaction ends.

    Every append takes it; a check that must see every commit made before its
    own (protection, a version's existence) takes it first too: under READ
    COMMITTED each later statement then sees them. On SQLite the transaction
    already holds the write lock (``BEGIN IMMEDIATE``), which serialises as much.
    Taken again in the same transaction it costs no statement, unless it was
    first taken inside a savepoint (rolling that back releases it).
    """
    if conn.dialect.name != "postgresql" or conn.info.get(_LOCKED) is conn.get_transaction():
        return
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
    if not conn.in_nested_transaction():
        conn.info[_LOCKED] = conn.get_transaction()


@event.listens_for(Engine, "rollback_savepoint")
def _forget_head(conn: Connection, name: str, context: object) -> None:
    """A rolled-back savepoint may have undone appends: read the head again."""
    conn.info.pop(_HEAD, None)


def _head(conn: Connection) -> tuple[int, str, bool]:
    """The chain's head (seq, hash) and whether its row exists, as this transaction sees it."""
    cached = conn.info.get(_HEAD)
    if cached is not None and cached[0] is conn.get_transaction():
        return cached[1], cached[2], True
    head = conn.execute(
        select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1)
    ).first()
    return (head.seq, head.hash, True) if head is not None else (0, GENESIS, False)


def append(conn: Connection, event: TypedEvent, actor: str) -> Event:
    """Append one event inside the caller's write transaction and project it."""
    return append_many(conn, [event], actor)[0]


def append_many(conn: Connection, items: Sequence[TypedEvent], actor: str) -> list[Event]:
    """Append events in order (one statement for all) and project them.

    GC and retention append thousands of events in one transaction; doing it
    as one executemany keeps the log from dominating them.
    """
    return append_all(conn, [(item, actor) for item in items])


def append_all(
    conn: Connection, items: Sequence[tuple[TypedEvent, str]], *, writes_only: bool = False
) -> list[Event]:
    """Append events, each with its own actor, in order, and project them (as
    :func:`append_many`): a group commit appends the commits of several callers.

    ``writes_only``: the projection of every event only writes (package commits
    and tag moves): then the log's rows and the views' go to the database in
    one round trip (``bulk.pipelined``), which shortens the append lock's hold.
    """
    if not items:
        return []
    serialise(conn)
    seq, prev, exists = _head(conn)
    time = utc_now()
    rows: list[dict[str, Any]] = []
    out: list[Recorded] = []
    for item, actor in items:
        seq += 1
        payload = item.to_payload()
        text = payload_text(payload)
        subject = item.subject
        digest = event_hash(seq, time, actor, item.type, subject, text, prev)
        rows.append(
            {
                "seq": seq,
                "time": time,
                "actor": actor,
                "type": item.type,
                "subject": subject,
                "payload": text,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        # The projection gets the typed event, not a parse of ``text``: the payload
        # is built of JSON types only, so the value is what a replay parses (a push's
        # manifest payload is large enough for the round trip to show in its profile).
        out.append((Event(seq, time, actor, item.type, subject, payload, prev, digest), item))
        prev = digest
    with pipelined(conn) if writes_only else nullcontext():
        insert_rows(conn, events, rows)
        if exists:
            head = update(chain_head).where(chain_head.c.id == 1)
            conn.execute(head.values(seq=seq, hash=prev))
        else:
            conn.execute(insert(chain_head).values(id=1, seq=seq, hash=prev))
        project_recorded(conn, out)
    conn.info[_HEAD] = (conn.get_transaction(), seq, prev)
    return [record for record, _ in out]


def iter_events(conn: Connection, after: int = 0, limit: int | None = None) -> Iterator[Event]:
    query = select(events).where(events.c.seq > after).order_by(events.c.seq)
    if limit is not None:
        query = query.limit(limit)
    for row in conn.execute(query):
        yield Event(
            row.seq,
            row.time,
            row.actor,
            row.type,
            row.subject,
            json.loads(row.payload),
            row.prev_hash,
            row.hash,
        )


def verify_chain(conn: Connection) -> int:
    """Check every event's link and hash; return the number of events.

    Raises ChainBroken naming the first bad ``seq``: a gap (removed event),
    a wrong ``prev_hash`` (reordered or removed), a hash that does not match
    the content (edited), or a chain tip that disagrees with the head row.
    The stored payload text is hashed as stored: nothing is re-encoded.
    """
    expected_seq, prev = 1, GENESIS
    rows = conn.execute(select(events).order_by(events.c.seq))
    for row in rows:
        if row.seq != expected_seq:
            raise ChainBroken(
                f"event {expected_seq} is missing (next stored event is {row.seq})", expected_seq
            )
        if row.prev_hash != prev:
            raise ChainBroken(f"event {row.seq} does not link to its predecessor", row.seq)
        actual = event_hash(
            row.seq, row.time, row.actor, row.type, row.subject, row.payload, row.prev_hash
        )
        if actual != row.hash:
            raise ChainBroken(
                f"event {row.seq} was altered: its content does not match its hash", row.seq
            )
        prev = row.hash
        expected_seq += 1
    head = conn.execute(select(chain_head.c.seq, chain_head.c.hash)).first()
    count = expected_seq - 1
    if head is not None and (head.seq != count or head.hash != prev):
        raise ChainBroken(
            f"the log ends at event {count} but the chain head records event {head.seq}: "
            "events were cut off the end",
            count + 1 if head.seq > count else head.seq,
        )
    return count
