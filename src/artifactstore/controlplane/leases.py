"""Named leases: at most one holder at a time runs a background job (e.g. ``gc``).

A lease is a row of ``leases`` (name, holder, expires_at) rather than a
database session lock (``pg_advisory_lock``, a long transaction): a replica
that crashes or loses its network simply stops renewing, and once
``expires_at`` passes another replica takes the lease over, with no lock
left behind in a dead session and no transaction held open for the length
of a job. The price is the TTL: the holder must renew before it expires, so
the TTL has to exceed the longest gap between renewals (one job run, unless
the holder renews during the run, as ``server/background.py`` does), and the
replicas' clocks must agree to well within it (``now`` is wall-clock time,
compared across hosts).

Two holders can never both win: :func:`acquire` runs one conditional
``UPDATE`` and, when no row exists, one ``INSERT ... ON CONFLICT DO
NOTHING``, inside one write transaction. On SQLite that transaction is
``BEGIN IMMEDIATE``, so acquisitions run one after another. On PostgreSQL a
concurrent ``UPDATE`` of the row waits for the first one's commit and then
re-evaluates its ``WHERE`` against the new holder; a concurrent ``INSERT``
waits on the primary key and then does nothing.

A lease only saves duplicate work: the GC protocol (``gc.py``) is safe when
two collectors overlap, so a lease that expires during a run costs time,
never data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, update

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database

__all__ = ["acquire", "holder_of", "release"]


def acquire(db: Database, name: str, holder: str, ttl: float, now: float) -> bool:
    """Take lease ``name`` for ``holder`` until ``now + ttl``; True if ``holder`` has it.

    Succeeds when the lease is absent, expired, or already ``holder``'s (then
    it is renewed); refuses, changing nothing, while someone else holds it.
    Idempotent for the holder; ``now`` is wall-clock seconds (``time.time()``).
    """
    if ttl <= 0:
        raise ValueError(f"a lease needs a positive TTL, not {ttl!r}")
    expires_at = now + ttl
    with db.write() as conn:
        taken = conn.execute(
            update(t.leases)
            .where(
                t.leases.c.name == name,
                or_(t.leases.c.holder == holder, t.leases.c.expires_at <= now),
            )
            .values(holder=holder, expires_at=expires_at)
        )
        if taken.rowcount == 1:
            return True
        inserted = conn.execute(_insert_if_absent(name, holder, expires_at, on_sqlite=db.is_sqlite))
        return inserted.rowcount == 1


def release(db: Database, name: str, holder: str) -> bool:
    """Give lease ``name`` up if ``holder`` has it; True if it did (expired or not).

    Releasing lets another replica take over at its next try instead of
    waiting out the TTL. A lease someone else holds is left alone.
    """
    with db.write() as conn:
        gone = conn.execute(
            delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder)
        )
        return gone.rowcount == 1


def holder_of(db: Database, name: str, now: float) -> str | None:
    """Who holds lease ``name`` at ``now`` (None when absent or expired)."""
    with db.read() as conn:
        row = conn.execute(
            t.leases.select().where(t.leases.c.name == name, t.leases.c.expires_at > now)
        ).first()
    return None if row is None else str(row.holder)


def _insert_if_absent(
    name: str, holder: str, expires_at: float, *, on_sqlite: bool
) -> sqlite.Insert | postgresql.Insert:
    """``INSERT ... ON CONFLICT (name) DO NOTHING`` for SQLite or PostgreSQL.

    The dialects import here: PostgreSQL's takes 18 ms, and every store opens
    this module while a CLI push waits for its control plane.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    values = {"name": name, "holder": holder, "expires_at": expires_at}
    if on_sqlite:
        return (
            sqlite.insert(t.leases).values(values).on_conflict_do_nothing(index_elements=["name"])
        )
    return (
        postgresql.insert(t.leases).values(values).on_conflict_do_nothing(index_elements=["name"])
    )
