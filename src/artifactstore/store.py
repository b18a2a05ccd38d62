"""The Store: the library's public face, a facade whose verbs delegate to ``services/``.

Opening a store does not wait for the control plane: its modules (SQLAlchemy
alone takes a third of a second to import here) load and the database opens
on a thread. A push hashes and stages its files meanwhile, so a small CLI push
starts at once; every other verb waits for the control plane first, and
raises what opening raised (``wait=True`` raises it at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack

from artifactstore.client.files import collect_files, version_reference
from artifactstore.config import Settings
from artifactstore.dataplane.backends import open_backend, open_data_plane
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.dataplane.files import stage_files
from artifactstore.dataplane.presign import Presigner
from artifactstore.dataplane.staging import Staging
from artifactstore.errors import InvalidInput
from artifactstore.facade import as_reference as _ref
from artifactstore.facade.access import AccessVerbs
from artifactstore.facade.provenance import ProvenanceVerbs
from artifactstore.facade.retention import RetentionVerbs
from artifactstore.facade.uploads import UploadVerbs
from artifactstore.model import records
from artifactstore.model.clock import Clock
from artifactstore.model.envelope import Envelope
from artifactstore.model.identity import Digest, Reference
from artifactstore.model.jsonio import check_metadata_limits
from artifactstore.model.manifest import FileEntry, Manifest

if TYPE_CHECKING:
    import logging

    from artifactstore.controlplane.db.engine import Database
    from artifactstore.controlplane.outbox import Backlog
    from artifactstore.dataplane.protocol import Backend
    from artifactstore.model.events import Event
    from artifactstore.model.versions import CommitResult, Page, PushResult, VersionRecord
    from artifactstore.services import Services
    from artifactstore.services.copy import CopyReport
    from artifactstore.services.stream import EventPublisher

__all__ = ["Store"]


def _open_services(
    settings: Settings, plane: DataPlane, staging: Staging, create: bool, clock: Clock
) -> Services:
    from artifactstore.services import open_services

    return open_services(settings, plane, staging, create=create, clock=clock)


class Store(AccessVerbs, RetentionVerbs, UploadVerbs, ProvenanceVerbs):
    """An artifact store: open one with :meth:`open` and close it (or use ``with``).

    Verbs of the tokens and namespaces, deletion, retention and holds, HTTP
    uploads, signatures and the
    transparency log are in ``facade/``; the rest are here.
    """

    def __init__(
        self, settings: Settings, plane: DataPlane, staging: Staging, *, create: bool, clock: Clock
    ) -> None:
        self.settings = settings
        self._plane = plane
        opener = ThreadPoolExecutor(1, thread_name_prefix="artifactstore-open")
        self._opened = opener.submit(_open_services, settings, plane, staging, create, clock)
        self._checkpoint_sink: Backend | None = None
        opener.shutdown(wait=False)  # the one task runs on

    # --- lifecycle ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        *,
        create: bool = True,
        wait: bool = True,
        clock: Clock = time.time,
        **overrides: Any,
    ) -> Store:
        """Open (and on first use create) the store under ``home``; settings from the env."""
        settings = Settings.load(home=home, **overrides)
        return cls.from_config(settings, create=create, wait=wait, clock=clock)

    @classmethod
    def from_config(
        cls, settings: Settings, *, create: bool = True, wait: bool = True, clock: Clock = time.time
    ) -> Store:
        """``wait``: return once the control plane is open (else it opens on a thread)."""
        if settings.database_url.startswith("sqlite:///"):
            db_path = Path(settings.database_url.removeprefix("sqlite:///"))
            if not db_path.exists() and not create:
                raise InvalidInput(f"no store at {settings.home} (it has no database yet)")
            db_path.parent.mkdir(parents=True, exist_ok=True)
        plane, staging = open_data_plane(settings)
        store = cls(settings, plane, staging, create=create, clock=clock)
        if wait:
            try:
                store._opened.result()
            except BaseException:
                store.close()
                raise
        return store

    @staticmethod
    def migrate(settings: Settings) -> tuple[str | None, str | None]:
        """Apply pending database migrations (``artifactstore migrate``): the revision
        before (None: an empty database) and after."""
        from artifactstore.services import migrate

        return migrate(settings)

    def close(self) -> None:
        if self._opened.exception() is None:  # waits for the opening
            self.services.close()
        self._plane.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def actor(self) -> str:
        return self.settings.actor

    @property
    def db(self) -> Database:
        """The control plane's database (for maintenance tools and white-box tests)."""
        return self.services.core.db

    @property
    def services(self) -> Services:
        """The services behind the verbs, once the control plane is open (raises what
        opening raised)."""
        return self._opened.result()

    @property
    def plane(self) -> DataPlane:
        """The data plane (for maintenance tools and white-box tests)."""
        return self._plane

    # --- push (services/push.py) -----------------------------------------------------

    def push(
        self, ref: str | Reference, paths: Sequence[str | Path], **args: Unpack[records.PushArgs]
    ) -> PushResult[VersionRecord]:
        """Ingest the files under ``paths`` and commit them as version ``ref``.

        The files are hashed and staged while the control plane opens; the
        push then leases, publishes and records them.
        """
        reference = version_reference(ref)
        walked = args.get("walked")
        files = (
            list(walked)
            if walked is not None
            else collect_files(
                [Path(p) for p in paths],
                follow_external_symlinks=args.get("follow_symlinks", False),
                max_files=self.settings.max_files,
            )
        )
        # The checks that need no database, before hashing a byte (the walk stops past
        # the file limit).
        metadata = args.get("metadata") or {}
        settings = self.settings
        check_metadata_limits(metadata, settings.max_metadata_bytes, settings.max_metadata_depth)
        sources = [f.source for f in files]
        staged = stage_files(
            self._plane,
            sources,
            args.get("progress", records.no_progress),
            lambda blake3s: self.services.push.known_blobs(blake3s),  # waits for the control plane
        )
        try:
            service = self.services.push
        except BaseException:  # the control plane did not open
            staged.batch.cancel()
            raise
        return service.push(
            reference,
            files,
            staged,
            lambda: stage_files(self._plane, sources, records.no_progress),
            metadata=metadata,
            variant=args.get("variant"),
            annotations=args.get("annotations"),
            producer=args.get("producer", "artifactstore"),
            sign=args.get("sign"),
        )

    def commit_manifest(
        self,
        manifest: Manifest,
        actor: str | None = None,
        *,
        require_held: bool = False,
        signatures: Sequence[Envelope] = (),
    ) -> CommitResult:
        """Commit a manifest whose blobs were uploaded separately (the HTTP path), with the
        signatures that travel with it (docs/provenance.md)."""
        return self.services.push.commit_manifest(
            manifest, actor, require_held=require_held, signatures=signatures
        )

    # --- read (services/pull.py, services/query.py) ------------------------------------

    def show(self, ref: str | Reference) -> VersionRecord:
        return self.services.pull.show(_ref(ref))

    def query(
        self, *, readable: Collection[str] | None = None, **args: Unpack[records.QueryArgs]
    ) -> Page[VersionRecord]:
        """One page of live versions, newest first; ``readable`` limits the namespaces."""
        return self.services.query.query(readable=readable, **args)

    def iter_query(self, **args: Unpack[records.QueryArgs]) -> Iterator[VersionRecord]:
        """Every matching live version, newest first, paging under the hood."""

        def page(cursor: str | None) -> Page[VersionRecord]:
            at = args.copy()
            at["cursor"] = cursor
            return self.query(**at)

        return records.pages(page)

    def find_blob(
        self, digest: Digest, readable: Collection[str] | None = None, *, head: bool = False
    ) -> records.BlobRecord | None:
        """A blob by either digest, if ``readable`` (None: any) holds it; renews its lease."""
        return self.services.pull.find_blob(digest, readable, head=head)

    def known_blob(
        self, digest: Digest, readable: Collection[str] | None = None, *, head: bool = False
    ) -> records.BlobRecord | None:
        """``find_blob``'s answer if it needs no I/O (a lookup made since the last commit
        to the database); None: call ``find_blob``."""
        return self.services.pull.known_blob(digest, readable, head=head)

    def read_blob(
        self, record: records.BlobRecord, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """A blob's bytes (a span of them), unverified: for ranges the server serves."""
        return self._plane.read(record.place, offset, length, record.backend)

    def local_path(self, record: records.BlobRecord) -> Path | None:
        """The file holding a whole blob, where its backend keeps plain files (zero-copy)."""
        root = self._plane.named(record.backend).properties.local_root
        if root is None or record.place.offset is not None:
            return None
        return root.joinpath(*record.place.key.split("/"))

    def download_url(self, record: records.BlobRecord) -> str | None:
        """A presigned URL of a whole, readable blob when ``presign_downloads`` asks for
        one and its backend can sign (S3); None: send the bytes."""
        seconds = self.settings.presign_downloads
        if seconds <= 0 or record.place.offset is not None:
            return None
        if record.restore_status != records.AVAILABLE:  # the server answers 409 as ever
            return None
        backend = self._plane.named(record.backend)
        if not isinstance(backend, Presigner):
            return None
        return backend.presign_get(record.place.key, seconds)

    def read_file(self, ref: str | Reference, path: str) -> Iterator[bytes]:
        """Stream one file; raises DigestMismatch after the last chunk if the bytes are damaged."""
        return self.services.pull.read_file(_ref(ref), path)

    def stream_entry(self, entry: FileEntry) -> Iterator[bytes]:
        """One file's bytes; raises DigestMismatch after the last chunk if they are damaged."""
        return self.services.pull.stream_entry(entry)

    def pull(
        self,
        ref: str | Reference,
        dest: str | Path,
        *,
        progress: records.Progress = records.no_progress,
        force: bool = False,
    ) -> VersionRecord:
        """Write every file under ``dest``, verifying each digest; all or nothing.

        Every target is checked before anything is written: an existing file is
        refused (Conflict) unless ``force`` replaces it.
        """
        return self.services.pull.pull(_ref(ref), Path(dest), progress, force=force)

    def require_available(self, entries: Sequence[FileEntry]) -> None:
        """Raise RestoreRequired (naming every blob) unless all the files can be read now."""
        self.services.tiers.require_available(sorted({str(f.blake3) for f in entries}))

    # --- schemas (services/query.py) -----------------------------------------------------

    def register_schema(self, variant: str, schema: Any, actor: str | None = None) -> bool:
        return self.services.query.register_schema(variant, schema, actor)

    def get_schema(self, variant: str) -> dict[str, Any]:
        return self.services.query.get_schema(variant)

    def list_schemas(self) -> list[dict[str, str]]:
        return self.services.query.list_schemas()

    # --- storage tiers (services/tiers.py) ---------------------------------------------

    def _version_blobs(self, ref: str | Reference) -> list[str]:
        return self.show(ref).manifest.blob_ids()

    def tier_status(self, ref: str | Reference) -> list[records.BlobTier]:
        """Where each blob of a version is, and whether it can be read now."""
        return self.services.tiers.status(self._version_blobs(ref))

    def tier_move(
        self, ref: str | Reference, to: str, actor: str | None = None
    ) -> records.TierReport:
        """Move a version's blobs to tier ``to`` (``hot`` or ``cold``), synchronously."""
        return self.services.tiers.move(self._version_blobs(ref), to, actor)

    def tier_restore(self, ref: str | Reference, actor: str | None = None) -> records.TierReport:
        """Start restoring a version's cold blobs; readable after ``restore_delay``."""
        return self.services.tiers.restore(self._version_blobs(ref), actor)

    def restore_blobs(self, blake3s: Sequence[str], actor: str | None = None) -> records.TierReport:
        return self.services.tiers.restore(blake3s, actor)

    def complete_restores(self) -> records.TierReport:
        """Finish every restore whose time has come (``serve`` does it on a schedule)."""
        return self.services.tiers.complete_restores(None)

    # --- integrity and housekeeping (services/maintenance.py) ---------------------------

    def verify(self, ref: str | Reference | None = None) -> records.VerifyReport:
        """Re-read and re-hash stored bytes (all blobs, or one version's); report damage."""
        return self.services.maintenance.verify(None if ref is None else _ref(ref))

    def events(self, after: int = 0, limit: int | None = None) -> list[Event]:
        return self.services.maintenance.events(after, limit)

    def verify_chain(self) -> int:
        """Number of events verified; raises ChainBroken at the first bad one."""
        return self.services.maintenance.verify_chain()

    def rebuild(self) -> int:
        """Empty every view and replay the whole log into it; returns events replayed."""
        return self.services.maintenance.rebuild()

    def gc(
        self, *, dry_run: bool = False, grace: float | None = None, actor: str | None = None
    ) -> records.GcReport:
        return self.services.maintenance.gc(dry_run=dry_run, grace=grace, actor=actor)

    def copy_to(
        self,
        database_url: str,
        storage_url: str,
        cold_storage_url: str | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> CopyReport:
        """Copy this store (its log, views and every recorded blob) to new engines.

        The target's backends take the names this store's have, because the
        copied events record locations by backend name (dataplane/copying.py).
        """
        from artifactstore.dataplane.copying import open_target
        from artifactstore.services.copy import check_target_urls, copy_to

        settings = self.settings
        check_target_urls(settings, database_url, storage_url, cold_storage_url)
        plane = open_target(self._plane, storage_url, cold_storage_url, fsync=settings.fsync)
        return copy_to(
            (self.db, self._plane),
            database_url,
            plane,
            progress=progress or records.no_progress,
            on_total=on_total or records.no_progress,
        )

    # --- the transparency log's writer (the other log verbs: facade/provenance.py) ----

    def log_publish(self) -> dict[str, Any]:
        """Make a checkpoint and write it to LOG_CHECKPOINT_URL (``serve`` does it on a
        schedule); the figures for the job's log line."""
        url = self.settings.log_checkpoint_url
        if url and self._checkpoint_sink is None:
            self._checkpoint_sink = open_backend(
                url, "LOG_CHECKPOINT_URL", fsync=self.settings.fsync, name="checkpoints"
            )
        return self.services.log.publish(self._checkpoint_sink)

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew lease ``name`` for ``ttl`` seconds: whether ``holder`` holds it now.

        Periodic jobs (background GC) run only on the replica holding their lease.
        """
        return self.services.maintenance.acquire_lease(name, holder, ttl)

    def release_lease(self, name: str, holder: str) -> bool:
        return self.services.maintenance.release_lease(name, holder)

    def event_publisher(self, logger: logging.Logger) -> EventPublisher:
        """The publisher of the event stream out to NATS (``NATS_URL``; ``serve`` runs it)."""
        from artifactstore.services.stream import EventPublisher

        return EventPublisher(self.db, self.settings, logger)

    def stream_backlog(self) -> Backlog:
        """The log's last seq and how far the NATS stream (``NATS_STREAM``) has it."""
        from artifactstore.controlplane import outbox

        return outbox.backlog(self.db, self.settings.nats_stream)

    def stats(self) -> dict[str, int]:
        return self.services.maintenance.stats()

    def health(self) -> None:
        self.services.maintenance.health()

    def readiness_checks(self) -> dict[str, Callable[[], None]]:
        """What ``GET /ready`` probes, by the name it reports: each raises while its part
        is down. Separate so that a database that hangs cannot hide the storage's state."""
        maintenance = self.services.maintenance
        return {"database": maintenance.database_health, "storage": maintenance.storage_health}
