"""Storage tiers: moving blobs between the hot and the cold backend, and restores.

A blob has one storage location at a time; its ``retrieval_tier`` says how
fast it can be read and its ``restore_status`` whether it can be read now:

==========  ==============  ============================================
tier        restore_status  readable
==========  ==============  ============================================
``hot``     ``available``   yes
``cold``    ``archived``    no: 409 ``restore_required``
``cold``    ``restoring``   no, until ``restore_ready_at``; then the
                            first read (or the background job of
                            ``serve``) moves it back to hot
==========  ==============  ============================================

A **move** follows the rule that bytes are durable before metadata points at
them, and is safe against GC:

1. renew the blob's lease (GC's step 1: its orphan pass will not unlink the
   copy about to appear at the target);
2. copy the bytes to the target backend, re-hashing them (damage is refused,
   never copied), durable when the copy returns;
3. one write transaction: the location row is locked and re-read; if the blob
   was collected or moved meanwhile nothing is recorded (the copy is an
   orphan GC removes), otherwise the copy is checked to exist and
   ``blob.tiered`` records the new location;
4. the old copy is deleted. A crash before this leaves an orphan at the old
   backend, which GC's orphan pass removes (it is per backend).

A **restore** is asynchronous, as an archive tier's retrieval is:
``blob.restore_requested`` records when it completes (now + the configured
``restore_delay``) and completing it is a move back to hot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane.blobs import located
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.bulk import in_batches
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.eventlog import append
from artifactstore.dataplane.blobs import (
    DataPlane,
)
from artifactstore.errors import CorruptBlob, InvalidInput, RestoreRequired, StorageError
from artifactstore.model.clock import utc_iso
from artifactstore.model.events import BlobRestoreRequested, BlobTiered
from artifactstore.model.identity import BlobDigests, Digest
from artifactstore.model.records import AVAILABLE, TIERS, BlobTier, Placement, TierReport

__all__ = [
    "complete_due",
    "move",
    "request_restore",
    "require_available",
    "status",
]

_STATUS_IN = {"hot": AVAILABLE, "cold": "archived"}


def _rows(conn: Connection, blake3s: Iterable[str]) -> list[Any]:
    names = sorted(set(blake3s))
    out: list[Any] = []
    for chunk in in_batches(names):
        query = located().where(t.blobs.c.blake3.in_(chunk))
        out.extend(conn.execute(query.order_by(t.blobs.c.blake3)))
    return out


def _tier(row: Any) -> BlobTier:
    return BlobTier(
        row.blake3, row.size, row.retrieval_tier, row.restore_status, row.restore_ready_at
    )


def status(conn: Connection, blake3s: Iterable[str]) -> list[BlobTier]:
    """Each recorded blob's tier and restore status, by digest."""
    return [_tier(r) for r in _rows(conn, blake3s)]


def require_available(conn: Connection, blake3s: Iterable[str]) -> None:
    """Raise RestoreRequired naming every blob that cannot be read now."""
    waiting = [b for b in status(conn, blake3s) if not b.available]
    if waiting:
        restoring = [b for b in waiting if b.restore_status == "restoring"]
        if len(restoring) == len(waiting):
            ready = max(str(b.restore_ready_at) for b in restoring)
            hint = f"a restore is under way; the bytes are readable from {ready}"
        else:
            hint = "start a restore with 'artifactstore tier restore' (or POST .../restore)"
        raise RestoreRequired(
            f"{len(waiting)} blob(s) are in the cold tier: {hint}",
            [b.digest for b in waiting],
            "restoring" if len(restoring) == len(waiting) else "archived",
        )


def _backend_for(plane: DataPlane, tier: str) -> str:
    if tier not in TIERS:
        raise InvalidInput(f"unknown tier {tier!r}: this build stores in {', '.join(TIERS)}")
    if tier == "hot":
        return plane.backend.properties.name
    if plane.cold is None:
        raise InvalidInput("no cold storage is configured (COLD_STORAGE_URL)")
    return plane.cold.properties.name


def move(
    db: Database,
    plane: DataPlane,
    blake3s: Sequence[str],
    to: str,
    actor: str,
    *,
    now: Callable[[], float] = time.time,
) -> TierReport:
    """Move each blob to tier ``to`` (the protocol of the module docstring)."""
    target = _backend_for(plane, to)
    report = TierReport()
    with db.read() as conn:
        rows = _rows(conn, blake3s)
    for row in rows:
        if row.backend == target:
            continue
        source = blob_records.placement(row.key, row.pack_offset, row.size)
        expected = BlobDigests(Digest.parse(row.blake3), Digest.parse(row.sha256), row.size)
        copy = Placement(plane.key(expected))
        with db.write() as conn:
            blob_records.touch(conn, [row.key, copy.key], now())
        try:
            plane.transfer(source, expected, row.backend, target)
        except CorruptBlob:
            with db.read() as conn:
                current = blob_records.find(conn, expected.blake3)
            if current is None or current.backend != row.backend:
                continue  # collected (or moved) while we copied: nothing to move
            raise
        with db.write() as conn:
            current = blob_records.find(conn, expected.blake3, lock=True)
            if current is None or current.backend != row.backend:
                continue  # collected or moved meanwhile: the copy is an orphan for GC
            if plane.stat(copy.key, target) is None:
                raise StorageError(
                    f"the copy of {row.blake3} vanished before it was recorded "
                    "(GC with a grace period shorter than the move?): run the move again"
                )
            place = blob_records.location(target, copy, to, _STATUS_IN[to])
            append(conn, BlobTiered(row.blake3, row.backend, place), actor)
        if source.offset is None:
            plane.delete(row.key, row.backend)
        # else the pack's other blobs still live there: GC removes it once none does.
        report.changed.append(row.blake3)
        report.bytes_changed += row.size
    with db.read() as conn:
        report.blobs = status(conn, blake3s)
    return report


def request_restore(
    db: Database, blake3s: Sequence[str], actor: str, *, delay: float, now: float
) -> TierReport:
    """Start a restore of every archived blob (one already restoring keeps its time)."""
    report = TierReport()
    ready_at = utc_iso(now + delay)
    with db.write() as conn:
        for row in _rows(conn, blake3s):
            if row.restore_status != "archived":
                continue
            append(conn, BlobRestoreRequested(row.blake3, ready_at), actor)
            report.changed.append(row.blake3)
            report.bytes_changed += row.size
        report.blobs = status(conn, blake3s)
    return report


def complete_due(
    db: Database,
    plane: DataPlane,
    actor: str,
    *,
    now: float,
    blake3s: Sequence[str] | None = None,
) -> TierReport:
    """Finish every restore whose time has come (of ``blake3s``, or all): move to hot."""
    loc = t.storage_locations
    query = select(loc.c.blake3).where(
        loc.c.restore_status == "restoring", loc.c.restore_ready_at <= utc_iso(now)
    )
    wanted = None if blake3s is None else set(blake3s)
    with db.read() as conn:
        due = [r.blake3 for r in conn.execute(query) if wanted is None or r.blake3 in wanted]
    if not due:
        return TierReport()
    return move(db, plane, due, "hot", actor)
