"""A PostgreSQL database of the test session's own, for the tests that run on both engines.

The server is the one named by ``TEST_POSTGRESQL_URL`` (default: the local one on
127.0.0.1:5432 with trust auth). The session creates a database with a random
name there, migrates it once and drops it at the end; each test starts from
empty tables (``empty``), which is far cheaper than a database per test.

Where the server cannot be reached the tests that need it skip, saying why; under
CI (``CI`` set) they fail instead, so a CI run cannot pass without them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import closing, contextmanager

import psycopg
import pytest
from psycopg import sql

from artifactstore.controlplane.db.engine import Database

#: The server's maintenance database: where the session's own is created and dropped.
ADMIN_URL = os.environ.get("TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: Tables that survive ``empty``: the migrations' record of the schema.
_KEPT = ("alembic_version",)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def unreachable(reason: str) -> None:
    """Skip (or, under CI, fail) a test that needs PostgreSQL, saying why."""
    message = f"PostgreSQL at {ADMIN_URL} (TEST_POSTGRESQL_URL) is not reachable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this fails instead of skipping)")
    pytest.skip(message)


def database_url(name: str) -> str:
    """The URL of database ``name`` on the server of ``ADMIN_URL``."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    user = info.get("user") or ""
    host = info.get("host") or "127.0.0.1"
    port = info.get("port") or "5432"
    return f"postgresql://{user}@{host}:{port}/{name}"


@contextmanager
def new_database() -> Iterator[str]:
    """The URL of a new, empty database with a random name, dropped afterwards
    (with whatever connections still use it)."""
    try:
        admin = _admin()
    except psycopg.OperationalError as exc:
        unreachable(" ".join(line.strip() for line in str(exc).splitlines()) or repr(exc))
        raise  # unreachable() raised; this satisfies the type checker
    name = f"artifactstore_test_{secrets.token_hex(6)}"
    with closing(admin):
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield database_url(name)
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgresql_template() -> Iterator[str]:
    """The URL of a migrated database that nothing connects to: what every database of
    the session is copied from (``CREATE DATABASE ... TEMPLATE``: a file copy, far
    cheaper than migrating again)."""
    with new_database() as url:
        db = Database(url)
        try:
            db.migrate()
        finally:
            db.dispose()
        yield url


@contextmanager
def clone_database(template: str) -> Iterator[str]:
    """The URL of a new database copied from ``template`` (which no one may be connected
    to), dropped afterwards with whatever connections still use it."""
    name = f"artifactstore_test_{secrets.token_hex(6)}"
    source = psycopg.conninfo.conninfo_to_dict(template)["dbname"]
    with closing(_admin()) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(str(source))
            )
        )
        try:
            yield database_url(name)
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgresql_session(postgresql_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated database of this session, dropped at its end."""
    with clone_database(postgresql_template) as url:
        yield url


def empty(url: str) -> None:
    """Remove every row of the database at ``url`` except the schema's revision.

    Fails at once (lock timeout) rather than hanging where a connection of an
    earlier test still holds a transaction open: that is a leak to fix.
    """
    with closing(psycopg.connect(url, autocommit=True)) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
            if row[0] not in _KEPT
        ]
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(map(sql.Identifier, names))
            )
        )


@pytest.fixture
def empty_postgresql() -> Iterator[str]:
    """A new database with no tables at all, for the tests of migrations."""
    with new_database() as url:
        yield url


@pytest.fixture
def postgresql_url(postgresql_session: str) -> str:
    """The session's database, emptied for this test."""
    empty(postgresql_session)
    return postgresql_session
