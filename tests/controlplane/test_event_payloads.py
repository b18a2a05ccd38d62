"""Typed events write the log the untyped code wrote, and replay the logs it left.

The chain hash covers each payload's canonical JSON, so a typed event must
build byte for byte the payload (and subject) that the call sites built
before events were typed. Two proofs:

* a property test per event type: ``LEGACY`` holds the payload code of the
  call sites as it was at commit 085d047 (copied, not imported), and the
  typed event built from the same inputs must encode to the same text;
* ``data/log_085d047.json``: a log written by that commit (every event type,
  packed and whole blobs, blobs without a namespace, non-ASCII text, and two
  events in the shapes of still older logs) with the views it projected. It
  must verify, replay to exactly those views, and re-encode byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.projection import PROJECTED_TYPES
from artifactstore.model.events import (
    EVENT_CLASSES,
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
    TagMoved,
    TokenCreated,
    TokenRevoked,
    TypedEvent,
    payload_text,
)
from artifactstore.model.identity import Reference
from artifactstore.model.records import NamespaceSettings
from artifactstore.model.retention import RetentionPolicy, days_json
from artifactstore.store import Store
from tests.model.test_events import b3, json_objects, manifests, namespaces, s256, sizes, text
from tests.test_rebuild import dump_views

FIXTURE = Path(__file__).parent / "data" / "log_085d047.json"

Legacy = tuple[str, str, dict[str, Any]]  # (type, subject, payload) as the old call site built it

#: Event types younger than 085d047: no old call site or log to match (their round
#: trips are ``tests/model/test_events.py``'s).
YOUNGER = {"signature.added"}


def test_the_projection_knows_every_event_type() -> None:
    assert set(EVENT_CLASSES) == PROJECTED_TYPES


# --- the call sites' payload code at 085d047 -------------------------------------------------


def legacy_location(
    backend: str, key: str, representation: str, tier: str, status: str, offset: int | None
) -> dict[str, Any]:
    loc: dict[str, Any] = {
        "backend": backend,
        "key": key,
        "representation": representation,
        "retrieval_tier": tier,
        "restore_status": status,
    }
    if offset is not None:
        loc["offset"] = offset
    return loc


LocArgs = tuple[str, str, str, str, str, int | None]
loc_args = st.tuples(
    text,
    text,
    st.sampled_from(["whole", "packed"]),
    st.sampled_from(["hot", "cold"]),
    st.sampled_from(["available", "archived"]),
    st.none() | sizes,
)
BlobArgs = tuple[str, str, int, LocArgs]
blob_args = st.tuples(b3, s256, sizes, loc_args)


def legacy_entry(b: BlobArgs, namespace: str | None) -> dict[str, Any]:
    name, sha256, size, loc = b
    return {
        "blake3": name,
        "sha256": sha256,
        "size": size,
        "locations": [legacy_location(*loc)],
        "namespace": namespace,
    }


def typed_blob(b: BlobArgs, namespace: str | None) -> BlobStored:
    name, sha256, size, loc = b
    return BlobStored(name, sha256, size, (Location(*loc),), namespace)


def blob_stored(b: BlobArgs, namespace: str | None) -> tuple[TypedEvent, Legacy]:
    entry = legacy_entry(b, namespace)
    return typed_blob(b, namespace), ("blob.stored", b[0], entry)


def blobs_stored(bs: list[BlobArgs], namespace: str | None) -> tuple[TypedEvent, Legacy]:
    entries = [legacy_entry(b, namespace) for b in bs]
    typed = BlobsStored(tuple(typed_blob(b, namespace) for b in bs))
    return typed, ("blobs.stored", namespace or "", {"blobs": entries})


def blob_claimed(name: str, namespace: str) -> tuple[TypedEvent, Legacy]:
    return BlobClaimed(name, namespace), (
        "blob.claimed",
        name,
        {"blake3": name, "namespace": namespace},
    )


def blob_collected(blake3: str, size: int) -> tuple[TypedEvent, Legacy]:
    return BlobCollected(blake3, size), (
        "blob.collected",
        blake3,
        {"blake3": blake3, "size": size},
    )


def blob_tiered(blake3: str, backend: str, loc: LocArgs) -> tuple[TypedEvent, Legacy]:
    payload = {"blake3": blake3, "from": backend, "location": legacy_location(*loc)}
    return BlobTiered(blake3, backend, Location(*loc)), ("blob.tiered", blake3, payload)


def blob_restore_requested(blake3: str, ready_at: str) -> tuple[TypedEvent, Legacy]:
    return BlobRestoreRequested(blake3, ready_at), (
        "blob.restore_requested",
        blake3,
        {"blake3": blake3, "ready_at": ready_at},
    )


def token_created(
    token_id: str, name: str, secret_hash: str, checked: list[str], expires_at: str | None
) -> tuple[TypedEvent, Legacy]:
    payload = {
        "id": token_id,
        "name": name,
        "secret_hash": secret_hash,
        "scopes": list(checked),
        "expires_at": expires_at,
    }
    typed = TokenCreated(token_id, name, secret_hash, tuple(checked), expires_at)
    return typed, ("token.created", token_id, payload)


def token_revoked(token_id: str) -> tuple[TypedEvent, Legacy]:
    return TokenRevoked(token_id), ("token.revoked", token_id, {"id": token_id})


def namespace_updated(
    namespace: str, anonymous: bool, quota: int | None, tags: list[str]
) -> tuple[TypedEvent, Legacy]:
    settings_ = NamespaceSettings(anonymous, quota, tuple(sorted(set(tags))))
    payload = {"namespace": namespace, "settings": settings_.to_json()}
    typed = NamespaceUpdated(namespace, settings_.to_json())
    return typed, ("namespace.updated", namespace, payload)


def _ref(manifest: dict[str, Any]) -> Reference:
    p = manifest["package"]
    return Reference.of(p["namespace"], p["name"], p["version"])


def package_committed(manifest: dict[str, Any], digest: str) -> tuple[TypedEvent, Legacy]:
    payload: dict[str, Any] = {"manifest": manifest, "digest": digest}
    return PackageCommitted(manifest, digest), (
        "package.committed",
        str(_ref(manifest)),
        payload,
    )


def tag_moved(
    manifest: dict[str, Any], digest: str, previous_id: int, previous_digest: str
) -> tuple[TypedEvent, Legacy]:
    payload: dict[str, Any] = {"manifest": manifest, "digest": digest}
    payload["previous"] = {"version_id": previous_id, "digest": previous_digest}
    typed = TagMoved(manifest, digest, previous_id, previous_digest)
    return typed, ("tag.moved", str(_ref(manifest)), payload)


def package_deleted(
    ref: str, version_id: int, digest: str, cause: str | None
) -> tuple[TypedEvent, Legacy]:
    extra = {} if cause is None else {"cause": cause}
    payload = {"version_id": version_id, "digest": digest, **extra}
    typed = PackageDeleted(ref, version_id, digest, cause)
    return typed, ("package.deleted", ref, payload)


def schema_registered(
    variant: str, schema: dict[str, Any], digest: str
) -> tuple[TypedEvent, Legacy]:
    payload = {"id": variant, "schema": schema, "digest": digest}
    return SchemaRegistered(variant, schema, digest), ("schema.registered", variant, payload)


def hold_placed(version_id: int, ref: str, reason: str) -> tuple[TypedEvent, Legacy]:
    payload = {"version_id": version_id, "reference": ref, "reason": reason}
    return HoldPlaced(version_id, ref, reason), ("hold.placed", ref, payload)


def hold_released(hold_id: int, ref: str, reason: str) -> tuple[TypedEvent, Legacy]:
    payload = {"hold_id": hold_id, "reference": ref, "reason": reason}
    return HoldReleased(hold_id, ref, reason), ("hold.released", ref, payload)


def retention_set(
    namespace: str, package: str | None, policy: RetentionPolicy | None
) -> tuple[TypedEvent, Legacy]:
    payload = {
        "namespace": namespace,
        "package": package or "",
        "policy": None if policy is None else policy.to_json(),
    }
    subject = namespace if package is None else f"{namespace}/{package}"
    document = None if policy is None else policy.to_json()
    return RetentionSet(namespace, package or "", document), ("retention.set", subject, payload)


def retention_locked(namespace: str, days: float) -> tuple[TypedEvent, Legacy]:
    payload = {"namespace": namespace, "keep_days": days_json(days)}
    return RetentionLocked(namespace, days), ("retention.locked", namespace, payload)


refs = st.builds(lambda n, p, v: f"{n}/{p}:{v}", namespaces, namespaces, st.just("1.0"))
days = st.integers(1, 36500).map(float) | st.floats(1e-6, 36500, allow_nan=False)
policies = st.none() | st.builds(
    lambda last, d, where: RetentionPolicy.of(keep_last=last, keep_days=d, keep_where=where),
    st.integers(1, 100),
    st.none() | days,
    st.none() | st.dictionaries(st.sampled_from(["branch", "n"]), text, min_size=1, max_size=2),
)
optional_ns = st.none() | namespaces

#: Per event type: the typed event and the old call site's (type, subject, payload).
LEGACY: dict[str, st.SearchStrategy[tuple[TypedEvent, Legacy]]] = {
    "blob.stored": st.builds(blob_stored, blob_args, optional_ns),
    "blobs.stored": st.builds(
        blobs_stored, st.lists(blob_args, min_size=2, max_size=4), optional_ns
    ),
    "blob.claimed": st.builds(blob_claimed, b3, namespaces),
    "blob.collected": st.builds(blob_collected, b3, sizes),
    "blob.tiered": st.builds(blob_tiered, b3, text, loc_args),
    "blob.restore_requested": st.builds(blob_restore_requested, b3, text),
    "token.created": st.builds(
        token_created, text, text, s256, st.lists(text, max_size=3), st.none() | text
    ),
    "token.revoked": st.builds(token_revoked, text),
    "namespace.updated": st.builds(
        namespace_updated,
        namespaces,
        st.booleans(),
        st.none() | st.integers(0, 2**63 - 1),
        st.lists(st.sampled_from(["latest", "stable", "nightly"]), max_size=3),
    ),
    "package.committed": st.builds(package_committed, manifests, b3),
    "tag.moved": st.builds(tag_moved, manifests, b3, sizes, b3),
    "package.deleted": st.builds(
        package_deleted, refs, sizes, b3, st.none() | st.just("retention")
    ),
    "schema.registered": st.builds(schema_registered, text, json_objects, b3),
    "hold.placed": st.builds(hold_placed, sizes, refs, text),
    "hold.released": st.builds(hold_released, sizes, refs, text),
    "retention.set": st.builds(retention_set, namespaces, st.none() | namespaces, policies),
    "retention.locked": st.builds(retention_locked, namespaces, days),
}


def _legacy_text(payload: dict[str, Any]) -> str:
    """The old encoder's options, spelled out (as ``client.verify_chain`` spells them)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_every_event_type_has_a_legacy_form() -> None:
    assert set(LEGACY) == set(EVENT_CLASSES) - YOUNGER


@pytest.mark.parametrize("kind", sorted(LEGACY))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_typed_payload_is_the_legacy_payload_byte_for_byte(kind: str, data: st.DataObject) -> None:
    typed, (type_, subject, payload) = data.draw(LEGACY[kind])
    assert (typed.type, typed.subject) == (type_, subject) == (kind, subject)
    assert payload_text(typed.to_payload()) == _legacy_text(payload)
    parsed = EVENT_CLASSES[kind].from_payload(json.loads(_legacy_text(payload)), subject)
    assert parsed == typed


# --- a log written before events were typed --------------------------------------------------


def _fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


def _cell(value: Any) -> Any:
    return bytes.fromhex(value["hex"]) if isinstance(value, dict) else value


def test_the_fixture_holds_every_event_type() -> None:
    assert {e["type"] for e in _fixture()["events"]} == set(EVENT_CLASSES) - YOUNGER


def test_an_old_log_re_encodes_byte_for_byte() -> None:
    log = _fixture()
    older = set(log["legacy_shapes"])
    for row in log["events"]:
        record = Event.from_json(row | {"payload": json.loads(row["payload"])})
        assert record.computed_hash() == row["hash"]
        typed = record.typed()
        assert typed.type == row["type"]
        if row["seq"] in older:
            continue
        assert (typed.subject, payload_text(typed.to_payload())) == (row["subject"], row["payload"])


def test_older_shapes_in_the_fixture_parse_with_their_defaults() -> None:
    log = _fixture()
    by_seq = {e["seq"]: e for e in log["events"]}
    first, second = (by_seq[s] for s in log["legacy_shapes"])
    blob = Event.from_json(first | {"payload": json.loads(first["payload"])}).typed()
    assert isinstance(blob, BlobStored) and blob.namespace is None
    assert "namespace" not in json.loads(first["payload"])
    ns = Event.from_json(second | {"payload": json.loads(second["payload"])}).typed()
    assert isinstance(ns, NamespaceUpdated) and ns.settings == {"anonymous_read": True}


def test_an_old_log_verifies_and_replays_to_the_views_it_projected(tmp_path: Path) -> None:
    log = _fixture()
    rows = log["events"]
    with Store.open(tmp_path / "home") as store:
        assert store.events() == []
        with store.db.write() as conn:
            conn.execute(insert(t.events), rows)
            conn.execute(
                insert(t.chain_head).values(id=1, seq=rows[-1]["seq"], hash=rows[-1]["hash"])
            )
        assert store.verify_chain() == len(rows)
        assert store.rebuild() == len(rows)
        expected = {
            name: [tuple(_cell(v) for v in row) for row in table]
            for name, table in log["views"].items()
        }
        # ``versions.meta`` (0006) is younger than the fixture: the pairs of its own
        # ``version_meta`` rows, which the projection keeps equal to it.
        pairs: dict[int, dict[str, str]] = {}
        for version_id, key, value in expected["version_meta"]:
            pairs.setdefault(version_id, {})[key] = value
        expected["versions"] = [(*row, pairs.get(row[0])) for row in expected["versions"]]
        expected["signatures"] = []  # a view younger than the fixture (0009), empty here
        assert dump_views(store) == expected
        served = [e.to_json() for e in store.events()]
        assert [e["payload"] for e in served] == [json.loads(r["payload"]) for r in rows]
