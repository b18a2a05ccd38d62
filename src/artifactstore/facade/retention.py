"""Deletion, retention policies and locks, legal holds (services/retention.py)."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from artifactstore.facade import Facade, as_reference
from artifactstore.model import records
from artifactstore.model.identity import Namespace, PackageName, Reference

if TYPE_CHECKING:
    from artifactstore.model import retention
    from artifactstore.model.versions import VersionRecord

__all__ = ["RetentionVerbs"]


class RetentionVerbs:
    def delete(self: Facade, ref: str | Reference, actor: str | None = None) -> VersionRecord:
        """Tombstone a version; raises LegalHold or RetentionLocked if it is protected."""
        return self.services.retention.delete(as_reference(ref), actor)

    def set_retention(
        self: Facade,
        namespace: str,
        package: str | None,
        policy: retention.RetentionPolicy | None,
        actor: str | None = None,
    ) -> retention.RetentionSettings:
        """Set (None: clear) the namespace default (``package`` None) or a package's policy."""
        scope = (Namespace(namespace), None if package is None else PackageName(package))
        return self.services.retention.set_policy(scope, policy, actor or self.actor)

    def retention_settings(self: Facade, namespace: str) -> retention.RetentionSettings:
        return self.services.retention.settings(Namespace(namespace))

    def lock_retention(
        self: Facade, namespace: str, keep_days: float, actor: str | None = None
    ) -> retention.RetentionSettings:
        """Set or extend the namespace's retention lock; it can never shrink or go away."""
        return self.services.retention.lock(Namespace(namespace), keep_days, actor or self.actor)

    def retention_plan(self: Facade, namespace: str | None = None) -> retention.RetentionReport:
        """What ``apply_retention`` would do now: every live version's decision and rule."""
        return self.services.retention.apply(namespace, dry_run=True, actor=None)

    def apply_retention(
        self: Facade,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        actor: str | None = None,
    ) -> retention.RetentionReport:
        """Delete (tombstone) what the policies release, never a held or locked version."""
        return self.services.retention.apply(namespace, dry_run=dry_run, actor=actor)

    def place_hold(
        self: Facade, ref: str | Reference, reason: str, actor: str | None = None
    ) -> records.Hold:
        """Place a legal hold: the version cannot be deleted by anyone until it is released."""
        return self.services.retention.place_hold(as_reference(ref), reason, actor)

    def release_hold(
        self: Facade,
        ref: str | Reference,
        reason: str,
        *,
        hold_id: int | None = None,
        actor: str | None = None,
    ) -> records.Hold:
        """Release the version's only active hold, or the one ``hold_id`` names."""
        return self.services.retention.release_hold(
            as_reference(ref), reason, hold_id=hold_id, actor=actor
        )

    def list_holds(
        self: Facade,
        ref: str | Reference | None = None,
        *,
        include_released: bool = False,
        readable: Collection[str] | None = None,
    ) -> list[records.Hold]:
        """Active holds of one version or of all (``include_released``: released ones too)."""
        target = None if ref is None else as_reference(ref)
        return self.services.retention.list_holds(
            target, include_released=include_released, readable=readable
        )

    def version_retention(
        self: Facade, record: VersionRecord
    ) -> tuple[list[records.Hold], retention.VersionRetention]:
        """A version's active holds and retention state (for the version detail)."""
        return self.services.retention.version_retention(record)
