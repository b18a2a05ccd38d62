"""The stored tree: the same roots and proofs as the tree recomputed from the events,
filled idempotently, dropped by rebuild, and never trusted by the audit.

Tampering goes behind the registry's back, through SQL on the real database,
as someone with database access would."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import delete, func, select, update

from artifactstore.controlplane import eventlog, tlog
from artifactstore.controlplane.db.tables import chain_head, events, tlog_nodes
from artifactstore.errors import ChainBroken, InvalidInput, ProofInvalid
from artifactstore.model.blob_events import TokenRevoked
from artifactstore.model.events import GENESIS, event_hash
from artifactstore.model.tlog import Checkpoint, entry_of
from artifactstore.provenance import keys, merkle, verify_checkpoint
from artifactstore.provenance.logproofs import verify_consistency, verify_inclusion
from artifactstore.store import Store

pytestmark = pytest.mark.configs("embedded", "scaleout")


def append(store: Store, count: int) -> None:
    with store.db.write() as conn:
        eventlog.append_many(conn, [TokenRevoked(f"t{i}") for i in range(count)], "test")


def recomputed(store: Store) -> merkle.MemoryTree:
    with store.db.read() as conn:
        rows = conn.execute(select(events.c.hash).order_by(events.c.seq)).scalars().all()
    return merkle.MemoryTree(merkle.leaf_hash(entry_of(h)) for h in rows)


def test_roots_and_proofs_match_the_recomputed_tree(store: Store) -> None:
    sizes = [1, 15, 16, 17, 33, 200]
    for total in sizes:
        append(store, total - (recomputed(store).size))
        truth = recomputed(store)
        cp = verify_checkpoint(store.log_checkpoint(), _public(store))
        assert (cp.size, cp.root) == (total, truth.root())
        for seq in sorted({1, total // 2 + 1, total}):
            for size in sorted({seq, total}):
                proof = store.log_inclusion(seq, size)
                assert list(proof.hashes) == merkle.inclusion_proof(seq - 1, size, truth)
        for old in sorted({1, max(1, total // 3), total}):
            extends = store.log_consistency(old, total)
            assert list(extends.hashes) == merkle.consistency_proof(old, total, truth)
            old_cp = Checkpoint(cp.origin, old, truth.root(old))
            verify_consistency(old_cp, cp, extends)
    with store.db.read() as conn:
        assert tlog.filled_size(conn) == 192  # 200 rounded down to whole groups of 16
        rows = conn.execute(select(func.count()).select_from(tlog_nodes)).scalar()
    assert rows == 12 + 6 + 3 + 1 + 0  # 16-, 32-, 64- and 128-entry subtrees of 192


def _public(store: Store) -> keys.PublicKey:
    return keys.public_key_from_pem(store.log_key().pem.encode())


def test_fill_is_idempotent_and_rebuild_drops_the_tree(store: Store) -> None:
    append(store, 100)
    first = store.log_checkpoint()
    assert tlog.fill(store.db) == 96 and tlog.fill(store.db) == 96
    with store.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(tlog_nodes)).scalar_one() > 0
    store.rebuild()
    with store.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(tlog_nodes)).scalar() == 0
    assert store.log_checkpoint() == first  # refilled on demand, same signed note


def test_sizes_out_of_range_are_refused(store: Store) -> None:
    append(store, 5)
    for call in (
        lambda: store.log_inclusion(0),
        lambda: store.log_inclusion(6),
        lambda: store.log_inclusion(3, 2),
        lambda: store.log_inclusion(1, 6),
        lambda: store.log_consistency(0, 5),
        lambda: store.log_consistency(4, 3),
        lambda: store.log_consistency(1, 6),
    ):
        with pytest.raises(InvalidInput):
            call()


def _checkpoint(store: Store) -> Checkpoint:
    return verify_checkpoint(store.log_checkpoint(), _public(store))


def test_audit_passes_on_an_honest_log(store: Store) -> None:
    append(store, 40)
    early = _checkpoint(store)
    append(store, 30)
    late = _checkpoint(store)
    report = store.log_audit([("early", early), ("late", late), ("empty", _empty(store))])
    assert report.ok, report.to_json()
    assert report.size == 70


def _empty(store: Store) -> Checkpoint:
    return Checkpoint(store.settings.log_origin, 0, merkle.EMPTY_ROOT)


def test_audit_catches_a_cut_tail(store: Store) -> None:
    append(store, 50)
    saved = _checkpoint(store)
    with store.db.write() as conn:  # delete the newest events and move the chain head back
        conn.execute(delete(events).where(events.c.seq > 45))
        tip = conn.execute(select(events.c.hash).where(events.c.seq == 45)).scalar_one()
        conn.execute(update(chain_head).values(seq=45, hash=tip))
    assert store.verify_chain() == 45  # the chain alone sees nothing wrong
    report = store.log_audit([("saved", saved)])
    assert not report.ok
    assert "cut off" in (report.checkpoints[0].problem or "")
    # the stored nodes of the lost entries are reported too
    assert any("past the log's end" in p for p in report.problems)


def test_audit_catches_a_rewritten_chain(store: Store) -> None:
    append(store, 50)
    saved = _checkpoint(store)
    rewrite_chain_from(store, 10)
    assert store.verify_chain() == 50  # recomputed hashes: the chain verifies
    report = store.log_audit([("saved", saved)])
    assert "rewritten" in (report.checkpoints[0].problem or "")
    # the node cache still holds the old tree: the audit trusts the rows, not the cache
    assert any("disagrees with the events" in p for p in report.problems)
    # and a proof from the stored tree does not verify against the rewritten events
    proof = store.log_inclusion(12, 50)
    with store.db.read() as conn:
        entry = conn.execute(select(events.c.hash).where(events.c.seq == 12)).scalar_one()
    with pytest.raises(ProofInvalid, match="root"):
        verify_inclusion(entry, proof, saved)


def test_audit_catches_an_event_edited_without_its_hash(store: Store) -> None:
    append(store, 20)
    saved = _checkpoint(store)
    with store.db.write() as conn:
        conn.execute(update(events).where(events.c.seq == 7).values(actor="mallory"))
    with pytest.raises(ChainBroken):
        store.verify_chain()
    report = store.log_audit([("saved", saved)])
    assert report.checkpoints[0].problem is None  # the entries are unchanged...
    assert any(p.startswith("chain_broken") for p in report.problems)  # ...but not the log
    assert not report.ok


def test_audit_reports_an_altered_node(store: Store) -> None:
    append(store, 64)
    saved = _checkpoint(store)
    with store.db.write() as conn:
        conn.execute(
            update(tlog_nodes)
            .where(tlog_nodes.c.level == 5, tlog_nodes.c.idx == 0)
            .values(hash=hashlib.sha256(b"forged").digest())
        )
    report = store.log_audit([("saved", saved)])
    assert report.checkpoints[0].problem is None
    assert any("node (5, 0)" in p for p in report.problems)


def rewrite_chain_from(store: Store, seq: int) -> None:
    """Edit event ``seq`` and recompute every later hash, as an attacker with the
    database would: the chain verifies afterwards."""
    with store.db.write() as conn:
        rows = conn.execute(select(events).order_by(events.c.seq)).all()
        prev = GENESIS
        for r in rows:
            actor = "mallory" if r.seq == seq else r.actor
            if r.seq >= seq:
                h = event_hash(r.seq, r.time, actor, r.type, r.subject, r.payload, prev)
                conn.execute(
                    update(events)
                    .where(events.c.seq == r.seq)
                    .values(actor=actor, prev_hash=prev, hash=h)
                )
                prev = h
            else:
                prev = r.hash
        conn.execute(update(chain_head).values(hash=prev))


def test_the_default_key_is_generated_once_with_mode_0600(store: Store) -> None:
    path = store.settings.log_key_path()
    assert not path.exists()
    first = store.log_key()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.with_suffix(".pub").read_text() == first.pem
    with Store.from_config(store.settings) as again:
        assert again.log_key() == first
