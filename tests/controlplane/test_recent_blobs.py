"""The HEAD-only cache of blob records: what it may answer and what clears it."""

from __future__ import annotations

import time
from pathlib import Path

from artifactstore.controlplane.blobs import RecentBlobs
from artifactstore.model.identity import BlobDigests, Digest
from artifactstore.model.records import BlobRecord, Placement
from artifactstore.store import Store
from tests.conftest import make_tree


def _record(n: int) -> BlobRecord:
    digests = BlobDigests(Digest("blake3", f"{n:064x}"), Digest("sha256", f"{n + 1:064x}"), n)
    return BlobRecord(digests, Placement(f"k{n}"), "local", "hot", "available")


def test_a_lookup_that_began_before_a_clear_caches_nothing() -> None:
    """GC clears the cache as soon as it commits its decision; a HEAD that read the blob
    before that commit must not put it back (it would answer "present" for 30 s)."""
    cache = RecentBlobs(ttl=10.0, max_entries=100)
    rec = _record(9)
    began = cache.generation
    cache.clear()  # GC's decision committed meanwhile
    cache.put(rec, now=100.0, generation=began)
    assert cache.get(str(rec.digests.blake3), 100.0) is None
    cache.put(rec, now=100.0, generation=cache.generation)
    assert cache.get(str(rec.digests.blake3), 100.0) == rec


def test_gc_clears_the_cache_as_soon_as_its_decision_is_committed(
    store: Store, tmp_path: Path
) -> None:
    record = store.push("ci/app:1", [make_tree(tmp_path / "d", {"a": "alpha"})]).record
    digest = record.manifest.files[0].blake3
    assert store.find_blob(digest, head=True) is not None  # cached
    store.delete("ci/app:1")
    seen: list[object] = []
    real_unlink = store.plane.delete

    def unlink(key: str, backend: str | None = None) -> None:
        # Between the decision and the unlink: the cache must already be empty.
        seen.append(store.services.core.recent.get(str(digest), time.time()))
        real_unlink(key, backend)

    store.plane.delete = unlink  # type: ignore[method-assign]
    assert store.gc().collected
    assert seen and seen[0] is None


def test_entries_expire_and_answer_by_either_digest() -> None:
    cache = RecentBlobs(ttl=10.0, max_entries=100)
    rec = _record(7)
    cache.put(rec, now=100.0)
    assert cache.get(str(rec.digests.blake3), 105.0) == rec
    assert cache.get(str(rec.digests.sha256), 110.0) == rec
    assert cache.get(str(rec.digests.blake3), 110.1) is None
    assert cache.get(str(_record(8).digests.blake3), 100.0) is None


def test_bounded() -> None:
    cache = RecentBlobs(ttl=10.0, max_entries=10)
    for n in range(50):
        cache.put(_record(n), now=0.0)
    assert len(cache._items) <= 10
    assert cache.get(str(_record(49).digests.blake3), 0.0) is not None


def test_gc_and_tier_moves_clear_it(store: Store, tmp_path: Path) -> None:
    record = store.push("ci/app:1", [make_tree(tmp_path / "d", {"a": "alpha"})]).record
    digest = record.manifest.files[0].blake3
    assert store.find_blob(digest, head=True) is not None  # looked up, then remembered
    store.tier_move("ci/app:1", "cold")
    found = store.find_blob(digest)
    assert found is not None and found.retrieval_tier == "cold"  # GET never uses it
    assert store.find_blob(digest, head=True) is not None
    store.delete("ci/app:1")
    store.gc(grace=0)
    assert store.find_blob(digest, head=True) is None  # collected: absent at once


def test_a_namespace_scoped_head_never_uses_it(store: Store, tmp_path: Path) -> None:
    record = store.push("ci/app:1", [make_tree(tmp_path / "d", {"a": "alpha"})]).record
    digest = record.manifest.files[0].blake3
    assert store.find_blob(digest, head=True) is not None
    assert store.find_blob(digest, ["qa"], head=True) is None  # qa holds nothing
    assert store.find_blob(digest, ["ci"], head=True) is not None


def test_uploads_fill_it(store: Store) -> None:
    upload = store.services.uploads.begin_blob("test", "ci")
    upload.write(b"bytes a client just sent")
    digests = upload.finish()
    cached = store.services.core.recent.get(str(digests.sha256), time.time())
    assert cached is not None and cached.digests == digests
