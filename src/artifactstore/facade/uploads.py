"""HTTP uploads (services/uploads.py): one-shot and resumable sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifactstore.facade import Facade
from artifactstore.model import records
from artifactstore.model.identity import BlobDigests, Digest

if TYPE_CHECKING:
    from artifactstore.services.blob_batches import BatchUpload
    from artifactstore.services.uploads import BlobUpload, SessionAppend

__all__ = ["UploadVerbs"]


class UploadVerbs:
    def check_upload_room(self: Facade, namespace: str | None, length: int | None) -> None:
        """Refuse a declared ``length`` that cannot fit the namespace's quota."""
        self.services.uploads.check_room(namespace, length)

    def blob_upload(
        self: Facade, actor: str, namespace: str | None, expected: Digest | None = None
    ) -> BlobUpload:
        """A one-shot upload whose room the caller checked; does no I/O until written.
        ``expected`` (the digest the client named) lets S3 take the bytes at their key."""
        return self.services.uploads.blob_upload(actor, namespace, expected)

    def blob_batch(self: Facade, actor: str, namespace: str | None) -> BatchUpload:
        """A batch upload of small blobs (a tar stream) into packs; does no I/O until written."""
        return self.services.batches.begin(actor, namespace)

    def create_upload(
        self: Facade,
        *,
        namespace: str | None,
        length: int | None,
        metadata: dict[str, str],
        actor: str,
    ) -> records.UploadSession:
        """Open a resumable upload session."""
        return self.services.uploads.create(
            namespace=namespace, length=length, metadata=metadata, actor=actor
        )

    def upload_session(self: Facade, upload_id: str) -> records.UploadSession:
        return self.services.uploads.get(upload_id)

    def append_upload(
        self: Facade, upload_id: str, offset: int, checksum: tuple[str, bytes] | None = None
    ) -> SessionAppend:
        """Claim a session for one request's bytes at ``offset``."""
        return self.services.uploads.begin_append(upload_id, offset, checksum)

    def declare_upload_length(self: Facade, upload_id: str, length: int) -> None:
        """Fix a deferred length (tus ``Upload-Length`` on a later PATCH); once only."""
        self.services.uploads.declare_length(upload_id, length)

    def complete_upload(
        self: Facade, upload_id: str, expected: Digest | None = None
    ) -> BlobDigests:
        """Finalise a session into a blob (its digests); idempotent once completed."""
        return self.services.uploads.complete(upload_id, expected)

    def abort_upload(self: Facade, upload_id: str) -> None:
        self.services.uploads.abort(upload_id)

    def expire_uploads(self: Facade) -> int:
        """Drop expired sessions and staged bytes no session owns; returns how many."""
        return self.services.uploads.expire()
