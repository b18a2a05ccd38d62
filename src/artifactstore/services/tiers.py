"""Storage tiers: where a version's blobs are, moving them, and restoring cold ones."""

from __future__ import annotations

from collections.abc import Sequence

from artifactstore.controlplane import tiers
from artifactstore.model.records import BlobTier, TierReport
from artifactstore.services.core import Core

__all__ = ["RESTORER", "TierService"]

#: The actor of restores completed because their time came.
RESTORER = "system:restore"


class TierService:
    def __init__(self, core: Core) -> None:
        self._core = core

    def status(self, blake3s: list[str]) -> list[BlobTier]:
        """Where each blob is, and whether it can be read now (restores whose time has
        come complete first)."""
        self.complete_restores(blake3s)
        with self._core.db.read() as conn:
            return tiers.status(conn, blake3s)

    def move(self, blake3s: list[str], to: str, actor: str | None = None) -> TierReport:
        """Move blobs to tier ``to`` (``hot`` or ``cold``), synchronously."""
        core = self._core
        core.recent.clear()
        return tiers.move(core.db, core.plane, blake3s, to, actor or core.actor)

    def restore(self, blake3s: Sequence[str], actor: str | None = None) -> TierReport:
        """Start restoring cold blobs; readable after ``restore_delay`` (no delay: at once)."""
        core = self._core
        now = core.clock()
        who = actor or core.actor
        report = tiers.request_restore(
            core.db, blake3s, who, delay=core.settings.restore_delay, now=now
        )
        if self.complete_restores(blake3s, now, who).changed:
            with core.db.read() as conn:
                report.blobs = tiers.status(conn, blake3s)
        return report

    def complete_restores(
        self, blake3s: Sequence[str] | None, now: float | None = None, actor: str = RESTORER
    ) -> TierReport:
        """Finish the restores whose time has come (of ``blake3s``, or every one)."""
        core = self._core
        when = core.clock() if now is None else now
        report = tiers.complete_due(core.db, core.plane, actor, now=when, blake3s=blake3s)
        if report.changed:
            core.recent.clear()
        return report

    def require_available(self, blake3s: list[str]) -> None:
        """Raise RestoreRequired (naming every blob) unless all can be read now."""
        self.complete_restores(blake3s)
        with self._core.db.read() as conn:
            tiers.require_available(conn, blake3s)
