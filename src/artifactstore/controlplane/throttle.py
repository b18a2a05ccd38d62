"""Failed authentications per client address, shared by every replica (docs/security.md).

The count lives in the database (``auth_failures``), so N replicas behind a
load balancer do not give an attacker N times the attempts. It is written
and read only when a token has failed: a valid request never touches it.

Each address keeps at most ``limit`` rows (past the limit, the oldest row
gives way to the newest, a sliding window), and every failure prunes rows
older than the window, whatever their address: the table stays bounded by
the failures of the last window.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select, text

from artifactstore.controlplane.db import tables as t

__all__ = ["MAX_CLIENT_LENGTH", "fail"]

#: Longer client keys are cut (a trusted proxy's garbage is still just a key).
MAX_CLIENT_LENGTH = 64

_F = t.auth_failures
#: The first key of the PostgreSQL advisory locks that serialise one address's failures
#: (two-int keys: a space apart from the event log's one-bigint key).
_LOCK_CLASS = 18


def fail(conn: Connection, client: str, now: float, *, limit: int, window: float) -> int | None:
    """Record a failure of ``client`` at ``now`` inside the caller's write transaction;
    seconds to wait if it is past ``limit`` failures in ``window`` seconds (else None)."""
    client = client[:MAX_CLIENT_LENGTH]
    if conn.dialect.name == "postgresql":  # concurrent failures of one address count each
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:cls, hashtext(:client))"),
            {"cls": _LOCK_CLASS, "client": client},
        )
    cutoff = now - window
    conn.execute(delete(_F).where(_F.c.failed_at <= cutoff))
    recent = conn.execute(
        select(_F.c.id, _F.c.failed_at)
        .where(_F.c.client == client)
        .order_by(_F.c.failed_at, _F.c.id)
    ).all()
    over = len(recent) >= limit
    if over:  # the oldest give way: at most ``limit`` rows per address
        gone = [r.id for r in recent[: len(recent) - limit + 1]]
        conn.execute(delete(_F).where(_F.c.id.in_(gone)))
    conn.execute(insert(_F).values(client=client, failed_at=now))
    if not over:
        return None
    oldest = recent[len(recent) - limit].failed_at
    return int(oldest + window - now) + 1
