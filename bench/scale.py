"""Scale-out benchmark (issue 18): metadata queries at 1,000,000 versions on SQLite and
PostgreSQL, commit throughput over two replicas, and bytes on S3.

Three parts (``--only metadata,commits,s3``), and ``stream`` on request
(``bench/_scale_stream.py``: events/s to NATS over a slow link):

**metadata.** ``--versions`` package versions (default 1,000,000) with
metadata are loaded into a SQLite store and into a PostgreSQL database of
their own, then ``--queries`` queries (default 10,000, a third of each kind)
go through the library's query API (``Store.query``, one page of 50):

* ``ns+meta common``: a namespace and ``branch=B`` (a tenth of its versions);
* ``ns+meta rare``: a namespace and ``build=N`` (exactly one version);
* ``time range``: ``created_after``/``created_before`` one day apart (about
  1/365 of all versions), no namespace.

p50 and p99 per kind and engine (target: p99 under 20 ms on both).

*How the rows are loaded.* Through the project's own write path, batched:
each version is a real manifest (``Manifest.build``) appended as a
``package.committed`` event with ``eventlog.append_many`` (500 per
transaction), whose projection writes the view rows, exactly as a commit
does (the blob checks of ``packages.commit`` are skipped: every version
references one blob, recorded once). The event time is the one thing
changed: ``eventlog.utc_now`` is replaced for the load so that commit times
spread over 2026 (each batch one time) instead of the minutes of the load.
PostgreSQL is loaded the same way only up to ``--pg-direct-after`` versions
(one round trip per statement there makes 1,000,000 appends take most of an
hour on these machines); the rest of its rows are *copied* with ``COPY``
from the SQLite store, table by table (events, packages, versions, files,
version_meta), so both engines hold the same rows the projection produced.

**commits.** Two ``artifactstore serve`` processes over one new PostgreSQL
database and one shared storage directory; 8 client threads (4 per replica)
each commit small packages through HTTP (one 64-byte blob upload + one
manifest ``PUT`` per package) for ``--commit-seconds``. Commits per second,
and the CPU seconds the servers and the client used per commit: client and
servers share the machine's 2 cores, so the figure is CPU-bound (printed).

**s3.** A moto S3 server (``tests/dataplane/s3server.py``'s way) on a free
port; see ``bench/_scale_s3.py``.

    .venv/bin/python bench/scale.py                                   # everything, full size
    .venv/bin/python bench/scale.py --only metadata --versions 20000 --queries 600   # smoke
    .venv/bin/python bench/scale.py --only metadata --keep /var/tmp/meta   # load once, then reuse

With ``--keep DIR`` the SQLite store (``DIR/sqlite``) and the PostgreSQL database
(named in ``DIR/pg-database``) stay after the run; a later run with the same
``--keep`` and ``--versions`` migrates them to this revision's schema and queries
them without loading again (a load interrupted half-way is not resumed: delete
DIR and drop the database).
    .venv/bin/python bench/scale.py --only commits --commit-seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from bench._common import (
    add_scratch_and_json,
    fmt_num,
    pick_scratch_parent,
    print_header,
    render_table,
    scratch_dir,
    write_json,
)
from psycopg import sql

from artifactstore.config import Settings
from artifactstore.controlplane import eventlog
from artifactstore.model.identity import Namespace, PackageName, Version
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.model.package_events import PackageCommitted
from artifactstore.store import Store

NAMESPACES = 20
PACKAGES_PER_NAMESPACE = 50
BRANCHES = ["main"] + [f"release-{i}" for i in range(1, 10)]
BATCH = 500
PAGE = 50
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
#: View tables copied to PostgreSQL past ``--pg-direct-after``, in foreign-key order.
COPIED = ("events", "packages", "versions", "files", "version_meta")
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default="metadata,commits,s3", help="parts to run (comma-separated)")
    p.add_argument("--versions", type=int, default=1_000_000, help="versions to load")
    p.add_argument("--queries", type=int, default=10_000, help="queries per engine, all kinds")
    p.add_argument(
        "--pg-direct-after",
        type=int,
        default=20_000,
        help="versions appended to PostgreSQL one by one before the rest is copied",
    )
    p.add_argument(
        "--kind-seconds",
        type=float,
        default=120.0,
        help="at most this long per query kind and engine (a slow kind then runs fewer)",
    )
    p.add_argument(
        "--sqlite-home",
        type=Path,
        help="a SQLite store loaded by an earlier run (kept, reused if it holds --versions)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the loaded SQLite store and PostgreSQL database under this directory and"
        " reuse them when they hold --versions (a 1,000,000 load takes about 30 minutes)",
    )
    p.add_argument("--commit-seconds", type=float, default=30.0, help="length of the commit run")
    p.add_argument("--writers", type=int, default=8, help="concurrent committers")
    p.add_argument("--s3-bytes", type=int, default=1 << 30, help="size of the large transfer")
    p.add_argument("--s3-small", type=int, default=1000, help="small PUTs of the client contest")
    p.add_argument("--s3-files", type=int, default=10_000, help="small files of the push")
    p.add_argument("--s3-trials", type=int, default=2, help="trials of the API and library legs")
    p.add_argument(
        "--s3-legs", default="api,library,contest", help="legs of the s3 part (comma-separated)"
    )
    p.add_argument("--stream-events", type=int, default=5000, help="events of the stream part")
    p.add_argument(
        "--stream-delay", type=float, default=0.01, help="seconds the relay adds to NATS answers"
    )
    p.add_argument("--postgresql-url", default=ADMIN_URL, help="maintenance database URL")
    add_scratch_and_json(p)
    return p.parse_args()


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def pg_database(admin_url: str, label: str, keep: Path | None = None) -> Iterator[str]:
    """A new database on the server of ``admin_url``, dropped afterwards; with ``keep``,
    the database named in ``keep/pg-database`` (created and named there if absent), kept."""
    named = keep / "pg-database" if keep else None
    name = f"bench_{label}_{secrets.token_hex(4)}"
    if named is not None and named.exists():
        name = named.read_text().strip()
    admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    url = (
        f"postgresql://{info.get('user') or ''}@{info.get('host') or '127.0.0.1'}:"
        f"{info.get('port') or 5432}/{name}"
    )
    exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    try:
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if named is not None:
            named.parent.mkdir(parents=True, exist_ok=True)
            named.write_text(name + "\n")
        yield url
    finally:
        if named is None:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


# --------------------------------------------------------------------------- metadata


def _blob(store: Store, root: Path) -> FileEntry:
    src = root / "seed.bin"
    src.write_bytes(b"one blob every version references\n")
    entry = store.push("seed/blob:1", [src]).record.manifest.files[0]
    return entry


def _manifest(i: int, blob: FileEntry) -> tuple[Manifest, dict[str, str]]:
    ns, pkg = i % NAMESPACES, (i // NAMESPACES) % PACKAGES_PER_NAMESPACE
    meta = {
        "branch": BRANCHES[(i // (NAMESPACES * PACKAGES_PER_NAMESPACE)) % len(BRANCHES)],
        "build": str(i),
        "os": ("linux", "windows", "macos", "freebsd")[i % 4],
    }
    m = Manifest.build(
        Namespace(f"team{ns}"),
        PackageName(f"pkg{pkg}"),
        Version(f"1.{i}"),
        [blob],
        created=YEAR_START,
        producer="bench",
        metadata=meta,
    )
    return m, meta


def _batch_time(first: int, total: int) -> str:
    at = YEAR_START + timedelta(days=365) * (first / total)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load(store: Store, blob: FileEntry, start: int, stop: int, total: int) -> float:
    """Append versions ``start``..``stop`` through the event log; returns versions/s."""
    names = vars(eventlog)  # the module's globals: where append_many looks utc_now up
    real = names["utc_now"]
    began = time.perf_counter()
    try:
        for first in range(start, stop, BATCH):
            stamp = _batch_time(first, total)
            names["utc_now"] = lambda stamp=stamp: stamp
            items = []
            for i in range(first, min(first + BATCH, stop)):
                m, _ = _manifest(i, blob)
                items.append(PackageCommitted(m.to_map(), str(m.digests().blake3)))
            with store.db.write() as conn:
                eventlog.append_many(conn, items, "bench")
            if (first // BATCH) % 200 == 0 and first > start:
                rate = (first - start) / (time.perf_counter() - began)
                print(f"  loaded {first:,} ({rate:,.0f}/s)", flush=True)
    finally:
        names["utc_now"] = real
    return (stop - start) / (time.perf_counter() - began)


def copy_rows(sqlite_store: Store, pg_url: str, after_seq: int) -> float:
    """COPY the view rows with seq/id above ``after_seq`` from SQLite into PostgreSQL."""
    began = time.perf_counter()
    src = sqlite_store.db.engine.raw_connection()
    key = {"events": "seq", "versions": "id", "files": "version_id", "version_meta": "version_id"}
    with psycopg.connect(pg_url) as dst:
        for table in COPIED:
            columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})").fetchall()]
            where = f" WHERE {key[table]} > {after_seq}" if table in key else ""
            if table == "packages":
                where = f" WHERE created_seq > {after_seq}"
            rows = src.execute(f"SELECT {', '.join(columns)} FROM {table}{where}")
            stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with dst.cursor() as cur, cur.copy(stmt) as copy:
                for row in rows:
                    copy.write_row(row)
        last = dst.execute(
            "SELECT max(seq), (SELECT hash FROM events ORDER BY seq DESC LIMIT 1) FROM events"
        ).fetchone()
        assert last is not None
        dst.execute("UPDATE chain_head SET seq = %s, hash = %s WHERE id = 1", (last[0], last[1]))
        dst.execute("ANALYZE")
    src.close()
    return time.perf_counter() - began


def run_queries(
    store: Store, total_versions: int, count: int, seed: int, budget: float
) -> dict[str, list[float]]:
    """``count`` queries, the three kinds interleaved, each kind stopping once it has
    spent ``budget`` seconds; latencies in ms by kind."""
    rng = random.Random(seed)
    kinds: dict[str, Callable[[], dict[str, Any]]] = {
        "ns+meta common": lambda: {
            "namespace": f"team{rng.randrange(NAMESPACES)}",
            "where": {"branch": rng.choice(BRANCHES)},
        },
        "ns+meta rare": lambda: _rare(rng, total_versions),
        "time range": lambda: _window(rng),
    }
    out: dict[str, list[float]] = {k: [] for k in kinds}
    spent = dict.fromkeys(kinds, 0.0)
    names = list(kinds)
    for n in range(count):
        kind = names[n % len(names)]
        if spent[kind] > budget:
            continue
        args = kinds[kind]()
        start = time.perf_counter()
        page = store.query(limit=PAGE, **args)
        took = time.perf_counter() - start
        spent[kind] += took
        out[kind].append(took * 1000)
        if kind == "ns+meta rare":
            assert len(page.items) == 1, (args, len(page.items))
    return out


def _rare(rng: random.Random, total: int) -> dict[str, Any]:
    i = rng.randrange(total)
    return {"namespace": f"team{i % NAMESPACES}", "where": {"build": str(i)}}


def _window(rng: random.Random) -> dict[str, Any]:
    start = YEAR_START + timedelta(seconds=rng.uniform(0, 364 * 86400))
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return {
        "created_after": start.strftime(fmt),
        "created_before": (start + timedelta(days=1)).strftime(fmt),
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metadata_part(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    keep: Path | None = args.keep
    sqlite_home = args.sqlite_home or (keep / "sqlite" if keep else root / "sqlite")
    sqlite_home.mkdir(parents=True, exist_ok=True)
    Store.migrate(Settings(home=sqlite_home))  # a kept store: to this version's schema
    with Store.from_config(Settings(home=sqlite_home)) as lite:
        blob = _blob(lite, root)
        with lite.db.read() as conn:
            held = conn.exec_driver_sql("SELECT count(*) FROM versions").scalar_one()
        if held == args.versions + 1:  # and the seed version
            rate = 0.0
            print(f"sqlite:   reusing {args.versions:,} versions in {sqlite_home}", flush=True)
        else:
            rate = load(lite, blob, 0, args.versions, args.versions)
            print(f"sqlite:   loaded {args.versions:,} versions at {rate:,.0f}/s", flush=True)
        lite.db.engine.raw_connection().execute("ANALYZE").close()
        lat = run_queries(lite, args.versions, args.queries, 1, args.kind_seconds)
        results["sqlite"] = {"load_per_s": rate, "latency_ms": lat}
        with pg_database(args.postgresql_url, "meta", keep) as pg_url:
            settings = Settings(home=(keep or root) / "pg", database_url=pg_url)
            Store.migrate(settings)
            with Store.from_config(settings) as pg:
                pg_blob = _blob(pg, root)
                assert pg_blob == blob
                with pg.db.read() as conn:
                    pg_held = conn.exec_driver_sql("SELECT count(*) FROM versions").scalar_one()
                if pg_held == args.versions + 1:
                    pg_rate = 0.0
                    print(f"postgres: reusing {args.versions:,} versions", flush=True)
                else:
                    pg_rate = _load_pg(args, lite, pg, pg_url, blob)
                pg.db.dispose()
                lat_pg = run_queries(pg, args.versions, args.queries, 1, args.kind_seconds)
                results["postgresql"] = {"append_per_s": pg_rate, "latency_ms": lat_pg}
    rows = []
    for engine in ("sqlite", "postgresql"):
        for kind, values in results[engine]["latency_ms"].items():
            rows.append(
                [
                    engine,
                    kind,
                    str(len(values)),
                    fmt_num(statistics.median(values), 2),
                    fmt_num(_pct(values, 0.99), 2),
                    fmt_num(max(values), 2),
                    "met" if _pct(values, 0.99) < 20 else "MISSED",
                ]
            )
        results[engine]["summary"] = {
            kind: {"p50": statistics.median(v), "p99": _pct(v, 0.99), "max": max(v)}
            for kind, v in results[engine].pop("latency_ms").items()
        }
    print(f"\nmetadata queries over {args.versions:,} versions (page of {PAGE}, ms)")
    print(render_table(["engine", "kind", "n", "p50", "p99", "max", "p99 < 20 ms"], rows))
    return results


def _load_pg(
    args: argparse.Namespace, lite: Store, pg: Store, pg_url: str, blob: FileEntry
) -> float:
    """Append the first ``--pg-direct-after`` versions, COPY the rest from SQLite."""
    direct = min(args.pg_direct_after, args.versions)
    # The seed push's events: seq 1-2 on both; versions start at seq 3 on both.
    rate = load(pg, blob, 0, direct, args.versions)
    print(f"postgres: appended {direct:,} versions at {rate:,.0f}/s", flush=True)
    copied = args.versions - direct
    if copied:
        after = _seq_of_version(lite, direct)
        took = copy_rows(lite, pg_url, after)
        print(f"postgres: copied {copied:,} versions in {took:.0f} s", flush=True)
    return rate


def _seq_of_version(store: Store, i: int) -> int:
    """The seq of version number ``i`` (the first not appended to PostgreSQL) minus 1."""
    with store.db.read() as conn:
        row = conn.exec_driver_sql("SELECT id FROM versions WHERE version = ?", (f"1.{i}",)).first()
    assert row is not None
    return int(row[0]) - 1


# --------------------------------------------------------------------------- main


def main() -> None:
    args = _args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    parent = pick_scratch_parent(args.scratch)
    print_header(f"scale: {', '.join(sorted(parts))}", parent)
    results: dict[str, Any] = {}
    with scratch_dir(parent, "bench-scale-") as root:
        if "metadata" in parts:
            results["metadata"] = metadata_part(args, root)
        if "commits" in parts:
            from bench._scale_commits import commits_part

            results["commits"] = commits_part(args, root)
        if "s3" in parts:
            from bench._scale_s3 import s3_part

            results["s3"] = s3_part(args, root)
        if "stream" in parts:
            from bench._scale_stream import stream_part

            results["stream"] = stream_part(args, root)
    if args.json_path:
        write_json(args.json_path, results)


if __name__ == "__main__":
    main()
