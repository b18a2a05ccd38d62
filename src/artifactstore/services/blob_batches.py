"""Batch uploads: many small blobs in one request, stored end to end in packs.

``POST /v1/blobs/batch`` (docs/api.md) sends a tar stream whose members are
blobs named by their digest. One request and one pack object instead of a
request and an object per blob: on S3 every PUT is billed, and a remote push
of 10,000 small files otherwise costs 20,000 S3 requests (issue 18).

The members take the library push's path (``services/push.py``): each is
hashed (both digests, one pass, on the worker thread that receives it) and
checked against its name, then goes through the same pack writer
(:class:`~artifactstore.dataplane.files.SmallBlobs`: what the store already
holds is not packed again). At the end, as a push does: lease, seal and
publish the packs (durable), then record every blob, held by the
namespace, in one transaction. Any refusal (a digest that does not match,
a hostile stream, a limit) cancels the whole batch before anything is
published or recorded.
"""

from __future__ import annotations

from artifactstore.controlplane import blobs as blob_records
from artifactstore.dataplane.blobs import PACK_MAX_BLOB, IngestBatch, SmallBlob
from artifactstore.dataplane.files import SmallBlobs, StagedFiles
from artifactstore.dataplane.tarstream import TarMembers
from artifactstore.errors import DigestMismatch, InvalidInput
from artifactstore.model.identity import BlobDigests, Digest, Namespace
from artifactstore.model.records import Placement
from artifactstore.services.core import Core
from artifactstore.services.push import Ingested, PushService

__all__ = ["BatchUpload", "BlobBatchService"]


class BatchUpload:
    """One batch: fed the tar stream in pieces (``write``), stored and recorded by ``finish``.

    Creating one does no I/O (the server creates it on its event loop); the
    first ``write`` opens the storage batch.
    """

    def __init__(self, service: BlobBatchService, actor: str, namespace: Namespace | None) -> None:
        self._service = service
        self._actor = actor
        self._namespace = namespace
        plane = service.core.plane
        self._members = TarMembers(
            self._member,
            max_member=service.max_member,
            max_members=service.core.settings.max_batch_members,
        )
        self._batch: IngestBatch | None = None
        self._blobs: Ingested = []
        self._small: SmallBlobs | None = None
        self._order: list[BlobDigests] = []  # every member, duplicates too
        self._seen: set[str] = set()
        self._pack = plane.pack_max > 0

    def _started(self) -> tuple[IngestBatch, SmallBlobs]:
        if self._batch is None or self._small is None:
            self._batch = self._service.core.plane.batch()
            self._small = SmallBlobs(self._batch, self._blobs, self._service.known)
        return self._batch, self._small

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._started()
            self._members.feed(data)
        except BaseException:
            self.cancel()
            raise

    def _member(self, name: str, data: bytes) -> None:
        try:
            expected = Digest.parse(name)
        except InvalidInput:
            raise InvalidInput(
                f"member {name!r} is not named by a digest (blake3:<hex> or sha256:<hex>)"
            ) from None
        digests = BlobDigests.of(data)  # both digests, one pass over bytes in memory
        if not digests.matches(expected):
            raise DigestMismatch(
                f"member {name} has digest {digests.get(expected.algorithm)}: "
                "the batch was refused whole"
            )
        self._order.append(digests)
        if str(digests.blake3) in self._seen:
            return  # a duplicate: stored once, listed at each of its places
        self._seen.add(str(digests.blake3))
        batch, small = self._started()
        if self._pack:
            small.add(SmallBlob(digests, data))
        else:  # packs turned off (PACK_MAX_BYTES=0): whole objects, still one request
            blob = batch.begin()
            blob.write(data)
            blob.finish()
            self._blobs.append((digests, Placement(self._service.core.plane.key(digests))))

    def finish(self, last: bytes = b"") -> list[BlobDigests]:
        """Take the rest of the stream, then publish the packs and record every blob."""
        try:
            batch, small = self._started()
            if last:
                self._members.feed(last)
            self._members.close()
            small.flush()
        except BaseException:
            self.cancel()
            raise
        self._service.store(StagedFiles(batch, self._blobs), self._namespace, self._actor)
        return self._order

    def cancel(self) -> None:
        """Drop whatever was staged (idempotent)."""
        if self._batch is not None:
            self._batch.cancel()


class BlobBatchService:
    def __init__(self, core: Core, push: PushService) -> None:
        self.core = core
        self._push = push
        #: Members of at most this size; larger blobs go to ``/v1/blobs`` or ``/v1/uploads``.
        self.max_member = core.plane.pack_max or PACK_MAX_BLOB

    def begin(self, actor: str, namespace: str | None) -> BatchUpload:
        """A batch upload into ``namespace`` (None: held by none until referenced)."""
        return BatchUpload(self, actor, None if namespace is None else Namespace(namespace))

    def known(self, blake3s: list[str]) -> set[str]:
        with self.core.db.read() as conn:
            return blob_records.recorded(conn, blake3s)

    def store(self, staged: StagedFiles, namespace: Namespace | None, actor: str) -> None:
        """Lease and publish (the packs durable), then record every blob in one transaction.

        A refusal before publishing (the namespace's quota) cancels the batch;
        after it, the published packs no row names are GC's orphans.
        """
        push = self._push
        ingested = push.publish(staged, namespace)  # cancels the batch if it fails
        with self.core.db.write() as conn:
            stored = push.record_blobs(conn, ingested, namespace, actor)
        push.drop_unused_packs(ingested, set(stored))
