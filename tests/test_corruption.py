"""Damaged or missing bytes on disk: every reader notices, exits 3, and writes nothing unverified.

The store is set up through the library; the damage is done to the blob files
under ``HOME/storage`` directly; the checks run the real CLI on the same home.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from artifactstore.controlplane.db import tables as t
from artifactstore.dataplane.layout import storage_root
from artifactstore.store import Store
from tests.conftest import Cli, make_tree

#: a.txt sorts before z.txt, so a pull has already written a good file when it meets damage.
FILES = {"a.txt": "good bytes\n", "z.txt": "z" * (3 << 20)}


@pytest.fixture
def damaged(store: Store, tmp_path: Path) -> tuple[Store, str]:
    """ci/app:1 (a.txt, z.txt) and ci/other:1; returns the store and z.txt's digest."""
    store.push("ci/app:1", [make_tree(tmp_path / "src", FILES)])
    store.push("ci/other:1", [make_tree(tmp_path / "other", {"o.txt": "other"})])
    return store, digest_of(store, "ci/app:1", "z.txt")


def digest_of(store: Store, ref: str, path: str) -> str:
    entry = next(f for f in store.show(ref).manifest.files if f.path.value == path)
    return str(entry.blake3)


def blob_path(store: Store, digest: str) -> Path:
    """The file behind a blob, as the storage_locations view records it."""
    with store.db.read() as conn:
        key: str = conn.execute(
            select(t.storage_locations.c.key).where(t.storage_locations.c.blake3 == digest)
        ).scalar_one()
    path = storage_root(store.settings.home) / key
    assert path.is_file()
    return path


def flip_byte(path: Path, offset: int = 1000) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def assert_nothing_pulled(out: Path, before: dict[str, bytes]) -> None:
    """``out`` holds exactly what it held before the pull: no file, no staging directory."""
    now = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else {}
    assert now == before


def test_flipped_byte(damaged: tuple[Store, str], cli: Cli, tmp_path: Path) -> None:
    store, digest = damaged
    flip_byte(blob_path(store, digest))

    result = cli.fails(3, "verify", "--all")
    assert digest in result.stderr and "1 damaged" in result.stderr
    as_json = cli("verify", "--all", "--json")  # the report is the message: on stdout
    assert as_json.code == 3
    report = json.loads(as_json.stdout)
    assert [d["digest"] for d in report["damaged"]] == [digest]
    assert digest in cli.fails(3, "verify", "ci/app:1").stderr
    cli.ok("verify", "ci/other:1")  # damage elsewhere does not fail an intact version

    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_bytes(b"what was here before")  # not replaced, even forced
    before = {"a.txt": b"what was here before"}
    cli.fails(3, "pull", "ci/app:1", "-o", out, "--force")
    assert_nothing_pulled(out, before)
    fresh = tmp_path / "fresh"
    cli.fails(3, "pull", "ci/app:1", "-o", fresh)
    assert_nothing_pulled(fresh, {})

    cli.fails(3, "cat", "ci/app:1", "z.txt")
    assert cli.ok("cat", "ci/app:1", "a.txt").stdout == b"good bytes\n"


@pytest.mark.parametrize("damage", ["truncate", "append", "flip-last"])
def test_library_verify_names_the_damage(damaged: tuple[Store, str], damage: str) -> None:
    store, digest = damaged
    path = blob_path(store, digest)
    path.chmod(0o644)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-1])
    elif damage == "append":
        path.write_bytes(data + b"\n")
    else:
        flip_byte(path, len(data) - 1)
    report = store.verify()
    assert not report.ok
    assert [d["digest"] for d in report.damaged] == [digest]
    assert store.verify("ci/other:1").ok


def test_missing_blob_file(damaged: tuple[Store, str], cli: Cli, tmp_path: Path) -> None:
    store, digest = damaged
    blob_path(store, digest).unlink()
    result = cli.fails(3, "verify", "--all")
    assert digest in result.stderr and "missing" in result.stderr
    cli.fails(3, "verify", "ci/app:1")


def test_reading_a_missing_blob_file_is_an_integrity_failure(
    damaged: tuple[Store, str], cli: Cli, tmp_path: Path
) -> None:
    store, digest = damaged
    blob_path(store, digest).unlink()
    pulled = cli("pull", "ci/app:1", "-o", tmp_path / "out")
    assert_nothing_pulled(tmp_path / "out", {})
    # Bytes the records promise are gone: that is damage (3, as verify says), not a
    # mere absence (1, as for a version that does not exist).
    assert (pulled.code, cli("cat", "ci/app:1", "z.txt").code) == (3, 3), pulled.stderr


def test_gc_fails_closed_on_a_missing_live_blob(
    damaged: tuple[Store, str], cli: Cli, tmp_path: Path
) -> None:
    store, digest = damaged
    # Something GC would collect if it ran: ci/other:1's blob, once the version is deleted.
    other = digest_of(store, "ci/other:1", "o.txt")
    doomed = blob_path(store, other)
    store.delete("ci/other:1")
    assert store.gc(dry_run=True, grace=0).collected == [other]
    blob_path(store, digest).unlink()  # a live package's bytes vanish
    files_before = sorted((storage_root(store.settings.home) / "blobs").rglob("*"))
    events_before = len(store.events())

    result = cli.fails(3, "gc", "--grace", "0s")
    assert "deleted nothing" in result.stderr
    cli.fails(3, "gc", "--dry-run", "--grace", "0s")
    assert doomed.is_file()
    assert sorted((storage_root(store.settings.home) / "blobs").rglob("*")) == files_before
    assert len(store.events()) == events_before
