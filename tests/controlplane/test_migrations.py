"""The Alembic migrations create exactly the tables the code declares, on both engines."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from artifactstore.controlplane.db.engine import _MIGRATIONS, HEAD_REVISION, Database
from artifactstore.controlplane.db.tables import POSTGRESQL_ONLY, metadata
from artifactstore.errors import UnmigratedDatabase
from tests.conftest import ARTIFACTSTORE

pytestmark = pytest.mark.configs("embedded", "scaleout")


@pytest.fixture
def db(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A database with no tables yet: a new SQLite file, or a new PostgreSQL database."""
    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if engine == "sqlite"
        else str(request.getfixturevalue("empty_postgresql"))
    )
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()


def test_migrations_match_declared_tables(db: Database) -> None:
    before, after = db.migrate()
    assert before is None and after == db.head_revision() == HEAD_REVISION
    with db.engine.connect() as conn:
        dialect = conn.dialect.name

        def declared_here(obj: object, name: str | None, kind: str, *_: object) -> bool:
            """Alembic ignores ``ddl_if``: an index of another engine is not expected here."""
            return not (kind == "index" and name in POSTGRESQL_ONLY and dialect != "postgresql")

        context = MigrationContext.configure(conn, opts={"include_object": declared_here})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_unmigrated_database_is_refused(db: Database) -> None:
    with pytest.raises(UnmigratedDatabase, match="artifactstore migrate"):
        db.ensure_migrated(create=False)
    db.ensure_migrated(create=True)
    db.ensure_migrated(create=False)  # now current: no error
    assert db.current_revision() == db.head_revision()


def test_outdated_database_is_refused_even_when_creating(db: Database) -> None:
    with db.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    with pytest.raises(UnmigratedDatabase, match="revision 0004"):
        db.ensure_migrated(create=True)
    assert db.migrate() == ("0004", HEAD_REVISION)


def test_concurrent_first_migrations_apply_once(db: Database, tmp_path: Path) -> None:
    """Replicas started together on a new database each migrate it: one does, the
    others wait and find it current (on SQLite the write lock serialises them, on
    PostgreSQL an advisory lock), and none fails on a table another just created.
    Processes, as replicas are: Alembic's context is one per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env |= {"ARTIFACTSTORE_DATABASE_URL": db.url, "ARTIFACTSTORE_HOME": str(tmp_path / "h")}
    procs = [
        subprocess.Popen(
            [str(ARTIFACTSTORE), "migrate"], env=env, cwd=tmp_path, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert db.current_revision() == HEAD_REVISION
