"""``artifactstore copy``: a store moved to new engines is the same store.

The source is a SQLite + file store with every kind of history (packages,
a movable tag, deletions, holds, retention and its lock, tokens, a schema,
collected blobs, a cold-tier blob, an unreferenced upload within its grace
period); the target is a PostgreSQL database and a new storage directory.
Every test runs the real CLI. "The same store" is checked table by table:
the log, every view, the chain head and the copied GC leases, row for row,
plus the copy's own ``events --verify-chain``, ``verify --all`` and a pull.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from artifactstore.controlplane.blobs import placement
from artifactstore.controlplane.db import tables as t
from artifactstore.controlplane.db.engine import Database
from artifactstore.controlplane.eventlog import append_many
from artifactstore.dataplane.backends.s3 import S3Backend
from artifactstore.dataplane.blobs import DataPlane
from artifactstore.model.events import TokenCreated
from artifactstore.model.identity import BlobDigests
from artifactstore.model.retention import RetentionPolicy
from artifactstore.provenance.keys import generate
from artifactstore.store import Store
from tests.conftest import ARTIFACTSTORE, Cli, CliResult, flip_stored_byte, make_tree, read_tree
from tests.pg import new_database
from tests.s3 import S3Server, s3_url

#: Trials of the SIGKILL test at random instants (besides the two aimed ones).
KILL_TRIALS = int(os.environ.get("COPY_KILL_TRIALS", "2"))

SCHEMA = {
    "type": "object",
    "properties": {"branch": {"type": "string"}},
    "required": ["branch"],
}


def _upload(store: Store, namespace: str, data: bytes) -> str:
    upload = store.blob_upload("uploader", namespace)
    upload.write(data)
    return str(upload.finish().blake3)


def build_source(home: Path, work: Path, *, big: int = 300 << 10) -> None:
    """A store with one of everything the log records."""
    rng = random.Random(18)
    with Store.open(home) as s:
        s.register_schema("ci.build.v1", SCHEMA)
        s.set_namespace_settings("ci", {"movable_tags": ["latest"]})
        for i in range(6):
            tree = make_tree(
                work / f"v{i}",
                {
                    "small.txt": f"small {i}\n".encode(),
                    "shared.txt": b"the same in every version\n",
                    "big.bin": rng.randbytes(big + i),
                },
            )
            s.push(f"ci/app:1.{i}", [tree], metadata={"branch": "main", "n": i})
        key = generate()
        for i in range(2):  # the movable tag moves (its first version's signature goes with it)
            tree = make_tree(work / f"latest{i}", {"tag.txt": f"latest {i}\n".encode()})
            s.push(
                "ci/app:latest",
                [tree],
                metadata={"branch": "main"},
                variant="ci.build.v1",
                sign=key,
            )
        s.sign("ci/app:1.4", key)
        s.sign("ci/app:1.4", generate())
        s.set_namespace_settings(
            "ci",
            {
                "movable_tags": ["latest"],
                "trusted_keys": [
                    {"public_key": key.public.pem().decode(), "expires": "2100-01-01"}
                ],
                "require_signature": False,  # later tests push unsigned into ci
            },
        )
        s.delete("ci/app:1.0")
        s.place_hold("ci/app:1.1", "audit 2026")
        released = s.place_hold("ci/app:1.2", "a mistake")
        s.release_hold("ci/app:1.2", "placed in error", hold_id=released.id)
        s.set_retention("ci", None, RetentionPolicy(keep_last=10))
        s.create_token("reader", ["ci:read"])
        s.create_token("gone", ["ci:write"])
        s.revoke_token(s.list_tokens()[-1].id)
        gone = make_tree(work / "gone", {"only-here.bin": rng.randbytes(big)})
        s.push("tmp/gone:1", [gone])
        s.delete("tmp/gone:1")
        report = s.gc(grace=0)
        assert report.collected, "the test needs a collected blob"
        s.lock_retention("ci", 1)
        s.tier_move("ci/app:1.3", "cold")
        _upload(s, "ci", b"uploaded, never committed: within its grace period")


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the log, the views, the chain head and the recorded keys' leases."""
    db = Database(url)
    try:
        with db.read() as conn:
            out = {
                table.name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
                for table in (t.events, t.chain_head, *t.VIEW_TABLES)
            }
            keys = {r.key for r in conn.execute(select(t.storage_locations.c.key))}
            out["blob_activity"] = sorted(
                (tuple(r) for r in conn.execute(select(t.blob_activity)) if r.key in keys),
                key=repr,
            )
        return out
    finally:
        db.dispose()


class Target:
    """A copy's engines, and the CLI pointed at them."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.database_url = database_url
        self.storage = root / "storage"
        self.cold = root / "cold"
        self.cli = Cli(root / "home", root)
        self.cli.env |= {
            "ARTIFACTSTORE_DATABASE_URL": database_url,
            "ARTIFACTSTORE_STORAGE_URL": f"file://{self.storage}",
            "ARTIFACTSTORE_COLD_STORAGE_URL": f"file://{self.cold}",
        }

    @property
    def args(self) -> list[str]:
        return [
            "copy",
            "--to-database-url",
            self.database_url,
            "--to-storage-url",
            f"file://{self.storage}",
            "--to-cold-storage-url",
            f"file://{self.cold}",
        ]

    def objects(self) -> set[str]:
        return {
            p.relative_to(root).as_posix()
            for root in (self.storage, self.cold)
            for sub in ("blobs", "packs")
            for p in (root / sub).rglob("*")
            if p.is_file()
        }


@pytest.fixture(scope="module")
def source_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("copy-source")
    build_source(root / "home", root / "work")
    return root / "home"


@pytest.fixture
def source(source_home: Path, tmp_path: Path) -> Cli:
    """The CLI over the shared source store (copy only reads it)."""
    return Cli(source_home, tmp_path)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    with new_database() as url:
        yield Target(tmp_path / "target", url)


def assert_same_store(source_home: Path, target: Target) -> None:
    assert dump(f"sqlite:///{source_home / 'artifactstore.db'}") == dump(target.database_url)
    out = target.cli.ok("events", "--verify-chain")
    assert "event chain verified" in out.stderr
    out = target.cli.ok("verify", "--all")
    assert out.stderr.rstrip().endswith("ok"), out.stderr


def copy_json(cli: Cli, target: Target) -> dict[str, Any]:
    import json

    result = cli.ok(*target.args, "--json")
    value: dict[str, Any] = json.loads(result.out)
    return value


def test_the_copy_is_the_same_store_on_postgresql(
    source: Cli, source_home: Path, target: Target, tmp_path: Path
) -> None:
    first = copy_json(source, target)
    assert first["events"] == first["events_total"] == first["source_seq"] > 0
    assert first["blobs"] > 0 and first["bytes"] > 0 and first["blobs_present"] == 0
    assert first["behind"] == 0 and first["damaged"] == []
    assert_same_store(source_home, target)
    for listing in (["ls", "--json"], ["hold", "list", "--all", "--json"], ["token", "list"]):
        assert target.cli.ok(*listing).out == source.ok(*listing).out
    assert target.cli.ok("events", "--json").out == source.ok("events", "--json").out
    # A rerun finds everything there: nothing to copy.
    again = copy_json(source, Target(tmp_path / "target", target.database_url))
    assert again["events"] == 0 and again["blobs"] == 0
    # GC on the target keeps the upload still within its grace period (its lease came along).
    gc = target.cli.ok("gc", "--dry-run", "--json").out
    assert '"protected_by_grace": 1' in gc, gc
    # The cold blobs are cold on the target too (every 1.x shares one with 1.3), and
    # come back readable: then the copy serves what the source serves, byte for byte.
    cold = target.cli.fails(1, "pull", "ci/app:1.3", "-o", tmp_path / "c")
    assert "restore_required" in cold.stderr
    target.cli.ok("tier", "move", "ci/app:1.3", "--to", "hot")
    pushed = source_home.parent / "work"  # the trees build_source pushed
    for ref, tree in [("1.3", "v3"), ("1.4", "v4"), ("1.1", "v1"), ("latest", "latest1")]:
        ref = f"ci/app:{ref}"
        assert target.cli.ok("show", ref, "--json").out == source.ok("show", ref, "--json").out
        target.cli.ok("pull", ref, "-o", tmp_path / ref)
        assert read_tree(tmp_path / ref) == read_tree(pushed / tree)


def test_a_copy_needs_a_cold_target_for_cold_blobs(source: Cli, target: Target) -> None:
    result = source.fails(2, *target.args[:5])  # no --to-cold-storage-url
    assert "give --to-cold-storage-url" in result.stderr
    assert not target.objects()


def test_the_copy_continues_where_the_source_went_on(tmp_path: Path, target: Target) -> None:
    home = tmp_path / "src"
    build_source(home, tmp_path / "work", big=1000)
    cli = Cli(home, tmp_path)
    copy_json(cli, target)
    # The source goes on after the copy (or during it): the next run copies the rest.
    cli.ok("push", "ci/app:2.0", make_tree(tmp_path / "new", {"new.txt": b"new\n"}))
    cli.ok("push", "other/x:1", make_tree(tmp_path / "other", {"x.bin": b"x" * 5000}))
    cli.ok("rm", "other/x:1")
    cli.ok("gc", "--grace", "0s")
    report = copy_json(cli, target)
    assert report["events"] >= 3 and report["blobs"] >= 1
    assert_same_store(home, target)


def _run_copy(cli: Cli, target: Target) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(ARTIFACTSTORE), *target.args],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    while proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    return False


def _events_in(url: str) -> int:
    db = Database(url)
    try:
        return _count_events(db)
    finally:
        db.dispose()


def _count_events(db: Database) -> int:
    with db.read() as conn:
        if not inspect(conn).has_table("events"):
            return 0  # not migrated yet
        return int(conn.execute(select(func.count()).select_from(t.events)).scalar_one())


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source whose copy takes long enough to be killed in each phase: 24 MiB of
    blobs, and 3,500 events more (four transactions of the event phase)."""
    root = tmp_path_factory.mktemp("copy-big")
    build_source(root / "home", root / "work", big=4 << 20)
    with Store.open(root / "home") as s, s.db.write() as conn:
        tokens = [
            TokenCreated(f"bulk{i:05d}", f"bulk {i}", "0" * 64, ("ci:read",), None)
            for i in range(3500)
        ]
        append_many(conn, tokens, "bulk")
    return root / "home"


def test_a_killed_copy_rerun_ends_identical(big_source: Path, tmp_path: Path) -> None:
    cli = Cli(big_source, tmp_path)
    source_url = f"sqlite:///{big_source / 'artifactstore.db'}"
    expected = dump(source_url)
    # Aimed kills (staging blobs, blobs published, between event batches), then random.
    plans: list[tuple[str, float | None]] = [("staging", None), ("blobs", None), ("events", None)]
    rng = random.Random()
    plans += [("random", rng.uniform(0.3, 3.0)) for _ in range(KILL_TRIALS)]
    for i, (phase, delay) in enumerate(plans):
        killed, copied = _kill_and_rerun(cli, tmp_path / f"t{i}", phase, delay, expected)
        assert copied == expected, (phase, delay, killed)


def _kill_and_rerun(
    cli: Cli, root: Path, phase: str, delay: float | None, expected: dict[str, Any]
) -> tuple[bool, dict[str, Any]]:
    """One trial: a copy into a new database killed in ``phase``, then run again; whether
    the kill came before the copy ended, and the target's dump after the rerun."""
    with new_database() as url:
        target = Target(root, url)
        proc = _run_copy(cli, target)
        if phase == "staging":  # blobs being written, none published yet
            killed = _kill_when(proc, lambda: any((target.storage / "tmp").glob("*")))
            hot = {k for k in target.objects() if (target.storage / k).exists()}
            assert killed and not hot, "not killed while staging the hot blobs"
        elif phase == "blobs":  # blobs published, events not all copied
            killed = _kill_when(proc, lambda: bool(target.objects()))
            assert killed and _events_in(url) < len(expected["events"]), phase
        elif phase == "events":
            # One engine for the polls: a new one per poll (its connect) took long enough,
            # on a busy machine, for the copy to commit its remaining batches meanwhile.
            db = Database(url)
            try:
                killed = _kill_when(proc, lambda: _count_events(db) > 0)
            finally:
                db.dispose()
            assert killed and 0 < _events_in(url) < len(expected["events"]), phase
        else:
            assert delay is not None
            deadline = time.monotonic() + delay
            killed = _kill_when(proc, lambda: time.monotonic() > deadline)
        assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
        proc.stderr.close()
        cli.ok(*target.args)
        copied = dump(url)
        target.cli.ok("events", "--verify-chain")
        target.cli.ok("verify", "--all")
        return killed, copied


@pytest.mark.parametrize("where", ["whole", "packed"])
def test_a_damaged_source_blob_is_refused(tmp_path: Path, target: Target, where: str) -> None:
    home = tmp_path / "src"
    build_source(home, tmp_path / "work", big=300 << 10)
    with Store.open(home) as s:
        files = {str(f.path): f for f in s.show("ci/app:1.5").manifest.files}
        digest = str(files["big.bin" if where == "whole" else "small.txt"].digests.blake3)
        flip_stored_byte(s, digest, at=7 if where == "whole" else 0)
    result: CliResult = Cli(home, tmp_path).fails(3, *target.args)
    assert digest in result.stderr, result.stderr
    assert "damaged" in result.stderr
    # Nothing at the damaged blob's key (or its pack), and no event: nothing points at it.
    with Store.open(home) as s, s.db.read() as conn:
        loc = t.storage_locations
        key = conn.execute(select(loc.c.key).where(loc.c.blake3 == digest)).scalar_one()
    assert key not in target.objects()
    assert _events_in(target.database_url) == 0


def test_bad_targets_are_refused_clearly(source: Cli, source_home: Path, tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'storage'}"
    cold = ["--to-cold-storage-url", f"file://{tmp_path / 'cold'}"]
    for database, store, code, words in [
        ("mysql://db/x", storage, 2, "unsupported database URL scheme"),
        ("not a url", storage, 2, "unsupported database URL scheme"),
        (f"sqlite:///{tmp_path / 'x.db'}", "ftp://host/x", 2, "unsupported"),
        (f"sqlite:///{source_home / 'artifactstore.db'}", storage, 2, "source's own database"),
        (f"sqlite:///{tmp_path / 'x.db'}", f"file://{source_home / 'storage'}", 2, "differ"),
        ("postgresql://postgres@127.0.0.1:1/none", storage, 1, "127.0.0.1"),
    ]:
        args = ["copy", "--to-database-url", database, "--to-storage-url", store, *cold]
        result = source.fails(code, *args)
        assert words in result.stderr, (args, result.stderr)
        assert not any(p.is_file() for p in (tmp_path / "storage").rglob("*")), args
    remote = source.fails(1, "--server", "http://127.0.0.1:9", "copy", *args[1:])
    assert "works on the data directory" in remote.stderr


def test_another_store_is_not_overwritten(source: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other"
    Cli(other, tmp_path).ok("push", "x/y:1", make_tree(tmp_path / "f", {"a": b"a"}))
    url = f"sqlite:///{other / 'artifactstore.db'}"
    before = dump(url)
    args = [
        "--to-storage-url",
        f"file://{tmp_path / 's'}",
        "--to-cold-storage-url",
        f"file://{tmp_path / 'c'}",
    ]
    result = source.fails(1, "copy", "--to-database-url", url, *args)
    assert "another store's event log" in result.stderr
    assert dump(url) == before
    with new_database() as pg:
        db = Database(pg)
        with db.write() as conn:
            conn.exec_driver_sql("CREATE TABLE accounts (id integer)")
        db.dispose()
        result = source.fails(1, "copy", "--to-database-url", pg, *args)
        assert "not an artifact store's (accounts)" in result.stderr


def test_the_copy_refuses_a_target_ahead_of_the_source(tmp_path: Path, target: Target) -> None:
    home = tmp_path / "src"
    build_source(home, tmp_path / "work", big=1000)
    cli = Cli(home, tmp_path)
    copy_json(cli, target)
    target.cli.ok("hold", "set", "ci/app:1.5", "--reason", "live")  # the copy went on
    result = cli.fails(1, *target.args)
    assert "not a prefix" in result.stderr


def test_a_damaged_leftover_in_the_target_is_copied_again(
    source: Cli, source_home: Path, target: Target
) -> None:
    """Bytes an interrupted run left unrecorded are re-hashed before they are kept."""
    with Store.open(source_home) as s:
        files = {str(f.path): f for f in s.show("ci/app:1.5").manifest.files}
        digest = str(files["big.bin"].digests.blake3)
        with s.db.read() as conn:
            loc = t.storage_locations
            key = conn.execute(select(loc.c.key).where(loc.c.blake3 == digest)).scalar_one()
    leftover = target.storage / key
    leftover.parent.mkdir(parents=True)
    data = bytearray((source_home / "storage" / key).read_bytes())
    data[100] ^= 1
    leftover.write_bytes(bytes(data))
    report = copy_json(source, target)
    assert report["damaged"] == []
    assert (target.storage / key).read_bytes() == (source_home / "storage" / key).read_bytes()
    assert_same_store(source_home, target)


def test_the_copy_to_postgresql_and_s3_is_the_same_store(
    s3_server: S3Server, source_home: Path, tmp_path: Path
) -> None:
    hot, cold = s3_url(s3_server, "copy-hot"), s3_url(s3_server, "copy-cold")
    cli = Cli(source_home, tmp_path)  # made now: it passes the server's AWS_* on
    with new_database() as database:
        args = ["copy", "--to-database-url", database, "--to-storage-url", hot]
        report = cli.ok(*args, "--to-cold-storage-url", cold, "--json").out
        assert '"damaged": []' in report
        assert dump(f"sqlite:///{source_home / 'artifactstore.db'}") == dump(database)
        # Every recorded blob is in the bucket where its location says, intact.
        plane = DataPlane(
            S3Backend(s3_server.bucket, "copy-hot", endpoint=s3_server.endpoint, name="local"),
            cold=S3Backend(s3_server.bucket, "copy-cold", endpoint=s3_server.endpoint, name="cold"),
        )
        db = Database(database)
        try:
            with db.read() as conn:
                rows = conn.execute(
                    select(t.storage_locations, t.blobs.c.sha256, t.blobs.c.size).join(
                        t.blobs, t.blobs.c.blake3 == t.storage_locations.c.blake3
                    )
                ).all()
            assert {r.backend for r in rows} == {"local", "cold"}
            assert any(r.pack_offset is not None for r in rows), "the test needs a pack"
            for r in rows:
                digests = BlobDigests.computed(
                    r.blake3.removeprefix("blake3:"), r.sha256.removeprefix("sha256:"), r.size
                )
                plane.verify(placement(r.key, r.pack_offset, r.size), digests, r.backend)
        finally:
            db.dispose()
            plane.close()
        again = cli.ok(*args, "--to-cold-storage-url", cold, "--json").out
        assert '"blobs": 0' in again and '"events": 0' in again


def test_a_copy_of_a_postgresql_store_back_to_sqlite(
    source: Cli, source_home: Path, target: Target, tmp_path: Path
) -> None:
    """PostgreSQL as the source (its snapshot is a REPEATABLE READ transaction)."""
    copy_json(source, target)
    back = Target(tmp_path / "back", f"sqlite:///{tmp_path / 'back.db'}")
    report = copy_json(target.cli, back)
    assert report["events"] > 0 and report["damaged"] == []
    assert dump(f"sqlite:///{source_home / 'artifactstore.db'}") == dump(back.database_url)
    back.cli.ok("verify", "--all")


def test_events_recorded_during_the_copy_are_reported_and_copied_by_the_next_run(
    tmp_path: Path,
) -> None:
    home = tmp_path / "src"
    build_source(home, tmp_path / "work", big=1000)
    target = Target(tmp_path / "target", f"sqlite:///{tmp_path / 'target.db'}")
    urls = (target.database_url, f"file://{target.storage}", f"file://{target.cold}")
    with Store.open(home) as store:
        written: list[str] = []

        def meanwhile(_n: int) -> None:  # the source is written to while its bytes copy
            if not written:
                written.append(store.create_token("meanwhile", ["ci:read"])[0].id)

        report = store.copy_to(*urls, progress=meanwhile)
        assert written and report.behind == 1
        assert report.events_total == report.source_seq
        assert dump(target.database_url) != dump(f"sqlite:///{home / 'artifactstore.db'}")
        again = store.copy_to(*urls)
        assert (again.events, again.behind, again.blobs) == (1, 0, 0)
    assert dump(target.database_url) == dump(f"sqlite:///{home / 'artifactstore.db'}")
