"""The append-only, hash-chained event log: the source of truth (SPEC section 8).

Each event's hash covers its predecessor's hash and the canonical CBOR of its
own fields, so editing, removing or reordering any event breaks the chain at
that event. Appends are serialised on the single ``chain_head`` row (the
SQLite write lock does it too), which keeps ``seq`` gapless under concurrency.

An event and its effect on the views are written in the same transaction:
:func:`append` records the event and immediately runs the projection, the
very code ``rebuild`` replays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import blake3
from sqlalchemy import Connection, insert, select, update

from artifactstore.controlplane.db.bulk import insert_rows
from artifactstore.controlplane.db.tables import chain_head, events
from artifactstore.errors import ChainBroken
from artifactstore.model.cbor import canonical_dumps

__all__ = [
    "GENESIS",
    "Event",
    "append",
    "append_many",
    "event_hash",
    "iter_events",
    "utc_iso",
    "utc_now",
    "verify_chain",
]

GENESIS = "blake3:" + "0" * 64


def utc_now() -> str:
    """RFC 3339 UTC with microseconds: the time format of events and manifests."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_iso(timestamp: float) -> str:
    """A POSIX timestamp in the event time format (comparable as strings)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: str
    actor: str
    type: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "type": self.type,
            "subject": self.subject,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


#: One encoder for every payload: ``json.dumps`` with options builds a new one per
#: call, a third of the cost of encoding a push's 10,000 small payloads.
_PAYLOAD_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _payload_text(payload: dict[str, Any]) -> str:
    return _PAYLOAD_JSON.encode(payload)


def event_hash(
    seq: int, time: str, actor: str, type_: str, subject: str, payload_text: str, prev: str
) -> str:
    body = canonical_dumps([seq, time, actor, type_, subject, payload_text, prev])
    return "blake3:" + blake3.blake3(body).hexdigest()


def append(
    conn: Connection, type_: str, subject: str, payload: dict[str, Any], actor: str
) -> Event:
    """Append one event inside the caller's write transaction and project it."""
    return append_many(conn, [(type_, subject, payload)], actor)[0]


def append_many(
    conn: Connection, items: Sequence[tuple[str, str, dict[str, Any]]], actor: str
) -> list[Event]:
    """Append events in order (one statement for all) and project them.

    GC and retention append thousands of events in one transaction; doing it
    as one executemany keeps the log from dominating them.
    """
    from artifactstore.controlplane.projection import project  # the replayed code

    if not items:
        return []
    head = conn.execute(
        select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.id == 1).with_for_update()
    ).first()
    seq, prev = (head.seq, head.hash) if head is not None else (0, GENESIS)
    time = utc_now()
    rows: list[dict[str, Any]] = []
    out: list[Event] = []
    for type_, subject, payload in items:
        seq += 1
        text = _payload_text(payload)
        digest = event_hash(seq, time, actor, type_, subject, text, prev)
        rows.append(
            {
                "seq": seq,
                "time": time,
                "actor": actor,
                "type": type_,
                "subject": subject,
                "payload": text,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        # The projection gets the caller's payload, not a parse of ``text``: it is
        # built of JSON types only, so it is what a replay parses (a push's manifest
        # payload is large enough for the round trip to show in its profile).
        out.append(Event(seq, time, actor, type_, subject, payload, prev, digest))
        prev = digest
    insert_rows(conn, events, rows)
    if head is None:
        conn.execute(insert(chain_head).values(id=1, seq=seq, hash=prev))
    else:
        conn.execute(update(chain_head).where(chain_head.c.id == 1).values(seq=seq, hash=prev))
    project(conn, out)
    return out


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
