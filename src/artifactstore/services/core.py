"""What every service of a store shares: settings, the two planes, the clock, two caches.

The caches are per process and only ever save work (see ``Core.renew_lease``
and ``controlplane.blobs.RecentBlobs``): a stale entry makes a request take
the slow path or a client upload again, never breaks a guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from artifactstore.config import Settings
from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import schemas
from artifactstore.controlplane.db.engine import Database
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.errors import LimitExceeded
from artifactstore.model.clock import Clock, held_since
from artifactstore.model.jsonio import check_metadata_limits

__all__ = ["LEASE_RENEWAL", "Core"]

#: A "present" answer renews a blob's GC lease at most this often per key.
LEASE_RENEWAL = 60.0


@dataclass
class Core:
    settings: Settings
    db: Database
    plane: DataPlane
    clock: Clock
    recent: blob_records.RecentBlobs = field(default_factory=blob_records.RecentBlobs)
    _leases: dict[str, float] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return self.settings.actor

    def held_since(self) -> str:
        """Uploads into a namespace since then still count as its holdings."""
        return held_since(self.clock(), self.settings.gc_grace)

    def stored(self, key: str) -> bool:
        return self.plane.stat(key) is not None

    def renew_lease(self, key: str) -> None:
        """Renew a blob's GC lease, at most once a minute per key.

        Renewing on every HEAD would make each one a write transaction. A lease
        that arrives late fails closed: the commit's own re-check catches a
        collected blob and the client uploads it again.
        """
        now = self.clock()
        if self.lease_fresh(key, now):
            return
        with self.db.write(durable=False) as conn:
            blob_records.touch(conn, [key], now)
        self.note_lease(key, now)

    def lease_fresh(self, key: str, now: float) -> bool:
        """Whether this process renewed the lease of ``key`` lately (renewing it is a no-op)."""
        last = self._leases.get(key)
        return last is not None and now - last < LEASE_RENEWAL

    def note_lease(self, key: str, now: float) -> None:
        """A lease this process just renewed (an upload records one with its blob)."""
        if len(self._leases) > 100_000:
            self._leases.clear()
        self._leases[key] = now

    def check_metadata(self, metadata: Mapping[str, Any], variant: str | None) -> None:
        """Size and depth limits, then the variant's schema (docs/configuration.md)."""
        settings = self.settings
        check_metadata_limits(metadata, settings.max_metadata_bytes, settings.max_metadata_depth)
        self.check_schema(metadata, variant)

    def check_schema(self, metadata: Mapping[str, Any], variant: str | None) -> None:
        """The metadata against its variant's registered schema (none: nothing to check)."""
        if variant is not None:
            schemas.validate_variant_id(variant)
            with self.db.read() as conn:
                schema = schemas.get(conn, variant)
            schemas.validate_metadata(schema, dict(metadata), variant)

    def check_file_count(self, count: int) -> None:
        if count > self.settings.max_files:
            raise LimitExceeded(
                f"{count} files is more than the limit of {self.settings.max_files}"
            )
