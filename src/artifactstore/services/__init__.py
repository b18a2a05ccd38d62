"""A store's verbs, one service per group, over one shared :class:`~.core.Core`.

``Store`` (``artifactstore/store.py``) is the facade that delegates to these;
the services are where the verbs' work is written. Each uses the control
plane's modules for rows and events and the data plane for bytes.

==============  ==================================================
``push``        publish staged files, record them, commit versions
``pull``        versions, blobs by digest, files, pulls
``query``       queries and metadata schemas
``retention``   deletion, retention policies, legal holds
``tiers``       storage tiers and restores
``access``      tokens and namespace settings
``signing``     signatures on versions (DSSE envelopes)
``maintenance`` verify, the event log, rebuild, GC, health
``log``         the transparency log: checkpoints, proofs, audit
``uploads``     HTTP uploads: one-shot and resumable sessions
``batches``     HTTP batch uploads: many small blobs in one request, into packs
==============  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from artifactstore.config import Settings
from artifactstore.controlplane.db.engine import Database
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.dataplane.staging import Staging
from artifactstore.model.clock import Clock
from artifactstore.services.access import AccessService
from artifactstore.services.blob_batches import BlobBatchService
from artifactstore.services.core import Core
from artifactstore.services.log import LogService
from artifactstore.services.maintenance import MaintenanceService
from artifactstore.services.pull import PullService
from artifactstore.services.push import PushService
from artifactstore.services.query import QueryService
from artifactstore.services.retention import RetentionService
from artifactstore.services.signing import SigningService
from artifactstore.services.tiers import TierService
from artifactstore.services.uploads import UploadService

__all__ = ["Services", "migrate", "open_services"]


@dataclass(frozen=True, slots=True)
class Services:
    core: Core
    push: PushService
    pull: PullService
    query: QueryService
    retention: RetentionService
    tiers: TierService
    access: AccessService
    signing: SigningService
    maintenance: MaintenanceService
    uploads: UploadService
    batches: BlobBatchService
    log: LogService

    def close(self) -> None:
        self.core.db.dispose()


def open_services(
    settings: Settings, plane: DataPlane, staging: Staging, *, create: bool, clock: Clock
) -> Services:
    """Open the database (migrating a new one when ``create``) and wire every service."""
    db = Database(settings.database_url, reserve_bytes=settings.disk_reserve_bytes)
    try:
        db.ensure_migrated(create=create)
    except BaseException:
        db.dispose()
        raise
    db.reserve.keep()  # room for rm and gc on a full disk (engine.py)
    core = Core(settings, db, plane, clock)
    tiers = TierService(core)
    pull = PullService(core, tiers)
    uploads = UploadService(core, staging, on_stored=pull.note_stored)
    push = PushService(core)
    return Services(
        core=core,
        push=push,
        pull=pull,
        query=QueryService(core),
        retention=RetentionService(core),
        tiers=tiers,
        access=AccessService(core),
        signing=SigningService(core),
        maintenance=MaintenanceService(core, uploads),
        uploads=uploads,
        batches=BlobBatchService(core, push),
        log=LogService(core),
    )


def migrate(settings: Settings) -> tuple[str | None, str | None]:
    """Apply pending migrations; the revision before (None: an empty database) and after."""
    if settings.database_url.startswith("sqlite:///"):
        settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    try:
        return db.migrate()
    finally:
        db.dispose()
