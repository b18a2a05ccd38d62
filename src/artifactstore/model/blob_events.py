"""Typed events of blobs, tokens and namespaces (``events.py`` states their contract)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from artifactstore.model.payload import (
    JsonObject,
    read_int,
    read_list,
    read_obj,
    read_opt_int,
    read_opt_str,
    read_str,
)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a blob's bytes are, as events carry it; ``offset`` only for a packed blob."""

    backend: str
    key: str
    representation: str
    retrieval_tier: str
    restore_status: str
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        loc: dict[str, Any] = {
            "backend": self.backend,
            "key": self.key,
            "representation": self.representation,
            "retrieval_tier": self.retrieval_tier,
            "restore_status": self.restore_status,
        }
        if self.offset is not None:
            loc["offset"] = self.offset
        return loc

    @classmethod
    def from_json(cls, loc: Mapping[str, Any]) -> Location:
        # Every blob of a push has one: checked inline, the helpers only to say what is wrong.
        backend, key = loc["backend"], loc["key"]
        representation, tier, status = (
            loc["representation"],
            loc["retrieval_tier"],
            loc["restore_status"],
        )
        offset = loc.get("offset")
        if not (
            type(backend) is str
            and type(key) is str
            and type(representation) is str
            and type(tier) is str
            and type(status) is str
            and (offset is None or type(offset) is int)
        ):
            for name in ("backend", "key", "representation", "retrieval_tier", "restore_status"):
                read_str(loc, name)
            read_opt_int(loc, "offset")
        return cls(backend, key, representation, tier, status, offset)


# --- one class per event type ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobStored:
    """Bytes became durable and were recorded with both digests and a location.

    ``namespace`` is where the uploader sent the bytes (None: no namespace; a log
    from before namespaces has no such key, which parses as None).
    """

    type: ClassVar[str] = "blob.stored"
    blake3: str
    sha256: str
    size: int
    locations: tuple[Location, ...]
    namespace: str | None

    @property
    def subject(self) -> str:
        return self.blake3

    def to_payload(self) -> dict[str, Any]:
        return {
            "blake3": self.blake3,
            "sha256": self.sha256,
            "size": self.size,
            "locations": [loc.to_json() for loc in self.locations],
            "namespace": self.namespace,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        b3, sha256, size = payload["blake3"], payload["sha256"], payload["size"]
        locations, namespace = payload["locations"], payload.get("namespace")
        if not (
            type(b3) is str
            and type(sha256) is str
            and type(size) is int
            and type(locations) is list
            and (namespace is None or type(namespace) is str)
        ):
            read_str(payload, "blake3")
            read_str(payload, "sha256")
            read_int(payload, "size")
            read_list(payload, "locations")
            read_opt_str(payload, "namespace")
        return cls(
            b3, sha256, size, tuple([Location.from_json(loc) for loc in locations]), namespace
        )


@dataclass(frozen=True, slots=True)
class BlobsStored:
    """Several blobs recorded in one transaction (a push): what that many ``blob.stored``
    events would carry. They were sent to one namespace, the event's subject."""

    type: ClassVar[str] = "blobs.stored"
    blobs: tuple[BlobStored, ...]

    def __post_init__(self) -> None:
        if not self.blobs:
            raise ValueError("a blobs.stored event lists at least one blob")
        if len({b.namespace for b in self.blobs}) != 1:
            raise ValueError("the blobs of a blobs.stored event were sent to one namespace")

    @property
    def subject(self) -> str:
        return self.blobs[0].namespace or ""

    def to_payload(self) -> dict[str, Any]:
        return {"blobs": [b.to_payload() for b in self.blobs]}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(tuple(BlobStored.from_payload(b, "") for b in read_list(payload, "blobs")))


@dataclass(frozen=True, slots=True)
class BlobClaimed:
    """A namespace proved possession of bytes the store already held."""

    type: ClassVar[str] = "blob.claimed"
    blake3: str
    namespace: str

    @property
    def subject(self) -> str:
        return self.blake3

    def to_payload(self) -> dict[str, Any]:
        return {"blake3": self.blake3, "namespace": self.namespace}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(read_str(payload, "blake3"), read_str(payload, "namespace"))


@dataclass(frozen=True, slots=True)
class BlobCollected:
    """Garbage collection removed an unreferenced blob."""

    type: ClassVar[str] = "blob.collected"
    blake3: str
    size: int

    @property
    def subject(self) -> str:
        return self.blake3

    def to_payload(self) -> dict[str, Any]:
        return {"blake3": self.blake3, "size": self.size}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(read_str(payload, "blake3"), read_int(payload, "size"))


@dataclass(frozen=True, slots=True)
class BlobTiered:
    """A blob's bytes moved to another storage tier, or a restore completed.

    ``from_backend`` is the payload's ``from``: the backend the bytes left.
    """

    type: ClassVar[str] = "blob.tiered"
    blake3: str
    from_backend: str
    location: Location

    @property
    def subject(self) -> str:
        return self.blake3

    def to_payload(self) -> dict[str, Any]:
        return {
            "blake3": self.blake3,
            "from": self.from_backend,
            "location": self.location.to_json(),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(
            read_str(payload, "blake3"),
            read_str(payload, "from"),
            Location.from_json(read_obj(payload, "location")),
        )


@dataclass(frozen=True, slots=True)
class BlobRestoreRequested:
    """A restore of a blob from the cold tier started; it completes at ``ready_at``."""

    type: ClassVar[str] = "blob.restore_requested"
    blake3: str
    ready_at: str

    @property
    def subject(self) -> str:
        return self.blake3

    def to_payload(self) -> dict[str, Any]:
        return {"blake3": self.blake3, "ready_at": self.ready_at}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(read_str(payload, "blake3"), read_str(payload, "ready_at"))


@dataclass(frozen=True, slots=True)
class TokenCreated:
    """An API token was created: its secret's hash only, never the secret."""

    type: ClassVar[str] = "token.created"
    id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    expires_at: str | None

    @property
    def subject(self) -> str:
        return self.id

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "secret_hash": self.secret_hash,
            "scopes": list(self.scopes),
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        scopes = read_list(payload, "scopes")
        if not all(type(s) is str for s in scopes):
            raise ValueError("payload 'scopes' is not a list of strings")
        return cls(
            read_str(payload, "id"),
            read_str(payload, "name"),
            read_str(payload, "secret_hash"),
            tuple(scopes),
            read_opt_str(payload, "expires_at"),
        )


@dataclass(frozen=True, slots=True)
class TokenRevoked:
    """An API token was revoked."""

    type: ClassVar[str] = "token.revoked"
    id: str

    @property
    def subject(self) -> str:
        return self.id

    def to_payload(self) -> dict[str, Any]:
        return {"id": self.id}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(read_str(payload, "id"))


@dataclass(frozen=True, slots=True)
class NamespaceUpdated:
    """A namespace's settings changed; ``settings`` is the whole document as logged."""

    type: ClassVar[str] = "namespace.updated"
    namespace: str
    settings: JsonObject

    @property
    def subject(self) -> str:
        return self.namespace

    def to_payload(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "settings": dict(self.settings)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(read_str(payload, "namespace"), read_obj(payload, "settings"))
