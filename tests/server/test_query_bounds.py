"""Bounds of a query (issue 17, finding 3), and database errors logged without their data.

About 1,000 ``meta.*`` filters used to reach SQLite, which refused the
statement (expression tree deeper than 1,000): a 500 whose logged traceback
held the whole SQL with every parameter. The bound is checked where every
caller passes (the query service), so HTTP, the CLI and the library refuse
alike, with ``limit_exceeded``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import httpx
import pytest

from artifactstore.config import MAX_QUERY_FILTERS, Settings
from artifactstore.errors import InvalidInput, LimitExceeded
from artifactstore.store import Store
from tests.conftest import Cli, make_tree
from tests.server.conftest import Server, assert_problem, push

SECRET = "s3cret-metadata-value-7f1c"


def test_a_thousand_metadata_filters_are_refused_over_http(http: httpx.Client) -> None:
    push(http, "bounds/pkg:1.0", {"a.txt": b"a"}, metadata={"k0": "v"})
    params = {f"meta.k{i}": "v" for i in range(1000)}
    body = assert_problem(http.get("/v1/packages", params=params), 413, "limit_exceeded")
    assert "1000 metadata filters" in body["detail"]
    assert "max_query_filters" in body["detail"]
    # At the default bound the query runs and answers.
    at_bound = {f"meta.k{i}": "v" for i in range(1, 32)} | {"meta.k0": "v"}
    assert http.get("/v1/packages", params=at_bound).status_code == 200
    over = {f"meta.k{i}": "v" for i in range(33)}
    assert_problem(http.get("/v1/packages", params=over), 413, "limit_exceeded")


@pytest.mark.parametrize(
    "query",
    ["name=pkg&name=other", "variant=a&variant=b", "meta.os=linux&meta.os=mac", "limit=1&limit=2"],
)
def test_a_repeated_query_parameter_is_refused(http: httpx.Client, query: str) -> None:
    """Taking one of two values would silently drop a filter the caller asked for."""
    body = assert_problem(http.get(f"/v1/packages?{query}"), 422, "invalid_input")
    assert "given 2 times" in body["detail"]


def test_a_thousand_filters_are_refused_by_the_library(store: Store) -> None:
    with pytest.raises(LimitExceeded, match="1000 metadata filters") as info:
        store.query(where={f"k{i}": "v" for i in range(1000)})
    assert info.value.code == "limit_exceeded"
    with pytest.raises(LimitExceeded):
        list(store.iter_query(where={f"k{i}": "v" for i in range(33)}))
    assert store.query(where={f"k{i}": "v" for i in range(32)}).items == []


def test_the_largest_bound_allowed_still_runs(clean_env: None, tmp_path: Path) -> None:
    """The setting cannot be raised to where SQLite refuses the statement (a 500)."""
    with Store.open(tmp_path / "home", max_query_filters=MAX_QUERY_FILTERS) as store:
        where = {f"k{i}": "v" for i in range(MAX_QUERY_FILTERS)}
        assert store.query(where=where).items == []
    with pytest.raises(InvalidInput, match="MAX_QUERY_FILTERS"):
        Settings.load({}, home=tmp_path, max_query_filters=MAX_QUERY_FILTERS + 1)
    with pytest.raises(InvalidInput, match="MAX_QUERY_FILTERS"):
        Settings.load({"ARTIFACTSTORE_MAX_QUERY_FILTERS": "0"}, home=tmp_path)


def test_too_many_where_filters_in_the_cli_give_one_line(cli: Cli) -> None:
    src = make_tree(cli.cwd / "src", {"a.txt": "a"})
    cli.ok("push", "bounds/pkg:1.0", src / "a.txt", "--meta", "k0=v")
    where = [arg for i in range(40) for arg in ("--where", f"k{i}=v")]
    result = cli.fails(1, "ls", *where)
    assert "limit_exceeded" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "bounds/pkg:1.0" in cli.ok("ls", "--where", "k0=v").out


def test_a_database_error_is_logged_without_its_parameters(
    tmp_path: Path, live_server: Server
) -> None:
    """A statement that fails logs the error's class and message, never the values bound
    into it (here a metadata value the caller sent)."""
    with live_server.client() as client:
        push(client, "logs/pkg:1.0", {"a.txt": b"a"}, metadata={"k": "v"})
        db = sqlite3.connect(live_server.home / "artifactstore.db")
        try:
            db.execute("ALTER TABLE version_meta RENAME TO version_meta_away")
            db.commit()
            # uvicorn closes the connection after a 500, at times before it is read: a
            # client of its own, and the answer checked when it arrives.
            with live_server.client() as once, contextlib.suppress(httpx.TransportError):
                response = once.get("/v1/packages", params={"meta.k": SECRET})
                assert_problem(response, 500, "internal_error")
        finally:
            db.execute("ALTER TABLE version_meta_away RENAME TO version_meta")
            db.commit()
            db.close()
        assert client.get("/v1/packages", params={"meta.k": "v"}).status_code == 200
    log = live_server.log()
    assert "OperationalError" in log and "no such table: version_meta" in log, log[-3000:]
    assert SECRET not in log, log[-3000:]
    assert "SELECT" not in log, log[-3000:]
