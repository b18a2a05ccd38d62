"""Typed events of packages, schemas, legal holds and retention (see ``events.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from artifactstore.model.payload import (
    JsonObject,
    read_int,
    read_number,
    read_obj,
    read_opt_obj,
    read_str,
    whole,
)


def _manifest_subject(manifest: JsonObject) -> str:
    """``NS/NAME:VERSION`` of a manifest map (``str`` of its version reference)."""
    package = manifest["package"]
    return f"{package['namespace']}/{package['name']}:{package['version']}"


@dataclass(frozen=True, slots=True)
class PackageCommitted:
    """A package version was committed.

    ``manifest`` is the manifest map (docs/architecture.md) (``Manifest.to_map()``), validated
    before it was appended and read as it stands (a 10,000-file manifest is
    not parsed again); ``digest`` is its package digest (blake3).
    """

    type: ClassVar[str] = "package.committed"
    manifest: JsonObject
    digest: str

    @property
    def subject(self) -> str:
        return _manifest_subject(self.manifest)

    def to_payload(self) -> dict[str, Any]:
        return {"manifest": dict(self.manifest), "digest": self.digest}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(read_obj(payload, "manifest"), read_str(payload, "digest"))


@dataclass(frozen=True, slots=True)
class TagMoved:
    """A movable tag now names a new manifest; the version it named until now goes.

    ``manifest`` and ``digest`` as in :class:`PackageCommitted`; the payload's
    ``previous`` is ``{"version_id": previous_version_id, "digest": previous_digest}``.
    """

    type: ClassVar[str] = "tag.moved"
    manifest: JsonObject
    digest: str
    previous_version_id: int
    previous_digest: str

    @property
    def subject(self) -> str:
        return _manifest_subject(self.manifest)

    def to_payload(self) -> dict[str, Any]:
        return {
            "manifest": dict(self.manifest),
            "digest": self.digest,
            "previous": {"version_id": self.previous_version_id, "digest": self.previous_digest},
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        previous = read_obj(payload, "previous")
        return cls(
            read_obj(payload, "manifest"),
            read_str(payload, "digest"),
            read_int(previous, "version_id"),
            read_str(previous, "digest"),
        )


@dataclass(frozen=True, slots=True)
class PackageDeleted:
    """A package version was tombstoned; its bytes wait for GC.

    ``reference`` (``NS/NAME:VERSION``) is the event's subject only, not in the
    payload; ``cause`` is ``"retention"`` for retention apply, absent for ``rm``.
    """

    type: ClassVar[str] = "package.deleted"
    reference: str
    version_id: int
    digest: str
    cause: str | None = None

    @property
    def subject(self) -> str:
        return self.reference

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"version_id": self.version_id, "digest": self.digest}
        if self.cause is not None:
            payload["cause"] = self.cause
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(
            subject,
            read_int(payload, "version_id"),
            read_str(payload, "digest"),
            read_str(payload, "cause") if "cause" in payload else None,
        )


@dataclass(frozen=True, slots=True)
class SchemaRegistered:
    """A metadata JSON Schema was registered for a variant id."""

    type: ClassVar[str] = "schema.registered"
    id: str
    schema: JsonObject
    digest: str

    @property
    def subject(self) -> str:
        return self.id

    def to_payload(self) -> dict[str, Any]:
        return {"id": self.id, "schema": dict(self.schema), "digest": self.digest}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(
            read_str(payload, "id"), read_obj(payload, "schema"), read_str(payload, "digest")
        )


@dataclass(frozen=True, slots=True)
class HoldPlaced:
    """A legal hold was placed on a version; the hold's id is the event's ``seq``."""

    type: ClassVar[str] = "hold.placed"
    version_id: int
    reference: str
    reason: str

    @property
    def subject(self) -> str:
        return self.reference

    def to_payload(self) -> dict[str, Any]:
        return {"version_id": self.version_id, "reference": self.reference, "reason": self.reason}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(
            read_int(payload, "version_id"),
            read_str(payload, "reference"),
            read_str(payload, "reason"),
        )


@dataclass(frozen=True, slots=True)
class HoldReleased:
    """A legal hold was released."""

    type: ClassVar[str] = "hold.released"
    hold_id: int
    reference: str
    reason: str

    @property
    def subject(self) -> str:
        return self.reference

    def to_payload(self) -> dict[str, Any]:
        return {"hold_id": self.hold_id, "reference": self.reference, "reason": self.reason}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(
            read_int(payload, "hold_id"),
            read_str(payload, "reference"),
            read_str(payload, "reason"),
        )


@dataclass(frozen=True, slots=True)
class RetentionSet:
    """A namespace's (``package`` empty) or a package's retention policy was set or cleared.

    ``policy`` is the policy document as logged, or None to clear it.
    """

    type: ClassVar[str] = "retention.set"
    namespace: str
    package: str
    policy: JsonObject | None

    @property
    def subject(self) -> str:
        return f"{self.namespace}/{self.package}" if self.package else self.namespace

    def to_payload(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "package": self.package,
            "policy": None if self.policy is None else dict(self.policy),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(
            read_str(payload, "namespace"),
            read_str(payload, "package"),
            read_opt_obj(payload, "policy"),
        )


@dataclass(frozen=True, slots=True)
class RetentionLocked:
    """A namespace's retention lock (minimum keep-days) was set or extended.

    ``keep_days`` is logged as an integer when whole (``1``, not ``1.0``).
    """

    type: ClassVar[str] = "retention.locked"
    namespace: str
    keep_days: float

    @property
    def subject(self) -> str:
        return self.namespace

    def to_payload(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "keep_days": whole(self.keep_days)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(read_str(payload, "namespace"), read_number(payload, "keep_days"))


@dataclass(frozen=True, slots=True)
class SignatureAdded:
    """A DSSE envelope over a version was recorded (docs/provenance.md).

    ``envelope`` is the DSSE JSON envelope as recorded (``Envelope.to_json()``);
    ``digest`` the package digest (blake3) it is over. Recording one never
    changes the version or its digest.
    """

    type: ClassVar[str] = "signature.added"
    version_id: int
    reference: str
    digest: str
    envelope: JsonObject

    @property
    def subject(self) -> str:
        return self.reference

    def to_payload(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "reference": self.reference,
            "digest": self.digest,
            "envelope": dict(self.envelope),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(
            read_int(payload, "version_id"),
            read_str(payload, "reference"),
            read_str(payload, "digest"),
            read_obj(payload, "envelope"),
        )
