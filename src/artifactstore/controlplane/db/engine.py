"""Database engines and transactions, SQLite and PostgreSQL alike.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit that returned is
on disk) and every write transaction starts with ``BEGIN IMMEDIATE``, so two
writers queue on the database lock instead of failing on a lock upgrade.
That serialisation is also what the GC protocol relies on (``gc.py``); on
PostgreSQL the same code takes row locks instead.

Database errors leave here in three forms only. A full disk becomes
:class:`~artifactstore.errors.StorageFull`. A PostgreSQL server that cannot be
reached, drops the connection or does not answer in time (an operational
error, or no pooled connection free within the pool's wait) becomes
:class:`~artifactstore.errors.DatabaseUnavailable`: an outage, reported as
one clear line and a 503, never a traceback. Any other is a bug and propagates
as SQLAlchemy raised it, but without the statement and its parameters: the
server logs the traceback of a 500, and a statement's parameters are the
caller's data (metadata values, names), never something to write to a log.
The engine hides them as well (``hide_parameters``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from artifactstore.config import DATABASE_SCHEMES
from artifactstore.dataplane.reserve import Reserve, is_full
from artifactstore.errors import (
    DatabaseUnavailable,
    InvalidInput,
    StorageFull,
    UnmigratedDatabase,
)

__all__ = ["HEAD_REVISION", "Database", "engine_url"]

_MIGRATIONS = Path(__file__).parent / "migrations"

#: The newest migration. Checking it needs no Alembic import, which keeps every
#: CLI start fast; a test asserts it equals the migration scripts' head.
HEAD_REVISION = "0011"

_SQLITE_FULL = 13  # primary result code: "database or disk is full"
_SQLITE_IOERR = 10  # I/O errors; on a full disk, e.g. SQLITE_IOERR_SHMSIZE at open
_PG_DISK_FULL = "53100"  # SQLSTATE disk_full

#: How long ``Database.probe`` waits for a lock (it runs on a server's event loop).
PROBE_BUSY_MS = 20


#: Connections each process keeps open to PostgreSQL, and how many more it may open
#: under a burst. A server's worker threads share them; every replica has its own.
PG_POOL_SIZE = 10
#: The PostgreSQL advisory lock (a 64-bit key of our choosing) migrations take turns on.
_MIGRATE_LOCK = 0x4152_5453_4D49_4752  # "ARTSMIGR"
PG_POOL_OVERFLOW = 10
#: libpq connection options a PostgreSQL URL may override (``?connect_timeout=10``).
#: A host that blackholes must not hold a request for minutes: a connection
#: attempt gives up after 5 s, and an established connection whose peer stops
#: answering fails within about 30 s (keepalives while idle, ``tcp_user_timeout``
#: while data is unacknowledged) instead of the kernel's 15-minute retransmissions.
PG_CONNECT_OPTIONS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
#: How long a request waits for a pooled connection before the database counts as down.
PG_POOL_TIMEOUT = 10


def engine_url(url: str) -> str:
    """The SQLAlchemy URL for a database URL as users write it (SPEC section 10).

    ``postgresql://`` (and the older ``postgres://``) would make SQLAlchemy look for
    psycopg2; the driver we ship is psycopg 3, so they name it. A URL that already
    names a driver (``postgresql+psycopg2://``) is left to the user's choice.
    """
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def _sqlite_pragmas(dbapi_conn: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
    finally:
        cur.close()


class Database:
    """One engine plus the two kinds of transaction the control plane uses."""

    def __init__(self, url: str, *, reserve_bytes: int = 0) -> None:
        _check_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
        #: Where the database's own files grow, if it is a SQLite file.
        self.directory = Path(file).parent if file and file != ":memory:" else None
        #: Space released for the operations that free space (see ``freeing``).
        self.reserve = Reserve(Path(f"{file}.reserve") if self.directory else None, reserve_bytes)
        # SQLite admits one writer; a connection that finds the lock taken polls
        # for it (sleeping 1, 2, 5, 10, 15, 20, 25 ms...), so under concurrent
        # requests the lock sat idle while waiters slept. Writers of this process
        # queue on a lock of their own instead and start the moment it is free
        # (other processes still meet SQLite's busy timeout).
        self._writers: AbstractContextManager[object] = (
            threading.RLock() if self.is_sqlite else nullcontext()
        )
        self._probe: sqlite3.Connection | None = None  # probe's connection, opened on use
        self._probe_opened = 0
        self._probe_lock = threading.Lock()
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 60},
                hide_parameters=True,
            )
            event.listen(self.engine, "connect", self._on_connect)
            event.listen(self.engine, "begin", self._begin_deferred)
        else:
            given = make_url(engine_url(url)).query
            self.engine = create_engine(
                engine_url(url),
                pool_size=PG_POOL_SIZE,
                max_overflow=PG_POOL_OVERFLOW,
                pool_timeout=PG_POOL_TIMEOUT,
                pool_pre_ping=True,
                hide_parameters=True,
                connect_args={k: v for k, v in PG_CONNECT_OPTIONS.items() if k not in given},
            )

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        try:
            _sqlite_pragmas(dbapi_conn)
        except sqlite3.OperationalError as exc:
            # Opening a WAL database creates its -shm and -wal files, which a full
            # disk refuses: even rm and gc could not start. The reserve makes room
            # for them and is allocated again at once, as far as the disk allows.
            if not (self._full(exc) and self.reserve.release()):
                raise
            try:
                _sqlite_pragmas(dbapi_conn)
            finally:
                self.reserve.keep()

    def _full(self, exc: BaseException | None) -> bool:
        """Whether a database error means that the disk (or quota) is full."""
        if _PG_DISK_FULL in (getattr(exc, "pgcode", None), getattr(exc, "sqlstate", None)):
            return True  # psycopg2 and psycopg 3 name the SQLSTATE differently
        code = getattr(exc, "sqlite_errorcode", None)
        if not isinstance(code, int):
            return False
        if code & 0xFF == _SQLITE_IOERR and self.directory is not None:
            return is_full(self.directory)
        return code & 0xFF == _SQLITE_FULL

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors as the module docstring says: StorageFull, or stripped."""
        try:
            yield
        except DBAPIError as exc:
            if self._full(exc.orig):
                raise StorageFull(
                    "the disk holding the database is full: nothing was written; free space "
                    "('artifactstore rm', then 'artifactstore gc') or grow the disk"
                ) from exc
            if isinstance(exc, OperationalError) and not self.is_sqlite and _outage(exc):
                raise self._unavailable(exc.orig) from None
            _strip(exc)
            raise
        except PoolTimeout as exc:
            raise self._unavailable(exc) from None
        except StatementError as exc:
            _strip(exc)
            raise

    def _unavailable(self, cause: BaseException | None) -> DatabaseUnavailable:
        """The outage error for ``cause``: the server's address (never a password) and the
        driver's first line, which says refused, timed out or closed."""
        where = make_url(self.url).render_as_string(hide_password=True)
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return DatabaseUnavailable(f"the database at {where} is unavailable: {first}")

    @contextmanager
    def freeing(self) -> Iterator[None]:
        """Run an operation that frees space (rm, gc) with the reserve released.

        On a full disk it is the room their own writes need (an event, the rows
        they remove); the reserve is allocated again afterwards.
        """
        with self.reserve.released():
            yield

    @staticmethod
    def _begin_deferred(conn: Connection) -> None:
        want = conn.info.pop("begin", "BEGIN")
        conn.exec_driver_sql(want)

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A read-write transaction, serialised against other writers on SQLite.

        ``durable=False`` is for writes that only coordinate live processes (GC
        leases): on SQLite the commit is visible to every connection at once but
        not flushed (``synchronous=NORMAL`` in WAL mode); the next durable commit
        flushes it with its own, as the WAL is written in order. A power loss
        may forget it, which can only make GC treat fresh unrecorded bytes as
        orphans: nothing acknowledged depends on it. Saves an fsync per upload.
        """
        with self._translated(), self._writers, self.engine.connect() as conn:
            raw = None
            if self.is_sqlite:
                conn.info["begin"] = "BEGIN IMMEDIATE"
                if not durable:
                    raw = conn.connection.driver_connection
                    assert raw is not None
                    raw.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    yield conn
            finally:
                if raw is not None:
                    raw.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot (one transaction)."""
        with self._translated(), self.engine.connect() as conn, conn.begin():
            yield conn

    def probe(self, statement: str) -> tuple[Any, ...] | None:
        """The one row of a tiny read-only ``statement`` (raw SQL), or None where no cheap
        probe exists (PostgreSQL) or it cannot answer at once: per-process caches ask it on
        every request, and None makes them read the database the usual way.

        It runs on a SQLite connection of its own, which never writes and reads in
        autocommit mode (no transaction stays open to pin an old snapshot): a few
        microseconds, against 150 µs or more for the smallest statement through
        SQLAlchemy's pool and a transaction, so a server can ask it on its event
        loop. It waits at most ``PROBE_BUSY_MS`` for a lock (a WAL reader rarely
        meets one) and is opened again after an error. Only the control plane
        writes the statements.
        """
        path = self.engine.url.database if self.is_sqlite else None
        if not path or path == ":memory:":  # PostgreSQL; a memory database is one connection's
            return None
        with self._probe_lock:
            try:
                if self._probe is None:
                    self._probe = sqlite3.connect(
                        path,
                        timeout=PROBE_BUSY_MS / 1000,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    self._probe_opened += 1
                rows = self._probe.execute(statement).fetchall()  # all: the statement ends
            except sqlite3.Error:
                if self._probe is not None:
                    self._probe.close()
                    self._probe = None
                return None
        return tuple(rows[0])

    def data_version(self) -> int | None:
        """A number that changes whenever any connection, of this process or another, has
        committed to the database since it was last read (None: cannot tell now).

        SQLite's ``PRAGMA data_version`` on the probe's connection, whose own
        commits would not change it (it makes none), counted from each opening of
        that connection: so the openings are counted in the high bits, and a value
        read before a reopening never equals one read after. Read it *before* the
        transaction whose result is cached: an unchanged value later means nothing
        was committed since that snapshot.
        """
        row = self.probe("PRAGMA data_version")
        return None if row is None else (self._probe_opened << 40) + int(row[0])

    def dispose(self) -> None:
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        self.engine.dispose()

    # --- migrations ---------------------------------------------------------------------
    # Alembic is imported only when a migration actually runs.

    def head_revision(self) -> str | None:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        return ScriptDirectory.from_config(cfg).get_current_head()

    def current_revision(self) -> str | None:
        with self._translated(), self.engine.connect() as conn:
            return _revision(conn)

    def migrate(self) -> tuple[str | None, str | None]:
        """Apply every pending migration; returns (before, after) revisions."""
        from alembic import command
        from alembic.config import Config

        before = self.current_revision()
        with self._translated(), self.engine.connect() as conn:
            if self.is_sqlite:
                conn.info["begin"] = "BEGIN IMMEDIATE"
            with conn.begin():
                if not self.is_sqlite:
                    # Replicas started together each migrate a new database: they take
                    # turns, as BEGIN IMMEDIATE makes them on SQLite, and each later one
                    # finds the schema current (DDL is transactional on PostgreSQL).
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
                    before = _revision(conn)
                cfg = Config()
                cfg.set_main_option("script_location", str(_MIGRATIONS))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        return before, self.current_revision()

    def ensure_migrated(self, *, create: bool) -> None:
        """Migrate a brand-new database when ``create``; refuse an outdated one."""
        current = self.current_revision()
        if current == HEAD_REVISION:
            return
        if current is None and create:
            self.migrate()
            return
        raise UnmigratedDatabase(
            f"the database is at revision {current or 'none'} but this version of "
            f"artifact-store needs {HEAD_REVISION}: run 'artifactstore migrate' first"
        )


#: SQLSTATEs of a PostgreSQL that is going away or cannot take us: admin or crash
#: shutdown, starting up, too many connections, a statement cancelled (timeout).
_PG_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "57014"})


def _outage(exc: DBAPIError) -> bool:
    """Whether an operational error means the server is unreachable or going away.

    A failed connection attempt carries no SQLSTATE, a dropped connection
    invalidates it, and class 08 is "connection exception". Serialisation
    failures, deadlocks and lock timeouts are operational errors too, but of
    our own transactions, not outages: they stay as they are.
    """
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    return state is None or str(state).startswith("08") or state in _PG_OUTAGE_STATES


def _check_url(url: str) -> None:
    """Refuse a DATABASE_URL this build cannot open, in one line (not a driver's traceback)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput(
            "DATABASE_URL is not a database URL: write sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    if parsed.get_backend_name() not in DATABASE_SCHEMES:
        raise InvalidInput(
            f"unsupported DATABASE_URL scheme {parsed.drivername!r}: this build supports "
            "sqlite:/// and postgresql://"
        )


def _revision(conn: Connection) -> str | None:
    """The schema's revision as ``conn`` sees it (None: no migration ever ran)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def _strip(exc: StatementError) -> None:
    """Drop the statement and its parameters from the error's text (its class and
    the driver's message stay): a log of the traceback then holds no data."""
    exc.statement = None
    exc.params = None
