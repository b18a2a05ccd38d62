"""Legal holds: placed and released as events; several may stack on one version.

An active hold blocks deletion of its version by anyone, global admin
included, until it is released (the check is ``protection.check_deletable``).
A hold's id is the seq of its ``hold.placed`` event: unique, ordered, known
to every replica and stable under ``rebuild``. Placing and releasing record
a reason and the actor; released holds stay listed, with who released them,
when and why, because a hold's history is what an auditor asks for.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, select

from artifactstore.controlplane import packages
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.eventlog import append
from artifactstore.controlplane.protection import (
    serialise,
)
from artifactstore.errors import Conflict, HoldNotFound, InvalidInput
from artifactstore.model.events import HoldPlaced, HoldReleased
from artifactstore.model.identity import Reference
from artifactstore.model.records import Hold

__all__ = [
    "MAX_REASON",
    "check_reason",
    "list_holds",
    "place",
    "release",
]

#: Longest reason accepted, in characters (a ticket reference and a sentence fit).
MAX_REASON = 1024


def check_reason(reason: object) -> str:
    """A reason is 1 to MAX_REASON printable characters on one line (it goes into logs)."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("a legal hold needs a reason (e.g. --reason 'case 2024-17')")
    text = reason.strip()
    if len(text) > MAX_REASON:
        raise InvalidInput(f"a reason is at most {MAX_REASON} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidInput("a reason is one line of printable text (no control characters)")
    return text


def _hold(row: Any) -> Hold:
    return Hold(
        id=row.id,
        reference=row.reference,
        version_id=row.version_id,
        reason=row.reason,
        actor=row.actor,
        placed_at=row.placed_at,
        released_at=row.released_at,
        released_by=row.released_by,
        release_reason=row.release_reason,
    )


def _get(conn: Connection, hold_id: int) -> Hold:
    row = conn.execute(select(t.holds).where(t.holds.c.id == hold_id)).first()
    assert row is not None, hold_id
    return _hold(row)


def _of_version(conn: Connection, version_id: int) -> list[Hold]:
    rows = conn.execute(
        select(t.holds).where(t.holds.c.version_id == version_id).order_by(t.holds.c.id)
    )
    return [_hold(r) for r in rows]


def place(conn: Connection, ref: Reference, reason: str, actor: str) -> Hold:
    """Place a hold on a live version (inside the caller's write transaction).

    Serialised with deletions (``protection.serialise``): a hold either lands
    before a concurrent deletion, which is then refused, or finds the version
    already deleted and fails with PackageNotFound.
    """
    text = check_reason(reason)
    serialise(conn)
    record = packages.get(conn, ref)
    event = append(conn, HoldPlaced(record.id, str(record.reference), text), actor)
    return _get(conn, event.seq)


def release(
    conn: Connection, ref: Reference, reason: str, actor: str, *, hold_id: int | None = None
) -> Hold:
    """Release the version's single active hold, or the one ``hold_id`` names.

    With several active holds and no ``hold_id`` nothing is released
    (Conflict naming them): releasing "a" hold when another party placed a
    second one must be a deliberate choice.
    """
    text = check_reason(reason)
    record = packages.get(conn, ref)
    active = [h for h in _of_version(conn, record.id) if h.active]
    listing = ", ".join(f"#{h.id} ({h.reason!r})" for h in active)
    if hold_id is not None:
        chosen = next((h for h in active if h.id == hold_id), None)
        if chosen is None:
            raise HoldNotFound(
                f"{record.reference} has no active hold #{hold_id}"
                + (f" (active: {listing})" if active else "")
            )
    elif not active:
        raise HoldNotFound(f"{record.reference} has no active legal hold")
    elif len(active) > 1:
        raise Conflict(
            f"{record.reference} has {len(active)} active holds ({listing}): "
            "name the one to release (--id HOLD)"
        )
    else:
        chosen = active[0]
    append(conn, HoldReleased(chosen.id, str(record.reference), text), actor)
    return _get(conn, chosen.id)


def list_holds(
    conn: Connection,
    *,
    ref: Reference | None = None,
    namespaces: Collection[str] | None = None,
    include_released: bool = False,
) -> list[Hold]:
    """Holds of one live version (``ref``) or of every version, oldest first.

    ``namespaces`` restricts the answer to those the caller may read (None: all).
    """
    if ref is not None:
        holds = _of_version(conn, packages.get(conn, ref).id)
    else:
        query = select(t.holds).order_by(t.holds.c.id)
        if not include_released:
            query = query.where(t.holds.c.released_seq.is_(None))
        holds = [_hold(r) for r in conn.execute(query)]
    if namespaces is not None:
        holds = [h for h in holds if h.namespace in namespaces]
    if not include_released:
        holds = [h for h in holds if h.active]
    return holds
