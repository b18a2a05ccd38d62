"""Many rows in one INSERT, through the driver's own ``executemany``.

SQLAlchemy processes the parameters of every row in Python, and for the
10,000 rows a push of 10,000 files writes per table that cost twice what
SQLite spends inserting them (measured: 69 ms against 33 ms for 10,000
``files`` rows). The statement is still compiled by SQLAlchemy for the
connection's dialect, so the same call works on SQLite and PostgreSQL.
Our tables have no Python-side defaults or type processors that this skips.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert

__all__ = ["insert_rows"]


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ``rows`` (all with the same keys) into ``table``."""
    if not rows:
        return
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(rows[0]))
    if compiled.positional:
        order = compiled.positiontup or []
        conn.exec_driver_sql(str(compiled), [tuple(row[k] for k in order) for row in rows])
    else:
        conn.exec_driver_sql(str(compiled), [dict(row) for row in rows])
