"""Namespace quotas and movable tags, library level, on real SQLite and real files.

What a quota counts (``controlplane/namespaces.py``): the bytes of the distinct
blobs a namespace holds, each once however many versions share it; a blob the
store already has for another namespace counts here as soon as it is pushed
here. A push over the quota is refused before anything is stored. Movable
tags: pushing a different manifest under one moves it (``tag.moved``), unless
a legal hold or the retention lock covers the version it would replace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactstore.errors import (
    LegalHold,
    PackageNotFound,
    QuotaExceeded,
    RetentionLocked,
    VersionExists,
)
from artifactstore.model.events import BlobClaimed, TagMoved, stored_blobs
from artifactstore.services.uploads import _Recording
from artifactstore.store import Store
from tests.conftest import FakeClock, make_tree
from tests.matrix import StoreConfig
from tests.stored import Stored
from tests.test_rebuild import dump_views

pytestmark = pytest.mark.configs("embedded", "scaleout")

#: A grace period long enough that every upload of a test still counts.
DAY = 86400.0


def _store(tmp_path: Path, grace: float, config: StoreConfig) -> Store:
    return Store.open(tmp_path / "home", gc_grace=grace, **config.overrides())


@pytest.fixture
def store(clean_env: None, tmp_path: Path, store_config: StoreConfig) -> Iterator[Store]:
    """A store whose uploads keep counting for a day (the default grace period)."""
    s = _store(tmp_path, DAY, store_config)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def store0(clean_env: None, tmp_path: Path, store_config: StoreConfig) -> Iterator[Store]:
    """A store with no grace period: only live versions hold bytes."""
    s = _store(tmp_path, 0.0, store_config)
    try:
        yield s
    finally:
        s.close()


class Trees:
    """Source trees under one scratch directory, each a fresh directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def __call__(self, files: dict[str, bytes]) -> Path:
        self.n += 1
        return make_tree(self.root / f"src{self.n}", files)


@pytest.fixture
def trees(tmp_path: Path) -> Trees:
    return Trees(tmp_path / "trees")


def fill(n: int, seed: str) -> bytes:
    """``n`` bytes no other call with another seed produces."""
    pattern = f"{seed}|".encode()
    return (pattern * (n // len(pattern) + 1))[:n]


def blob_files(store: Store) -> set[str]:
    """Every object of the store's storage: published, staged, an upload's."""
    return Stored.of(store).everything()


def cat(store: Store, ref: str, path: str) -> bytes:
    return b"".join(store.read_file(ref, path))


def used(store: Store, namespace: str) -> int:
    return int(store.namespace_settings(namespace)["used_bytes"])


def set_quota(store: Store, namespace: str, quota: int | None, **more: object) -> None:
    store.set_namespace_settings(namespace, {"quota_bytes": quota, **more})


# --- what counts, and the limit -------------------------------------------------------------


def test_exactly_at_the_limit_fits_and_one_byte_over_stores_nothing(
    store: Store, trees: Trees
) -> None:
    set_quota(store, "ci", 1000)
    src = trees({"a.bin": fill(600, "a"), "dir/b.bin": fill(400, "b")})
    assert store.push("ci/app:1", [src]).blobs_stored == 2
    assert store.namespace_settings("ci") == {
        "anonymous_read": False,
        "quota_bytes": 1000,
        "movable_tags": [],
        "trusted_keys": [],
        "require_signature": False,
        "used_bytes": 1000,
    }
    files, events = blob_files(store), len(store.events())
    with pytest.raises(QuotaExceeded) as caught:
        store.push("ci/app:2", [trees({"c.bin": b"x"})])
    assert caught.value.code == "quota_exceeded"
    assert (caught.value.quota_bytes, caught.value.used_bytes) == (1000, 1000)
    assert "artifactstore namespace set ci --quota" in caught.value.detail
    # Nothing was stored: no bytes (published or staged), no event, no version.
    assert blob_files(store) == files
    assert len(store.events()) == events
    with pytest.raises(PackageNotFound):
        store.show("ci/app:2")
    assert used(store, "ci") == 1000
    # A namespace whose very first push is one byte over.
    set_quota(store, "qa", 999)
    events = len(store.events())
    with pytest.raises(QuotaExceeded):
        store.push("qa/app:1", [trees({"q.bin": fill(999, "q"), "r.bin": b"r"})])
    assert blob_files(store) == files and len(store.events()) == events
    assert used(store, "qa") == 0
    store.push("qa/app:1", [trees({"q.bin": fill(999, "q")})])
    assert used(store, "qa") == 999


def test_shared_bytes_count_once(store: Store, trees: Trees) -> None:
    set_quota(store, "ci", 1000)
    a, b = fill(600, "a"), fill(300, "b")
    store.push("ci/app:1", [trees({"a.bin": a})])
    store.push("ci/app:2", [trees({"a.bin": a, "b.bin": b})])
    store.push("ci/lib:1", [trees({"copy-of-a": a, "again/b.bin": b})])
    assert used(store, "ci") == 900  # not 600 + 900 + 900
    # At the limit, bytes the namespace already holds still fit under any version.
    set_quota(store, "ci", 900)
    result = store.push("ci/app:3", [trees({"x/a.bin": a, "y/b.bin": b, "z/a.bin": a})])
    assert result.created and result.blobs_stored == 0
    assert used(store, "ci") == 900
    with pytest.raises(QuotaExceeded):
        store.push("ci/app:4", [trees({"a.bin": a, "new.bin": b"1"})])
    # One file twice in one push counts once too.
    set_quota(store, "qa", 100)
    store.push("qa/app:1", [trees({"one": fill(100, "d"), "two": fill(100, "d")})])
    assert used(store, "qa") == 100


def test_a_blob_another_namespace_holds_counts_here_once_pushed_here(
    store: Store, trees: Trees
) -> None:
    shared = fill(500, "shared")
    store.push("qa/app:1", [trees({"s.bin": shared})])
    set_quota(store, "ci", 400)
    files = blob_files(store)
    with pytest.raises(QuotaExceeded) as caught:
        store.push("ci/app:1", [trees({"s.bin": shared})])
    assert caught.value.used_bytes == 0
    assert used(store, "ci") == 0
    set_quota(store, "ci", 500)
    assert store.push("ci/app:1", [trees({"s.bin": shared})]).blobs_stored == 0
    assert (used(store, "ci"), used(store, "qa")) == (500, 500)
    assert blob_files(store) == files  # stored once for both
    claims = [e for e in (e.typed() for e in store.events()) if isinstance(e, BlobClaimed)]
    assert [e.namespace for e in claims] == ["ci"]


def test_deleting_versions_frees_quota_once_the_grace_period_passes(
    clean_env: None, tmp_path: Path, trees: Trees, store_config: StoreConfig
) -> None:
    clock, grace = FakeClock(), 3600.0
    overrides = store_config.overrides()
    with Store.open(tmp_path / "home", gc_grace=grace, clock=clock, **overrides) as store:
        set_quota(store, "ci", 1000)
        store.push("ci/app:1", [trees({"a.bin": fill(800, "a")})])
        store.delete("ci/app:1")
        # Uploaded within the grace period: the bytes still count (a commit may yet use them).
        clock.advance(grace - 60)
        assert used(store, "ci") == 800
        with pytest.raises(QuotaExceeded):
            store.push("ci/app:2", [trees({"b.bin": fill(800, "b")})])
        clock.advance(120)
        assert used(store, "ci") == 0
        store.push("ci/app:2", [trees({"b.bin": fill(800, "b")})])
        assert used(store, "ci") == 800
        assert store.gc().bytes_freed == 800  # the deleted version's bytes go for good


def test_deleting_frees_at_once_without_a_grace_period(store0: Store, trees: Trees) -> None:
    set_quota(store0, "ci", 1000)
    store0.push("ci/app:1", [trees({"a.bin": fill(800, "a")})])
    with pytest.raises(QuotaExceeded):
        store0.push("ci/app:2", [trees({"b.bin": fill(800, "b")})])
    store0.delete("ci/app:1")
    assert used(store0, "ci") == 0
    store0.push("ci/app:2", [trees({"b.bin": fill(800, "b")})])


def test_concurrent_pushes_commit_exactly_what_fits(store: Store, trees: Trees) -> None:
    """Eight threads push 300 new bytes each under a 1000-byte quota: three commit."""
    set_quota(store, "ci", 1000)
    sources = [trees({f"f{i}.bin": fill(300, f"t{i}")}) for i in range(8)]
    start = threading.Barrier(len(sources))
    outcomes: dict[int, str] = {}
    peak = [0]
    done = threading.Event()

    def push(i: int) -> None:
        start.wait()
        try:
            store.push(f"ci/app:{i}", [sources[i]])
        except QuotaExceeded:
            outcomes[i] = "refused"
        else:
            outcomes[i] = "committed"

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], used(store, "ci"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(sources))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(10)
    assert len(outcomes) == len(sources), outcomes  # no other error
    committed = sorted(i for i, o in outcomes.items() if o == "committed")
    assert len(committed) == 3, outcomes
    assert peak[0] <= 1000 and used(store, "ci") == 900
    live = {str(r.reference) for r in store.iter_query(namespace="ci")}
    assert live == {f"ci/app:{i}" for i in committed}
    stored = [b for e in store.events() for b in stored_blobs(e.typed())]
    assert len(stored) == 3


def test_a_quota_below_the_usage_refuses_only_new_bytes(store: Store, trees: Trees) -> None:
    a = fill(800, "a")
    store.push("ci/app:1", [trees({"a.bin": a})])
    set_quota(store, "ci", 500)  # allowed: nothing is deleted, new bytes are refused
    assert store.namespace_settings("ci")["used_bytes"] == 800
    with pytest.raises(QuotaExceeded) as caught:
        store.push("ci/app:2", [trees({"a.bin": a, "b.bin": b"b"})])
    assert (caught.value.quota_bytes, caught.value.used_bytes) == (500, 800)
    assert store.push("ci/app:2", [trees({"renamed.bin": a})]).created  # adds no bytes
    assert not store.push("ci/app:1", [trees({"a.bin": a})]).created  # the same again
    set_quota(store, "ci", 0)
    assert store.push("ci/app:3", [trees({"again.bin": a})]).created
    with pytest.raises(QuotaExceeded):
        store.push("ci/app:4", [trees({"one": b"1"})])
    set_quota(store, "ci", None)
    store.push("ci/app:4", [trees({"one": b"1"})])
    assert used(store, "ci") == 801


# --- movable tags ------------------------------------------------------------------------------


def test_pushing_a_movable_tag_again_moves_it(store0: Store, trees: Trees) -> None:
    store0.set_namespace_settings("ci", {"movable_tags": ["latest"]})
    first = store0.push("ci/app:latest", [trees({"old.txt": b"old content"})]).record
    assert not store0.push("ci/app:latest", [trees({"old.txt": b"old content"})]).created
    moved = store0.push("ci/app:latest", [trees({"new.txt": b"new content"})])
    assert moved.created and moved.record.digest != first.digest
    event = store0.events()[-1]
    assert event.type == "tag.moved" and event.subject == "ci/app:latest"
    assert event.payload["previous"] == {"version_id": first.id, "digest": str(first.digest)}
    tag = event.typed()
    assert isinstance(tag, TagMoved)
    assert (tag.previous_version_id, tag.previous_digest) == (first.id, str(first.digest))
    assert tag.digest == str(moved.record.digest)
    assert tag.manifest["package"]["version"] == "latest"
    shown = store0.show("ci/app:latest")
    assert [f.path.value for f in shown.manifest.files] == ["new.txt"]
    assert shown.digest == moved.record.digest
    assert [str(r.reference) for r in store0.iter_query(namespace="ci")] == ["ci/app:latest"]
    # The old bytes are no longer referenced: they count for nothing and GC takes them.
    assert used(store0, "ci") == len(b"new content")
    assert store0.gc().bytes_freed == len(b"old content")
    # Any other version stays immutable.
    store0.push("ci/app:1", [trees({"a.txt": b"one"})])
    with pytest.raises(VersionExists) as caught:
        store0.push("ci/app:1", [trees({"a.txt": b"two"})])
    assert caught.value.code == "version_exists"
    # ... and so does a tag of another namespace.
    store0.push("qa/app:latest", [trees({"a.txt": b"one"})])
    with pytest.raises(VersionExists):
        store0.push("qa/app:latest", [trees({"a.txt": b"two"})])


def test_a_held_or_locked_tag_does_not_move(store0: Store, trees: Trees) -> None:
    for ns in ("ci", "locked"):
        store0.set_namespace_settings(ns, {"movable_tags": ["latest", "stable"]})
        store0.push(f"{ns}/app:latest", [trees({"a.txt": b"held"})])
    hold = store0.place_hold("ci/app:latest", "audit")
    with pytest.raises(LegalHold) as held:
        store0.push("ci/app:latest", [trees({"a.txt": b"moved"})])
    assert held.value.code == "legal_hold" and [h["id"] for h in held.value.holds] == [hold.id]
    assert cat(store0, "ci/app:latest", "a.txt") == b"held"
    store0.release_hold("ci/app:latest", "audit done")
    assert store0.push("ci/app:latest", [trees({"a.txt": b"moved"})]).created
    assert cat(store0, "ci/app:latest", "a.txt") == b"moved"

    store0.lock_retention("locked", 1)
    with pytest.raises(RetentionLocked):
        store0.push("locked/app:latest", [trees({"a.txt": b"moved"})])
    assert cat(store0, "locked/app:latest", "a.txt") == b"held"
    # A tag pushed for the first time moves nothing: the lock does not stand in the way.
    assert store0.push("locked/app:stable", [trees({"a.txt": b"first"})]).created
    assert [e.type for e in store0.events()].count("tag.moved") == 1


def test_rebuild_reproduces_the_views_after_tag_moves(store0: Store, trees: Trees) -> None:
    store0.set_namespace_settings("ci", {"movable_tags": ["latest"], "quota_bytes": 10_000})
    for i in range(4):
        files = {"shared.txt": b"shared", f"f{i}.txt": f"content {i}".encode()}
        store0.push("ci/app:latest", [trees(files)])
        store0.push(f"ci/app:{i}", [trees(files)])
        store0.push("ci/lib:latest", [trees({"n": str(i % 2).encode()})])
    store0.place_hold("ci/app:latest", "keep")
    store0.delete("ci/app:1")
    store0.gc()
    assert [e.type for e in store0.events()].count("tag.moved") == 6
    before = dump_views(store0)
    usage = store0.namespace_settings("ci")
    assert store0.rebuild() == len(store0.events())
    assert dump_views(store0) == before
    assert store0.namespace_settings("ci") == usage
    assert store0.verify().ok


def test_uploads_recorded_in_one_batch_fail_only_where_over_the_quota(store: Store) -> None:
    """Group commit: uploads that finish together are recorded in one transaction.
    When the namespace cannot hold them all, each is retried alone, so those
    that fit are recorded and only the rest are refused."""
    store.set_namespace_settings("q", {"quota_bytes": 250})
    uploads = store.services.uploads
    recs = []
    for i in range(4):
        with store.plane.batch() as batch:
            digests = batch.ingest_bytes(bytes([i]) * 100)
        recs.append(_Recording(digests, store.plane.key(digests), "tester", "q"))
    errors = uploads._record_batch(recs)
    assert errors[:2] == [None, None]
    assert all(isinstance(e, QuotaExceeded) for e in errors[2:]), errors
    assert store.namespace_usage()["q"] == (200, 250)
    # The blobs of another namespace in the same batch are not affected.
    with store.plane.batch() as batch:
        other = batch.ingest_bytes(b"x" * 100)
    more = [_Recording(other, store.plane.key(other), "tester", "free"), recs[3]]
    errors = uploads._record_batch(more)
    assert errors[0] is None and isinstance(errors[1], QuotaExceeded)
