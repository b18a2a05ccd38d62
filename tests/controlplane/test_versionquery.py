"""Keyset pagination of queries in both orders, and their cursors.

Pages are walked through ``Store.query`` over real versions whose commit times
the test then rewrites in the view (ties, and a clock behind): every version
must come exactly once, in order, whichever page boundary falls inside a tie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import update

from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.versionquery import _decode_cursor, _encode_cursor
from artifactstore.errors import InvalidInput
from artifactstore.store import Store
from tests.conftest import make_tree

pytestmark = pytest.mark.configs("embedded", "scaleout")

#: Commit times by version number: ties of three, and 7 and 8 "earlier" than their ids.
TIMES = {n: f"2026-03-0{1 + n // 3}T00:00:00.000000Z" for n in range(12)}
TIMES |= {7: "2026-02-01T00:00:00.000000Z", 8: "2026-02-01T00:00:00.000000Z"}


def _pages(store: Store, limit: int, **args: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.query(limit=limit, cursor=cursor, **args)
        pages.append([str(r.reference.version) for r in page.items])
        if (cursor := page.next_cursor) is None:
            return pages


@pytest.fixture
def tied(store: Store, tmp_path: Path) -> Store:
    src = make_tree(tmp_path / "d", {"a": "a"})
    for n in range(12):
        store.push(f"ci/app:{n}", [src], metadata={"branch": "main" if n % 2 else "dev"})
    with store.db.write() as conn:
        for n, at in TIMES.items():
            conn.execute(
                update(t.versions).where(t.versions.c.version == str(n)).values(committed_at=at)
            )
    return store


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_a_time_range_pages_through_ties_in_commit_time_order(tied: Store, limit: int) -> None:
    window = {"created_after": "2026-01-01T00:00:00Z", "created_before": "2027-01-01T00:00:00Z"}
    pages = _pages(tied, limit, **window)
    want = sorted(range(12), key=lambda n: (TIMES[n], n), reverse=True)
    assert [int(v) for p in pages for v in p] == want
    assert all(len(p) == limit for p in pages[:-1])


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_a_metadata_filter_pages_in_id_order(tied: Store, limit: int) -> None:
    pages = _pages(tied, limit, namespace="ci", where={"branch": "main"})
    assert [int(v) for p in pages for v in p] == [11, 9, 7, 5, 3, 1]


def test_a_cursor_of_the_other_order_is_refused(tied: Store) -> None:
    by_id = tied.query(limit=2).next_cursor
    after = "2026-01-01T00:00:00Z"
    by_time = tied.query(limit=2, created_after=after).next_cursor
    assert by_id is not None and by_time is not None
    with pytest.raises(InvalidInput, match="invalid cursor"):
        tied.query(limit=2, cursor=by_id, created_after=after)
    with pytest.raises(InvalidInput, match="invalid cursor"):
        tied.query(limit=2, cursor=by_time)


@given(st.integers(1, 10**17), st.sampled_from([None, "2026-12-04T19:14:20.123456Z", "2026"]))
def test_cursors_round_trip(version_id: int, at: str | None) -> None:
    cursor = _encode_cursor(version_id, at)
    assert cursor.isascii() and not set(cursor) & set("+/=&?# ")
    assert _decode_cursor(cursor, timed=at is not None) == (at, version_id)


@example("²")  # isdigit() but not int()
@given(st.text(max_size=100))
def test_any_other_cursor_is_refused_or_decodes_to_a_position(cursor: str) -> None:
    for timed in (False, True):
        try:
            at, version_id = _decode_cursor(cursor, timed=timed)
        except InvalidInput:
            continue
        assert version_id >= 0 and (at is not None) is timed
