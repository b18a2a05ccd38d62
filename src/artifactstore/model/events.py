"""Events as values (SPEC section 8): the log's record, its hash, and one type per event.

Pure: no I/O, no database. An HTTP client verifies a chain and reads typed
payloads with this module alone; the control plane appends and projects
through it (``controlplane/eventlog.py``, ``controlplane/projection.py``).

:class:`Event` is one logged event as the log stores and serves it: its
``payload`` is the JSON object whose canonical text (:func:`payload_text`)
the chain hash covers. Each event type has a frozen class here (``type``
names it, ``subject`` derives the event's subject, ``to_payload()`` builds the
payload and ``from_payload()`` parses one); :data:`EVENT_CLASSES` is the table
from type to class and :meth:`Event.typed` the way from a record to its value.

Compatibility: ``to_payload()`` builds byte for byte the payloads the store
has always written (same keys, same nulls and omissions), so a typed append
hashes what an untyped one did. Parsing accepts the older shapes a log may
hold (a ``blob.stored`` from before namespaces has no ``namespace``; an early
``namespace.updated`` settings document has only ``anonymous_read``), and
documents (a manifest map, namespace settings, a retention policy, a JSON
Schema) stay the JSON objects the log holds: a replay projects exactly what
was logged. Identities stay the strings the log holds too: parsing a logged
reference again with today's rules could refuse history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Self

import blake3

from artifactstore.model.cbor import canonical_dumps

__all__ = [
    "EVENT_CLASSES",
    "GENESIS",
    "BlobClaimed",
    "BlobCollected",
    "BlobRestoreRequested",
    "BlobStored",
    "BlobTiered",
    "BlobsStored",
    "Event",
    "HoldPlaced",
    "HoldReleased",
    "JsonObject",
    "Location",
    "NamespaceUpdated",
    "PackageCommitted",
    "PackageDeleted",
    "RetentionLocked",
    "RetentionSet",
    "SchemaRegistered",
    "TagMoved",
    "TokenCreated",
    "TokenRevoked",
    "TypedEvent",
    "event_hash",
    "parse_event",
    "payload_text",
    "stored_blobs",
]

#: The ``prev_hash`` of the first event.
GENESIS = "blake3:" + "0" * 64

#: A JSON object as the log holds it (a manifest map, settings, a policy, a schema).
JsonObject = Mapping[str, Any]

#: One encoder for every payload: ``json.dumps`` with options builds a new one per
#: call, a third of the cost of encoding a push's 10,000 small payloads.
_PAYLOAD_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_text(payload: Mapping[str, Any]) -> str:
    """The canonical JSON of a payload: what the log stores and the chain hash covers.

    Sorted keys, no whitespace, UTF-8 text as is (``ensure_ascii=False``).
    """
    return _PAYLOAD_JSON.encode(payload)


def event_hash(
    seq: int, time: str, actor: str, type_: str, subject: str, payload_text: str, prev: str
) -> str:
    """BLAKE3 over the canonical CBOR of ``[seq, time, actor, type, subject, payload, prev]``."""
    body = canonical_dumps([seq, time, actor, type_, subject, payload_text, prev])
    return "blake3:" + blake3.blake3(body).hexdigest()


# --- parsing helpers: exact JSON types (a bool is not an int) ---------------------------------
# A missing key raises KeyError, a mistyped value ValueError; parse_event reports either as
# ValueError. Written out per type, not one helper taking types: a replay parses every
# blob of every push, and these run about a dozen times per blob.


def _mistyped(key: str, value: object, expected: str) -> ValueError:
    return ValueError(f"payload {key!r} is {type(value).__name__}, not {expected}")


def _str(p: Mapping[str, Any], key: str) -> str:
    value = p[key]
    if type(value) is not str:
        raise _mistyped(key, value, "str")
    return value


def _opt_str(p: Mapping[str, Any], key: str) -> str | None:
    value = p[key]
    if value is not None and type(value) is not str:
        raise _mistyped(key, value, "str or null")
    return value


def _int(p: Mapping[str, Any], key: str) -> int:
    value = p[key]
    if type(value) is not int:
        raise _mistyped(key, value, "int")
    return value


def _opt_int(p: Mapping[str, Any], key: str) -> int | None:
    value = p[key]
    if value is not None and type(value) is not int:
        raise _mistyped(key, value, "int or null")
    return value


def _number(p: Mapping[str, Any], key: str) -> float:
    value = p[key]
    if type(value) is not int and type(value) is not float:
        raise _mistyped(key, value, "int or float")
    return value


def _obj(p: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = p[key]
    if type(value) is not dict:
        raise _mistyped(key, value, "dict")
    return value


def _opt_obj(p: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = p[key]
    if value is not None and type(value) is not dict:
        raise _mistyped(key, value, "dict or null")
    return value


def _list(p: Mapping[str, Any], key: str) -> list[Any]:
    value = p[key]
    if type(value) is not list:
        raise _mistyped(key, value, "list")
    return value


def _whole(days: float) -> int | float:
    """Whole days as an integer, so a payload reads as it was typed (``1``, not ``1.0``)."""
    return int(days) if float(days).is_integer() else days


# --- payload parts -------------------------------------------------------------------------


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
                _str(loc, name)
            _opt_int(loc, "offset")
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
            _str(payload, "blake3")
            _str(payload, "sha256")
            _int(payload, "size")
            _list(payload, "locations")
            _opt_str(payload, "namespace")
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
        return cls(tuple(BlobStored.from_payload(b, "") for b in _list(payload, "blobs")))


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
        return cls(_str(payload, "blake3"), _str(payload, "namespace"))


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
        return cls(_str(payload, "blake3"), _int(payload, "size"))


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
            _str(payload, "blake3"),
            _str(payload, "from"),
            Location.from_json(_obj(payload, "location")),
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
        return cls(_str(payload, "blake3"), _str(payload, "ready_at"))


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
        scopes = _list(payload, "scopes")
        if not all(type(s) is str for s in scopes):
            raise ValueError("payload 'scopes' is not a list of strings")
        return cls(
            _str(payload, "id"),
            _str(payload, "name"),
            _str(payload, "secret_hash"),
            tuple(scopes),
            _opt_str(payload, "expires_at"),
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
        return cls(_str(payload, "id"))


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
        return cls(_str(payload, "namespace"), _obj(payload, "settings"))


def _manifest_subject(manifest: JsonObject) -> str:
    """``NS/NAME:VERSION`` of a manifest map (``str`` of its version reference)."""
    package = manifest["package"]
    return f"{package['namespace']}/{package['name']}:{package['version']}"


@dataclass(frozen=True, slots=True)
class PackageCommitted:
    """A package version was committed.

    ``manifest`` is the SPEC section 3 map (``Manifest.to_map()``), validated
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
        return cls(_obj(payload, "manifest"), _str(payload, "digest"))


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
        previous = _obj(payload, "previous")
        return cls(
            _obj(payload, "manifest"),
            _str(payload, "digest"),
            _int(previous, "version_id"),
            _str(previous, "digest"),
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
            _int(payload, "version_id"),
            _str(payload, "digest"),
            _str(payload, "cause") if "cause" in payload else None,
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
        return cls(_str(payload, "id"), _obj(payload, "schema"), _str(payload, "digest"))


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
        return cls(_int(payload, "version_id"), _str(payload, "reference"), _str(payload, "reason"))


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
        return cls(_int(payload, "hold_id"), _str(payload, "reference"), _str(payload, "reason"))


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
            _str(payload, "namespace"), _str(payload, "package"), _opt_obj(payload, "policy")
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
        return {"namespace": self.namespace, "keep_days": _whole(self.keep_days)}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], subject: str) -> Self:
        return cls(_str(payload, "namespace"), _number(payload, "keep_days"))


#: Any event's typed value.
TypedEvent = (
    BlobStored
    | BlobsStored
    | BlobClaimed
    | BlobCollected
    | BlobTiered
    | BlobRestoreRequested
    | TokenCreated
    | TokenRevoked
    | NamespaceUpdated
    | PackageCommitted
    | TagMoved
    | PackageDeleted
    | SchemaRegistered
    | HoldPlaced
    | HoldReleased
    | RetentionSet
    | RetentionLocked
)

#: Every event type the log may hold, and its class (each documented in docs/events.md).
EVENT_CLASSES: Mapping[str, type[TypedEvent]] = MappingProxyType(
    {
        cls.type: cls
        for cls in (
            BlobStored,
            BlobsStored,
            BlobClaimed,
            BlobCollected,
            BlobTiered,
            BlobRestoreRequested,
            TokenCreated,
            TokenRevoked,
            NamespaceUpdated,
            PackageCommitted,
            TagMoved,
            PackageDeleted,
            SchemaRegistered,
            HoldPlaced,
            HoldReleased,
            RetentionSet,
            RetentionLocked,
        )
    }
)


def parse_event(type_: str, subject: str, payload: Mapping[str, Any]) -> TypedEvent:
    """The typed value of a logged event; ValueError for an unknown type or a bad payload."""
    cls = EVENT_CLASSES.get(type_)
    if cls is None:
        raise ValueError(f"unknown event type {type_!r}")
    try:
        return cls.from_payload(payload, subject)
    except KeyError as exc:
        raise ValueError(f"malformed {type_} payload: it has no {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed {type_} payload: {exc}") from None


def stored_blobs(event: TypedEvent) -> tuple[BlobStored, ...]:
    """The blobs an event records: a ``blob.stored``'s own, a ``blobs.stored``'s list, or none."""
    if isinstance(event, BlobsStored):
        return event.blobs
    return (event,) if isinstance(event, BlobStored) else ()


@dataclass(frozen=True, slots=True)
class Event:
    """One logged event, as the log stores it and ``GET /v1/events`` serves it.

    ``payload`` is the logged JSON object (its :func:`payload_text` is what
    ``hash`` covers); :meth:`typed` parses it into its event type's class.
    """

    seq: int
    time: str
    actor: str
    type: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The one JSON form of an event (the HTTP API's, the CLI's, the stream's)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "type": self.type,
            "subject": self.subject,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Event:
        """Parse :meth:`to_json`'s form; ValueError when a field is missing or mistyped."""
        try:
            return cls(
                _int(body, "seq"),
                _str(body, "time"),
                _str(body, "actor"),
                _str(body, "type"),
                _str(body, "subject"),
                _obj(body, "payload"),
                _str(body, "prev_hash"),
                _str(body, "hash"),
            )
        except KeyError as exc:
            raise ValueError(f"an event has no {exc}") from None

    def typed(self) -> TypedEvent:
        """The payload as its event type's class; ValueError (naming the seq) if it is not one."""
        try:
            return parse_event(self.type, self.subject, self.payload)
        except ValueError as exc:
            raise ValueError(f"event {self.seq}: {exc}") from None

    def computed_hash(self) -> str:
        """The hash this event's content and link call for (equal to ``hash`` unless altered)."""
        return event_hash(
            self.seq,
            self.time,
            self.actor,
            self.type,
            self.subject,
            payload_text(self.payload),
            self.prev_hash,
        )
