"""The event log under concurrent writers in several processes (SPEC section 8).

Two processes, as two replicas would be, each with several threads, commit
packages into one database at the same moment, starting from an empty log so
that the very first appends race too. Afterwards the chain verifies, its
``seq`` runs 1..n without a gap or a duplicate, and every commit is in it.
On SQLite the write lock serialises the appends; on PostgreSQL an advisory
lock does (``eventlog.serialise``).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from artifactstore.model.events import PackageCommitted
from artifactstore.store import Store
from tests.conftest import make_tree

pytestmark = pytest.mark.configs("embedded", "scaleout")

PROCESSES = 2
THREADS = 4
COMMITS = 12  # per thread


def _commits(home: Path, url: str | None, process: int, start_at: float) -> None:
    """One process: THREADS threads, each committing COMMITS packages of new content."""
    with Store.open(home, database_url=url, gc_grace=0.0) as store:
        trees = home.parent / f"trees-{process}"

        def thread(k: int) -> None:
            for i in range(COMMITS):
                name = f"p{process}-t{k}-{i}"
                tree = make_tree(trees / name, {"f": name, "shared": "the same in every one"})
                store.push(f"race/{name}:1", [tree])

        time.sleep(max(0.0, start_at - time.time()))
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(thread, range(THREADS)))


def test_concurrent_commits_from_two_processes_keep_the_chain_gapless(
    clean_env: None, tmp_path: Path, database_url: str | None
) -> None:
    home = tmp_path / "home"
    with Store.open(home, database_url=database_url):
        pass  # creates (migrates) the store before the race; the log stays empty
    spawn = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # after both processes have imported and opened
    workers = [
        spawn.Process(target=_commits, args=(home, database_url, p, start_at))
        for p in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(240)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    with Store.open(home, database_url=database_url, create=False) as store:
        count = store.verify_chain()
        log = store.events()
        assert [e.seq for e in log] == list(range(1, count + 1))
        committed = sorted(e.subject for e in log if e.type == PackageCommitted.type)
        expected = sorted(
            f"race/p{p}-t{k}-{i}:1"
            for p in range(PROCESSES)
            for k in range(THREADS)
            for i in range(COMMITS)
        )
        assert committed == expected
