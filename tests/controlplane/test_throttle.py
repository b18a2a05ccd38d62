"""The shared failed-authentication throttle (controlplane/throttle.py) in both configurations:
the limit, the sliding window, and the bounds that keep the table small."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from artifactstore.controlplane import throttle
from artifactstore.controlplane.db import tables as t
from artifactstore.store import Store

pytestmark = pytest.mark.configs("embedded", "scaleout")

LIMIT, WINDOW = 3, 60.0


def _fail(store: Store, client: str, now: float) -> int | None:
    with store.db.write() as conn:
        return throttle.fail(conn, client, now, limit=LIMIT, window=WINDOW)


def _rows(store: Store, client: str | None = None) -> int:
    query = select(func.count()).select_from(t.auth_failures)
    if client is not None:
        query = query.where(t.auth_failures.c.client == client)
    with store.db.read() as conn:
        return int(conn.execute(query).scalar_one())


def test_past_the_limit_a_failure_is_told_to_wait(store: Store) -> None:
    assert [_fail(store, "198.51.100.1", 1000.0 + i) for i in range(LIMIT)] == [None] * LIMIT
    assert _fail(store, "198.51.100.1", 1010.0) == 51  # the oldest of the last 3 (1000) + 60
    assert _fail(store, "198.51.100.2", 1010.0) is None  # another address has its own count
    # The window slides: once the earlier failures are a minute old, the count is clean.
    assert _fail(store, "198.51.100.1", 1075.0) is None


def test_rows_stay_bounded_per_address_and_are_pruned(store: Store) -> None:
    for i in range(50):  # a flood from one address keeps at most LIMIT rows
        _fail(store, "203.0.113.9", 2000.0 + i / 10)
    assert _rows(store, "203.0.113.9") == LIMIT
    for i in range(20):
        _fail(store, f"192.0.2.{i}", 2010.0)
    assert _rows(store) == LIMIT + 20
    _fail(store, "192.0.2.200", 2100.0)  # a minute on: every older row goes
    assert _rows(store) == 1


def test_a_long_client_key_is_cut(store: Store) -> None:
    for i in range(LIMIT):
        _fail(store, "x" * 500, 3000.0 + i)
    assert _fail(store, "x" * 64 + "different tail", 3005.0) is not None
