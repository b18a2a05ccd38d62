"""The one exception tree of artifact-store.

Every failure the library can report is an :class:`ArtifactStoreError` with a
stable machine ``code``. Nothing here knows about HTTP or exit codes: the
server maps the classes to problem details in one table and the CLI maps them
to exit codes in another (``cli/exit_codes.py``). The library never exits the
process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ArtifactStoreError",
    "BadResponse",
    "BlobNotFound",
    "ChainBroken",
    "ChecksumMismatch",
    "Conflict",
    "CorruptBlob",
    "DatabaseUnavailable",
    "DigestMismatch",
    "Forbidden",
    "HoldNotFound",
    "IntegrityError",
    "InvalidCheckpoint",
    "InvalidInput",
    "InvalidKey",
    "InvalidManifest",
    "InvalidMetadata",
    "InvalidName",
    "InvalidPath",
    "InvalidReference",
    "InvalidSchema",
    "InvalidSetting",
    "LegalHold",
    "LimitExceeded",
    "Locked",
    "LogInconsistent",
    "MissingBlobs",
    "NotFound",
    "PackageNotFound",
    "ProofInvalid",
    "QuotaExceeded",
    "RemoteError",
    "RestoreRequired",
    "RetentionLocked",
    "SchemaExists",
    "SchemaNotFound",
    "ServerNotReady",
    "ServerTimeout",
    "ServerUnreachable",
    "SignatureInvalid",
    "SignatureRequired",
    "StorageError",
    "StorageFull",
    "TlsFailure",
    "TooManyRequests",
    "TooManyUploads",
    "Unauthenticated",
    "UnmigratedDatabase",
    "UploadBusy",
    "UploadClosed",
    "UploadNotFound",
    "UploadOffsetMismatch",
    "VersionExists",
]


class ArtifactStoreError(Exception):
    """Base of every error the library raises on purpose."""

    code = "internal_error"
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- input --------------------------------------------------------------------


class InvalidInput(ArtifactStoreError):
    """The caller sent something that can never succeed as sent."""

    code = "invalid_input"
    title = "Invalid input"


class InvalidSetting(InvalidInput):
    """A setting (environment, ``artifactstore.toml``) that the store cannot start with:
    a usage error of the command (exit 2), found before anything runs."""

    code = "invalid_setting"
    title = "Invalid setting"


class InvalidKey(InvalidInput):
    """A key file that cannot be used: unreadable, not Ed25519 PEM, or readable by others."""

    code = "invalid_key"
    title = "Unusable key"


class InvalidCheckpoint(InvalidInput):
    """A checkpoint that is not a C2SP signed note holding a ``tlog-checkpoint``: it is
    refused before any signature or proof is looked at."""

    code = "invalid_checkpoint"
    title = "Malformed checkpoint"


class InvalidName(InvalidInput):
    code = "invalid_name"
    title = "Invalid name"


class InvalidReference(InvalidInput):
    code = "invalid_reference"
    title = "Invalid reference"


class InvalidPath(InvalidInput):
    code = "invalid_path"
    title = "Invalid file path"


class InvalidManifest(InvalidInput):
    code = "invalid_manifest"
    title = "Invalid manifest"


class InvalidSchema(InvalidInput):
    code = "invalid_schema"
    title = "Invalid metadata schema"


class InvalidMetadata(InvalidInput):
    """Metadata violates the variant's schema; ``pointer`` names the place."""

    code = "metadata_invalid"
    title = "Metadata does not match its schema"

    def __init__(self, detail: str, pointer: str) -> None:
        super().__init__(detail)
        self.pointer = pointer


class LimitExceeded(InvalidInput):
    code = "limit_exceeded"
    title = "Limit exceeded"


class QuotaExceeded(LimitExceeded):
    """The namespace's byte quota would be exceeded; nothing was stored or committed."""

    code = "quota_exceeded"
    title = "Namespace quota exceeded"

    def __init__(self, detail: str, quota_bytes: int, used_bytes: int) -> None:
        super().__init__(detail)
        self.quota_bytes = quota_bytes
        self.used_bytes = used_bytes


class TooManyUploads(LimitExceeded):
    """A token or a namespace already holds as many open upload sessions as it may:
    finish, abort or let some expire before opening more."""

    code = "too_many_uploads"
    title = "Too many open upload sessions"


# --- state ----------------------------------------------------------------------


class NotFound(ArtifactStoreError):
    code = "not_found"
    title = "Not found"


class PackageNotFound(NotFound):
    code = "package_not_found"
    title = "Package version not found"


class BlobNotFound(NotFound):
    code = "blob_not_found"
    title = "Blob not found"


class UploadNotFound(NotFound):
    code = "upload_not_found"
    title = "Upload session not found"


class SchemaNotFound(NotFound):
    code = "schema_not_found"
    title = "Metadata schema not found"


class HoldNotFound(NotFound):
    """No active legal hold matches (the version has none, or not the one named)."""

    code = "hold_not_found"
    title = "Legal hold not found"


class Conflict(ArtifactStoreError):
    code = "conflict"
    title = "Conflict"


class VersionExists(Conflict):
    """A different manifest already holds this version (versions are immutable)."""

    code = "version_exists"
    title = "Version already exists with different content"


class SchemaExists(Conflict):
    code = "schema_exists"
    title = "Schema already registered with different content"


class MissingBlobs(Conflict):
    """A manifest references blobs the store does not hold."""

    code = "missing_blobs"
    title = "Referenced blobs are missing"

    def __init__(self, detail: str, digests: Sequence[str]) -> None:
        super().__init__(detail)
        self.digests = list(digests)


class UploadOffsetMismatch(Conflict):
    """An append named an offset other than the session's; ``offset`` is the current one."""

    code = "upload_offset_mismatch"
    title = "Upload offset does not match"

    def __init__(self, detail: str, offset: int) -> None:
        super().__init__(detail)
        self.offset = offset


class UploadBusy(Conflict):
    code = "upload_busy"
    title = "Another request is appending to this upload"


class UploadClosed(Conflict):
    code = "upload_closed"
    title = "Upload session is already completed"


class RestoreRequired(Conflict):
    """The bytes are in a tier that needs a restore before they can be read (docs/retention.md)."""

    code = "restore_required"
    title = "Restore required"

    def __init__(self, detail: str, digests: Sequence[str], restore_status: str) -> None:
        super().__init__(detail)
        self.digests = list(digests)
        self.restore_status = restore_status


class Locked(ArtifactStoreError):
    """A version is protected from deletion (docs/retention.md): by anyone, admins included.

    Distinct from :class:`Forbidden`: no credential can lift it; only
    releasing the hold (or time passing, for a retention lock) can.
    """

    code = "locked"
    title = "Locked"


class LegalHold(Locked):
    """Legal holds cover the version; ``holds`` lists each one's ``id`` and ``reason``."""

    code = "legal_hold"
    title = "Under legal hold"

    def __init__(self, detail: str, holds: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(detail)
        self.holds = [dict(h) for h in holds]


class RetentionLocked(Locked):
    """The namespace's retention lock still covers the version, or a request would
    shorten the lock. ``locked_until`` is when the version leaves the lock (if one is meant)."""

    code = "retention_locked"
    title = "Retention locked"

    def __init__(self, detail: str, locked_until: str | None = None) -> None:
        super().__init__(detail)
        self.locked_until = locked_until


class Unauthenticated(ArtifactStoreError):
    """Missing, malformed, unknown, expired or revoked credentials."""

    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(ArtifactStoreError):
    """Valid credentials without the scope the operation needs."""

    code = "forbidden"
    title = "Forbidden"


class TooManyRequests(ArtifactStoreError):
    """Throttled (repeated failed authentication); ``retry_after`` in seconds."""

    code = "too_many_requests"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UnmigratedDatabase(ArtifactStoreError):
    code = "unmigrated_database"
    title = "Database schema is not at the current revision"


class DatabaseUnavailable(ArtifactStoreError):
    """The database could not be reached or did not answer in time: nothing was done.

    Distinct from a storage failure because the remedy differs (the database
    server or the network to it, named in the detail), and from a bug: a
    client may retry once it is back, and ``GET /ready`` says when that is.
    """

    code = "database_unavailable"
    title = "Database unavailable"


class StorageError(ArtifactStoreError):
    """The storage backend failed (I/O error, failed fsync, unreachable)."""

    code = "storage_error"
    title = "Storage failure"


class StorageFull(StorageError):
    """The disk (or quota) holding the database or the bytes is full: nothing was written.

    Distinct from other storage failures because the remedy is the operator's:
    free space (``rm``, then ``gc``, which work on a full disk) or grow the disk.
    """

    code = "storage_full"
    title = "Storage full"


# --- client side: the server could not be used (remote mode) ---------------------
#
# Raised only by the client (``artifactstore.client``), never by a server: each
# names what went wrong between the two and the setting to check, so that a
# refused connection is not reported as the store's storage failing.


class RemoteError(ArtifactStoreError):
    """The client got no usable answer from the server (base of the five below)."""

    code = "remote_error"
    title = "The server could not be used"


class ServerUnreachable(RemoteError):
    """No connection: refused, name not resolved, or cut before an answer arrived."""

    code = "server_unreachable"
    title = "Server unreachable"


class ServerTimeout(RemoteError):
    """Connected, but the server sent nothing for longer than the client's timeout."""

    code = "server_timeout"
    title = "Server timed out"


class ServerNotReady(RemoteError):
    """The server answered 503 without a problem document (a ``HEAD``'s answer has no
    body): its database or storage is down, and its ``GET /ready`` says which."""

    code = "server_not_ready"
    title = "Server not ready"


class TlsFailure(RemoteError):
    """The TLS handshake failed: an untrusted certificate, or ``https://`` to a plain port."""

    code = "tls_failure"
    title = "TLS failure"


class BadResponse(RemoteError):
    """An answer that is not an artifact-store problem document (a proxy's HTML 502, a
    status the client cannot interpret)."""

    code = "bad_response"
    title = "Unexpected answer from the server"


# --- integrity (exit code 3) ------------------------------------------------------


class IntegrityError(ArtifactStoreError):
    """Bytes or history are not what their digests say."""

    code = "integrity_error"
    title = "Integrity failure"


class DigestMismatch(IntegrityError):
    code = "digest_mismatch"
    title = "Digest mismatch"


class ChecksumMismatch(DigestMismatch):
    """A request body did not match the checksum sent with it (tus checksum extension)."""

    code = "checksum_mismatch"
    title = "Request body checksum mismatch"


class CorruptBlob(IntegrityError):
    code = "corrupt_blob"
    title = "Stored blob is damaged or missing"


class SignatureInvalid(IntegrityError):
    """A signature that does not verify, or that no trusted key made: a refused input
    (HTTP 422), not damage to what is stored."""

    code = "signature_invalid"
    title = "Signature not valid"


class SignatureRequired(SignatureInvalid):
    """The namespace requires signatures and the commit carries none (docs/provenance.md)."""

    code = "signature_required"
    title = "Signature required"


class ChainBroken(IntegrityError):
    """The event log's hash chain does not verify; ``seq`` is the first bad event."""

    code = "chain_broken"
    title = "Event chain broken"

    def __init__(self, detail: str, seq: int) -> None:
        super().__init__(detail)
        self.seq = seq


class ProofInvalid(IntegrityError):
    """A transparency-log proof (inclusion or consistency) that does not verify."""

    code = "proof_invalid"
    title = "Log proof not valid"


class LogInconsistent(IntegrityError):
    """The event log does not extend a saved checkpoint (a cut tail, a rewritten chain),
    or the stored tree disagrees with the events."""

    code = "log_inconsistent"
    title = "Log inconsistent with a checkpoint"
