"""Metadata and time-range queries are answered from indexes on both engines.

The engine is asked for its plan of the statement ``query`` runs, over a view
of some thousands of versions (statistics gathered), so that the planner has a
real choice between the index and a scan: a ``meta.K=V`` filter walks one
pair's entries of ``version_meta``'s covering key/value index newest first
(no sort, a rare and a common pair alike); time ranges are one backward range
of the ``(committed_at, id)`` indexes, in their order; a metadata filter within
a time range collects a rare pair's versions (the GIN index on PostgreSQL) and
tests a common one per row. The migration that added ``meta`` fills it for
existing versions exactly as a rebuild does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, insert, text

from artifactstore.controlplane import versionquery
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import _MIGRATIONS
from artifactstore.model.records import QueryArgs
from artifactstore.store import Store
from tests.conftest import make_tree
from tests.matrix import StoreConfigs
from tests.test_rebuild import dump_views

pytestmark = pytest.mark.configs("embedded", "scaleout")

#: Versions in the view: enough that a scan costs the planner far more than the index.
ROWS = 20_000
START = datetime(2026, 1, 1, tzinfo=UTC)


def _at(i: int) -> str:
    return (START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def _committed(i: int) -> str:
    """Two versions per second, and every seventh committed 100 s "earlier" than its
    id says (a replica's clock behind): time order is not id order."""
    return _at(i // 2 - (100 if i % 7 == 0 else 0))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, store_configs: StoreConfigs) -> Iterator[Store]:
    """A store with ROWS versions written straight into the views (no log: only plans
    are asked of it), spread over 4 namespaces, each with a build number of its own
    and a branch that every other version shares, and the engine's statistics gathered."""
    store = Store.open(tmp_path_factory.mktemp("big") / "home", **store_configs.new().overrides())
    versions, meta = [], []
    for i in range(1, ROWS + 1):
        pairs = {"build": str(i), "branch": "main" if i % 2 else "dev"}
        versions.append(
            {
                "id": i,
                "namespace": f"ns{i % 4}",
                "name": "app",
                "version": str(i),
                "digest": f"blake3:{i:064x}",
                "sha256": f"sha256:{i:064x}",
                "manifest": b"",
                "variant": None,
                "created": _at(i),
                "committed_at": _committed(i),
                "actor": "test",
                "size": 0,
                "file_count": 0,
                "deleted_seq": None,
                "deleted_at": None,
                "meta": pairs,
            }
        )
        meta += [{"version_id": i, "key": k, "value": v} for k, v in pairs.items()]
    with store.db.engine.begin() as conn:
        conn.execute(insert(t.versions), versions)
        conn.execute(insert(t.version_meta), meta)
    with store.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    try:
        yield store
    finally:
        store.close()


def _found(conn: Connection, **args: Any) -> list[str]:
    """The versions the query ``args`` make finds (its rows, not records: the views
    hold no real manifests)."""
    query: QueryArgs = args  # type: ignore[assignment]
    return [r.version for r in conn.execute(versionquery.query_statement(conn, **query))]


def _plan(conn: Connection, **args: Any) -> str:
    """The engine's plan of the query ``args`` make (one line per node)."""
    query: QueryArgs = args  # type: ignore[assignment]
    statement = versionquery.query_statement(conn, **query)
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "postgresql":
        return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql.replace("%", "%%")))
    return "\n".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))


def _holds(where: dict[str, str]) -> Callable[[int], bool]:
    """Does version i hold the pair (the fixture's build or branch)?"""
    if "build" in where:
        return lambda i: i == int(where["build"])
    return lambda i: (where["branch"] == "main") == bool(i % 2)


def _sorts(plan: str) -> bool:
    return "TEMP B-TREE" in plan or "Sort" in plan


@pytest.mark.parametrize("where", [{"build": "4321"}, {"branch": "dev"}], ids=["rare", "common"])
def test_a_metadata_filter_walks_a_pair_index_newest_first(
    big: Store, engine: str, where: dict[str, str]
) -> None:
    """Rare or common, the pair's index entries are read newest first, each version
    fetched by id: no sort of every match (the old plan's shape)."""
    with big.db.read() as conn:
        plan = _plan(conn, namespace="ns1", where=where, limit=10)
        got = [int(v) for v in _found(conn, namespace="ns1", where=where, limit=10)]
    holds = _holds(where)
    assert got == [i for i in range(ROWS, 0, -1) if i % 4 == 1 and holds(i)][:11]
    assert not _sorts(plan), plan
    if engine == "postgresql":
        assert "Index Only Scan Backward using ix_version_meta_kv" in plan, plan
        assert "Nested Loop" in plan and "(id = (driver.version_id + 0))" in plan, plan
    else:
        assert "SEARCH driver USING COVERING INDEX ix_version_meta_kv" in plan, plan


def test_several_pairs_one_drives_the_others_are_tested_per_row(big: Store, engine: str) -> None:
    with big.db.read() as conn:
        where = {"build": "4321", "branch": "main"}
        plan = _plan(conn, where=where)
        assert _found(conn, where=where) == ["4321"]
        assert _found(conn, where={"build": "4321", "branch": "dev"}) == []
    assert not _sorts(plan), plan
    if engine == "postgresql":
        assert plan.count("ix_version_meta_kv") == 1 and "jsonb_contains" in plan, plan
    else:
        assert plan.count("ix_version_meta_kv") == 1, plan
        assert "sqlite_autoindex_version_meta_1 (version_id=? AND key=?)" in plan, plan


def _in_time_order(ids: list[int]) -> list[int]:
    return sorted(ids, key=lambda i: (_committed(i), i), reverse=True)


def test_a_time_range_is_one_range_in_commit_time_order(big: Store) -> None:
    """Newest commit time first, ties by id; served by the index's order (no sort)."""
    window = {"created_after": _at(2000), "created_before": _at(4000), "limit": 30}
    inside = [i for i in range(1, ROWS + 1) if _at(2000) < _committed(i) < _at(4000)]
    with big.db.read() as conn:
        # A quarter of the versions are in ns2: PostgreSQL may walk either time index.
        for args, indexes in (
            ({"namespace": "ns2", **window}, ("ix_versions_ns_time", "ix_versions_time")),
            (window, ("ix_versions_time",)),
        ):
            plan = _plan(conn, **args)
            assert any(i in plan for i in indexes) and not _sorts(plan), plan
            got = [int(v) for v in _found(conn, **args)]
            want = [i for i in inside if "namespace" not in args or i % 4 == 2]
            assert got == _in_time_order(want)[:31] and got != sorted(want, reverse=True)[:31]


@pytest.mark.parametrize("where", [{"build": "5005"}, {"branch": "dev"}], ids=["rare", "common"])
def test_metadata_in_a_time_range_collects_a_rare_pair_and_tests_a_common_one(
    big: Store, engine: str, where: dict[str, str]
) -> None:
    window = {"created_after": _at(2000), "created_before": _at(3000)}
    with big.db.read() as conn:
        plan = _plan(conn, where=where, **window)
        got = [int(v) for v in _found(conn, where=where, limit=1000, **window)]
    holds = _holds(where)
    inside = [i for i in range(1, ROWS + 1) if _at(2000) < _committed(i) < _at(3000)]
    assert got == _in_time_order([i for i in inside if holds(i)])
    rare = "build" in where
    if engine == "postgresql":
        assert ("ix_versions_meta" in plan) is rare and ("jsonb_contains" in plan) is not rare
    else:
        assert ("COVERING INDEX ix_version_meta_kv" in plan) is rare, plan
        assert ("sqlite_autoindex_version_meta_1" in plan) is not rare, plan


def test_the_migration_fills_meta_as_a_rebuild_would(store: Store, tmp_path: Path) -> None:
    """Down to 0007 (no ``meta``) and up again: the views equal what rebuild makes,
    deleted versions (whose pairs are gone) included."""
    src = make_tree(tmp_path / "d", {"a": "a"})
    store.push("ci/app:1", [src], metadata={"branch": "main", "n": 7, "deep": {"x": 1}})
    store.push("ci/app:2", [src], metadata={"ok": True})
    store.push("ci/app:3", [src])
    store.push("ci/app:4", [src], metadata={"branch": "dev"})
    store.delete("ci/app:4")
    built = dump_views(store)
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    for target in ("0007", "head"):  # down past 0008, up through it and the later ones
        with store.db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if target == "0007" else command.upgrade)(cfg, target)
    assert dump_views(store) == built
    with store.db.read() as conn:
        metas = dict(
            conn.execute(
                t.versions.select().with_only_columns(t.versions.c.version, t.versions.c.meta)
            ).all()
        )
    assert metas == {"1": {"branch": "main", "n": "7"}, "2": {"ok": "true"}, "3": None, "4": None}
    store.rebuild()
    assert dump_views(store) == built
