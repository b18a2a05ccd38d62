"""Named leases on a real SQLite database: one holder at a time, renewal, expiry, release."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

from artifactstore.controlplane import leases
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database

T0 = 1_700_000_000.0
TTL = 30.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'leases.db'}")
    database.ensure_migrated(create=True)
    try:
        yield database
    finally:
        database.dispose()


def rows(db: Database) -> list[tuple[str, str, float]]:
    with db.read() as conn:
        return [(r.name, r.holder, r.expires_at) for r in conn.execute(select(t.leases))]


def test_second_holder_is_refused_while_the_first_holds(db: Database) -> None:
    assert leases.acquire(db, "gc", "a", TTL, T0)
    assert not leases.acquire(db, "gc", "b", TTL, T0 + 1)
    assert not leases.acquire(db, "gc", "b", TTL, T0 + TTL - 0.001)
    assert rows(db) == [("gc", "a", T0 + TTL)]
    assert leases.holder_of(db, "gc", T0 + 1) == "a"


def test_leases_are_independent_by_name(db: Database) -> None:
    assert leases.acquire(db, "gc", "a", TTL, T0)
    assert leases.acquire(db, "restore", "b", TTL, T0)
    assert sorted(rows(db)) == [("gc", "a", T0 + TTL), ("restore", "b", T0 + TTL)]


def test_the_owner_renews(db: Database) -> None:
    assert leases.acquire(db, "gc", "a", TTL, T0)
    assert leases.acquire(db, "gc", "a", TTL, T0 + 20)
    assert rows(db) == [("gc", "a", T0 + 20 + TTL)]
    # Renewed: past the first expiry, b is still refused.
    assert not leases.acquire(db, "gc", "b", TTL, T0 + TTL + 1)
    assert leases.holder_of(db, "gc", T0 + TTL + 1) == "a"


def test_an_expired_lease_is_taken_over(db: Database) -> None:
    assert leases.acquire(db, "gc", "a", TTL, T0)
    assert leases.holder_of(db, "gc", T0 + TTL) is None
    assert leases.acquire(db, "gc", "b", TTL, T0 + TTL)
    assert rows(db) == [("gc", "b", T0 + 2 * TTL)]
    # The old holder does not get it back by renewing.
    assert not leases.acquire(db, "gc", "a", TTL, T0 + TTL + 1)


def test_release(db: Database) -> None:
    assert leases.acquire(db, "gc", "a", TTL, T0)
    assert not leases.release(db, "gc", "b"), "only the holder releases"
    assert rows(db) == [("gc", "a", T0 + TTL)]
    assert leases.release(db, "gc", "a")
    assert rows(db) == []
    assert not leases.release(db, "gc", "a"), "releasing twice is harmless"
    assert leases.acquire(db, "gc", "b", TTL, T0 + 1), "released: taken at once"


def test_a_positive_ttl_is_required(db: Database) -> None:
    with pytest.raises(ValueError, match="positive TTL"):
        leases.acquire(db, "gc", "a", 0.0, T0)
    assert rows(db) == []


@pytest.mark.parametrize("expired", [False, True], ids=["absent", "expired"])
def test_racing_holders_exactly_one_wins(tmp_path: Path, expired: bool) -> None:
    """N threads, each with its own engine (as replicas would be), try at the same instant."""
    n = 8
    url = f"sqlite:///{tmp_path / 'race.db'}"
    setup = Database(url)
    setup.ensure_migrated(create=True)
    if expired:
        assert leases.acquire(setup, "gc", "crashed", TTL, T0 - 2 * TTL)
    setup.dispose()
    databases = [Database(url) for _ in range(n)]
    barrier = threading.Barrier(n)
    won: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def contender(i: int) -> None:
        try:
            barrier.wait(10)
            if leases.acquire(databases[i], "gc", f"holder-{i}", TTL, T0):
                with lock:
                    won.append(f"holder-{i}")
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert len(won) == 1, won
        assert rows(databases[0]) == [("gc", won[0], T0 + TTL)]
    finally:
        for database in databases:
            database.dispose()


def test_the_postgresql_insert_does_nothing_on_conflict() -> None:
    """The statement PostgreSQL runs (no server here): ON CONFLICT on the primary key."""
    stmt = leases._insert_if_absent("gc", "a", T0, on_sqlite=False)
    sql = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    assert "ON CONFLICT (name) DO NOTHING" in sql
