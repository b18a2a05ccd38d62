"""Reading: versions, blobs by digest, one file's bytes, a whole version into a directory.

Every read re-hashes what it streams: damaged bytes end the stream with
``DigestMismatch`` after the last chunk, and a pull writes through a staging
directory (``client/files.py``), so nothing unverified is ever visible.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

from artifactstore.client.files import pull_into
from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import packages, tiers
from artifactstore.dataplane.digests import DualHasher
from artifactstore.errors import BlobNotFound, CorruptBlob, DigestMismatch, PackageNotFound
from artifactstore.model.clock import utc_iso
from artifactstore.model.identity import BlobDigests, Digest, Reference
from artifactstore.model.manifest import FileEntry
from artifactstore.model.paths import PackagePath
from artifactstore.model.records import AVAILABLE, BlobRecord, Placement, Progress
from artifactstore.model.versions import VersionRecord
from artifactstore.services.core import Core
from artifactstore.services.tiers import TierService

__all__ = ["PullService"]


def _lookup_key(digest: Digest, readable: Collection[str] | None) -> blob_records.LookupKey:
    return str(digest), None if readable is None else frozenset(readable)


class PullService:
    def __init__(self, core: Core, tiers: TierService) -> None:
        self._core = core
        self._tiers = tiers
        self._seen = blob_records.SeenBlobs()

    def show(self, ref: Reference) -> VersionRecord:
        with self._core.db.read() as conn:
            return packages.get(conn, ref)

    def find_blob(
        self, digest: Digest, readable: Collection[str] | None = None, *, head: bool = False
    ) -> BlobRecord | None:
        """Look a blob up by either digest; a "present" answer renews its GC lease.

        With ``readable``, the blob is found only if one of those namespaces
        holds it (a digest is not a capability); otherwise it is absent.
        ``head``: only existence and size are wanted, which a global admin's
        lookup may take from the records this process saw lately
        (``blobs.RecentBlobs``); the location of such a record is not for reading.
        """
        core = self._core
        now = core.clock()
        if head and readable is None:
            recent = core.recent.get(str(digest), now)
            if recent is not None:
                core.renew_lease(recent.place.key)
                return recent
        generation = core.recent.generation
        version = core.db.data_version()  # before the snapshot (blobs.SeenBlobs)
        with core.db.read() as conn:
            found = blob_records.find_visible(conn, digest, readable, core.held_since())
        if found is None:
            return None
        core.renew_lease(found.record.place.key)
        record = self._complete_if_due(found.record)
        core.recent.put(record, now, generation)
        if record is found.record:  # a restore that completed just now changed it
            self._seen.put(_lookup_key(digest, readable), found, version)
        return record

    def known_blob(
        self, digest: Digest, readable: Collection[str] | None = None, *, head: bool = False
    ) -> BlobRecord | None:
        """``find_blob``'s answer where it needs no I/O (a server asks on its event loop);
        None means "call ``find_blob``", not absent.

        That is a lookup this process made with nothing committed to the database
        since (``blobs.SeenBlobs``), or for a global admin's ``head`` a record it
        saw lately, and in both cases a lease renewed lately (renewing is a write).
        """
        core = self._core
        now = core.clock()
        if head and readable is None:
            recent = core.recent.get(str(digest), now)
            if recent is not None and core.lease_fresh(recent.place.key, now):
                return recent
        key = _lookup_key(digest, readable)
        record = self._seen.get(key, core.db.data_version(), core.held_since)
        if record is None or not core.lease_fresh(record.place.key, now):
            return None
        return record

    def note_stored(self, digests: BlobDigests, key: str) -> None:
        """An upload just recorded this blob and renewed its lease: a HEAD that
        follows (a client checking before its commit) needs no database."""
        core = self._core
        now = core.clock()
        core.note_lease(key, now)
        record = BlobRecord(
            digests, Placement(key), core.plane.backend.properties.name, "hot", AVAILABLE
        )
        core.recent.put(record, now)

    def location(self, digest: Digest) -> BlobRecord:
        """A blob's record, for reading its bytes: RestoreRequired unless they are hot."""
        with self._core.db.read() as conn:
            rec = blob_records.find(conn, digest)
        if rec is None:
            raise BlobNotFound(f"blob {digest} is not in the store")
        rec = self._complete_if_due(rec)
        if rec.restore_status != AVAILABLE:
            with self._core.db.read() as conn:
                tiers.require_available(conn, [str(rec.digests.blake3)])
        return rec

    def _complete_if_due(self, rec: BlobRecord) -> BlobRecord:
        """Finish the blob's restore if its time has come (the first read does it)."""
        due = utc_iso(self._core.clock())
        if rec.restore_status != "restoring" or (rec.restore_ready_at or "~") > due:
            return rec
        self._tiers.complete_restores([str(rec.digests.blake3)])
        with self._core.db.read() as conn:
            return blob_records.find(conn, rec.digests.blake3) or rec

    def read_blob(self, rec: BlobRecord) -> Iterator[bytes]:
        """The bytes of a blob ``location`` returned, unverified (the server's ranges)."""
        return self._core.plane.read(rec.place, backend=rec.backend)

    def read_file(self, ref: Reference, path: str) -> Iterator[bytes]:
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
        rec = self.location(entry.blake3)
        hasher = DualHasher(None)
        try:
            for chunk in self.read_blob(rec):
                hasher.update(chunk)
                yield chunk
        except BlobNotFound as exc:  # recorded but gone from storage: damage, not absence
            raise CorruptBlob(
                f"{entry.path.value}: blob {entry.blake3} is missing from storage"
            ) from exc
        actual = hasher.result()
        if (actual.blake3, actual.sha256, actual.size) != (entry.blake3, entry.sha256, entry.size):
            raise DigestMismatch(
                f"{entry.path.value}: stored bytes hash to {actual.blake3}, expected {entry.blake3}"
            )

    def pull(
        self, ref: Reference, dest: Path, progress: Progress, *, force: bool = False
    ) -> VersionRecord:
        """Write every file under ``dest``, verifying each digest; all or nothing.

        Refuses (Conflict) to replace an existing file unless ``force``.
        """
        record = self.show(ref)
        self._tiers.require_available(record.manifest.blob_ids())
        pull_into(dest, record.manifest, self.stream_entry, progress, force=force)
        return record
