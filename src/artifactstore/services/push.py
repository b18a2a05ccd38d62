"""Push: publish a push's staged files, record them and commit the version.

A push reaches this service with its files already hashed and staged
(``dataplane/files.py``; the ``Store`` stages them while the control plane
opens). Then, per ``controlplane/gc.py``: lease every key in a committed
transaction, commit the write batch (bytes durable, then visible), and in
one transaction record the blobs, re-check under lock that every blob the
manifest references is recorded, and append ``package.committed``. That
transaction is shared with the concurrent commits of this process
(``services/commits.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from artifactstore.client.files import LocalFile, manifest_for
from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import gc as gc_mod
from artifactstore.controlplane import namespaces, packages, signatures
from artifactstore.dataplane.files import StagedFiles
from artifactstore.errors import MissingBlobs
from artifactstore.model.clock import utc_now
from artifactstore.model.envelope import Envelope, Signer
from artifactstore.model.identity import BlobDigests, Namespace, Reference
from artifactstore.model.manifest import Manifest
from artifactstore.model.records import Placement
from artifactstore.model.versions import CommitResult, PushResult, VersionRecord
from artifactstore.provenance.dsse import PackageRef, sign_package
from artifactstore.services.commits import CommitGroup, Locked
from artifactstore.services.core import Core

__all__ = ["PUSH_ATTEMPTS", "Ingested", "PushService"]

#: How often a push re-ingests bytes that GC collected under it (grace shorter than a push).
PUSH_ATTEMPTS = 5

Ingested = list[tuple[BlobDigests, Placement | None]]


class PushService:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._group = CommitGroup(core.db)  # every commit of this process goes through it

    def known_blobs(self, blake3s: list[str]) -> set[str]:
        """Which of these blobs the store has recorded (a push skips their bytes)."""
        with self._core.db.read() as conn:
            return blob_records.recorded(conn, blake3s)

    def push(
        self,
        reference: Reference,
        files: Sequence[LocalFile],
        staged: StagedFiles,
        restage: Callable[[], StagedFiles],
        *,
        metadata: Mapping[str, Any],
        variant: str | None,
        annotations: Mapping[str, str] | None,
        producer: str,
        sign: Signer | None = None,
    ) -> PushResult[VersionRecord]:
        """Commit the staged ``files`` as version ``reference``.

        ``restage`` stages the files again, every one of them, for when GC
        collected bytes between publishing and recording them (only with a
        grace period shorter than the push). Whatever is still staged when
        this fails is cancelled (nothing, once published). With ``sign``, the
        commit carries the key's signature over the manifest (docs/provenance.md).
        """
        created = utc_now()

        def manifest(digests: list[BlobDigests]) -> Manifest:
            return manifest_for(
                reference,
                files,
                digests,
                metadata=metadata,
                variant=variant,
                annotations=annotations,
                producer=producer,
                created=created,
            )

        try:
            self._core.check_file_count(len(files))
            self._core.check_schema(metadata, variant)  # the facade checked the limits
            for attempt in range(PUSH_ATTEMPTS):
                if attempt:
                    staged = restage()
                try:
                    return self._commit(reference.namespace, staged, manifest, sign)
                except MissingBlobs:
                    if attempt == PUSH_ATTEMPTS - 1:
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            staged.batch.cancel()
            raise

    def _commit(
        self,
        namespace: Namespace,
        staged: StagedFiles,
        manifest: Callable[[list[BlobDigests]], Manifest],
        sign: Signer | None,
    ) -> PushResult[VersionRecord]:
        """Publish, then record the blobs and commit the version (and its signature) in one
        transaction."""
        core = self._core
        ingested = self.publish(staged, namespace)

        def commit(conn: Connection, locked: Locked) -> tuple[CommitResult, list[str]]:
            stored = self.record_blobs(conn, ingested, namespace, core.actor)
            built = manifest([d for d, _ in ingested])
            now = core.clock()
            envelopes = [] if sign is None else [sign_package(PackageRef.of(built), sign)]
            result = packages.commit(
                conn,
                built,
                core.actor,
                held_since=core.held_since(),
                recorded_here=set(stored),
                signatures=envelopes,
                now=now,
                locked=locked,
            )
            if (
                sign is not None
                and not result.created
                and result.record.digest != (built.digests().blake3)
            ):
                # Identical content already there under its own manifest: sign that one.
                envelope = sign_package(signatures.package_ref(result.record), sign)
                signatures.add(conn, result.record, [envelope], core.actor, now)
            return result, stored

        # Every row the commit will lock, before anything takes the log's append lock.
        result, stored = self._group.run((str(d.blake3) for d, _ in ingested), commit)
        self.drop_unused_packs(ingested, set(stored))
        return PushResult(result.record, result.created, len(stored))

    def publish(self, staged: StagedFiles, namespace: Namespace | None) -> Ingested:
        """Lease, then publish the staged files (gc.py, step 1: lease first).

        A push over the namespace's quota is refused here, while the bytes are
        only staged: nothing is stored (the recording transaction checks again).
        """
        core = self._core
        with staged.batch, core.db.write() as conn:
            if namespace is not None:
                namespaces.check_quota(conn, namespace, _sizes(staged.blobs), core.held_since())
            staged_keys = (place.key for _, place in staged.blobs if place is not None)
            blob_records.touch(conn, staged_keys, core.clock())
        return staged.blobs

    def record_blobs(
        self, conn: Connection, ingested: Ingested, namespace: Namespace | None, actor: str
    ) -> list[str]:
        """Record the published blobs held by ``namespace``; the digests that were new.

        Raises MissingBlobs when GC collected bytes since they were published
        (a grace period shorter than the push): the caller ingests them again.
        """
        core = self._core
        if namespace is not None:
            namespaces.check_quota(conn, namespace, _sizes(ingested), core.held_since())
        return blob_records.record_stored(
            conn,
            ingested,
            core.plane.backend.properties.name,
            actor,
            exists=core.stored,
            now=core.clock(),
            namespace=None if namespace is None else str(namespace),
        )

    def drop_unused_packs(self, ingested: Ingested, stored: set[str]) -> None:
        """Delete this push's packs that hold only blobs the store already had.

        A pack's key is random and known only to this push, so one that no
        recorded location names is garbage at once: an identical re-push
        leaves nothing behind, instead of a copy that waits out the grace
        period for GC's orphan pass.
        """
        packs = {p.key for _, p in ingested if p is not None and p.offset is not None}
        packs -= {p.key for d, p in ingested if p is not None and str(d.blake3) in stored}
        for key in sorted(packs):
            with self._core.db.write() as conn:
                gc_mod.unlink_if_untouched(conn, self._core.plane, key, math.inf)

    def commit_manifest(
        self,
        manifest: Manifest,
        actor: str | None = None,
        *,
        require_held: bool = False,
        signatures: Sequence[Envelope] = (),
    ) -> CommitResult:
        """Commit a manifest whose blobs were uploaded separately (the HTTP path).

        ``require_held``: every blob must be held by the manifest's namespace
        (the caller is not a global admin, so it must have sent the bytes).
        ``signatures``: envelopes over the manifest that travel with the commit.
        """
        core = self._core
        core.check_file_count(len(manifest.files))
        core.check_metadata(manifest.metadata, manifest.variant)
        return self._group.commit(
            (str(f.blake3) for f in manifest.files),
            Reference(manifest.namespace, manifest.name, version=manifest.version),
            lambda conn, locked, settings, versions: packages.prepare(
                conn,
                manifest,
                actor or core.actor,
                held_since=core.held_since(),
                now=core.clock(),
                require_held=require_held,
                signatures=signatures,
                locked=locked,
                settings=settings,
                versions=versions,
            ),
        )


def _sizes(blobs: Ingested) -> list[tuple[str, int]]:
    return [(str(d.blake3), d.size) for d, _ in blobs]
