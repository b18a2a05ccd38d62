"""Deletion, retention policies and legal holds (docs/retention.md; rules in the control plane).

Every deletion goes through ``packages.delete_many``, which refuses a held
or retention-locked version inside the transaction that would delete it.
"""

from __future__ import annotations

from collections.abc import Collection

from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import holds, packages, retention
from artifactstore.model.identity import Namespace, PackageName, Reference
from artifactstore.model.records import Hold
from artifactstore.model.retention import (
    RetentionPolicy,
    RetentionReport,
    RetentionSettings,
    VersionRetention,
)
from artifactstore.model.versions import VersionRecord
from artifactstore.services.core import Core

__all__ = ["RetentionService"]


class RetentionService:
    def __init__(self, core: Core) -> None:
        self._core = core

    def delete(self, ref: Reference, actor: str | None = None) -> VersionRecord:
        """Tombstone a version; raises LegalHold or RetentionLocked if it is protected."""
        core = self._core
        now = core.clock()
        with core.db.freeing(), core.db.write() as conn:  # works on a full disk
            record = packages.delete(conn, ref, actor or core.actor, now=now)
            blob_records.dereference(conn, (str(f.blake3) for f in record.manifest.files), now)
        return record

    def set_policy(
        self,
        scope: tuple[Namespace, PackageName | None],
        policy: RetentionPolicy | None,
        actor: str,
    ) -> RetentionSettings:
        """Set (None: clear) the policy of ``scope``: (namespace, package or None)."""
        with self._core.db.write() as conn:
            return retention.set_policy(conn, *scope, policy, actor)

    def settings(self, namespace: Namespace) -> RetentionSettings:
        with self._core.db.read() as conn:
            return retention.settings(conn, namespace)

    def lock(self, namespace: Namespace, keep_days: float, actor: str) -> RetentionSettings:
        """Set or extend the namespace's retention lock; it can never shrink or go away."""
        with self._core.db.write() as conn:
            return retention.lock(conn, namespace, keep_days, actor)

    def apply(
        self, namespace: str | None = None, *, dry_run: bool = False, actor: str | None = None
    ) -> RetentionReport:
        """Delete (tombstone) what the policies release, never a held or locked version.

        Always evaluated at the current time: taking a time from the caller
        would let it age versions out of the retention lock.
        """
        core = self._core
        return retention.apply(
            core.db, core.clock(), actor or core.actor, namespace, dry_run=dry_run
        )

    def place_hold(self, ref: Reference, reason: str, actor: str | None = None) -> Hold:
        """Place a legal hold: the version cannot be deleted by anyone until it is released."""
        with self._core.db.write() as conn:
            return holds.place(conn, ref, reason, actor or self._core.actor)

    def release_hold(
        self, ref: Reference, reason: str, *, hold_id: int | None = None, actor: str | None = None
    ) -> Hold:
        """Release the version's only active hold, or the one ``hold_id`` names."""
        with self._core.db.write() as conn:
            return holds.release(conn, ref, reason, actor or self._core.actor, hold_id=hold_id)

    def list_holds(
        self,
        ref: Reference | None = None,
        *,
        include_released: bool = False,
        readable: Collection[str] | None = None,
    ) -> list[Hold]:
        """Active holds of one version or of every version (``include_released``: released
        ones too, with who released them and why); ``readable`` limits the namespaces."""
        with self._core.db.read() as conn:
            return holds.list_holds(
                conn, ref=ref, namespaces=readable, include_released=include_released
            )

    def version_retention(self, record: VersionRecord) -> tuple[list[Hold], VersionRetention]:
        """A version's active holds and retention state (for the version detail)."""
        with self._core.db.read() as conn:
            active = [h for h in holds.list_holds(conn, ref=record.reference) if h.active]
            return active, retention.version_retention(conn, record, self._core.clock())
