"""GC racing pushes (SPEC section 9): threads push packages that reuse blobs while GC loops.

Four pusher threads commit small packages drawn from a shared pool of contents (so most
blobs already exist, or existed until GC collected them a moment ago) and delete their
older versions (so blobs keep becoming unreferenced); one thread runs ``gc(grace=0)`` in a
loop. Two pushers share one Store (the library is meant to be thread-safe), the others and
GC each open their own on the same data directory, as separate processes would.

Invariants: no committed package ever references a blob whose row or bytes are missing
(checked right after every commit, and by GC's own fail-closed check on every run); after
the threads stop everything verifies; and once everything is deleted, a long grace keeps
all of it while a zero grace collects every blob row, blob file and lease (nothing leaks).

It runs on SQLite and on PostgreSQL, where GC's decisions and the commits take row locks
and the event log's advisory lock: taken in opposite orders they would deadlock (PostgreSQL
aborts one of the two, which surfaces here as an error of a pusher or of GC).

``ARTIFACTSTORE_GC_RACE_COMMITS`` sets how many commits to reach on SQLite (default 1000),
``ARTIFACTSTORE_GC_RACE_PG_COMMITS`` on PostgreSQL (default 300: its round trips make each
commit slower).
"""

from __future__ import annotations

import os
import random
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select

from artifactstore.controlplane import blobs as blob_records
from artifactstore.controlplane import packages
from artifactstore.controlplane.db import tables as t
from artifactstore.errors import CorruptBlob, MissingBlobs, PackageNotFound
from artifactstore.model.events import stored_blobs
from artifactstore.model.records import BlobRecord, GcReport
from artifactstore.store import Store
from tests.matrix import StoreConfig
from tests.server.conftest import make_manifest
from tests.stored import Stored

# Read at import: the autouse _clean_env fixture removes ARTIFACTSTORE_* before each test.
COMMITS = {
    "sqlite": int(os.environ.get("ARTIFACTSTORE_GC_RACE_COMMITS", "1000")),
    "postgresql": int(os.environ.get("ARTIFACTSTORE_GC_RACE_PG_COMMITS", "300")),
}
PUSHERS = 4
KEEP_LIVE = 3  # versions each pusher keeps; older ones are deleted
MAX_ATTEMPTS = 50  # see the comment on MissingBlobs in pusher()
DEADLINE_SECONDS = 240.0

#: Contents every pusher draws from, so blobs are shared and re-uploaded after collection.
POOL = [f"pool-{i:02d}|".encode() * (1 + 37 * i) for i in range(24)]


@dataclass
class Shared:
    """What the threads report back (appends and += under ``lock``)."""

    target: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    commits: int = 0
    retries: int = 0
    gc_runs: int = 0
    collected: int = 0
    orphans: int = 0
    errors: list[str] = field(default_factory=list)
    #: Commits found pointing at a missing blob row or missing bytes right after committing.
    violations: list[str] = field(default_factory=list)
    #: GC runs that failed closed (a live package pointed at missing bytes), by message.
    fail_closed: Counter[str] = field(default_factory=Counter)
    #: Live versions at the end: reference -> {path: blake3}.
    live: dict[str, dict[str, str]] = field(default_factory=dict)

    def fail(self, where: str) -> None:
        with self.lock:
            self.errors.append(f"{where}:\n{traceback.format_exc()}")
        self.stop.set()


def check_committed(store: Store, ref: str, shared: Shared) -> dict[str, str]:
    """Right after a commit: every file's blob has a row and whole bytes in storage."""
    record = store.show(ref)
    files: dict[str, str] = {}
    with store.db.read() as conn:
        for entry in record.manifest.files:
            files[entry.path.value] = str(entry.blake3)
            rec = blob_records.find(conn, entry.blake3)
            size = None if rec is None else _stored_size(store, rec)
            if size != entry.size:
                problem = "not recorded" if rec is None else f"stored size {size}"
                with shared.lock:
                    shared.violations.append(f"{ref} {entry.path.value} {entry.blake3}: {problem}")
    return files


def pusher(tid: int, store: Store, work: Path, seed: int, shared: Shared) -> None:
    rng = random.Random(seed)
    mine: deque[str] = deque()
    i = 0
    try:
        while not shared.stop.is_set():
            src = work / f"p{tid}" / str(i)
            src.mkdir(parents=True)
            for j in rng.sample(range(len(POOL)), rng.randint(2, 5)):
                (src / f"f{j:02d}.bin").write_bytes(POOL[j])
            if rng.random() < 0.15:  # now and then new content: not recorded anywhere yet
                (src / "unique.bin").write_bytes(f"unique {tid} {i} {rng.random()}".encode())
            ref = f"race/p{tid}:{i}"
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    store.push(ref, [src])
                    break
                except MissingBlobs:
                    # Legitimate per the protocol (gc.py step 2): with a zero grace the lease
                    # does not protect an ingest between publishing and committing, so GC may
                    # collect a blob in that window, and the commit's re-check must then refuse
                    # to reference it. Nothing was committed; pushing again re-uploads the
                    # bytes. GC loops without pause here, so a push may lose that race a few
                    # times in a row: hence the generous MAX_ATTEMPTS (a push that re-uploads
                    # missing blobs itself never needs it).
                    if attempt == MAX_ATTEMPTS:
                        raise
                    with shared.lock:
                        shared.retries += 1
            files = check_committed(store, ref, shared)
            mine.append(ref)
            with shared.lock:
                shared.live[ref] = files
                shared.commits += 1
                if shared.commits >= shared.target:
                    shared.stop.set()
            while len(mine) > KEEP_LIVE:
                old = mine.popleft()
                store.delete(old)
                with shared.lock:
                    del shared.live[old]
            i += 1
    except Exception:
        shared.fail(f"pusher {tid}")


def collector(store: Store, shared: Shared) -> None:
    try:
        while not shared.stop.is_set():
            try:
                report = store.gc(grace=0)
            except CorruptBlob as exc:  # fail closed: a live package points at missing bytes
                with shared.lock:
                    shared.fail_closed[exc.detail] += 1
                continue
            with shared.lock:
                shared.gc_runs += 1
                shared.collected += len(report.collected)
                shared.orphans += report.orphans_removed
    except Exception:
        shared.fail("gc")


def counts(store: Store) -> dict[str, int]:
    with store.db.read() as conn:
        return {
            table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (t.blobs, t.storage_locations, t.blob_activity, t.events)
        }


@pytest.mark.configs("embedded", "scaleout")
def test_gc_races_pushes_reusing_blobs(
    tmp_path: Path, engine: str, store_config: StoreConfig
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    seed = random.randrange(2**32)
    target = COMMITS[engine]
    shared = Shared(target=target)

    def opened() -> Store:
        return Store.open(home, gc_grace=0.0, **store_config.overrides())

    first = opened()  # creates and migrates the database
    stores = [first, opened(), opened()]
    gc_store = opened()
    try:
        placement = [stores[0], stores[0], stores[1], stores[2]]  # two threads share one
        threads = [
            threading.Thread(
                target=pusher, args=(n, placement[n], work, seed + n, shared), name=f"pusher-{n}"
            )
            for n in range(PUSHERS)
        ]
        threads.append(threading.Thread(target=collector, args=(gc_store, shared), name="gc"))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        if not shared.stop.wait(DEADLINE_SECONDS):
            shared.errors.append(f"only {shared.commits} commits in {DEADLINE_SECONDS:.0f} s")
        shared.stop.set()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - started
    finally:
        for s in (*stores, gc_store):
            s.close()

    summary = (
        f"seed={seed} commits={shared.commits} retries={shared.retries} "
        f"gc_runs={shared.gc_runs} collected={shared.collected} orphans={shared.orphans} "
        f"in {elapsed:.1f} s"
    )
    print(summary)
    assert not any(th.is_alive() for th in threads), summary
    assert not shared.errors, "\n".join([summary, *shared.errors])
    assert not shared.violations and not shared.fail_closed, "\n".join(
        [
            summary,
            f"{len(shared.violations)} commits referenced a missing blob, e.g.:",
            *shared.violations[:10],
            f"{shared.fail_closed.total()} GC runs failed closed, e.g.:",
            *[f"{n} x {msg}" for msg, n in shared.fail_closed.most_common(5)],
        ]
    )
    assert shared.commits >= target, summary
    # The race actually happened: GC ran throughout and collected blobs that were then
    # stored again by later pushes.
    assert shared.gc_runs >= 10 and shared.collected > 0, summary

    with opened() as store:
        stored = Stored.of(store)
        events = store.events()
        collected_at = {e.subject: e.seq for e in events if e.type == "blob.collected"}
        restored = {
            b.blake3
            for e in events
            for b in stored_blobs(e.typed())
            if collected_at.get(b.blake3, e.seq) < e.seq
        }
        assert restored, f"no blob was stored again after being collected ({summary})"

        report = store.verify()
        assert report.ok, report.damaged
        assert store.verify_chain() == len(events)
        assert 0 < len(shared.live) <= PUSHERS * KEEP_LIVE
        for ref, files in shared.live.items():
            record = store.show(ref)
            assert {f.path.value: str(f.blake3) for f in record.manifest.files} == files
            one = store.verify(ref)
            assert one.ok and one.blobs_checked == len(set(files.values())), (ref, one.damaged)

        # Everything unreferenced now: a long grace keeps all of it...
        for ref in shared.live:
            store.delete(ref)
            with pytest.raises(PackageNotFound):
                store.show(ref)
        before, files_before = counts(store), sorted(stored.keys())
        assert before["blobs"] > 0 and files_before
        held = store.gc(grace=3600)
        assert held.collected == [] and held.orphans_removed == 0
        assert held.protected_by_grace == before["blobs"]
        assert counts(store) == before and sorted(stored.keys()) == files_before

        # ...and a zero grace collects every row, file and lease: nothing leaked.
        done = store.gc(grace=0)
        assert len(done.collected) == before["blobs"]
        after = counts(store)
        assert after["blobs"] == after["storage_locations"] == 0, after
        assert after["blob_activity"] == 0, after
        assert sorted(stored.keys()) == []
        assert stored.staging() == []
        assert store.verify_chain() == after["events"]


def _stored_size(store: Store, rec: BlobRecord) -> int | None:
    """How many of the blob's bytes its storage location holds (None: no object)."""
    stored = store.plane.stat(rec.place.key, rec.backend)
    if stored is None or rec.place.offset is None:
        return stored
    return min(stored - rec.place.offset, rec.place.length)


@pytest.mark.configs("scaleout")
def test_gc_waiting_on_a_commits_row_lock_sees_its_reference(
    tmp_path: Path, store_config: StoreConfig
) -> None:
    """GC asks for a blob's row while a commit that references the blob holds it shared.
    The statement that waited was evaluated before the commit (READ COMMITTED re-checks
    only the row, which the commit did not change), so GC must look for references again
    once it has its locks: else it collects a blob a live version references."""
    data = b"shared by a deleted version and a committing one" * 50
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.bin").write_bytes(data)
    with (
        Store.open(tmp_path / "home", gc_grace=0.0, **store_config.overrides()) as store,
        Store.open(tmp_path / "home", gc_grace=0.0, **store_config.overrides()) as gc_store,
    ):
        store.push("ci/old:1", [src])
        store.delete("ci/old:1")  # the blob is garbage now...
        manifest = make_manifest("ci/new:1", {"x.bin": data})
        reports: list[GcReport] = []
        gc = threading.Thread(target=lambda: reports.append(gc_store.gc(grace=0)))
        with store.db.write() as conn:  # ...until this commit references it again
            packages.commit(conn, manifest, "test", held_since=store.services.core.held_since())
            gc.start()
            assert _wait_for_lock_wait(store_config.database_url), "GC never waited for the row"
        gc.join(30)
        assert reports and reports[0].collected == [], reports
        assert store.verify("ci/new:1").ok
        assert gc_store.gc(grace=0).collected == []  # and later runs agree


def _wait_for_lock_wait(url: str | None, timeout: float = 10.0) -> bool:
    """Whether some session of the database came to wait for a lock within ``timeout``."""
    assert url is not None
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] > 0:
                return True
            time.sleep(0.02)
    return False
