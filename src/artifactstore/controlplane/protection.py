"""The one check every deletion passes: legal holds and the retention lock (docs/retention.md).

Only :func:`artifactstore.controlplane.packages.delete_many` appends
``package.deleted``, and it calls :func:`check_deletable` first, inside the
same write transaction. ``Store.delete`` (``rm``, ``DELETE`` on a version)
and retention ``apply`` both delete through it, so no route or command can
delete a held or locked version, whatever the caller's scopes: a global
admin is refused exactly like anyone else. What this cannot stop is someone
writing the database or the storage directly; pair it with the storage's
own object lock for that.

The check first takes the event log's append lock (``eventlog.serialise``),
which every append takes. A hold or lock committed by a concurrent
transaction is then visible to the check (PostgreSQL, READ COMMITTED; SQLite
serialises writers anyway), so the log never shows a deletion after the hold or
lock that should have refused it.

Ages are compared as event-time strings (``utc_iso`` is fixed-width UTC), so
the live check, the plan and a replay agree to the microsecond.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from sqlalchemy import Connection, select

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import in_batches
from artifactstore.controlplane.eventlog import serialise
from artifactstore.errors import LegalHold, RetentionLocked
from artifactstore.model.identity import Reference
from artifactstore.model.retention import days_text, locked_until, younger_than

__all__ = [
    "Deletable",
    "active_holds",
    "check_deletable",
    "lock_days",
    "serialise",
]


class Deletable(Protocol):
    """What the check needs to know about a version (``VersionRecord`` has it)."""

    @property
    def id(self) -> int: ...

    @property
    def reference(self) -> Reference: ...

    @property
    def committed_at(self) -> str: ...


def active_holds(
    conn: Connection, version_ids: Iterable[int] | None = None
) -> dict[int, list[tuple[int, str]]]:
    """Active holds as version id -> [(hold id, reason)], oldest first (None: every version)."""
    query = select(t.holds.c.id, t.holds.c.version_id, t.holds.c.reason).where(
        t.holds.c.released_seq.is_(None)
    )
    out: dict[int, list[tuple[int, str]]] = {}
    if version_ids is None:
        chunks: list[Sequence[int] | None] = [None]
    else:
        ids = sorted(set(version_ids))
        chunks = list(in_batches(ids))
    for chunk in chunks:
        q = query if chunk is None else query.where(t.holds.c.version_id.in_(chunk))
        for row in conn.execute(q.order_by(t.holds.c.id)):
            out.setdefault(row.version_id, []).append((row.id, row.reason))
    return out


def lock_days(conn: Connection, namespaces: Iterable[str] | None = None) -> dict[str, float]:
    """The retention lock (minimum keep-days) of each locked namespace (None: all)."""
    rp = t.retention_policies
    query = select(rp.c.namespace, rp.c.lock_days).where(
        rp.c.package == "", rp.c.locked.is_(True), rp.c.lock_days.is_not(None)
    )
    if namespaces is not None:
        query = query.where(rp.c.namespace.in_(sorted(set(namespaces))))
    return {row.namespace: float(row.lock_days) for row in conn.execute(query)}


def _hold_text(holds: Sequence[tuple[int, str]]) -> str:
    return ", ".join(f"#{hold_id} ({reason!r})" for hold_id, reason in holds)


def check_deletable(conn: Connection, versions: Sequence[Deletable], now: float) -> None:
    """Raise LegalHold or RetentionLocked for the first protected version; else return.

    Runs inside the deleting transaction, before any ``package.deleted`` is
    appended, so a refusal deletes nothing of the batch.
    """
    if not versions:
        return
    serialise(conn)
    holds = active_holds(conn, (v.id for v in versions))
    locks: Mapping[str, float] = lock_days(conn, {str(v.reference.namespace) for v in versions})
    for v in versions:
        held = holds.get(v.id)
        if held:
            what = "a legal hold" if len(held) == 1 else f"{len(held)} legal holds"
            raise LegalHold(
                f"{v.reference} is under {what}: {_hold_text(held)}; nobody may delete it "
                f"until released ('artifactstore hold release {v.reference} --reason ...')",
                [{"id": hold_id, "reason": reason} for hold_id, reason in held],
            )
        days = locks.get(str(v.reference.namespace))
        if days is not None and younger_than(v.committed_at, days, now):
            until = locked_until(v.committed_at, days)
            raise RetentionLocked(
                f"{v.reference} is younger than the retention lock of namespace "
                f"{v.reference.namespace} ({days_text(days)}): it cannot be deleted "
                f"before {until}",
                locked_until=until,
            )
