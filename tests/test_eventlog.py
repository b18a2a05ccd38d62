"""The hash-chained event log (SPEC section 8): tampering with the SQLite file is caught.

Each test edits the database behind the store's back with raw ``sqlite3``, as
someone with file access would, and expects ``verify_chain`` to name the first
bad event.

What a chain alone cannot catch (SPEC section 8), so no test asserts it:
cutting events off the end *and* rewriting ``chain_head`` to the new tip, or
rewriting the whole chain from some event on (recomputing every later hash and
the head). Both leave a self-consistent chain; only signed checkpoints exported
outside the database (tree size + root hash, checked with consistency proofs)
expose them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from artifactstore.dataplane.layout import database_path
from artifactstore.errors import ChainBroken
from artifactstore.model.events import (
    EVENT_CLASSES,
    BlobsStored,
    BlobStored,
    event_hash,
    stored_blobs,
)
from artifactstore.model.retention import (
    RetentionPolicy,
)
from artifactstore.provenance import keys
from artifactstore.store import Store
from tests.conftest import Cli, make_tree

pytestmark = pytest.mark.configs("embedded", "scaleout")

_COLUMNS = "time, actor, type, subject, payload, prev_hash, hash"


@pytest.fixture
def busy(store: Store, tmp_path: Path) -> Store:
    """A store whose log holds every kind of event the store writes (about ten)."""
    store.register_schema("ci.build.v1", {"type": "object"})
    store.push("ci/app:1", [make_tree(tmp_path / "a", {"x": "1", "y": "2"})])
    store.push("ci/app:2", [make_tree(tmp_path / "b", {"x": "1", "z": "3"})], variant="ci.build.v1")
    store.delete("ci/app:1")
    store.gc(grace=0)
    store.push("ci/app:3", [make_tree(tmp_path / "c", {"w": "4"})])
    assert store.verify_chain() == len(store.events()) >= 8
    return store


def sql(store: Store, statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement on the store's database directly (behind the store's back,
    through a driver connection of its own) and commit it; ``?`` marks parameters."""
    url = store.settings.database_url
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_path(store.settings.home))) as conn, conn:
            return conn.execute(statement, params).fetchall()
    with closing(psycopg.connect(url)) as pg, pg:
        cur = pg.execute(statement.replace("?", "%s"), params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


def last_seq(store: Store) -> int:
    return store.events()[-1].seq


def broken_at(store: Store) -> int:
    with pytest.raises(ChainBroken) as info:
        store.verify_chain()
    return info.value.seq


MIDDLE = 4


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("payload", json.dumps({"forged": True})),
        ("actor", "local:mallory"),
        ("type", "package.deleted"),
        ("time", "2000-01-01T00:00:00.000000Z"),
        ("subject", "ci/other:1"),
    ],
)
def test_edited_field_is_caught_at_that_event(busy: Store, column: str, value: str) -> None:
    sql(busy, f"UPDATE events SET {column} = ? WHERE seq = ?", value, MIDDLE)
    assert broken_at(busy) == MIDDLE


def test_edit_with_recomputed_hash_is_caught_at_the_next_event(busy: Store) -> None:
    (row,) = sql(busy, f"SELECT seq, {_COLUMNS} FROM events WHERE seq = ?", MIDDLE)
    seq, time, _actor, type_, subject, payload, prev, _hash = row
    forged = event_hash(seq, time, "local:mallory", type_, subject, payload, prev)  # type: ignore[arg-type]
    sql(
        busy, "UPDATE events SET actor = ?, hash = ? WHERE seq = ?", "local:mallory", forged, MIDDLE
    )
    assert broken_at(busy) == MIDDLE + 1


def test_deleted_middle_event_is_caught(busy: Store) -> None:
    sql(busy, "DELETE FROM events WHERE seq = ?", MIDDLE)
    assert broken_at(busy) == MIDDLE


def test_deleted_and_renumbered_events_are_caught(busy: Store) -> None:
    sql(busy, "DELETE FROM events WHERE seq = ?", MIDDLE)
    sql(busy, "UPDATE events SET seq = seq - 1 WHERE seq > ?", MIDDLE)
    assert broken_at(busy) == MIDDLE


def test_swapped_events_are_caught_at_the_first(busy: Store) -> None:
    first, second = MIDDLE, MIDDLE + 1
    rows = dict(
        (r[0], r[1:])
        for r in sql(busy, f"SELECT seq, {_COLUMNS} FROM events WHERE seq IN (?, ?)", first, second)
    )
    assignments = ", ".join(f"{c.strip()} = ?" for c in _COLUMNS.split(","))
    sql(busy, f"UPDATE events SET {assignments} WHERE seq = ?", *rows[second], first)
    sql(busy, f"UPDATE events SET {assignments} WHERE seq = ?", *rows[first], second)
    assert broken_at(busy) == first


def test_cut_tail_is_caught_by_the_chain_head(busy: Store) -> None:
    tip = last_seq(busy)
    sql(busy, "DELETE FROM events WHERE seq = ?", tip)
    with pytest.raises(ChainBroken, match="cut off") as info:
        busy.verify_chain()
    assert info.value.seq == tip
    # Cutting the tail AND moving chain_head back to the new tip is not detectable
    # by the chain itself (see the module docstring): no test asserts that gap.


def test_edited_chain_head_is_caught(busy: Store) -> None:
    sql(busy, "UPDATE chain_head SET hash = ?", "blake3:" + "f" * 64)
    assert broken_at(busy) == last_seq(busy)


def test_cli_verify_chain_exits_3_on_tampering(busy: Store, cli: Cli) -> None:
    cli.ok("events", "--verify-chain")
    sql(busy, "UPDATE events SET payload = ? WHERE seq = ?", "{}", MIDDLE)
    result = cli.fails(3, "events", "--verify-chain")
    assert f"event {MIDDLE}" in result.stderr


# --- what the log records --------------------------------------------------------------------


@pytest.fixture
def robot_store(clean_env: None, tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "robot", gc_grace=0.0, actor="ci:robot") as s:
        yield s


def test_every_event_type_is_recorded_with_its_actor(robot_store: Store, tmp_path: Path) -> None:
    store = robot_store
    store.register_schema("ci.build.v1", {"type": "object"})
    pushed = store.push("ci/app:1", [make_tree(tmp_path / "a", {"only": "1"})]).record
    store.push("qa/app:1", [make_tree(tmp_path / "b", {"only": "1"})])  # same bytes: a claim
    store.delete("ci/app:1")
    store.delete("qa/app:1")
    store.gc(grace=0)
    token, secret = store.create_token("bot", ["ci:read"])
    store.revoke_token(token.id)
    store.set_namespace_settings("ci", {"anonymous_read": True})
    kept = store.push("ev/app:1", [make_tree(tmp_path / "c", {"x": "2"})]).record
    store.set_retention("ev", None, RetentionPolicy(keep_last=5))
    store.lock_retention("ev", 1)
    hold = store.place_hold("ev/app:1", "case 1")
    store.release_hold("ev/app:1", "case closed", hold_id=hold.id)
    store.tier_move("ev/app:1", "cold")
    store.tier_restore("ev/app:1")  # no restore delay: moved back within the call
    store.set_namespace_settings("rel", {"movable_tags": ["latest"]})
    store.push("rel/app:latest", [make_tree(tmp_path / "c", {"x": "2"})])
    moved = store.push("rel/app:latest", [make_tree(tmp_path / "d", {"x": "2", "y": "3"})]).record
    two = store.push("ev/app:2", [make_tree(tmp_path / "e", {"p": "4", "q": "5"})]).record
    store.sign("ev/app:2", keys.generate())

    events = store.events()
    assert {e.type for e in events} == set(EVENT_CLASSES), "a type the store writes is untested"
    assert {e.actor for e in events} == {"ci:robot"}
    (blob,) = pushed.manifest.files
    assert [(e.type, e.subject) for e in events] == [
        ("schema.registered", "ci.build.v1"),
        ("blob.stored", str(blob.blake3)),
        ("package.committed", "ci/app:1"),
        ("blob.claimed", str(blob.blake3)),
        ("package.committed", "qa/app:1"),
        ("package.deleted", "ci/app:1"),
        ("package.deleted", "qa/app:1"),
        ("blob.collected", str(blob.blake3)),
        ("token.created", token.id),
        ("token.revoked", token.id),
        ("namespace.updated", "ci"),
        ("blob.stored", str(kept.manifest.files[0].blake3)),
        ("package.committed", "ev/app:1"),
        ("retention.set", "ev"),
        ("retention.locked", "ev"),
        ("hold.placed", "ev/app:1"),
        ("hold.released", "ev/app:1"),
        ("blob.tiered", str(kept.manifest.files[0].blake3)),
        ("blob.restore_requested", str(kept.manifest.files[0].blake3)),
        ("blob.tiered", str(kept.manifest.files[0].blake3)),
        ("namespace.updated", "rel"),
        ("blob.claimed", str(kept.manifest.files[0].blake3)),
        ("package.committed", "rel/app:latest"),
        ("blob.stored", str(moved.manifest.files[1].blake3)),
        ("tag.moved", "rel/app:latest"),
        ("blobs.stored", "ev"),  # several blobs in one transaction: one event
        ("package.committed", "ev/app:2"),
        ("signature.added", "ev/app:2"),
    ]
    batch = events[-3].typed()
    assert isinstance(batch, BlobsStored)
    assert [b.to_payload() for b in batch.blobs] == events[-3].payload["blobs"]
    assert events[-1].payload["digest"] == str(two.digest)  # over the version it signs
    assert sorted(b.blake3 for b in batch.blobs) == sorted(
        str(f.blake3) for f in two.manifest.files
    )
    single = events[1].typed()
    assert isinstance(single, BlobStored) and single.to_payload() == events[1].payload
    assert stored_blobs(single) == (single,) and stored_blobs(events[2].typed()) == ()
    assert stored_blobs(batch) == batch.blobs
    assert {b.namespace for b in batch.blobs} == {"ev"}
    for e in events:  # what was logged is what the typed event builds, byte for byte
        typed = e.typed()
        assert (typed.type, typed.subject, typed.to_payload()) == (e.type, e.subject, e.payload)
    assert events[3].payload == {"blake3": str(blob.blake3), "namespace": "qa"}
    logged = json.dumps([e.to_json() for e in events])
    assert secret not in logged and secret[21:] not in logged  # not even the secret part
    committed = events[2].payload
    assert committed["digest"] == str(pushed.digest)
    assert committed["manifest"] == pushed.manifest.to_map()
    assert store.verify_chain() == len(events)
