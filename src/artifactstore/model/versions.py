"""Package versions as values: a committed version, a listing of one, a page, a push.

``VersionRecord`` is a version as the store holds it (always with its
manifest); ``VersionListing`` is the same version parsed back from its one
JSON form (``VersionRecord.summary``), as an HTTP client receives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from artifactstore.errors import InvalidInput
from artifactstore.model.identity import Digest, Reference
from artifactstore.model.manifest import Manifest

__all__ = ["CommitResult", "Page", "PushResult", "VersionListing", "VersionRecord"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A live version as the views hold it."""

    id: int
    reference: Reference
    digest: Digest
    sha256: Digest
    manifest: Manifest
    manifest_cbor: bytes
    committed_at: str
    actor: str
    size: int
    file_count: int

    def require_manifest(self) -> Manifest:
        """The manifest (always present locally; remote listings may lack it)."""
        return self.manifest

    def summary(self) -> dict[str, Any]:
        """The version's one JSON form (listings, ``show --json``); ``VersionListing`` parses it."""
        return {
            "reference": str(self.reference),
            "namespace": str(self.reference.namespace),
            "name": str(self.reference.name),
            "version": str(self.reference.version),
            "digest": str(self.digest),
            "sha256": str(self.sha256),
            "variant": self.manifest.variant,
            "metadata": self.manifest.metadata,
            "created": self.manifest.created,
            "committed_at": self.committed_at,
            "actor": self.actor,
            "size": self.size,
            "file_count": self.file_count,
        }


@dataclass(frozen=True, slots=True)
class CommitResult:
    record: VersionRecord
    created: bool


@dataclass(frozen=True, slots=True)
class Page(Generic[V]):
    """One page of a query: its versions and the cursor of the next (None: the last)."""

    items: list[V]
    next_cursor: str | None

    def __iter__(self) -> Iterator[V]:
        """Iterating a page yields its versions (the library API)."""
        return iter(self.items)


@dataclass(frozen=True, slots=True)
class VersionListing:
    """A version as its JSON form describes it (over HTTP): the manifest only where sent."""

    reference: Reference
    digest: Digest
    sha256: Digest
    committed_at: str
    actor: str
    size: int
    file_count: int
    raw: dict[str, Any]
    manifest: Manifest | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> VersionListing:
        manifest = Manifest.from_map(body["manifest"]) if "manifest" in body else None
        return cls(
            reference=Reference.parse(body["reference"]),
            digest=Digest.parse(body["digest"]),
            sha256=Digest.parse(body["sha256"]),
            committed_at=body["committed_at"],
            actor=body["actor"],
            size=body["size"],
            file_count=body["file_count"],
            raw={k: v for k, v in body.items() if k != "manifest"},
            manifest=manifest,
        )

    def summary(self) -> dict[str, Any]:
        return dict(self.raw)

    def require_manifest(self) -> Manifest:
        if self.manifest is None:
            raise InvalidInput(f"{self.reference}: the server sent no manifest")
        return self.manifest


@dataclass(frozen=True, slots=True)
class PushResult(Generic[V]):
    """A push's version, whether it was new, and how many blobs it stored."""

    record: V
    created: bool
    blobs_stored: int
