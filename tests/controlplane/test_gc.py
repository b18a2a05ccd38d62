"""The GC protocol (controlplane/gc.py), one step at a time, on real SQLite and real files.

Time is explicit: every lease is read back from ``blob_activity`` and the protocol is
driven with ``now`` values relative to it, so no test sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import gc
from artifactstore.controlplane.db import tables as t
from artifactstore.dataplane.digests import DualHasher
from artifactstore.dataplane.layout import blob_key
from artifactstore.dataplane.protocol import Backend, BackendProperties, WriteBatch, Writer
from artifactstore.errors import CorruptBlob, MissingBlobs
from artifactstore.model.identity import Digest
from artifactstore.model.records import GcReport
from artifactstore.store import Store
from tests.conftest import Cli, make_tree
from tests.stored import Stored

pytestmark = pytest.mark.configs("embedded", "scaleout")

# --- helpers ------------------------------------------------------------------------------------


def digest_of(data: bytes) -> Digest:
    hasher = DualHasher(None)
    hasher.update(data)
    return hasher.result().blake3


def blob_at(data: bytes) -> str:
    """The key of ``data`` stored whole (these tests' stores pack nothing)."""
    return blob_key(digest_of(data))


def present(store: Store, key: str) -> bool:
    return Stored.of(store).exists(key)


def lease(store: Store, data: bytes) -> float | None:
    with store.db.read() as conn:
        row = conn.execute(
            select(t.blob_activity.c.touched_at).where(
                t.blob_activity.c.key == blob_key(digest_of(data))
            )
        ).first()
    return None if row is None else float(row.touched_at)


def recorded(store: Store) -> set[str]:
    with store.db.read() as conn:
        return {r.blake3 for r in conn.execute(select(t.blobs.c.blake3))}


def event_count(store: Store) -> int:
    with store.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(t.events)).scalar_one())


def run_gc(store: Store, *, grace: float, at: float, dry_run: bool = False) -> GcReport:
    """One GC run whose clock reads ``at``."""
    return gc.collect(
        store.db, store.plane, grace=grace, dry_run=dry_run, actor="test:gc", now=lambda: at
    )


def write_orphan(store: Store, data: bytes) -> str:
    """Publish ``data`` at its blob key straight through the backend: bytes without a row."""
    batch = store.plane.backend.batch()
    writer = batch.writer()
    writer.write(data)
    writer.commit(blob_at(data))
    batch.commit()
    assert Stored.of(store).read(blob_at(data)) == data
    return blob_at(data)


#: The staging floor of these tests (``gc.STAGING_MIN_AGE``, an hour, patched by
#: ``floor``): S3 stamps an object's age itself, so a leftover gets old by waiting.
FLOOR = 1.5


@pytest.fixture
def floor(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(gc, "STAGING_MIN_AGE", FLOOR)
    return FLOOR


def staging_leftover(store: Store, name: str) -> str:
    """What a write killed before it published leaves: an in-flight object."""
    return Stored.of(store).put_staging(name, b"partial upload")


def wait_past(seconds: float, since: float) -> None:
    time.sleep(max(0.0, since + seconds - time.monotonic()))


@pytest.fixture
def store(whole_store: Store) -> Store:
    """These tests follow one blob's bytes at its own key: whole objects, no packs."""
    return whole_store


@pytest.fixture
def other(store: Store) -> Iterator[Store]:
    """A second Store on the same data directory: another process, as far as SQLite cares."""
    settings = store.settings
    s = Store.open(
        settings.home,
        gc_grace=0.0,
        pack_max_bytes=0,
        database_url=settings.database_url,
        storage_url=settings.storage_url,
        cold_storage_url=settings.cold_storage_url,
    )
    try:
        yield s
    finally:
        s.close()


class _HookedBatch:
    def __init__(self, inner: WriteBatch, after_commit: Callable[[], None]) -> None:
        self._inner = inner
        self._after_commit = after_commit

    def writer(self, key: str | None = None) -> Writer:
        return self._inner.writer(key)

    def commit(self) -> None:
        self._inner.commit()
        self._after_commit()

    def cancel(self) -> None:
        self._inner.cancel()


class PublishHook:
    """The real backend, plus a callback that runs once right after a batch is published.

    In ``Store.push`` that is the moment after the bytes became visible and before the
    transaction that records them and commits the manifest: the window the protocol is about.
    """

    def __init__(self, inner: Backend, callback: Callable[[], None]) -> None:
        self._inner = inner
        self._callback: Callable[[], None] | None = callback

    def _fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()

    @property
    def properties(self) -> BackendProperties:
        return self._inner.properties

    def batch(self) -> WriteBatch:
        return _HookedBatch(self._inner.batch(), self._fire)

    def stat(self, key: str) -> int | None:
        return self._inner.stat(key)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self._inner.read(key, offset, length)

    def delete(self, key: str) -> None:
        self._inner.delete(key)

    def sweep_staging(self, older_than: float) -> int:
        return self._inner.sweep_staging(older_than)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self._inner.list(prefix)

    def health(self) -> None:
        self._inner.health()


# --- grace and dry run ------------------------------------------------------------------------


def test_blob_within_grace_is_kept_and_dry_run_counts(store: Store, tmp_path: Path) -> None:
    tree = {"shared": b"S" * 10, "only-1": b"one" * 7, "only-2": b"two" * 5}
    store.push("gc/a:1", [make_tree(tmp_path / "a", tree)])
    store.push("gc/b:1", [make_tree(tmp_path / "b", {"shared": tree["shared"]})])
    store.delete("gc/a:1")  # a dereference renews the lease of every blob of a:1
    touched = lease(store, tree["only-1"])
    assert touched is not None and lease(store, tree["only-2"]) == touched
    only = sorted(str(digest_of(tree[k])) for k in ("only-1", "only-2"))
    before = (recorded(store), event_count(store))

    held = run_gc(store, grace=100, at=touched + 50, dry_run=True)
    assert held.collected == [] and held.bytes_freed == 0
    assert held.protected_by_grace == 2  # "shared" is referenced: not even a candidate
    plan = run_gc(store, grace=100, at=touched + 150, dry_run=True)
    assert plan.collected == only
    assert plan.bytes_freed == len(tree["only-1"]) + len(tree["only-2"])
    assert plan.protected_by_grace == 0
    assert (recorded(store), event_count(store)) == before  # a dry run changes nothing
    assert all(present(store, blob_at(data)) for data in tree.values())

    kept = run_gc(store, grace=100, at=touched + 50)
    assert kept.collected == [] and kept.protected_by_grace == 2
    assert (recorded(store), event_count(store)) == before
    assert all(present(store, blob_at(data)) for data in tree.values())

    done = run_gc(store, grace=100, at=touched + 150)
    assert done.collected == only and done.bytes_freed == plan.bytes_freed
    assert recorded(store) == {str(digest_of(tree["shared"]))}
    assert not present(store, blob_at(tree["only-1"]))
    assert not present(store, blob_at(tree["only-2"]))
    assert lease(store, tree["only-1"]) is None  # the lease goes with the bytes
    assert Stored.of(store).read(blob_at(tree["shared"])) == tree["shared"]
    assert [e.type for e in store.events()][-2:] == ["blob.collected", "blob.collected"]
    assert store.verify().ok and store.verify("gc/b:1").ok
    assert store.verify_chain() == event_count(store)
    assert run_gc(store, grace=100, at=touched + 150).collected == []  # idempotent


# --- orphans and staging ----------------------------------------------------------------------


def test_orphan_is_collected_after_grace_but_not_within(store: Store) -> None:
    leased, unleased = b"bytes an ingest published, then crashed", b"no lease at all"
    t0 = time.time()
    with store.db.write() as conn:  # what an ingest does before it publishes (step 1)
        blob_records.touch(conn, [blob_key(digest_of(leased))], t0)
    key = write_orphan(store, leased)

    within = run_gc(store, grace=100, at=t0 + 50)
    assert within.orphans_removed == 0 and within.collected == []
    assert Stored.of(store).read(key) == leased
    assert lease(store, leased) == t0

    bare = write_orphan(store, unleased)  # bytes nothing leases and nothing records
    assert run_gc(store, grace=100, at=t0 + 50).orphans_removed == 1
    assert not present(store, bare) and present(store, key)

    after = run_gc(store, grace=100, at=t0 + 150)
    assert after.orphans_removed == 1 and after.collected == []
    assert not present(store, key)
    assert lease(store, leased) is None
    assert recorded(store) == set()
    assert list(store.plane.backend.list("blobs/")) == []


def test_crash_between_decision_and_unlink_leaves_an_orphan_the_next_run_removes(
    store: Store, tmp_path: Path
) -> None:
    data = b"collected, but the process died before unlinking"
    store.push("gc/a:1", [make_tree(tmp_path / "a", {"f": data})])
    store.delete("gc/a:1")
    touched = lease(store, data)
    assert touched is not None
    report = GcReport(dry_run=False, grace_seconds=0)
    with store.db.write() as conn:  # step 2 only: then the "crash"
        keys = gc.decide(conn, store.plane, report, cutoff=touched + 1, actor="test:gc")
    assert keys == [(blob_key(digest_of(data)), "local")]
    assert recorded(store) == set() and present(store, blob_at(data))
    assert store.verify().ok  # bytes without a row are allowed

    rerun = run_gc(store, grace=0, at=touched + 1)
    assert rerun.collected == [] and rerun.orphans_removed == 1
    assert not present(store, blob_at(data))
    assert lease(store, data) is None


def test_staging_leftovers_are_swept_only_when_old(store: Store, floor: float) -> None:
    started = time.monotonic()
    old = staging_leftover(store, "crashed.part")
    wait_past(floor + 0.2, started)
    recent = staging_leftover(store, "recent.part")
    assert run_gc(store, grace=3 * floor, at=time.time()).collected == []
    assert present(store, old) and present(store, recent)  # both younger than the grace
    store.gc(grace=0)
    assert not present(store, old)
    # Older than a zero grace, but it may belong to a push still staging its other files
    # (staging holds no lease): a short grace does not shorten the staging floor.
    assert present(store, recent)


# --- fail closed --------------------------------------------------------------------------------


def _collectable_state(store: Store, tmp_path: Path) -> tuple[str, str, str]:
    """A deleted version's blob, an orphan and a staging leftover past the (patched)
    staging floor: all ripe for GC."""
    started = time.monotonic()
    leftover = staging_leftover(store, "leftover.part")
    dead = b"unreferenced and past its grace"
    store.push("gc/dead:1", [make_tree(tmp_path / "dead", {"f": dead})])
    store.delete("gc/dead:1")
    orphan = write_orphan(store, b"orphan bytes")
    wait_past(FLOOR + 0.2, started)
    return blob_at(dead), orphan, leftover


def test_gc_fails_closed_when_a_live_blob_file_is_missing(
    store: Store, tmp_path: Path, cli: Cli, floor: float
) -> None:
    live = {"a": b"live a", "b": b"live b"}
    store.push("gc/live:1", [make_tree(tmp_path / "live", live)])
    ripe = _collectable_state(store, tmp_path)
    stored = Stored.of(store)
    stored.remove(blob_at(live["a"]))  # damage from outside
    before = (recorded(store), event_count(store))

    with pytest.raises(CorruptBlob, match="missing from storage"):
        store.gc(grace=0)
    assert (recorded(store), event_count(store)) == before
    assert all(stored.exists(key) for key in ripe)
    assert stored.exists(blob_at(live["b"]))

    failed = cli.fails(3, "gc", "--grace", "0s")  # SPEC 9: deletes nothing and exits 3
    assert "deleted nothing" in failed.stderr
    assert (recorded(store), event_count(store)) == before
    assert all(stored.exists(key) for key in ripe)

    # Once the damage is repaired, GC proceeds.
    stored.replace(blob_at(live["a"]), live["a"])
    report = store.gc(grace=0)
    assert len(report.collected) == 1 and report.orphans_removed == 1
    assert not any(stored.exists(key) for key in ripe)
    assert store.verify().ok


def test_gc_fails_closed_when_a_live_blob_is_not_recorded(
    store: Store, tmp_path: Path, floor: float
) -> None:
    live = b"referenced but its record is gone"
    store.push("gc/live:1", [make_tree(tmp_path / "live", {"f": live})])
    ripe = _collectable_state(store, tmp_path)
    with store.db.write() as conn:  # damage from someone with database access
        conn.execute(delete(t.blobs).where(t.blobs.c.blake3 == str(digest_of(live))))
    before = (recorded(store), event_count(store))

    with pytest.raises(CorruptBlob, match="not recorded"):
        store.gc(grace=0)
    assert (recorded(store), event_count(store)) == before
    assert all(present(store, key) for key in ripe)
    assert present(store, blob_at(live))  # the unrecorded bytes are not an "orphan" either


# --- interleavings with an ingest -------------------------------------------------------------


def test_ingest_renewing_the_lease_after_the_decision_keeps_its_bytes(
    store: Store, other: Store, tmp_path: Path
) -> None:
    """Decide (row gone) -> an ingest renews the lease and publishes -> unlink keeps the bytes."""
    tree = {"x": b"content pushed again while GC collects it", "y": b"nobody wants this"}
    store.push("gc/a:1", [make_tree(tmp_path / "a", tree)])
    store.delete("gc/a:1")
    report = GcReport(dry_run=False, grace_seconds=0)
    decided_at = time.time()
    with other.db.write() as conn:
        keys = gc.decide(conn, other.plane, report, cutoff=decided_at, actor="test:gc")
    key_x, key_y = blob_key(digest_of(tree["x"])), blob_key(digest_of(tree["y"]))
    assert sorted(keys) == sorted([(key_x, "local"), (key_y, "local")])
    assert recorded(store) == set()  # from here on no commit can use the old rows

    unlinked: list[bool] = []

    def gc_unlink_step() -> None:  # runs after the push published, before it records
        touched = lease(store, tree["x"])
        assert touched is not None and touched >= decided_at  # the ingest renewed it
        with other.db.write() as conn:
            unlinked.append(gc.unlink_if_untouched(conn, other.plane, key_x, decided_at))

    store.plane.backend = PublishHook(store.plane.backend, gc_unlink_step)
    pushed = store.push("gc/b:1", [make_tree(tmp_path / "b", {"x": tree["x"]})])
    assert unlinked == [False]
    assert pushed.blobs_stored == 1  # recorded again
    assert Stored.of(store).read(key_x) == tree["x"]
    assert store.verify("gc/b:1").ok

    # y was not touched again: step 3 deletes it, and a later ingest simply stores it anew.
    with other.db.write() as conn:
        assert gc.unlink_if_untouched(conn, other.plane, key_y, decided_at)
    assert not present(store, key_y)
    store.push("gc/c:1", [make_tree(tmp_path / "c", {"y": tree["y"]})])
    assert store.verify("gc/c:1").ok and store.verify().ok
    assert other.gc(grace=3600).collected == []  # fail-closed check passes: nothing dangles


def check_push_racing_gc(store: Store, other: Store, ref: str, src: Path) -> None:
    """Push ``src`` while a whole GC run (grace 0) lands between its publish and its commit.

    The push renewed its leases just before publishing, i.e. *before* GC decided. The
    protocol (SPEC 9) must still never let the commit reference bytes GC removed: either
    the push fails with MissingBlobs (retryable) or what it committed is whole.
    """

    def gc_run() -> None:  # a second later: the lease is older than the decision
        gc.collect(
            other.db,
            other.plane,
            grace=0,
            dry_run=False,
            actor="test:gc",
            now=lambda: time.time() + 1,
        )

    hooked = PublishHook(store.plane.backend, gc_run)
    real, store.plane.backend = store.plane.backend, hooked
    try:
        store.push(ref, [src])
    except MissingBlobs:
        store.plane.backend = real
        store.push(ref, [src])  # the retry succeeds
    finally:
        store.plane.backend = real
    assert store.verify(ref).ok, "a committed version references bytes that GC removed"
    other.gc(grace=3600)  # fails closed (CorruptBlob) if any live package dangles
    assert store.verify().ok


def test_ingest_of_recorded_unreferenced_content_racing_gc(
    store: Store, other: Store, tmp_path: Path
) -> None:
    """The content is recorded but unreferenced: GC's decision removes its row meanwhile."""
    content = {"f": b"deduplicated against a row GC is about to collect"}
    store.push("gc/a:1", [make_tree(tmp_path / "a", content)])
    store.delete("gc/a:1")
    check_push_racing_gc(store, other, "gc/b:1", make_tree(tmp_path / "b", content))


def test_ingest_of_new_content_racing_gc(store: Store, other: Store, tmp_path: Path) -> None:
    """New content: between publish and record its bytes look like an orphan to GC."""
    src = make_tree(tmp_path / "b", {"f": b"brand new bytes, not recorded yet"})
    check_push_racing_gc(store, other, "gc/b:1", src)
