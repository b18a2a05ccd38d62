"""Events as values (docs/events.md): the log's record, its hash, and one type per event.

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
from typing import Any

import blake3

from artifactstore.model.blob_events import (
    BlobClaimed,
    BlobCollected,
    BlobRestoreRequested,
    BlobsStored,
    BlobStored,
    BlobTiered,
    Location,
    NamespaceUpdated,
    TokenCreated,
    TokenRevoked,
)
from artifactstore.model.cbor import canonical_dumps
from artifactstore.model.package_events import (
    HoldPlaced,
    HoldReleased,
    PackageCommitted,
    PackageDeleted,
    RetentionLocked,
    RetentionSet,
    SchemaRegistered,
    SignatureAdded,
    TagMoved,
)
from artifactstore.model.payload import JsonObject, read_int, read_obj, read_str

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
    "SignatureAdded",
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
    | SignatureAdded
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
            SignatureAdded,
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
                read_int(body, "seq"),
                read_str(body, "time"),
                read_str(body, "actor"),
                read_str(body, "type"),
                read_str(body, "subject"),
                read_obj(body, "payload"),
                read_str(body, "prev_hash"),
                read_str(body, "hash"),
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
