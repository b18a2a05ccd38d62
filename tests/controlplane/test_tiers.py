"""Storage tiers in the library: move, restore (with and without a delay), GC, rebuild."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from artifactstore import Store
from artifactstore.controlplane import gc, tiers
from artifactstore.dataplane.layout import blob_key
from artifactstore.errors import CorruptBlob, InvalidInput, RestoreRequired
from artifactstore.model.identity import Digest
from artifactstore.model.records import GcReport
from tests.conftest import FakeClock, make_tree, read_tree
from tests.matrix import StoreConfig
from tests.stored import Stored
from tests.test_rebuild import dump_views

pytestmark = pytest.mark.configs("embedded", "scaleout")

FILES = {"a.txt": "alpha", "b/c.bin": "x" * 100_000}


def _hot(store: Store) -> Stored:
    return Stored.of(store, "local")


def _cold(store: Store) -> Stored:
    return Stored.of(store, "cold")


@pytest.fixture
def store(whole_store: Store) -> Store:
    """These tests follow one blob's bytes at its own key: whole objects, no packs."""
    return whole_store


@pytest.fixture
def pushed(store: Store, tmp_path: Path) -> Store:
    store.push("ci/app:1", [make_tree(tmp_path / "dist", FILES)])
    return store


def _keys(store: Store, ref: str = "ci/app:1") -> set[str]:
    return {blob_key(Digest.parse(b.digest)) for b in store.tier_status(ref)}


def test_move_to_cold_makes_reads_answer_restore_required(pushed: Store, tmp_path: Path) -> None:
    store = pushed
    report = store.tier_move("ci/app:1", "cold")
    assert len(report.changed) == 2 and report.bytes_changed == 100_005
    assert {(b.tier, b.restore_status) for b in report.blobs} == {("cold", "archived")}
    assert _hot(store).blob_keys() == set()  # the hot copies went
    assert _cold(store).blob_keys() == _keys(store)
    with pytest.raises(RestoreRequired) as caught:
        store.pull("ci/app:1", tmp_path / "out")
    assert sorted(caught.value.digests) == sorted(b.digest for b in report.blobs)
    assert caught.value.restore_status == "archived"
    assert not (tmp_path / "out").exists()  # nothing partial
    with pytest.raises(RestoreRequired):
        b"".join(store.read_file("ci/app:1", "a.txt"))
    assert store.verify().ok  # cold bytes are verified where they are
    assert store.show("ci/app:1").file_count == 2  # metadata is untouched


def test_restore_without_delay_is_immediate(pushed: Store, tmp_path: Path) -> None:
    store = pushed
    store.tier_move("ci/app:1", "cold")
    report = store.tier_restore("ci/app:1")
    assert {(b.tier, b.restore_status) for b in report.blobs} == {("hot", "available")}
    store.pull("ci/app:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {k: v.encode() for k, v in FILES.items()}
    assert _cold(store).blob_keys() == set()


def test_restore_completes_after_the_delay(
    clean_env: None, tmp_path: Path, store_config: StoreConfig
) -> None:
    clock = FakeClock()
    with Store.open(
        tmp_path / "home", restore_delay=600, clock=clock, **store_config.overrides()
    ) as store:
        store.push("ci/app:1", [make_tree(tmp_path / "dist", FILES)])
        store.tier_move("ci/app:1", "cold")
        report = store.tier_restore("ci/app:1")
        assert {b.restore_status for b in report.blobs} == {"restoring"}
        assert all(b.restore_ready_at for b in report.blobs)
        with pytest.raises(RestoreRequired) as caught:
            store.pull("ci/app:1", tmp_path / "early")
        assert caught.value.restore_status == "restoring"
        assert "under way" in caught.value.detail
        # Asking again does not push the ready time back.
        again = store.tier_restore("ci/app:1")
        assert again.changed == [] and again.blobs == report.blobs
        clock.advance(599)
        with pytest.raises(RestoreRequired):
            store.pull("ci/app:1", tmp_path / "still-early")
        clock.advance(2)
        store.pull("ci/app:1", tmp_path / "out")  # the first read completes the restore
        assert {b.tier for b in store.tier_status("ci/app:1")} == {"hot"}
        kinds = [e.type for e in store.events()]
        assert kinds.count("blob.restore_requested") == 2
        assert kinds.count("blob.tiered") == 4  # 2 to cold, 2 back


def test_background_completion_finishes_due_restores(
    clean_env: None, tmp_path: Path, store_config: StoreConfig
) -> None:
    clock = FakeClock()
    with Store.open(
        tmp_path / "home", restore_delay=600, clock=clock, **store_config.overrides()
    ) as store:
        store.push("ci/app:1", [make_tree(tmp_path / "dist", FILES)])
        store.tier_move("ci/app:1", "cold")
        store.tier_restore("ci/app:1")
        assert store.complete_restores().changed == []  # not yet due
        clock.advance(601)
        assert len(store.complete_restores().changed) == 2
        assert store.complete_restores().changed == []


def test_unknown_tier_and_missing_version(pushed: Store) -> None:
    with pytest.raises(InvalidInput):
        pushed.tier_move("ci/app:1", "glacier")
    with pytest.raises(Exception, match="does not exist"):
        pushed.tier_move("ci/app:2", "cold")


def test_moving_twice_is_a_no_op(pushed: Store) -> None:
    assert len(pushed.tier_move("ci/app:1", "cold").changed) == 2
    assert pushed.tier_move("ci/app:1", "cold").changed == []
    assert pushed.tier_move("ci/app:1", "hot").bytes_changed == 100_005


def test_damaged_bytes_are_not_copied_to_the_other_tier(pushed: Store, tmp_path: Path) -> None:
    store = pushed
    victim = next(b for b in store.tier_status("ci/app:1") if b.size == 5)  # a.txt
    _hot(store).replace(blob_key(Digest.parse(victim.digest)), b"ALPHA")
    with pytest.raises(CorruptBlob):
        store.tier_move("ci/app:1", "cold")
    assert blob_key(Digest.parse(victim.digest)) not in _cold(store).blob_keys()
    statuses = {b.digest: b.tier for b in store.tier_status("ci/app:1")}
    assert statuses[victim.digest] == "hot"  # still recorded where the damage is


def test_gc_collects_cold_blobs_and_cold_orphans(pushed: Store, tmp_path: Path) -> None:
    store = pushed
    store.tier_move("ci/app:1", "cold")
    cold = _cold(store)
    # A crash after copying and before recording leaves an orphan at the target.
    cold.replace(blob_key(Digest.parse("blake3:" + "ab" * 32)), b"orphan")
    store.delete("ci/app:1")
    report = store.gc(grace=0)
    assert len(report.collected) == 2 and report.orphans_removed == 1
    assert cold.blob_keys() == set()
    assert store.verify().ok


def test_gc_removes_the_hot_copy_a_crashed_move_left(pushed: Store, tmp_path: Path) -> None:
    store = pushed
    hot = _hot(store)
    keys = _keys(store)
    saved = {k: hot.read(k) for k in keys}
    store.tier_move("ci/app:1", "cold")
    for k, data in saved.items():  # as if the move died before deleting the old copies
        hot.replace(k, data)
    report = store.gc(grace=0)
    assert report.orphans_removed == 2 and report.collected == []
    assert hot.blob_keys() == set() and _cold(store).blob_keys() == keys


def test_gc_fails_closed_when_a_cold_blob_is_missing(pushed: Store, tmp_path: Path) -> None:
    store = pushed
    store.tier_move("ci/app:1", "cold")
    key = sorted(_keys(store))[0]
    _cold(store).remove(key)
    with pytest.raises(CorruptBlob):
        store.gc(grace=0)
    assert not store.verify().ok


@pytest.mark.parametrize("when", ["before the copy", "after the copy"])
def test_move_racing_gc_never_records_missing_bytes(
    pushed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """GC collects the blobs while a move is copying them: the move records nothing,
    and whatever copies it left are orphans the next GC removes."""
    store = pushed
    blobs = sorted(b.digest for b in store.tier_status("ci/app:1"))
    store.delete("ci/app:1")
    real_transfer = store.plane.transfer
    decided: list[str] = []

    def collect() -> None:
        report = GcReport(dry_run=False, grace_seconds=0)
        decided_at = time.time() + 1
        with store.db.write() as conn:
            keys = gc.decide(conn, store.plane, report, cutoff=decided_at, actor="gc")
        decided.extend(report.collected)
        for key, backend in keys:
            with store.db.write() as conn:
                gc.unlink_if_untouched(conn, store.plane, key, decided_at, backend)

    def racing_transfer(*args: Any, **kw: Any) -> None:
        if when == "before the copy" and not decided:
            collect()
        real_transfer(*args, **kw)
        if when == "after the copy" and not decided:
            collect()

    monkeypatch.setattr(store.plane, "transfer", racing_transfer)
    report = tiers.move(store.db, store.plane, blobs, "cold", "test")
    assert report.changed == [] and report.blobs == []
    assert sorted(decided) == blobs
    with store.db.read() as conn:
        assert tiers.status(conn, blobs) == []
    store.gc(grace=0)
    assert _cold(store).blob_keys() == set()
    assert _hot(store).blob_keys() == set()
    assert store.verify().ok


def test_rebuild_reproduces_tier_state(
    clean_env: None, tmp_path: Path, store_config: StoreConfig
) -> None:
    with Store.open(tmp_path / "home", restore_delay=3600, **store_config.overrides()) as store:
        store.push("ci/app:1", [make_tree(tmp_path / "d1", FILES)])
        store.push("ci/app:2", [make_tree(tmp_path / "d2", {"z.txt": "zed"})])
        store.tier_move("ci/app:1", "cold")
        store.tier_move("ci/app:2", "cold")
        store.tier_move("ci/app:2", "hot")
        store.tier_restore("ci/app:1")  # stays "restoring" for an hour
        before = dump_views(store)
        store.rebuild()
        assert dump_views(store) == before
        assert {b.restore_status for b in store.tier_status("ci/app:1")} == {"restoring"}
