"""A full disk, for real (issue 17, finding 5): a 16 MiB tmpfs holding the whole store.

A write on a full disk is refused as ``storage_full`` (HTTP 503, one line and
exit 1 in the CLI), and the operations that free space, ``rm`` then ``gc``,
work on it: the store keeps a reserve file beside its database that only they
(and opening the database) may release. Nothing acknowledged is lost and the
store verifies clean afterwards.

Mounting needs root, which CI has (it runs as root on its machine): there the
tests fail rather than skip when the mount is refused.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactstore.config import Settings
from artifactstore.controlplane import gc
from artifactstore.controlplane.db.engine import Database
from artifactstore.store import Store
from tests.conftest import Cli, make_tree
from tests.server.conftest import Server, assert_problem, post_blob, push
from tests.stored import Stored

MiB = 1024 * 1024
RESERVE = Settings.load({}).disk_reserve_bytes


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB file system (tmpfs), unmounted at teardown."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        reason = f"cannot mount a 16 MiB tmpfs (needs root): {done.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The tests' own files (sources, pulls), on the real disk."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path) -> None:
    """Write a file until the disk refuses even a byte."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (MiB, 64 * 1024, 4096, 1):
            chunk = b"\xff" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert free_bytes(disk) == 0


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_cli_on_a_full_disk_refuses_writes_then_rm_and_gc_free_space(
    small_disk: Path, work: Path
) -> None:
    home = small_disk / "home"
    cli = Cli(home, work)
    cli.env["ARTIFACTSTORE_GC_GRACE"] = "0"
    contents = {n: os.urandom(MiB + n) for n in range(1, 6)}
    for n, data in contents.items():
        src = make_tree(work / f"src{n}", {"data.bin": data})
        cli.ok("push", f"demo/pkg:{n}", src / "data.bin")
    reserve = home / "artifactstore.db.reserve"
    assert reserve.stat().st_size == RESERVE
    fill(small_disk)

    late = make_tree(work / "late", {"data.bin": os.urandom(MiB)})
    result = cli.fails(1, "push", "demo/pkg:late", late / "data.bin")
    assert "storage_full" in one_line(result.stderr)
    schema = make_tree(work / "schema", {"s.json": json.dumps({"type": "object"})})
    result = cli.fails(1, "schema", "register", "variant-a", schema / "s.json")
    assert "storage_full" in one_line(result.stderr)
    assert "disk" in result.stderr

    before = free_bytes(small_disk)
    cli.ok("rm", "demo/pkg:1")
    cli.ok("rm", "demo/pkg:2")
    assert "collected 2 blobs" in cli.ok("gc").stderr
    assert free_bytes(small_disk) > before + 2 * MiB - RESERVE
    assert reserve.stat().st_size == RESERVE  # allocated again once there was room

    listed = cli.ok("ls", "--json").out
    assert [v["reference"] for v in json.loads(listed)] == [f"demo/pkg:{n}" for n in (5, 4, 3)]
    for n in (3, 4, 5):
        out = work / f"out{n}"
        cli.ok("pull", f"demo/pkg:{n}", "-o", out)
        assert (out / "data.bin").read_bytes() == contents[n]
    assert "checked: ok" in cli.ok("verify", "--all").stderr
    # With room again, what the full disk refused now works.
    cli.ok("push", "demo/pkg:late", late / "data.bin")


def test_server_on_a_full_disk_answers_503_and_frees_space(small_disk: Path, work: Path) -> None:
    home = small_disk / "home"
    server = Server(home, work, {"ARTIFACTSTORE_GC_GRACE": "0"})
    server.start()
    contents = {n: os.urandom(MiB + n) for n in range(1, 6)}
    try:
        with server.client() as http:
            for n, data in contents.items():
                push(http, f"demo/pkg:{n}", {"data.bin": data})
            fill(small_disk)
            body = assert_problem(post_blob(http, os.urandom(MiB), "demo"), 503, "storage_full")
            assert "disk is full" in body["detail"]
            # A write of the database alone (a schema of 200 KiB: more than the
            # write-ahead log has room for).
            schema = {"type": "object", "description": "x" * 200_000}
            body = assert_problem(http.put("/v1/schemas/big", json=schema), 503, "storage_full")
            assert "database is full" in body["detail"]

            before = free_bytes(small_disk)
            for n in (1, 2):
                assert http.delete(f"/v1/packages/demo/pkg/{n}").status_code == 204
            gc = http.post("/v1/admin/gc")
            assert gc.status_code == 200, gc.text
            assert len(gc.json()["collected"]) == 2
            assert free_bytes(small_disk) > before + 2 * MiB - RESERVE
            for n in (3, 4, 5):
                got = http.get(f"/v1/packages/demo/pkg/{n}/files/data.bin")
                assert got.content == contents[n]
            assert http.put("/v1/schemas/big", json=schema).status_code == 201
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]
    cli = Cli(home, work)
    assert "checked: ok" in cli.ok("verify", "--all").stderr


def test_without_a_reserve_a_full_disk_is_one_clear_line(small_disk: Path, work: Path) -> None:
    """What the reserve is for: without one, even opening the database fails on a full
    disk, and the CLI says so in one line instead of a traceback."""
    cli = Cli(small_disk / "home", work)
    cli.env["ARTIFACTSTORE_DISK_RESERVE_BYTES"] = "0"
    src = make_tree(work / "src", {"data.bin": os.urandom(MiB)})
    cli.ok("push", "demo/pkg:1", src / "data.bin")
    assert not (small_disk / "home" / "artifactstore.db.reserve").exists()
    fill(small_disk)
    for command in (("rm", "demo/pkg:1"), ("ls",)):
        result = cli.fails(1, *command)
        assert "storage_full" in one_line(result.stderr)


def test_gc_decides_and_unlinks_in_batches(
    whole_store: Store, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is committed, and its bytes unlinked, before the next one is decided:
    a full disk gets room back as GC goes, and no transaction holds every decision."""
    monkeypatch.setattr(gc, "BATCH", 3)
    src = make_tree(work / "src", {f"f{i}": os.urandom(100) for i in range(10)})
    whole_store.push("demo/many:1", [src])
    stored = Stored.of(whole_store)
    whole_store.delete("demo/many:1")
    stored_at_each_decision: list[int] = []
    report = gc.collect(
        whole_store.db,
        whole_store.plane,
        grace=0.0,
        dry_run=False,
        actor="test:gc",
        on_decided=lambda: stored_at_each_decision.append(len(stored.keys())),
    )
    assert len(report.collected) == 10
    assert stored_at_each_decision == [10, 7, 4, 1]
    assert stored.keys() == set()
    assert whole_store.verify().damaged == []


def test_a_database_without_a_file_has_no_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-memory (or PostgreSQL) database keeps no reserve and touches no file."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / ".reserve"
    mine.write_bytes(b"the user's")
    db = Database("sqlite://", reserve_bytes=MiB)
    try:
        db.reserve.keep()
        with db.freeing():
            assert db.reserve.release() is False
    finally:
        db.dispose()
    assert mine.read_bytes() == b"the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".reserve"]
