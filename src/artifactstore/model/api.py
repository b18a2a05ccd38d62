"""``StoreAPI``: what a store offers, local (``Store``) or over HTTP (``RemoteStore``).

The CLI types its store as this protocol and so has one code path per
command for both modes. A verb that only makes sense where the data lives
(``rebuild``, ``verify`` of everything, ``migrate``) is not here: it is the
local ``Store``'s alone. Both implementations return the value types of
``model/``; where they differ (a local version carries its manifest, a
listing over HTTP may not), the protocol names what both provide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Unpack

from artifactstore.model.envelope import Envelope, Signer
from artifactstore.model.events import Event
from artifactstore.model.identity import Digest, Reference
from artifactstore.model.manifest import Manifest
from artifactstore.model.records import (
    BlobTier,
    GcReport,
    Hold,
    Progress,
    PushArgs,
    QueryArgs,
    TierReport,
    TokenInfo,
    UploadSession,
    VerifyReport,
)
from artifactstore.model.retention import RetentionPolicy, RetentionReport, RetentionSettings
from artifactstore.model.tlog import (
    AuditReport,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    LogKey,
)

__all__ = ["Pushed", "StoreAPI", "UploadAppend", "Version"]


class Version(Protocol):
    """A committed version as every store describes it."""

    @property
    def reference(self) -> Reference: ...
    @property
    def digest(self) -> Digest: ...
    @property
    def sha256(self) -> Digest: ...
    @property
    def committed_at(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def file_count(self) -> int: ...

    def summary(self) -> dict[str, Any]:
        """The version's one JSON form."""

    def require_manifest(self) -> Manifest:
        """The manifest; InvalidInput where this description came without one."""


class Pushed(Protocol):
    """What a push did."""

    @property
    def record(self) -> Version: ...
    @property
    def created(self) -> bool: ...
    @property
    def blobs_stored(self) -> int: ...


class StoreAPI(Protocol):
    """The verbs every store offers (the CLI's and the library's)."""

    def close(self) -> None: ...

    # --- versions and bytes ---
    def push(
        self, ref: str | Reference, paths: Sequence[str | Path], **args: Unpack[PushArgs]
    ) -> Pushed:
        """Store the files under ``paths`` (what the store lacks) and commit version ``ref``."""

    def show(self, ref: str | Reference) -> Version: ...

    def iter_query(self, **args: Unpack[QueryArgs]) -> Iterator[Version]:
        """Every matching live version, newest first."""

    def read_file(self, ref: str | Reference, path: str) -> Iterator[bytes]:
        """One file's bytes; DigestMismatch after the last chunk if they are damaged."""

    def pull(
        self,
        ref: str | Reference,
        dest: str | Path,
        *,
        progress: Progress = ...,
        force: bool = ...,
    ) -> Version:
        """Every file under ``dest``, each digest verified; all or nothing; an existing
        file is refused (Conflict) unless ``force``."""

    def verify(self, ref: str | Reference | None = None) -> VerifyReport: ...

    def delete(self, ref: str | Reference) -> Version:
        """Tombstone a version; LegalHold or RetentionLocked if it is protected."""

    # --- signatures (docs/provenance.md) ---
    def signatures(self, ref: str | Reference) -> list[Envelope]:
        """The DSSE envelopes recorded over a version, oldest first."""

    def add_signature(self, ref: str | Reference, envelope: Envelope) -> bool:
        """Record an envelope over a version (checked first); False if already recorded."""

    def sign(self, ref: str | Reference, key: Signer) -> Envelope:
        """Sign a version with a private key (which never leaves the caller) and record it."""

    # --- schemas ---
    def register_schema(self, variant: str, schema: Any) -> bool: ...
    def get_schema(self, variant: str) -> dict[str, Any]: ...
    def list_schemas(self) -> list[dict[str, str]]: ...

    # --- tokens and namespaces ---
    def create_token(
        self, name: str, scopes: list[str], *, expires_in: float | None = None
    ) -> tuple[TokenInfo, str]: ...
    def list_tokens(self) -> list[TokenInfo]: ...
    def revoke_token(self, token_id: str) -> TokenInfo: ...
    def namespace_settings(self, namespace: str) -> dict[str, Any]: ...
    def set_namespace_settings(
        self, namespace: str, settings: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    # --- retention and legal holds ---
    def set_retention(
        self, namespace: str, package: str | None, policy: RetentionPolicy | None
    ) -> RetentionSettings: ...
    def retention_settings(self, namespace: str) -> RetentionSettings: ...
    def lock_retention(self, namespace: str, keep_days: float) -> RetentionSettings: ...
    def retention_plan(self, namespace: str | None = None) -> RetentionReport: ...
    def apply_retention(
        self, namespace: str | None = None, *, dry_run: bool = False
    ) -> RetentionReport: ...
    def place_hold(self, ref: str | Reference, reason: str) -> Hold: ...
    def release_hold(
        self, ref: str | Reference, reason: str, *, hold_id: int | None = None
    ) -> Hold: ...
    def list_holds(
        self, ref: str | Reference | None = None, *, include_released: bool = False
    ) -> list[Hold]: ...

    # --- tiers ---
    def tier_status(self, ref: str | Reference) -> list[BlobTier]: ...
    def tier_move(self, ref: str | Reference, to: str) -> TierReport: ...
    def tier_restore(self, ref: str | Reference) -> TierReport: ...

    # --- the log and housekeeping ---
    def events(self, after: int = 0, limit: int | None = None) -> list[Event]: ...
    def verify_chain(self) -> int:
        """Events verified; ChainBroken at the first that does not verify."""

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> GcReport: ...

    # --- the transparency log ---
    def log_checkpoint(self) -> str:
        """A signed checkpoint (C2SP note) of the whole log."""

    def log_key(self) -> LogKey: ...
    def log_inclusion(self, seq: int, size: int | None = None) -> InclusionProof: ...
    def log_consistency(self, old: int, new: int | None = None) -> ConsistencyProof: ...
    def log_audit(
        self,
        checkpoints: Sequence[tuple[str, Checkpoint]],
        verify: Callable[[str], Checkpoint] | None = None,
    ) -> AuditReport:
        """Whether the log extends each (name, checkpoint); their signatures checked by the caller.

        ``verify`` checks the signature of the log's current checkpoint note: a
        remote audit compares the saved checkpoints with the server's current one,
        so one it cannot verify is a failure, not a reference. A local audit
        recomputes the tree from the event rows and needs no signature.
        """


class UploadAppend(Protocol):
    """One request's bytes being appended to an upload session (the server's PATCH)."""

    @property
    def session(self) -> UploadSession: ...
    @property
    def written(self) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> UploadSession:
        """Make the bytes durable and record the new offset; completes a full session."""

    def abort(self) -> UploadSession:
        """The request broke off: keep what arrived (tus), unless a checksum was sent."""
