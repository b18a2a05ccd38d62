"""Where package commits hold the event log's append lock (issue 18), on PostgreSQL.

One process, one ``Store`` over a new PostgreSQL database, ``--writers``
threads committing small manifests (``Store.commit_manifest``, the code behind
``PUT /v1/packages/...``) for ``--seconds``. SQLAlchemy's cursor events time
every statement from ``pg_advisory_xact_lock`` (the lock taken) to the end of
the COMMIT (the lock released): how long each transaction held the lock, how
many statements it ran under it, how many commits it carried, and each kind of
statement's count and median time. Run it against two builds to compare (the
figures move with the machine's load: interleave the runs)::

    .venv/bin/python bench/commit_lock.py --writers 8 --seconds 10
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._scale_commits import small_manifest
from bench.scale import pg_database

from artifactstore.config import Settings
from artifactstore.store import Store

DATA = b"a blob every probed package references\n"


class LockProbe:
    """Statement timings of the transactions that took the append lock, per thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._mutex = threading.Lock()
        self.holds: list[tuple[float, int, float]] = []  # held s, statements, COMMIT s
        self.statements: dict[str, list[float]] = defaultdict(list)

    def before(self, *args: Any) -> None:
        self._local.t0 = time.perf_counter()

    def after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        now = time.perf_counter()
        if getattr(self._local, "locked", None) is None:
            if "pg_advisory_xact_lock" in statement:  # the first time in the transaction
                self._local.locked, self._local.n = now, 0
            return
        self._local.n += 1
        with self._mutex:
            self.statements[" ".join(statement.split())[:60]].append(now - self._local.t0)

    def committed(self, began: float) -> None:
        locked = getattr(self._local, "locked", None)
        if locked is not None:
            now = time.perf_counter()
            with self._mutex:
                self.holds.append((now - locked, self._local.n, now - began))
            self._local.locked = None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--postgresql-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = p.parse_args()
    from sqlalchemy import event

    probe = LockProbe()
    with (
        tempfile.TemporaryDirectory() as d,
        pg_database(args.postgresql_url, "lock") as url,
    ):
        root = Path(d)
        settings = Settings(
            home=root / "home",
            database_url=url,
            storage_url=f"file://{root / 'storage'}",
            cold_storage_url=f"file://{root / 'cold'}",
        )
        with Store.from_config(settings) as store:
            engine = store.db.engine
            event.listen(engine, "before_cursor_execute", probe.before)
            event.listen(engine, "after_cursor_execute", probe.after)
            do_commit = engine.dialect.do_commit

            def timed_commit(dbapi_conn: Any) -> None:
                began = time.perf_counter()
                do_commit(dbapi_conn)
                probe.committed(began)

            engine.dialect.do_commit = timed_commit  # type: ignore[method-assign,assignment]
            upload = store.blob_upload("bench", "bench")
            upload.write(DATA)
            upload.finish()
            counts = [0] * args.writers
            stop = time.monotonic() + args.seconds
            tag = secrets.token_hex(2)

            def writer(n: int) -> None:
                while time.monotonic() < stop:
                    store.commit_manifest(small_manifest(n, f"{tag}-{counts[n]}", DATA), "bench")
                    counts[n] += 1

            cpu0, start = time.process_time(), time.monotonic()
            threads = [threading.Thread(target=writer, args=(n,)) for n in range(args.writers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed, cpu = time.monotonic() - start, time.process_time() - cpu0
    commits = sum(counts)
    held = [h for h, _, _ in probe.holds]
    print(
        f"{args.writers} writers: {commits} commits in {len(held)} transactions, "
        f"{commits / elapsed:.0f} commits/s, {1000 * cpu / commits:.2f} ms CPU per commit"
    )
    print(
        f"lock held per transaction: median {1000 * statistics.median(held):.2f} ms, "
        f"p90 {1000 * sorted(held)[int(0.9 * len(held))]:.2f} ms; statements under it: median "
        f"{statistics.median(n for _, n, _ in probe.holds):.0f}; COMMIT median "
        f"{1000 * statistics.median(c for _, _, c in probe.holds):.2f} ms; "
        f"held {sum(held) / elapsed:.0%} of the time"
    )
    for text, times in sorted(probe.statements.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {len(times):6d} x {1000 * statistics.median(times):5.2f} ms  {text}")


if __name__ == "__main__":
    main()
