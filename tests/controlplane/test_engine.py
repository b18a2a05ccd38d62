"""Database transactions: durable by default, and the lease-only non-durable kind."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from artifactstore.controlplane.db.engine import Database

FULL, NORMAL = 2, 1


def _synchronous(db: Database, **kw: bool) -> int:
    with db.write(**kw) as conn:
        return int(conn.execute(text("PRAGMA synchronous")).scalar_one())


def test_writes_are_full_sync_unless_asked(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert _synchronous(db) == FULL
        assert _synchronous(db, durable=False) == NORMAL
        # The pooled connection goes back to FULL for the next transaction.
        assert _synchronous(db) == FULL
        with db.read() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == FULL
    finally:
        db.dispose()


def test_a_failed_non_durable_write_restores_full_sync(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        try:
            with db.write(durable=False) as conn:
                conn.execute(text("SELECT nonsense FROM nowhere"))
        except Exception:
            pass
        assert _synchronous(db) == FULL
    finally:
        db.dispose()
