"""Typed events: every type parses what it builds, and a logged record round-trips."""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactstore.model import events
from artifactstore.model.events import (
    EVENT_CLASSES,
    GENESIS,
    BlobClaimed,
    BlobCollected,
    BlobRestoreRequested,
    BlobsStored,
    BlobStored,
    BlobTiered,
    Event,
    HoldPlaced,
    HoldReleased,
    Location,
    NamespaceUpdated,
    PackageCommitted,
    PackageDeleted,
    RetentionLocked,
    RetentionSet,
    SchemaRegistered,
    SignatureAdded,
    TagMoved,
    TokenCreated,
    TokenRevoked,
    TypedEvent,
    event_hash,
    parse_event,
    payload_text,
    stored_blobs,
)

# --- strategies ------------------------------------------------------------------------------

_hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
b3 = _hex64.map(lambda h: "blake3:" + h)
s256 = _hex64.map(lambda h: "sha256:" + h)
#: Any text, non-ASCII included: payloads are encoded with ensure_ascii=False.
text = st.text(max_size=12)
sizes = st.integers(0, 2**63 - 1)
namespaces = st.from_regex(r"[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
names = namespaces
versions = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,10}", fullmatch=True)
references = st.builds(lambda n, p, v: f"{n}/{p}:{v}", namespaces, names, versions)
times = st.from_regex(
    r"20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(text, json_values, max_size=4)


def _manifest_map(ns: str, name: str, version: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, "package": {"namespace": ns, "name": name, "version": version}}


#: Manifest maps as far as events are concerned: a package identity and any other keys.
manifests = st.builds(_manifest_map, namespaces, names, versions, json_objects)

locations = st.builds(
    Location,
    text,
    text,
    st.sampled_from(["whole", "packed"]),
    st.sampled_from(["hot", "cold"]),
    st.sampled_from(["available", "archived"]),
    st.none() | sizes,
)


def _blob(namespace: st.SearchStrategy[str | None]) -> st.SearchStrategy[BlobStored]:
    return st.builds(
        BlobStored,
        b3,
        s256,
        sizes,
        st.lists(locations, min_size=1, max_size=3).map(tuple),
        namespace,
    )


blobs_stored = (st.none() | namespaces).flatmap(
    lambda ns: st.lists(_blob(st.just(ns)), min_size=1, max_size=4).map(
        lambda bs: BlobsStored(tuple(bs))
    )
)

#: One strategy per event type (a test below fails if a type has none).
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "blob.stored": _blob(st.none() | namespaces),
    "blobs.stored": blobs_stored,
    "blob.claimed": st.builds(BlobClaimed, b3, namespaces),
    "blob.collected": st.builds(BlobCollected, b3, sizes),
    "blob.tiered": st.builds(BlobTiered, b3, text, locations),
    "blob.restore_requested": st.builds(BlobRestoreRequested, b3, times),
    "token.created": st.builds(
        TokenCreated, text, text, s256, st.lists(text, max_size=3).map(tuple), st.none() | times
    ),
    "token.revoked": st.builds(TokenRevoked, text),
    "namespace.updated": st.builds(NamespaceUpdated, namespaces, json_objects),
    "package.committed": st.builds(PackageCommitted, manifests, b3),
    "tag.moved": st.builds(TagMoved, manifests, b3, sizes, b3),
    "package.deleted": st.builds(
        PackageDeleted, references, sizes, b3, st.none() | st.just("retention") | text
    ),
    "schema.registered": st.builds(SchemaRegistered, text, json_objects, b3),
    "hold.placed": st.builds(HoldPlaced, sizes, references, text),
    "hold.released": st.builds(HoldReleased, sizes, references, text),
    "retention.set": st.builds(
        RetentionSet, namespaces, st.just("") | names, st.none() | json_objects
    ),
    "retention.locked": st.builds(
        RetentionLocked,
        namespaces,
        st.integers(1, 36500) | st.floats(1e-6, 36500, allow_nan=False),
    ),
    "signature.added": st.builds(SignatureAdded, sizes, references, b3, json_objects),
}

_MANIFEST = _manifest_map("ci", "app", "1", {"files": [], "metadata": {"ü": 1}})
_LOC = Location("local", "packs/ab/cd", "packed", "hot", "available", 512)

#: One example of every event type, every optional payload key present.
SAMPLES: dict[str, TypedEvent] = {
    e.type: e
    for e in (
        BlobStored("blake3:" + "a" * 64, "sha256:" + "b" * 64, 3, (_LOC,), "ci"),
        BlobsStored(
            (
                BlobStored("blake3:" + "a" * 64, "sha256:" + "b" * 64, 3, (_LOC,), "ci"),
                BlobStored("blake3:" + "c" * 64, "sha256:" + "d" * 64, 4, (_LOC,), "ci"),
            )
        ),
        BlobClaimed("blake3:" + "a" * 64, "qa"),
        BlobCollected("blake3:" + "a" * 64, 3),
        BlobTiered("blake3:" + "a" * 64, "local", _LOC),
        BlobRestoreRequested("blake3:" + "a" * 64, "2026-01-01T00:00:00.000000Z"),
        TokenCreated("tok1", "bot", "sha256:" + "e" * 64, ("ci:read",), None),
        TokenRevoked("tok1"),
        NamespaceUpdated("ci", {"anonymous_read": True, "quota_bytes": None, "movable_tags": []}),
        PackageCommitted(_MANIFEST, "blake3:" + "f" * 64),
        TagMoved(_MANIFEST, "blake3:" + "f" * 64, 7, "blake3:" + "0" * 64),
        PackageDeleted("ci/app:1", 7, "blake3:" + "f" * 64, "retention"),
        SchemaRegistered("ci.build.v1", {"type": "object"}, "blake3:" + "1" * 64),
        HoldPlaced(7, "ci/app:1", "case 1"),
        HoldReleased(12, "ci/app:1", "closed"),
        RetentionSet("ci", "app", {"keep_last": 1, "keep_days": None, "keep_where": None}),
        RetentionLocked("ci", 2.5),
        SignatureAdded(
            7,
            "ci/app:1",
            "blake3:" + "f" * 64,
            {"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": []},
        ),
    )
}


def test_every_event_type_has_a_strategy_and_a_sample() -> None:
    assert set(STRATEGIES) == set(EVENT_CLASSES) == set(SAMPLES)
    for kind, cls in EVENT_CLASSES.items():
        assert cls.type == kind and type(SAMPLES[kind]) is cls


def test_every_event_class_is_in_the_table() -> None:
    """A new class in model/events.py is parsed, projected and documented only through it."""
    classes = {
        c
        for _, c in inspect.getmembers(events, inspect.isclass)
        if dataclasses.is_dataclass(c) and isinstance(getattr(c, "type", None), str)
    }
    assert classes == set(EVENT_CLASSES.values())


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_from_payload_parses_what_to_payload_builds(kind: str, data: st.DataObject) -> None:
    event = data.draw(STRATEGIES[kind])
    cls = EVENT_CLASSES[kind]
    payload = event.to_payload()
    assert cls.from_payload(payload, event.subject) == event
    # What a replay sees: the stored canonical text, parsed again.
    text_ = payload_text(payload)
    logged = json.loads(text_)
    again = parse_event(kind, event.subject, logged)
    assert again == event
    assert (again.subject, payload_text(again.to_payload())) == (event.subject, text_)


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_a_logged_record_round_trips_its_json_form(kind: str, data: st.DataObject) -> None:
    event = data.draw(STRATEGIES[kind])
    seq, time = data.draw(st.integers(1, 2**40)), data.draw(times)
    payload = event.to_payload()
    digest = event_hash(seq, time, "ci:bot", kind, event.subject, payload_text(payload), GENESIS)
    record = Event(seq, time, "ci:bot", kind, event.subject, payload, GENESIS, digest)
    served = json.loads(json.dumps(record.to_json(), ensure_ascii=False))
    again = Event.from_json(served)
    assert again == record and again.computed_hash() == digest
    assert again.typed() == event


def test_payload_text_is_canonical() -> None:
    assert payload_text({"b": [1, 2.5], "a": "é", "c": None}) == '{"a":"é","b":[1,2.5],"c":null}'


def test_optional_keys_are_omitted_or_null_as_always() -> None:
    assert PackageDeleted("ci/app:1", 1, "d").to_payload() == {"version_id": 1, "digest": "d"}
    loc = Location("local", "k", "whole", "hot", "available")
    assert "offset" not in loc.to_json()
    stored = BlobStored("b", "s", 1, (loc,), None).to_payload()
    assert stored["namespace"] is None
    assert RetentionLocked("ci", 1.0).to_payload()["keep_days"] == 1
    assert json.dumps(RetentionLocked("ci", 1.0).to_payload()["keep_days"]) == "1"
    assert RetentionSet("ci", "", None).to_payload() == {
        "namespace": "ci",
        "package": "",
        "policy": None,
    }


def test_subjects() -> None:
    assert SAMPLES["package.committed"].subject == "ci/app:1"
    assert SAMPLES["tag.moved"].subject == "ci/app:1"
    assert RetentionSet("ci", "", None).subject == "ci"
    assert RetentionSet("ci", "app", None).subject == "ci/app"
    assert SAMPLES["blobs.stored"].subject == "ci"
    none = BlobStored("b", "s", 1, (_LOC,), None)
    assert BlobsStored((none, none)).subject == ""


# --- older shapes and bad payloads -------------------------------------------------------------


def test_older_shapes_parse() -> None:
    """A blob.stored from before namespaces; settings from before quotas and movable tags."""
    old = {
        "blake3": "b",
        "sha256": "s",
        "size": 1,
        "locations": [_LOC.to_json() | {"offset": None}],
    }
    blob = parse_event("blob.stored", "b", old)
    assert blob == BlobStored(
        "b", "s", 1, (Location("local", "packs/ab/cd", "packed", "hot", "available"),), None
    )
    settings_ = {"namespace": "old", "settings": {"anonymous_read": True}}
    updated = parse_event("namespace.updated", "old", settings_)
    assert isinstance(updated, NamespaceUpdated)
    assert updated.settings == {"anonymous_read": True}  # the document as logged


@pytest.mark.parametrize(
    ("kind", "payload", "problem"),
    [
        ("blob.collected", {"blake3": "b"}, "no 'size'"),
        ("blob.collected", {"blake3": "b", "size": True}, "'size' is bool, not int"),
        ("blob.collected", {"blake3": "b", "size": 1.0}, "'size' is float, not int"),
        ("token.created", {"id": "t", "name": "n", "secret_hash": "h", "scopes": [1]}, "scopes"),
        ("retention.set", {"namespace": "ci", "package": "", "policy": []}, "'policy' is list"),
        ("blobs.stored", {"blobs": []}, "at least one blob"),
        ("nonsense.happened", {}, "unknown event type"),
    ],
)
def test_bad_payloads_raise_value_error(kind: str, payload: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_event(kind, "s", payload)


def test_blobs_stored_lists_one_namespace() -> None:
    a, b = (BlobStored("b", "s", 1, (_LOC,), ns) for ns in ("ci", "qa"))
    with pytest.raises(ValueError, match="one namespace"):
        BlobsStored((a, b))


def test_typed_names_the_seq() -> None:
    record = Event(9, "t", "a", "blob.collected", "b", {"blake3": "b"}, GENESIS, "h")
    with pytest.raises(ValueError, match=r"event 9: malformed blob\.collected payload"):
        record.typed()


def test_stored_blobs() -> None:
    single, batch = SAMPLES["blob.stored"], SAMPLES["blobs.stored"]
    assert isinstance(batch, BlobsStored)
    assert stored_blobs(single) == (single,)
    assert stored_blobs(batch) == batch.blobs
    assert stored_blobs(SAMPLES["blob.claimed"]) == ()


def test_from_json_refuses_mistyped_fields() -> None:
    body = Event(1, "t", "a", "token.revoked", "x", {"id": "x"}, GENESIS, "h").to_json()
    assert Event.from_json(body).payload == {"id": "x"}
    with pytest.raises(ValueError, match="'seq' is str"):
        Event.from_json(body | {"seq": "1"})
