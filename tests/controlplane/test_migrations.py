"""The Alembic migrations create exactly the tables the code declares."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from artifactstore.controlplane.db.engine import HEAD_REVISION, Database
from artifactstore.controlplane.db.tables import metadata
from artifactstore.errors import UnmigratedDatabase


def test_migrations_match_declared_tables(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        before, after = db.migrate()
        assert before is None and after == db.head_revision() == HEAD_REVISION
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        db.dispose()


def test_unmigrated_database_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with pytest.raises(UnmigratedDatabase, match="artifactstore migrate"):
            db.ensure_migrated(create=False)
        db.ensure_migrated(create=True)
        db.ensure_migrated(create=False)  # now current: no error
        assert db.current_revision() == db.head_revision()
    finally:
        db.dispose()
