"""Integrity and housekeeping: verify, the event log, rebuild, GC, health and figures."""

from __future__ import annotations

from contextlib import nullcontext

from artifactstore.controlplane import gc as gc_mod
from artifactstore.controlplane import leases, packages, tlog, views
from artifactstore.controlplane import verify as checks
from artifactstore.controlplane.blobs import placement
from artifactstore.controlplane.eventlog import iter_events, verify_chain
from artifactstore.errors import CorruptBlob
from artifactstore.model.events import Event
from artifactstore.model.identity import Reference
from artifactstore.model.records import GcReport, Placement, VerifyReport
from artifactstore.services.core import Core
from artifactstore.services.uploads import UploadService

__all__ = ["MaintenanceService"]


class MaintenanceService:
    def __init__(self, core: Core, uploads: UploadService) -> None:
        self._core = core
        self._uploads = uploads

    def verify(self, ref: Reference | None = None) -> VerifyReport:
        """Re-read and re-hash stored bytes (all blobs, or one version's); report damage."""
        report = VerifyReport()
        with self._core.db.read() as conn:
            if ref is None:
                wanted = None
                for blake3, version in checks.unrecorded_references(conn):
                    problem = f"referenced by {version} but not recorded"
                    report.damaged.append({"digest": blake3, "problem": problem})
            else:
                record = packages.get(conn, ref)
                wanted = record.manifest.blob_ids()
            rows = checks.blobs_to_check(conn, wanted)
        for missing in sorted(set(wanted or ()) - {str(r.digests.blake3) for r in rows}):
            report.damaged.append({"digest": missing, "problem": "not recorded"})
        for row in rows:
            report.blobs_checked += 1
            digest = str(row.digests.blake3)
            if row.key is None:
                report.damaged.append({"digest": digest, "problem": "no storage location"})
                continue
            place: Placement = placement(row.key, row.pack_offset, row.digests.size)
            try:
                self._core.plane.verify(place, row.digests, row.backend)
                report.bytes_checked += row.digests.size
            except CorruptBlob as exc:
                report.damaged.append({"digest": digest, "problem": exc.detail})
        return report

    def events(self, after: int = 0, limit: int | None = None) -> list[Event]:
        with self._core.db.read() as conn:
            return list(iter_events(conn, after, limit))

    def verify_chain(self) -> int:
        """Number of events verified; raises ChainBroken at the first bad one."""
        with self._core.db.read() as conn:
            return verify_chain(conn)

    def rebuild(self) -> int:
        """Empty every view and replay the whole log into it; returns events replayed.
        The transparency log's stored tree is dropped too: the next request refills it."""
        with self._core.db.write() as conn:
            tlog.clear(conn)
            return views.rebuild(conn)

    def gc(
        self, *, dry_run: bool = False, grace: float | None = None, actor: str | None = None
    ) -> GcReport:
        core = self._core
        # GC frees space, so it runs on a full disk too: with the reserve released.
        with nullcontext() if dry_run else core.db.freeing():
            report = gc_mod.collect(
                core.db,
                core.plane,
                grace=core.settings.gc_grace if grace is None else grace,
                dry_run=dry_run,
                actor=actor or core.actor,
                now=core.clock,
                on_decided=core.recent.clear,
            )
        if not dry_run:
            core.recent.clear()
            self._uploads.expire()
        return report

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        return leases.acquire(self._core.db, name, holder, ttl, self._core.clock())

    def release_lease(self, name: str, holder: str) -> bool:
        return leases.release(self._core.db, name, holder)

    def stats(self) -> dict[str, int]:
        with self._core.db.read() as conn:
            return views.stats(conn)

    def health(self) -> None:
        self.database_health()
        self.storage_health()

    def database_health(self) -> None:
        """One round trip to the database: raises DatabaseUnavailable (or a driver error)."""
        with self._core.db.read() as conn:
            views.ping(conn)

    def storage_health(self) -> None:
        """A probe write to every backend: raises StorageError when one cannot take bytes."""
        self._core.plane.health()
