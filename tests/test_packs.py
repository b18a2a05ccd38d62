"""A push's small files are stored in one pack: every verb still sees whole blobs."""

from __future__ import annotations

from pathlib import Path

import blake3
import pytest
from sqlalchemy import select

from artifactstore.controlplane.db import tables as t
from artifactstore.dataplane.blobs import PACK_MAX_BLOB
from artifactstore.dataplane.layout import storage_root
from artifactstore.errors import DigestMismatch
from artifactstore.store import Store
from tests.conftest import flip_stored_byte, make_tree, read_tree, stored_span

SMALL = {f"d{i % 3}/f{i}.txt": f"file {i}\n" * (i + 1) for i in range(30)}
BIG = b"B" * (PACK_MAX_BLOB + 1)


def _objects(store: Store, prefix: str = "") -> list[str]:
    return sorted(store.plane.backend.list(prefix))


def _locations(store: Store) -> dict[str, tuple[str, str, int | None]]:
    loc = t.storage_locations
    with store.db.read() as conn:
        rows = conn.execute(
            select(loc.c.blake3, loc.c.key, loc.c.representation, loc.c.pack_offset)
        )
        return {r.blake3: (r.key, r.representation, r.pack_offset) for r in rows}


def _digest(store: Store, ref: str, path: str) -> str:
    return next(str(f.blake3) for f in store.show(ref).manifest.files if f.path.value == path)


def test_small_files_become_one_pack_and_pull_back(store: Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {**SMALL, "big.bin": BIG, "empty": b""})
    store.push("ci/app:1", [src])
    assert len(_objects(store, "packs/")) == 1 and len(_objects(store, "blobs/")) == 1
    reps = {rep for _, rep, _ in _locations(store).values()}
    assert reps == {"packed", "whole"}
    store.pull("ci/app:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    assert b"".join(store.read_file("ci/app:1", "d1/f4.txt")) == SMALL["d1/f4.txt"].encode()
    report = store.verify()
    assert report.ok and report.blobs_checked == 32


def test_a_repush_leaves_no_second_pack(store: Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", SMALL)
    store.push("ci/app:1", [src])
    before = _objects(store)
    store.push("ci/app:2", [src])  # same bytes, new version: nothing new stored
    assert _objects(store) == before
    with store.db.read() as conn:
        leases = {r.key for r in conn.execute(select(t.blob_activity.c.key))}
    assert leases == set(before)  # the dropped pack's lease went with it
    store.push("ci/app:3", [make_tree(tmp_path / "more", {**SMALL, "new.txt": "new"})])
    assert len(_objects(store, "packs/")) == 2  # one new blob: its pack stays
    assert store.verify().ok


def test_damage_inside_a_pack_is_pinned_to_its_blob(store: Store, tmp_path: Path) -> None:
    store.push("ci/app:1", [make_tree(tmp_path / "src", SMALL)])
    victim = _digest(store, "ci/app:1", "d2/f5.txt")
    flip_stored_byte(store, victim, at=3)
    report = store.verify()
    assert [d["digest"] for d in report.damaged] == [victim]
    with pytest.raises(DigestMismatch):
        store.pull("ci/app:1", tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert b"".join(store.read_file("ci/app:1", "d0/f0.txt")) == SMALL["d0/f0.txt"].encode()


def test_gc_keeps_a_pack_while_any_of_its_blobs_lives(store: Store, tmp_path: Path) -> None:
    store.push("ci/app:1", [make_tree(tmp_path / "a", {"only-a": "a" * 50, "shared": "s" * 40})])
    store.push("ci/app:2", [make_tree(tmp_path / "b", {"only-b": "b" * 60, "shared": "s" * 40})])
    packs = _objects(store, "packs/")
    assert len(packs) == 2
    store.delete("ci/app:1")
    report = store.gc(grace=0)
    assert len(report.collected) == 1  # only-a; "shared" is live in ci/app:2
    assert _objects(store, "packs/") == packs  # the first pack still holds "shared"
    assert store.verify().ok
    store.delete("ci/app:2")
    report = store.gc(grace=0)
    assert len(report.collected) == 2
    assert _objects(store) == []
    with store.db.read() as conn:
        assert conn.execute(select(t.blob_activity.c.key)).first() is None


def test_a_packed_blob_moves_between_tiers_as_a_whole_object(store: Store, tmp_path: Path) -> None:
    store.push("ci/app:1", [make_tree(tmp_path / "a", {"x": "x" * 30, "y": "y" * 20})])
    store.push("ci/app:2", [make_tree(tmp_path / "b", {"z": "z" * 10})])
    x = _digest(store, "ci/app:1", "x")
    pack = storage_root(store.settings.home) / stored_span(store, x).key
    store.tier_move("ci/app:1", "cold")
    cold = [p for p in (tmp_path / "home" / "cold").rglob("*") if p.is_file()]
    assert sorted(p.read_bytes() for p in cold) == [b"x" * 30, b"y" * 20]
    assert pack.exists()  # unreferenced now, left to GC's orphan pass
    store.gc(grace=0)
    assert not pack.exists()
    store.tier_restore("ci/app:1")
    store.tier_move("ci/app:1", "hot")
    assert _locations(store)[x][1] == "whole"
    store.pull("ci/app:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"x": b"x" * 30, "y": b"y" * 20}
    assert store.verify().ok


def test_rebuild_restores_pack_offsets(store: Store, tmp_path: Path) -> None:
    store.push("ci/app:1", [make_tree(tmp_path / "src", SMALL)])
    before = _locations(store)
    assert all(offset is not None for _, _, offset in before.values())
    store.rebuild()
    assert _locations(store) == before
    root = storage_root(store.settings.home)
    assert all((root / key).is_file() for key, _, _ in before.values())


def _stored_bytes(store: Store) -> int:
    root = storage_root(store.settings.home)
    return sum((root / key).stat().st_size for key in _objects(store))


def test_a_push_packs_only_what_the_store_lacks(store: Store, tmp_path: Path) -> None:
    """Packs have random keys, so only a lookup keeps re-pushes from storing bytes again."""
    tree = {f"f{i}": bytes([i]) * 10_000 for i in range(50)}
    store.push("ci/app:1", [make_tree(tmp_path / "v1", tree)])
    first = _stored_bytes(store)
    assert first == 50 * 10_000
    for v in range(2, 6):  # each version changes one file
        tree[f"f{v}"] = f"version {v}".encode() * 1000
        pushed = store.push(f"ci/app:{v}", [make_tree(tmp_path / f"v{v}", tree)])
        assert pushed.blobs_stored == 1
    assert _stored_bytes(store) == first + sum(len(f"version {v}") * 1000 for v in range(2, 6))
    store.pull("ci/app:5", tmp_path / "out")
    assert read_tree(tmp_path / "out") == tree
    assert store.verify().ok


def test_a_push_of_known_bytes_renews_their_packs_lease(store: Store, tmp_path: Path) -> None:
    """The lease GC checks is the recorded location's: a pack the new push did not write."""
    tree = {"x": "x" * 30, "y": "y" * 20}
    store.push("ci/app:1", [make_tree(tmp_path / "a", tree)])
    store.delete("ci/app:1")
    pack = stored_span(store, _digest_of_text(tree["x"])).key
    with store.db.write() as conn:  # the pack's lease is long expired
        conn.execute(
            t.blob_activity.update().where(t.blob_activity.c.key == pack).values(touched_at=0.0)
        )
    store.push("ci/app:2", [make_tree(tmp_path / "b", {"x": tree["x"]})])  # x: known, not packed
    with store.db.read() as conn:
        touched = conn.execute(
            select(t.blob_activity.c.touched_at).where(t.blob_activity.c.key == pack)
        ).scalar_one()
    assert touched > 0.0
    assert store.gc(grace=3600).collected == []  # y: its pack's lease was just renewed
    store.pull("ci/app:2", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"x": b"x" * 30}


def _digest_of_text(text: str) -> str:
    return "blake3:" + blake3.blake3(text.encode()).hexdigest()
