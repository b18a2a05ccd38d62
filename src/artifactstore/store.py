"""The Store: the library's public face (SPEC section 6).

It wires one control plane (database, event log, views) to one data plane
(hashing and a storage backend) and offers the verbs the CLI and the server
are thin layers over. Every mutation is one event appended in the same
transaction as its effect; bytes are durable before any event points at them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import delete, func, insert, select

from artifactstore.config import Settings
from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import gc as gc_mod
from artifactstore.controlplane import (
    holds,
    namespaces,
    packages,
    retention,
    schemas,
    tiers,
    tokens,
)
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.eventlog import (
    Event,
    iter_events,
    utc_iso,
    utc_now,
    verify_chain,
)
from artifactstore.controlplane.projection import project
from artifactstore.dataplane.blobs import DataPlane, Placement
from artifactstore.dataplane.digests import DualHasher
from artifactstore.dataplane.staging import Staging
from artifactstore.errors import (
    BlobNotFound,
    CorruptBlob,
    DigestMismatch,
    InvalidInput,
    LimitExceeded,
    MissingBlobs,
    PackageNotFound,
)
from artifactstore.localfs import (
    LocalFile,
    collect_files,
    manifest_for,
    pull_into,
    version_reference,
)
from artifactstore.model.identity import BlobDigests, Digest, Namespace, PackageName, Reference
from artifactstore.model.jsonio import canonical_json_dumps
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.model.paths import PackagePath
from artifactstore.storage import StagedFiles, open_data_plane, stage_files
from artifactstore.uploads import UploadService

__all__ = ["Progress", "PushResult", "Store", "VerifyReport", "no_progress"]

#: How often a push re-ingests bytes that GC collected under it (grace shorter than a push).
PUSH_ATTEMPTS = 5
_LOCATION_COLUMNS = (
    t.storage_locations.c.key,
    t.storage_locations.c.backend,
    t.storage_locations.c.pack_offset,
)

#: Called with the number of bytes just transferred (drives progress bars).
Progress = Callable[[int], None]


def no_progress(_n: int) -> None:
    """The default progress callback: nothing to show."""
    return None


@dataclass(frozen=True, slots=True)
class PushResult:
    record: packages.VersionRecord
    created: bool
    blobs_stored: int


@dataclass
class VerifyReport:
    """What ``verify`` checked and what it found damaged (empty ``damaged`` means clean)."""

    blobs_checked: int = 0
    bytes_checked: int = 0
    damaged: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "blobs_checked": self.blobs_checked,
            "bytes_checked": self.bytes_checked,
            "damaged": self.damaged,
        }


class Store:
    """An artifact store: open one with :meth:`open` and close it (or use ``with``)."""

    def __init__(
        self, settings: Settings, db: Database, plane: DataPlane, staging: Staging
    ) -> None:
        self.settings = settings
        self.db = db
        self.plane = plane
        self._lease_cache: dict[str, float] = {}
        self._recent = blob_records.RecentBlobs()
        self._usage_cache: dict[str, float] = {}
        self.uploads = UploadService(
            db,
            plane,
            staging,
            actor=settings.actor,
            ttl=settings.upload_ttl,
            max_upload_bytes=settings.max_upload_bytes,
            grace=settings.gc_grace,
            on_stored=self._note_stored,
        )

    # --- lifecycle ------------------------------------------------------------------

    @classmethod
    def open(
        cls, home: str | Path | None = None, *, create: bool = True, **overrides: Any
    ) -> Store:
        """Open (and on first use create) the store under ``home``; settings from the env."""
        return cls.from_config(Settings.load(home=home, **overrides), create=create)

    @classmethod
    def from_config(
        cls,
        settings: Settings,
        *,
        create: bool = True,
        data: tuple[DataPlane, Staging] | None = None,
    ) -> Store:
        """``data``: the data plane of these settings when the caller already opened it."""
        if settings.database_url.startswith("sqlite:///"):
            db_path = Path(settings.database_url.removeprefix("sqlite:///"))
            if not db_path.exists() and not create:
                raise InvalidInput(f"no store at {settings.home} (it has no database yet)")
            db_path.parent.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url)
        try:
            db.ensure_migrated(create=create)
            plane, staging = data if data is not None else open_data_plane(settings)
        except BaseException:
            db.dispose()
            raise
        return cls(settings, db, plane, staging)

    def close(self) -> None:
        self.plane.close()
        self.db.dispose()

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

    # --- push -------------------------------------------------------------------------

    def push(
        self,
        ref: str | Reference,
        paths: Sequence[str | Path],
        *,
        metadata: Mapping[str, Any] | None = None,
        variant: str | None = None,
        annotations: Mapping[str, str] | None = None,
        producer: str = "artifactstore",
        follow_symlinks: bool = False,
        progress: Progress = no_progress,
        walked: Sequence[LocalFile] | None = None,
        staged: StagedFiles | None = None,
    ) -> PushResult:
        """Ingest the files under ``paths`` and commit them as version ``ref``.

        ``walked``: the result of ``collect_files`` over ``paths`` when the
        caller already has it (the CLI walks once to size its progress bar).
        ``staged``: those files already staged by ``storage.stage_files`` into
        this store's data plane (the CLI stages while the store opens). The
        push publishes them; should it fail first, the caller cancels
        ``staged.batch``.
        """
        reference = version_reference(ref)
        files = (
            list(walked)
            if walked is not None
            else collect_files(
                [Path(p) for p in paths],
                follow_external_symlinks=follow_symlinks,
                max_files=self.settings.max_files,
            )
        )
        meta = dict(metadata or {})
        self._check_metadata(meta, variant)
        if len(files) > self.settings.max_files:
            raise LimitExceeded(
                f"{len(files)} files is more than the limit of {self.settings.max_files}"
            )
        created = utc_now()
        if staged is None:
            staged = stage_files(self.plane, files, progress, self.known_blobs)
        for attempt in range(PUSH_ATTEMPTS):
            if attempt:  # GC collected bytes before they were recorded (below): all of them
                staged = stage_files(self.plane, files, no_progress)
            ingested = self._publish_staged(staged, str(reference.namespace))
            manifest = manifest_for(
                reference,
                files,
                [d for d, _ in ingested],
                metadata=meta,
                variant=variant,
                annotations=annotations,
                producer=producer,
                created=created,
            )
            try:
                with self.db.write() as conn:
                    namespaces.check_quota(
                        conn,
                        str(reference.namespace),
                        [(str(d.blake3), d.size) for d, _ in ingested],
                        self._held_since(),
                    )
                    stored = blob_records.record_stored(
                        conn,
                        ingested,
                        self.plane.backend.properties.name,
                        self.actor,
                        exists=self._stored,
                        now=time.time(),
                        namespace=str(reference.namespace),
                    )
                    result = packages.commit(
                        conn,
                        manifest,
                        self.actor,
                        held_since=self._held_since(),
                        recorded_here=set(stored),
                    )
            except MissingBlobs:
                # GC collected bytes between publishing and recording (only with a
                # grace period shorter than the push): ingest them again.
                if attempt == PUSH_ATTEMPTS - 1:
                    raise
                continue
            self._drop_unused_packs(ingested, set(stored))
            return PushResult(result.record, result.created, len(stored))
        raise AssertionError("unreachable")

    def _stored(self, key: str) -> bool:
        return self.plane.stat(key) is not None

    def known_blobs(self, blake3s: list[str]) -> set[str]:
        """Which of these blobs the store has recorded (a push skips their bytes)."""
        with self.db.read() as conn:
            return blob_records.recorded(conn, blake3s)

    def _drop_unused_packs(
        self, ingested: Sequence[tuple[BlobDigests, Placement | None]], stored: set[str]
    ) -> None:
        """Delete this push's packs that hold only blobs the store already had.

        A pack's key is random and known only to this push, so one that no
        recorded location names is garbage at once: an identical re-push
        leaves nothing behind, instead of a copy that waits out the grace
        period for GC's orphan pass.
        """
        packs = {p.key for _, p in ingested if p is not None and p.offset is not None}
        packs -= {p.key for d, p in ingested if p is not None and str(d.blake3) in stored}
        for key in sorted(packs):
            with self.db.write() as conn:
                gc_mod.unlink_if_untouched(conn, self.plane, key, math.inf)

    def _publish_staged(
        self, staged: StagedFiles, namespace: str
    ) -> list[tuple[BlobDigests, Placement | None]]:
        """Lease, then publish the staged files (gc.py, step 1: lease first).

        A push over the namespace's quota is refused here, while the bytes are
        only staged: nothing is stored (the recording transaction checks again).
        """
        with staged.batch, self.db.write() as conn:
            namespaces.check_quota(
                conn,
                namespace,
                [(str(d.blake3), d.size) for d, _ in staged.blobs],
                self._held_since(),
            )
            staged_keys = (place.key for _, place in staged.blobs if place is not None)
            blob_records.touch(conn, staged_keys, time.time())
        return staged.blobs

    def _check_metadata(self, metadata: Mapping[str, Any], variant: str | None) -> None:
        text = canonical_json_dumps(dict(metadata))
        size, limit = len(text.encode()), self.settings.max_metadata_bytes
        if size > limit:
            raise LimitExceeded(f"metadata is {size} bytes, over the limit of {limit}")
        if _depth(metadata) > self.settings.max_metadata_depth:
            raise LimitExceeded(
                f"metadata nests deeper than {self.settings.max_metadata_depth} levels"
            )
        if variant is not None:
            schemas.validate_variant_id(variant)
            with self.db.read() as conn:
                schema = schemas.get(conn, variant)
            schemas.validate_metadata(schema, dict(metadata), variant)

    # --- read -----------------------------------------------------------------------

    def show(self, ref: str | Reference) -> packages.VersionRecord:
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        with self.db.read() as conn:
            return packages.get(conn, r)

    def query(
        self,
        namespace: str | None = None,
        name: str | None = None,
        *,
        variant: str | None = None,
        where: Mapping[str, str] | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        readable: Collection[str] | None = None,
    ) -> packages.Page:
        """Live versions, newest first; ``readable`` limits them to those namespaces."""
        with self.db.read() as conn:
            return packages.query(
                conn,
                namespace=Namespace(namespace) if namespace else None,
                name=PackageName(name) if name else None,
                variant=variant,
                where=where,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
                namespaces=readable,
            )

    def iter_query(
        self, namespace: str | None = None, name: str | None = None, **kw: Any
    ) -> Iterator[packages.VersionRecord]:
        """Every matching live version, newest first, paging under the hood."""
        cursor: str | None = None
        while True:
            page = self.query(namespace, name, cursor=cursor, **kw)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _location(self, digest: Digest) -> blob_records.BlobRecord:
        """A blob's record, for reading its bytes: RestoreRequired unless they are hot."""
        with self.db.read() as conn:
            rec = blob_records.find(conn, digest)
        if rec is None:
            raise BlobNotFound(f"blob {digest} is not in the store")
        rec = self._complete_if_due(rec)
        if rec.restore_status != tiers.AVAILABLE:
            with self.db.read() as conn:
                tiers.require_available(conn, [str(rec.digests.blake3)])
        return rec

    def _complete_if_due(self, rec: blob_records.BlobRecord) -> blob_records.BlobRecord:
        """Finish the blob's restore if its time has come (the first read does it)."""
        if rec.restore_status != "restoring" or (rec.restore_ready_at or "~") > utc_iso(
            time.time()
        ):
            return rec
        self.complete_restores([str(rec.digests.blake3)])
        with self.db.read() as conn:
            return blob_records.find(conn, rec.digests.blake3) or rec

    def read_file(self, ref: str | Reference, path: str) -> Iterator[bytes]:
        """Stream one file; raises DigestMismatch after the last chunk if the bytes are damaged."""
        record = self.show(ref)
        wanted = PackagePath(path)
        entry = next((f for f in record.manifest.files if f.path == wanted), None)
        if entry is None:
            ref_text = str(record.reference)
            raise PackageNotFound(
                f"{ref_text} has no file {path!r}: see 'artifactstore show {ref_text}'"
            )
        return self.stream_entry(entry)

    def stream_entry(self, entry: FileEntry) -> Iterator[bytes]:
        """One file's bytes; raises DigestMismatch after the last chunk if they are damaged."""
        rec = self._location(entry.blake3)
        hasher = DualHasher(None)
        try:
            for chunk in self.plane.read(rec.place, backend=rec.backend):
                hasher.update(chunk)
                yield chunk
        except BlobNotFound as exc:  # recorded but gone from storage: damage, not absence
            raise CorruptBlob(
                f"{entry.path.value}: blob {entry.blake3} is missing from storage"
            ) from exc
        actual = hasher.result()
        if (
            actual.blake3 != entry.blake3
            or actual.sha256 != entry.sha256
            or actual.size != entry.size
        ):
            raise DigestMismatch(
                f"{entry.path.value}: stored bytes hash to {actual.blake3}, expected {entry.blake3}"
            )

    def pull(
        self, ref: str | Reference, dest: str | Path, *, progress: Progress = no_progress
    ) -> packages.VersionRecord:
        """Write every file under ``dest``, verifying each digest; all or nothing."""
        record = self.show(ref)
        self.require_available(record.manifest.files)
        pull_into(Path(dest), record.manifest, self.stream_entry, progress)
        return record

    def require_available(self, entries: Sequence[FileEntry]) -> None:
        """Raise RestoreRequired (naming every blob) unless all the files can be read now."""
        blake3s = sorted({str(f.blake3) for f in entries})
        self.complete_restores(blake3s)
        with self.db.read() as conn:
            tiers.require_available(conn, blake3s)

    # --- delete, schemas --------------------------------------------------------------

    def delete(self, ref: str | Reference, actor: str | None = None) -> packages.VersionRecord:
        """Tombstone a version; raises LegalHold or RetentionLocked if it is protected."""
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        now = time.time()
        with self.db.write() as conn:
            record = packages.delete(conn, r, actor or self.actor, now=now)
            blob_records.dereference(conn, (str(f.blake3) for f in record.manifest.files), now)
        return record

    def register_schema(self, variant: str, schema: Any, actor: str | None = None) -> bool:
        with self.db.write() as conn:
            return schemas.register(conn, variant, schema, actor or self.actor)

    def get_schema(self, variant: str) -> dict[str, Any]:
        with self.db.read() as conn:
            return schemas.get(conn, variant)

    def list_schemas(self) -> list[dict[str, str]]:
        with self.db.read() as conn:
            return schemas.list_ids(conn)

    # --- retention and legal holds (SPEC section 9; rules in controlplane/retention.py) ---

    def set_retention(
        self,
        namespace: str,
        package: str | None,
        policy: retention.RetentionPolicy | None,
        actor: str | None = None,
    ) -> retention.RetentionSettings:
        """Set (None: clear) the namespace default (``package`` None) or a package's policy."""
        with self.db.write() as conn:
            return retention.set_policy(conn, namespace, package, policy, actor or self.actor)

    def retention_settings(self, namespace: str) -> retention.RetentionSettings:
        with self.db.read() as conn:
            return retention.settings(conn, namespace)

    def lock_retention(
        self, namespace: str, keep_days: float, actor: str | None = None
    ) -> retention.RetentionSettings:
        """Set or extend the namespace's retention lock; it can never shrink or go away."""
        with self.db.write() as conn:
            return retention.lock(conn, namespace, keep_days, actor or self.actor)

    def retention_plan(self, namespace: str | None = None) -> retention.RetentionReport:
        """What ``apply_retention`` would do now: every live version's decision and rule."""
        return self.apply_retention(namespace, dry_run=True)

    def apply_retention(
        self, namespace: str | None = None, *, dry_run: bool = False, actor: str | None = None
    ) -> retention.RetentionReport:
        """Delete (tombstone) what the policies release, never a held or locked version.

        Always evaluated at the current time: taking a time from the caller
        would let it age versions out of the retention lock.
        """
        return retention.apply(
            self.db, time.time(), actor or self.actor, namespace, dry_run=dry_run
        )

    def place_hold(self, ref: str | Reference, reason: str, actor: str | None = None) -> holds.Hold:
        """Place a legal hold: the version cannot be deleted by anyone until it is released."""
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        with self.db.write() as conn:
            return holds.place(conn, r, reason, actor or self.actor)

    def release_hold(
        self,
        ref: str | Reference,
        reason: str,
        *,
        hold_id: int | None = None,
        actor: str | None = None,
    ) -> holds.Hold:
        """Release the version's only active hold, or the one ``hold_id`` names."""
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        with self.db.write() as conn:
            return holds.release(conn, r, reason, actor or self.actor, hold_id=hold_id)

    def list_holds(
        self,
        ref: str | Reference | None = None,
        *,
        include_released: bool = False,
        readable: Collection[str] | None = None,
    ) -> list[holds.Hold]:
        """Active holds of one version or of every version (``include_released``: released
        ones too, with who released them and why); ``readable`` limits the namespaces."""
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        with self.db.read() as conn:
            return holds.list_holds(
                conn, ref=r, namespaces=readable, include_released=include_released
            )

    def version_retention(
        self, record: packages.VersionRecord
    ) -> tuple[list[holds.Hold], retention.VersionRetention]:
        """A version's active holds and retention state (for the version detail)."""
        with self.db.read() as conn:
            active = [h for h in holds.list_holds(conn, ref=record.reference) if h.active]
            return active, retention.version_retention(conn, record, time.time())

    # --- integrity ----------------------------------------------------------------------

    def verify(self, ref: str | Reference | None = None) -> VerifyReport:
        """Re-read and re-hash stored bytes (all blobs, or one version's); report damage."""
        report = VerifyReport()
        with self.db.read() as conn:
            if ref is None:
                rows = conn.execute(
                    select(t.blobs, *_LOCATION_COLUMNS)
                    .outerjoin(
                        t.storage_locations, t.storage_locations.c.blake3 == t.blobs.c.blake3
                    )
                    .order_by(t.blobs.c.blake3)
                ).all()
                dangling = conn.execute(
                    select(
                        t.files.c.blake3,
                        t.versions.c.namespace,
                        t.versions.c.name,
                        t.versions.c.version,
                    )
                    .join(t.versions, t.versions.c.id == t.files.c.version_id)
                    .where(
                        ~select(t.blobs.c.blake3)
                        .where(t.blobs.c.blake3 == t.files.c.blake3)
                        .exists()
                    )
                ).all()
                for d in dangling:
                    report.damaged.append(
                        {
                            "digest": d.blake3,
                            "problem": f"referenced by {d.namespace}/{d.name}:{d.version} "
                            "but not recorded",
                        }
                    )
            else:
                record = packages.get(conn, Reference.parse(ref) if isinstance(ref, str) else ref)
                wanted = sorted({str(f.blake3) for f in record.manifest.files})
                rows = conn.execute(
                    select(t.blobs, *_LOCATION_COLUMNS)
                    .outerjoin(
                        t.storage_locations, t.storage_locations.c.blake3 == t.blobs.c.blake3
                    )
                    .where(t.blobs.c.blake3.in_(wanted))
                ).all()
                for missing in sorted(set(wanted) - {r.blake3 for r in rows}):
                    report.damaged.append({"digest": missing, "problem": "not recorded"})
        for row in rows:
            expected = BlobDigests(Digest.parse(row.blake3), Digest.parse(row.sha256), row.size)
            report.blobs_checked += 1
            if row.key is None:
                report.damaged.append({"digest": row.blake3, "problem": "no storage location"})
                continue
            place = blob_records.placement(row.key, row.pack_offset, row.size)
            try:
                self.plane.verify(place, expected, row.backend)
                report.bytes_checked += row.size
            except CorruptBlob as exc:
                report.damaged.append({"digest": row.blake3, "problem": exc.detail})
        return report

    def events(self, after: int = 0, limit: int | None = None) -> list[Event]:
        with self.db.read() as conn:
            return list(iter_events(conn, after, limit))

    def verify_chain(self) -> int:
        """Number of events verified; raises ChainBroken at the first bad one."""
        with self.db.read() as conn:
            return verify_chain(conn)

    def rebuild(self) -> int:
        """Empty every view and replay the whole log into it; returns events replayed."""
        count = 0
        with self.db.write() as conn:
            for table in t.VIEW_TABLES:
                conn.execute(delete(table))
            after = 0
            while True:
                batch = list(iter_events(conn, after, 1000))
                if not batch:
                    break
                project(conn, batch)
                after = batch[-1].seq
                count += len(batch)
        return count

    def gc(
        self, *, dry_run: bool = False, grace: float | None = None, actor: str | None = None
    ) -> gc_mod.GcReport:
        report = gc_mod.collect(
            self.db,
            self.plane,
            grace=self.settings.gc_grace if grace is None else grace,
            dry_run=dry_run,
            actor=actor or self.actor,
        )
        if not dry_run:
            self._recent.clear()
            self.uploads.expire()
        return report

    # --- storage tiers (controlplane/tiers.py) -------------------------------------------

    def _version_blobs(self, ref: str | Reference) -> list[str]:
        record = self.show(ref)
        return sorted({str(f.blake3) for f in record.manifest.files})

    def tier_status(self, ref: str | Reference) -> list[tiers.BlobTier]:
        """Where each blob of a version is, and whether it can be read now (restores
        whose time has come complete first)."""
        blake3s = self._version_blobs(ref)
        self.complete_restores(blake3s)
        with self.db.read() as conn:
            return tiers.status(conn, blake3s)

    def tier_move(
        self, ref: str | Reference, to: str, actor: str | None = None
    ) -> tiers.TierReport:
        """Move a version's blobs to tier ``to`` (``hot`` or ``cold``), synchronously."""
        self._recent.clear()
        return tiers.move(self.db, self.plane, self._version_blobs(ref), to, actor or self.actor)

    def tier_restore(self, ref: str | Reference, actor: str | None = None) -> tiers.TierReport:
        """Start restoring a version's cold blobs; they are readable after ``restore_delay``
        (with no delay, at once)."""
        return self.restore_blobs(self._version_blobs(ref), actor)

    def restore_blobs(self, blake3s: Sequence[str], actor: str | None = None) -> tiers.TierReport:
        now = time.time()
        report = tiers.request_restore(
            self.db, blake3s, actor or self.actor, delay=self.settings.restore_delay, now=now
        )
        done = self.complete_restores(blake3s, now=now, actor=actor or self.actor)
        if done.changed:
            with self.db.read() as conn:
                report.blobs = tiers.status(conn, blake3s)
        return report

    def complete_restores(
        self,
        blake3s: Sequence[str] | None = None,
        *,
        now: float | None = None,
        actor: str = "system:restore",
    ) -> tiers.TierReport:
        """Finish the restores whose time has come (of ``blake3s``, or every one)."""
        report = tiers.complete_due(
            self.db,
            self.plane,
            actor,
            now=time.time() if now is None else now,
            blake3s=blake3s,
        )
        if report.changed:
            self._recent.clear()
        return report

    def find_blob(
        self, digest: Digest, readable: Collection[str] | None = None, *, head: bool = False
    ) -> blob_records.BlobRecord | None:
        """Look a blob up by either digest; a "present" answer renews its GC lease.

        With ``readable``, the blob is found only if one of those namespaces
        holds it (a digest is not a capability); otherwise it is absent.
        ``head``: only existence and size are wanted, which a global admin's
        lookup may take from the records this process saw lately
        (``blobs.RecentBlobs``); the location of such a record is not for reading.
        """
        now = time.time()
        if head and readable is None:
            recent = self._recent.get(str(digest), now)
            if recent is not None:
                self._renew_lease(recent.place.key)
                return recent
        with self.db.read() as conn:
            record = blob_records.find(conn, digest)
            if record is not None and readable is not None:
                since = self._held_since()
                if not blob_records.visible_to(conn, str(record.digests.blake3), readable, since):
                    record = None
        if record is not None:
            self._renew_lease(record.place.key)
            record = self._complete_if_due(record)
            self._recent.put(record, now)
        return record

    def _note_stored(self, digests: BlobDigests, key: str) -> None:
        """An upload just recorded this blob and renewed its lease: a HEAD that
        follows (a client checking before its commit) needs no database."""
        now = time.time()
        self._lease_cache[key] = now
        record = blob_records.BlobRecord(
            digests, Placement(key), self.plane.backend.properties.name, "hot", tiers.AVAILABLE
        )
        self._recent.put(record, now)

    def _renew_lease(self, key: str) -> None:
        # Renewing on every HEAD would make each one a write transaction; once a
        # minute per key is plenty against a grace period of hours. A lease that
        # arrives late fails closed: the commit's own re-check catches a
        # collected blob and the client uploads it again.
        now = time.time()
        last = self._lease_cache.get(key)
        if last is not None and now - last < 60.0:
            return
        with self.db.write(durable=False) as conn:
            blob_records.touch(conn, [key], now)
        if len(self._lease_cache) > 100_000:
            self._lease_cache.clear()
        self._lease_cache[key] = now

    def _held_since(self) -> str:
        """Uploads into a namespace since then still count as its holdings."""
        return utc_iso(time.time() - self.settings.gc_grace)

    def commit_manifest(
        self, manifest: Manifest, actor: str | None = None, *, require_held: bool = False
    ) -> packages.CommitResult:
        """Commit a manifest whose blobs were uploaded separately (the HTTP path).

        ``require_held``: every blob must be held by the manifest's namespace
        (the caller is not a global admin, so it must have sent the bytes).
        """
        if len(manifest.files) > self.settings.max_files:
            raise LimitExceeded(
                f"{len(manifest.files)} files is more than the limit of {self.settings.max_files}"
            )
        self._check_metadata(manifest.metadata, manifest.variant)
        with self.db.write() as conn:
            return packages.commit(
                conn,
                manifest,
                actor or self.actor,
                held_since=self._held_since(),
                require_held=require_held,
            )

    # --- tokens and namespaces ---------------------------------------------------------

    def create_token(
        self,
        name: str,
        scopes: list[str],
        *,
        expires_in: float | None = None,
        actor: str | None = None,
    ) -> tuple[tokens.TokenInfo, str]:
        """A new API token and its secret, which is shown once and never stored."""
        expires_at = utc_iso(time.time() + expires_in) if expires_in is not None else None
        with self.db.write() as conn:
            return tokens.create(
                conn, name=name, scopes=scopes, expires_at=expires_at, actor=actor or self.actor
            )

    def list_tokens(self) -> list[tokens.TokenInfo]:
        with self.db.read() as conn:
            return tokens.list_tokens(conn)

    def revoke_token(self, token_id: str, actor: str | None = None) -> tokens.TokenInfo:
        with self.db.write() as conn:
            return tokens.revoke(conn, token_id, actor or self.actor)

    def authenticate(self, presented: str) -> tokens.TokenInfo | None:
        """The active token ``presented`` names, or None; records its last use."""
        with self.db.read() as conn:
            info = tokens.verify(conn, presented)
        if info is not None:
            self._record_use(info.id)
        return info

    def _record_use(self, token_id: str) -> None:
        # last_used_at is operational state: written at most once a minute per token.
        now = time.time()
        last = self._usage_cache.get(token_id)
        if last is not None and now - last < 60.0:
            return
        self._usage_cache[token_id] = now
        with self.db.write() as conn:
            conn.execute(delete(t.token_usage).where(t.token_usage.c.id == token_id))
            conn.execute(insert(t.token_usage).values(id=token_id, last_used_at=now))

    def token_count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(t.tokens)).scalar_one())

    def namespace_settings(self, namespace: str) -> dict[str, Any]:
        """The namespace's settings and ``used_bytes`` (what its quota counts)."""
        with self.db.read() as conn:
            settings = namespaces.get(conn, namespace).to_json()
            settings["used_bytes"] = namespaces.usage(conn, namespace, self._held_since())
        return settings

    def set_namespace_settings(
        self, namespace: str, settings: Mapping[str, Any], actor: str | None = None
    ) -> dict[str, Any]:
        """Replace a namespace's settings; ``used_bytes`` (read-only) is ignored."""
        parsed = namespaces.NamespaceSettings.from_json(
            {k: v for k, v in settings.items() if k != "used_bytes"}
        )
        with self.db.write() as conn:
            namespaces.put(conn, namespace, parsed, actor or self.actor)
        return self.namespace_settings(namespace)

    def anonymous_namespaces(self) -> set[str]:
        """Namespaces whose packages anyone may read."""
        with self.db.read() as conn:
            return namespaces.anonymous(conn)

    def namespace_usage(self) -> dict[str, tuple[int, int | None]]:
        """(used bytes, quota or None) per namespace, for /metrics."""
        with self.db.read() as conn:
            return namespaces.usage_by_namespace(conn, self._held_since())

    def stats(self) -> dict[str, int]:
        with self.db.read() as conn:
            blobs, blob_bytes = conn.execute(
                select(func.count(), func.coalesce(func.sum(t.blobs.c.size), 0))
            ).one()
            versions = conn.execute(
                select(func.count()).where(t.versions.c.deleted_seq.is_(None))
            ).scalar_one()
            uploads_open = conn.execute(
                select(func.count()).where(t.upload_sessions.c.state == "open")
            ).scalar_one()
        return {
            "blobs": int(blobs),
            "blob_bytes": int(blob_bytes),
            "versions": int(versions),
            "uploads_open": int(uploads_open),
        }

    def health(self) -> None:
        with self.db.read() as conn:
            conn.execute(select(1))
        self.plane.health()


def _depth(value: object, level: int = 0) -> int:
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list | tuple):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level
