"""Group commit of package versions (services/commits.py): one batch, each commit alone.

The commits of a batch share one transaction. Here a batch is forced: the
group's writer turn is held while every commit of the test queues, then
released, so all of them are written by one call of the group's writer (the
test asserts it). Refused commits (409 version exists, 422 missing blobs,
quota, a second commit of the same version in the batch, a push refused after
it recorded its blobs) fail alone; the others commit, and the log stays
gapless and verifies.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import blake3
import pytest

from artifactstore.controlplane.eventlog import append
from artifactstore.errors import MissingBlobs, PackageNotFound, QuotaExceeded, VersionExists
from artifactstore.model.events import NamespaceUpdated, PackageCommitted
from artifactstore.model.identity import Digest, Namespace, PackageName, Version
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.model.paths import PackagePath
from artifactstore.model.records import NamespaceSettings
from artifactstore.store import Store
from tests.conftest import make_tree

pytestmark = pytest.mark.configs("embedded", "scaleout")


def entry(data: bytes, path: str = "f.bin") -> FileEntry:
    b3 = Digest.parse(f"blake3:{blake3.blake3(data).hexdigest()}")
    sha = Digest.parse(f"sha256:{hashlib.sha256(data).hexdigest()}")
    return FileEntry(PackagePath(path), len(data), "application/octet-stream", b3, sha)


def uploaded(store: Store, data: bytes, namespace: str = "grp") -> FileEntry:
    upload = store.blob_upload("test", namespace)
    upload.write(data)
    upload.finish()
    return entry(data)


def manifest(ref: str, files: Sequence[FileEntry], note: str = "") -> Manifest:
    ns, rest = ref.split("/")
    name, version = rest.split(":")
    return Manifest.build(
        Namespace(ns),
        PackageName(name),
        Version(version),
        list(files),
        created="2026-12-04T00:00:00Z",
        producer="test",
        metadata={"note": note} if note else {},
    )


def in_one_batch(store: Store, calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` (each commits once) in threads whose commits the group writes in one
    batch; returns what each returned or raised."""
    group = store.services.push._group._group
    batches: list[int] = []
    write = group._write

    def counted(items: Sequence[Any]) -> Sequence[BaseException | None]:
        batches.append(len(items))
        return write(items)

    group._write = counted
    outcomes: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            outcomes[i] = calls[i]()
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with group._turn:  # every commit queues behind it
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(group._pending) < len(calls):
            assert time.monotonic() < deadline, f"the commits did not all queue: {outcomes}"
            time.sleep(0.005)
    for t in threads:
        t.join(60)
    assert batches == [len(calls)], batches
    return outcomes


def test_refused_commits_of_a_batch_fail_alone_and_the_others_commit(
    store: Store, tmp_path: Path
) -> None:
    shared = uploaded(store, b"shared bytes\n")
    big = uploaded(store, b"x" * 100)  # held by grp, not by the namespace with a quota
    store.set_namespace_settings("small", {"quota_bytes": 10})
    pre = store.commit_manifest(manifest("grp/pre:1", [shared], "first"), "test")
    absent = entry(b"never uploaded\n", "g.bin")
    trees = {name: make_tree(tmp_path / name, {"f": f"push {name}\n"}) for name in ("p-ok", "p-no")}
    calls: list[Callable[[], Any]] = [
        lambda: store.commit_manifest(manifest("grp/a:1", [shared], "a first"), "alice"),
        lambda: store.commit_manifest(manifest("grp/pre:1", [shared], "other"), "bob"),
        lambda: store.commit_manifest(manifest("grp/m:1", [shared, absent]), "carol"),
        lambda: store.commit_manifest(manifest("grp/b:1", [shared], "b"), "dave"),
        lambda: store.commit_manifest(manifest("grp/a:1", [shared], "a second"), "erin"),
        lambda: store.commit_manifest(manifest("small/q:1", [big]), "frank"),
        lambda: store.commit_manifest(manifest("grp/pre:1", [shared], "first"), "grace"),
        lambda: store.push("grp/p-ok:1", [trees["p-ok"]]),
        lambda: store.push("grp/pre:1", [trees["p-no"]]),  # refused after recording its blob
    ]
    out = in_one_batch(store, calls)

    a, pre_again, missing, b, a_again, quota, same, pushed, push_refused = out
    assert a.created and b.created and pushed.created, out
    assert isinstance(pre_again, VersionExists), pre_again
    assert isinstance(missing, MissingBlobs) and missing.digests == [str(absent.blake3)]
    assert isinstance(a_again, VersionExists), a_again  # the batch's own first commit won
    assert isinstance(quota, QuotaExceeded), quota
    assert not same.created and same.record.id == pre.record.id  # identical: a no-op
    assert isinstance(push_refused, VersionExists), push_refused

    assert store.show("grp/a:1").manifest.metadata == {"note": "a first"}
    assert store.show("grp/a:1").actor == "alice"
    assert store.show("grp/pre:1").digest == pre.record.digest
    for gone in ("grp/m:1", "small/q:1"):
        with pytest.raises(PackageNotFound):
            store.show(gone)
    # The refused push's blob was recorded in its savepoint, which was rolled back.
    refused_blob = blake3.blake3(b"push p-no\n").hexdigest()
    assert store.services.push.known_blobs([f"blake3:{refused_blob}"]) == set()
    count = store.verify_chain()
    log = store.events()
    assert [e.seq for e in log] == list(range(1, count + 1))
    committed = [e.subject for e in log if e.type == PackageCommitted.type]
    assert sorted(committed) == ["grp/a:1", "grp/b:1", "grp/p-ok:1", "grp/pre:1"]
    assert [v.id for v in (a.record, b.record)] == [
        e.seq for e in log if e.subject in ("grp/a:1", "grp/b:1")
    ]


def test_a_refusal_that_an_earlier_commit_of_the_batch_lifts_is_checked_again(
    store: Store,
) -> None:
    """A namespace holds a blob a live version of it references: a commit by a non-admin
    that the batch's earlier (admin) commit makes valid commits, as it would in turn."""
    other = uploaded(store, b"uploaded into another namespace\n", namespace="elsewhere")
    out = in_one_batch(
        store,
        [
            lambda: store.commit_manifest(manifest("grp/admin:1", [other]), "admin"),
            lambda: store.commit_manifest(
                manifest("grp/writer:1", [other]), "writer", require_held=True
            ),
        ],
    )
    assert [o.created for o in out] == [True, True], out
    assert out[0].record.id < out[1].record.id


def test_an_append_rolled_back_with_its_savepoint_leaves_no_gap(store: Store) -> None:
    """The log's head is read once per transaction, so a rolled-back savepoint (a refused
    push in a batch) must make the next append read it again."""
    settings = NamespaceSettings().to_json()
    with store.db.write() as conn:
        append(conn, NamespaceUpdated("kept-1", settings), "test")
        savepoint = conn.begin_nested()
        append(conn, NamespaceUpdated("undone", settings), "test")
        savepoint.rollback()
        append(conn, NamespaceUpdated("kept-2", settings), "test")
    count = store.verify_chain()
    log = store.events()
    assert [e.seq for e in log] == list(range(1, count + 1))
    assert [e.subject for e in log][-2:] == ["kept-1", "kept-2"]
