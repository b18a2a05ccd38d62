"""The per-process caches a server answers small requests from without the database.

``Store.known_token`` repeats a token check this process made only while no
token was revoked since (``tokens.revocation_stamp``), and ``Store.known_blob``
a blob lookup only while SQLite's ``data_version`` has not moved (nothing was
committed by any connection of any process); and either only while the time has
not changed the answer (a token's expiry, the grace period of an upload's
holding). Each test takes two Stores on one database, as two server workers
are, or moves the injected clock.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from artifactstore.controlplane.db.engine import Database
from artifactstore.model.identity import Digest
from artifactstore.model.records import TokenInfo
from artifactstore.store import Store
from tests.conftest import FakeClock, make_tree

TokenPair = tuple[TokenInfo, str]
GRACE = 30.0  # shorter than a lease renewal (60 s), which would hide an expiry


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def two(clean_env: None, tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Store, Store]]:
    """Two Stores on one database and storage (two workers, or two replicas)."""
    home = tmp_path / "home"
    a = Store.open(home, clock=clock, gc_grace=GRACE, pack_max_bytes=0)
    b = Store.open(home, create=False, clock=clock, gc_grace=GRACE, pack_max_bytes=0)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# --- the probe ----------------------------------------------------------------------------------


def test_data_version_moves_with_every_commit_of_any_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    a, b = Database(url), Database(url)
    try:
        with a.write() as conn:
            conn.execute(text("CREATE TABLE t (i INTEGER)"))
        before = a.data_version()
        with a.read() as conn:
            conn.execute(text("SELECT * FROM t")).all()
        assert a.data_version() == before  # reads change nothing
        with b.write() as conn:  # another engine: another worker
            conn.execute(text("INSERT INTO t VALUES (1)"))
        after_b = a.data_version()
        assert after_b != before
        with a.write() as conn:  # this engine's own pool: not the probe's connection
            conn.execute(text("INSERT INTO t VALUES (2)"))
        after_a = a.data_version()
        assert after_a != after_b
        script = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('INSERT INTO t VALUES (3)'); c.commit()"
        )
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "db.sqlite")], check=True)
        assert a.data_version() != after_a  # another process
    finally:
        a.dispose()
        b.dispose()


def test_a_reopened_probe_never_repeats_a_version(tmp_path: Path) -> None:
    """``PRAGMA data_version`` counts from each opening of a connection: a value from
    before a reopening (after an error) must not match one from after it."""
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        before = db.data_version()
        assert db._probe is not None
        db._probe.close()  # as the probe does after an error
        db._probe = None
        assert db.data_version() != before
    finally:
        db.dispose()


def test_a_locked_database_makes_the_probe_say_it_cannot_tell(tmp_path: Path) -> None:
    """The probe runs on the event loop: it must not wait out the busy timeout."""
    path = tmp_path / "db.sqlite"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.execute(text("CREATE TABLE t (i INTEGER)"))
    db.dispose()  # no connection of ours open: the lock below can be taken
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        assert db.data_version() is None
        assert db.probe("SELECT count(*) FROM t") is None
        assert time.monotonic() - started < 5.0  # not the 60 s the pool's connections wait
        locker.execute("COMMIT")
        locker.execute("PRAGMA locking_mode=NORMAL")
        locker.execute("SELECT 1").fetchall()  # drops the exclusive lock
    finally:
        locker.close()
    assert db.data_version() is not None
    db.dispose()


# --- tokens -------------------------------------------------------------------------------------


def _checked_token(store: Store, *scopes: str, expires_in: float | None = None) -> TokenPair:
    """A new token, checked once: its answer is kept."""
    info, secret = store.create_token("t", list(scopes), expires_in=expires_in)
    assert store.authenticate(secret) is not None
    assert store.known_token(secret) is not None
    return info, secret


def _answers(store: Store, secret: str) -> tuple[TokenInfo | None, TokenInfo | None]:
    """What memory and then the database answer for the token: (None, None) refuses it."""
    return store.known_token(secret), store.authenticate(secret)


@pytest.mark.parametrize("revoker", ["another store", "the same store"])
def test_a_revoked_token_is_refused_on_the_next_check(
    two: tuple[Store, Store], revoker: str
) -> None:
    a, b = two
    info, secret = _checked_token(a, "ci:read")
    assert a.known_token(secret) == a.authenticate(secret)
    (b if revoker == "another store" else a).revoke_token(info.id)
    assert _answers(a, secret) == (None, None)
    assert a.known_token(secret) is None  # the failed check left nothing behind


def test_an_expired_token_is_never_answered_from_the_cache(two: tuple[Store, Store]) -> None:
    """Expiry involves no commit: the cached answer must check the time itself."""
    a, _ = two
    _info, secret = _checked_token(a, "ci:read", expires_in=1.0)
    time.sleep(1.1)
    assert _answers(a, secret) == (None, None)


def test_commits_other_than_revocations_keep_a_token_known(
    two: tuple[Store, Store], tmp_path: Path
) -> None:
    """A busy server commits all the time (uploads): the check must survive that."""
    a, b = two
    _info, secret = _checked_token(a, "ci:read")
    other, _ = b.create_token("other", ["qa:read"])
    b.push("ci/app:1", [make_tree(tmp_path / "d", {"f": "a commit"})])
    assert a.known_token(secret) is not None
    b.revoke_token(other.id)  # any revocation: every token is checked again once
    assert a.known_token(secret) is None
    assert a.authenticate(secret) is not None
    assert a.known_token(secret) is not None  # and kept again


def test_only_the_exact_secret_is_known(two: tuple[Store, Store]) -> None:
    a, _ = two
    _info, secret = _checked_token(a, "ci:read")
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert _answers(a, wrong) == (None, None)


# --- blob lookups -------------------------------------------------------------------------------


def _find(store: Store, digest: Digest, readable: set[str] | None = None) -> None:
    """Look a blob up so that the answer is kept: the first lookup in a minute renews the
    blob's GC lease (a commit, which outdates the answer it gives), the second does not."""
    for _ in range(2):
        assert store.find_blob(digest, readable) is not None
    assert store.known_blob(digest, readable) is not None


def _invisible(store: Store, digest: Digest, readable: set[str] | None = None) -> None:
    """Neither memory nor the database finds the blob (through ``readable``)."""
    assert store.known_blob(digest, readable) is None
    assert store.find_blob(digest, readable) is None


def _upload(store: Store, namespace: str, data: bytes) -> Digest:
    upload = store.blob_upload("test", namespace)
    upload.write(data)
    return upload.finish().blake3


def test_a_lookup_is_known_only_for_the_namespaces_it_looked_through(
    two: tuple[Store, Store],
) -> None:
    a, _ = two
    digest = _upload(a, "ci", b"ci's bytes")
    _find(a, digest, {"ci"})
    _invisible(a, digest, {"qa"})
    assert a.known_blob(digest, {"qa"}) is None  # an absence is not remembered as presence


def test_an_upload_holding_past_its_grace_is_not_served_from_the_cache(
    two: tuple[Store, Store], clock: FakeClock
) -> None:
    """The holding ends by time alone, with nothing committed."""
    a, _ = two
    digest = _upload(a, "ci", b"held by an upload only")
    _find(a, digest, {"ci"})
    clock.advance(GRACE + 1)
    _invisible(a, digest, {"ci"})
    assert a.find_blob(digest) is not None  # still stored: invisible, not gone


def test_a_package_deleted_by_another_store_stops_serving_its_blob(
    two: tuple[Store, Store], clock: FakeClock, tmp_path: Path
) -> None:
    a, b = two
    record = a.push("ci/app:1", [make_tree(tmp_path / "d", {"f": "the package's bytes"})]).record
    digest = record.manifest.files[0].blake3
    clock.advance(GRACE + 1)  # only the live version holds it now
    _find(a, digest, {"ci"})
    assert a.known_blob(digest) is None  # an admin's lookup is another question
    _find(a, digest)
    b.delete("ci/app:1")
    _invisible(a, digest, {"ci"})
    clock.advance(1)
    assert b.gc(grace=0).collected
    assert a.known_blob(digest) is None
    assert a.find_blob(digest) is None


def test_a_blob_moved_to_another_tier_is_looked_up_again(
    two: tuple[Store, Store], tmp_path: Path
) -> None:
    a, b = two
    record = a.push("ci/app:1", [make_tree(tmp_path / "d", {"f": "to be frozen"})]).record
    digest = record.manifest.files[0].blake3
    _find(a, digest)
    b.tier_move("ci/app:1", "cold")
    assert a.known_blob(digest) is None
    moved = a.find_blob(digest)
    assert moved is not None and moved.retrieval_tier == "cold"
    assert a.known_blob(digest) is None  # not readable now: never kept
