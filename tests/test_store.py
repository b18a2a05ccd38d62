"""The library (SPEC section 6): every verb of the Store, round trip, on real SQLite and files."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import blake3
import pytest

from artifactstore.dataplane.layout import blob_key
from artifactstore.errors import (
    InvalidInput,
    InvalidMetadata,
    InvalidName,
    InvalidPath,
    PackageNotFound,
    SchemaExists,
    SchemaNotFound,
    VersionExists,
)
from artifactstore.model.events import Event
from artifactstore.store import Store
from tests.conftest import make_tree, read_tree
from tests.stored import Stored

pytestmark = pytest.mark.configs("embedded", "scaleout")

TREE: dict[str, bytes | str] = {
    "bin/app": b"\x7fELF" + bytes(range(256)) * 40,
    "empty.log": b"",
    "report/index.html": "<h1>report</h1>\n",
    "report/assets/deep/deeper/style.css": "body { margin: 0 }\n",
    "données/résumé.txt": "NFC déjà\n",
    "日本/報告.md": "# 報告\n",
}

SCHEMA = {
    "type": "object",
    "required": ["build"],
    "properties": {
        "build": {
            "type": "object",
            "required": ["number"],
            "properties": {"number": {"type": "integer", "minimum": 1}},
        }
    },
}


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def blake3_file(path: Path) -> str:
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(str(path))
    return "blake3:" + h.hexdigest()


def event_types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


# --- push, show, pull, read_file -------------------------------------------------------------


def test_push_show_pull_round_trip(store: Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "dist", TREE)
    result = store.push("ci/app:1.4.2", [src], metadata={"branch": "main"})
    assert result.created
    assert result.blobs_stored == len(TREE)

    rec = store.show("ci/app:1.4.2")
    assert rec == result.record  # what commit returns is what the views hold
    assert [f.path.value for f in rec.manifest.files] == sorted(TREE)
    assert rec.file_count == len(TREE)
    assert rec.size == sum(len(v.encode() if isinstance(v, str) else v) for v in TREE.values())
    assert rec.manifest.metadata == {"branch": "main"}
    for entry in rec.manifest.files:
        assert str(entry.sha256) == sha256_file(src / entry.path.value)
        assert str(entry.blake3) == blake3_file(src / entry.path.value)

    out = tmp_path / "out"
    store.pull("ci/app:1.4.2", out)
    assert read_tree(out) == read_tree(src)
    assert not list(out.glob(".artifactstore-pull-*"))

    for rel, expected in read_tree(src).items():
        assert b"".join(store.read_file("ci/app:1.4.2", rel)) == expected


def test_show_by_either_digest(store: Store, tmp_path: Path) -> None:
    rec = store.push("ci/app:1", [make_tree(tmp_path / "d", {"a": "a"})]).record
    assert store.show(f"ci/app@{rec.digest}").reference == rec.reference
    assert store.show(f"ci/app@{rec.sha256}").reference == rec.reference
    assert rec.digest == rec.manifest.digests().blake3


def test_empty_package(store: Store, tmp_path: Path) -> None:
    empty = make_tree(tmp_path / "empty", {})
    rec = store.push("ci/empty:1", [empty]).record
    assert rec.file_count == 0 and rec.size == 0
    assert store.show("ci/empty:1").manifest.files == ()
    out = tmp_path / "out"
    store.pull("ci/empty:1", out)
    assert list(out.iterdir()) == []
    assert store.verify("ci/empty:1").ok


def test_zero_byte_files_share_one_blob(store: Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "d", {"a.txt": b"", "sub/b.txt": b""})
    result = store.push("ci/zero:1", [src])
    assert result.blobs_stored == 1
    files = result.record.manifest.files
    assert {f.size for f in files} == {0} and len({f.blake3 for f in files}) == 1
    assert b"".join(store.read_file("ci/zero:1", "sub/b.txt")) == b""
    store.pull("ci/zero:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"a.txt": b"", "sub/b.txt": b""}


def test_several_path_arguments(store: Store, tmp_path: Path) -> None:
    make_tree(tmp_path, {"build/dist/app.whl": "wheel", "build/dist/sub/x": "x"})
    notes = make_tree(tmp_path / "docs", {"notes.txt": "notes"}) / "notes.txt"
    rec = store.push("ci/multi:1", [tmp_path / "build" / "dist", notes]).record
    assert [f.path.value for f in rec.manifest.files] == ["app.whl", "notes.txt", "sub/x"]


def test_two_arguments_claiming_one_path_are_refused(store: Store, tmp_path: Path) -> None:
    make_tree(tmp_path, {"one/a.txt": "1", "two/a.txt": "2"})
    with pytest.raises(InvalidInput, match=r"a\.txt"):
        store.push("ci/clash:1", [tmp_path / "one", tmp_path / "two" / "a.txt"])
    with pytest.raises(PackageNotFound):
        store.show("ci/clash:1")


def test_case_collision_is_refused(store: Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "d", {"A.txt": "upper", "a.txt": "lower"})
    with pytest.raises(InvalidPath, match="case-insensitive"):
        store.push("ci/case:1", [src])


def test_read_file_of_absent_path(store: Store, tmp_path: Path) -> None:
    store.push("ci/app:1", [make_tree(tmp_path / "d", {"a": "a"})])
    with pytest.raises(PackageNotFound, match="no file"):
        list(store.read_file("ci/app:1", "b"))


@pytest.mark.slow
@pytest.mark.configs("embedded")  # bytes only: the database holds one row of it
def test_one_gib_sparse_file(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    big = src / "disk.img"
    with big.open("wb") as f:
        f.truncate(1 << 30)
    rec = store.push("ci/big:1", [src]).record
    (entry,) = rec.manifest.files
    assert entry.size == 1 << 30
    assert str(entry.blake3) == blake3_file(big)

    out = tmp_path / "out"
    store.pull("ci/big:1", out)
    pulled = out / "disk.img"
    assert pulled.stat().st_size == 1 << 30
    assert blake3_file(pulled) == str(entry.blake3)
    assert sha256_file(pulled) == str(entry.sha256)


# --- immutability -------------------------------------------------------------------------


def test_repush_identical_content_is_a_no_op(store: Store, tmp_path: Path) -> None:
    first = store.push("ci/app:1", [make_tree(tmp_path / "a", TREE)], metadata={"k": "v"})
    # The same bytes from another directory, at another time: the same version.
    again = store.push("ci/app:1", [make_tree(tmp_path / "b", TREE)], metadata={"k": "v"})
    assert first.created and not again.created
    assert again.blobs_stored == 0
    assert again.record.digest == first.record.digest
    assert event_types(store.events()).count("package.committed") == 1


@pytest.mark.parametrize(
    ("files", "metadata"),
    [
        ({"a.txt": "changed"}, {"k": "v"}),
        ({"a.txt": "same", "b.txt": "extra"}, {"k": "v"}),
        ({"a.txt": "same"}, {"k": "other"}),
    ],
    ids=["bytes", "file-added", "metadata"],
)
def test_repush_different_content_is_refused(
    store: Store, tmp_path: Path, files: dict[str, str], metadata: dict[str, str]
) -> None:
    original = store.push(
        "ci/app:1", [make_tree(tmp_path / "a", {"a.txt": "same"})], metadata={"k": "v"}
    )
    with pytest.raises(VersionExists, match="immutable"):
        store.push("ci/app:1", [make_tree(tmp_path / "b", files)], metadata=metadata)
    assert store.show("ci/app:1").digest == original.record.digest


# --- query ----------------------------------------------------------------------------------


def test_query_filters(store: Store, tmp_path: Path) -> None:
    store.register_schema("ci.build.v1", SCHEMA)
    src = make_tree(tmp_path / "d", {"a": "a"})
    store.push(
        "ci/app:1",
        [src],
        metadata={"branch": "main", "build": {"number": 1}},
        variant="ci.build.v1",
    )
    store.push("ci/app:2", [src], metadata={"branch": "dev", "n": 7, "ok": True})
    store.push("ci/lib:1", [src], metadata={"branch": "main"})
    store.push("qa/app:1", [src], metadata={"branch": "main"})

    def refs(**kw: object) -> list[str]:
        return [str(r.reference) for r in store.iter_query(**kw)]  # type: ignore[arg-type]

    assert refs() == ["qa/app:1", "ci/lib:1", "ci/app:2", "ci/app:1"]
    assert refs(namespace="ci") == ["ci/lib:1", "ci/app:2", "ci/app:1"]
    assert refs(namespace="ci", name="app") == ["ci/app:2", "ci/app:1"]
    assert refs(namespace="ci", where={"branch": "main"}) == ["ci/lib:1", "ci/app:1"]
    assert refs(where={"branch": "main", "n": "7"}) == []
    assert refs(where={"n": "7", "ok": "true"}) == ["ci/app:2"]
    assert refs(variant="ci.build.v1") == ["ci/app:1"]
    assert refs(namespace="nobody") == []

    store.delete("ci/lib:1")
    assert refs(namespace="ci", where={"branch": "main"}) == ["ci/app:1"]


def test_query_keyset_pagination(store: Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "d", {"a": "a"})
    for i in range(25):
        store.push(f"ci/app:{i}", [src], metadata={"i": i})
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = store.query(namespace="ci", name="app", limit=10, cursor=cursor)
        pages += 1
        assert len(page.items) == (10 if pages < 3 else 5)
        seen += [str(r.reference.version) for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
        # A commit between pages neither repeats nor shifts what is still to come.
        if pages == 1:
            store.push("ci/app:new", [src])
    assert pages == 3
    assert seen == [str(i) for i in reversed(range(25))]
    with pytest.raises(InvalidInput, match="cursor"):
        store.query(namespace="ci", limit=10, cursor="garbage!")


# --- schemas ------------------------------------------------------------------------------


def test_schema_register_and_validate(store: Store, tmp_path: Path) -> None:
    assert store.register_schema("ci.build.v1", SCHEMA)
    assert not store.register_schema("ci.build.v1", SCHEMA)  # identical: no-op
    with pytest.raises(SchemaExists):
        store.register_schema("ci.build.v1", {"type": "object"})
    assert store.get_schema("ci.build.v1") == SCHEMA
    assert [s["id"] for s in store.list_schemas()] == ["ci.build.v1"]

    src = make_tree(tmp_path / "d", {"a": "a"})
    ok = store.push("ci/app:1", [src], metadata={"build": {"number": 3}}, variant="ci.build.v1")
    assert ok.record.manifest.variant == "ci.build.v1"
    with pytest.raises(InvalidMetadata) as info:
        store.push("ci/app:2", [src], metadata={"build": {"number": "x"}}, variant="ci.build.v1")
    assert info.value.pointer == "/build/number"
    with pytest.raises(SchemaNotFound, match="schema register"):
        store.push("ci/app:3", [src], variant="ci.other.v1")
    assert event_types(store.events()).count("package.committed") == 1


# --- delete and gc ----------------------------------------------------------------------------


def test_delete_then_gc_keeps_shared_blobs(whole_store: Store, tmp_path: Path) -> None:
    store = whole_store
    stored = Stored.of(store)
    a = store.push("ci/a:1", [make_tree(tmp_path / "a", {"shared": "S", "only-a": "A"})]).record
    b = store.push("ci/b:1", [make_tree(tmp_path / "b", {"shared": "S", "only-b": "B"})]).record
    digest = {f.path.value: f.blake3 for f in (*a.manifest.files, *b.manifest.files)}

    assert store.gc(grace=0).collected == []  # nothing unreferenced yet
    deleted = store.delete("ci/a:1")
    assert deleted.reference == a.reference
    with pytest.raises(PackageNotFound):
        store.show("ci/a:1")
    with pytest.raises(PackageNotFound):
        store.delete("ci/a:1")

    plan = store.gc(dry_run=True, grace=0)
    assert plan.collected == [str(digest["only-a"])]
    assert stored.has_blob(str(digest["only-a"]))  # a dry run deletes nothing

    held = store.gc(grace=3600)  # the dereference started the grace period
    assert held.collected == [] and held.protected_by_grace == 1

    report = store.gc(grace=0)
    assert report.collected == [str(digest["only-a"])]
    assert report.bytes_freed == 1
    assert not stored.has_blob(str(digest["only-a"]))
    assert stored.has_blob(str(digest["shared"]))
    assert stored.has_blob(str(digest["only-b"]))
    store.pull("ci/b:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"shared": b"S", "only-b": b"B"}
    assert store.verify().ok
    assert store.gc(grace=0).collected == []  # idempotent

    # A collected blob is stored again (and recorded again) by the next push of its bytes.
    again = store.push("ci/a:2", [make_tree(tmp_path / "a2", {"only-a": "A"})])
    assert again.blobs_stored == 1
    assert stored.read(blob_key(digest["only-a"])) == b"A"


# --- integrity, events, rebuild ---------------------------------------------------------------


def test_verify_reports_clean_store(store: Store, tmp_path: Path) -> None:
    store.push("ci/app:1", [make_tree(tmp_path / "d", TREE)])
    report = store.verify()
    assert report.ok and report.damaged == []
    assert report.blobs_checked == len(TREE)
    one = store.verify("ci/app:1")
    assert one.ok and one.blobs_checked == len(TREE)
    with pytest.raises(PackageNotFound):
        store.verify("ci/app:2")


def test_events_chain_and_rebuild(store: Store, tmp_path: Path) -> None:
    store.register_schema("ci.build.v1", SCHEMA)
    store.push("ci/app:1", [make_tree(tmp_path / "a", {"x": "1", "y": "2"})])
    store.push("ci/app:2", [make_tree(tmp_path / "b", {"x": "1", "z": "3"})])
    store.delete("ci/app:1")
    store.gc(grace=0)

    events = store.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert event_types(events) == [
        "schema.registered",
        "blobs.stored",  # x and y, in one event
        "package.committed",
        "blob.stored",  # z
        "package.committed",
        "package.deleted",
        "blob.collected",
    ]
    assert events[0].prev_hash == "blake3:" + "0" * 64
    assert all(e.prev_hash == p.hash for p, e in itertools.pairwise(events))
    assert [e.seq for e in store.events(after=3, limit=2)] == [4, 5]
    assert store.verify_chain() == len(events)

    before = [str(r.reference) for r in store.iter_query()]
    assert store.rebuild() == len(events)
    assert [str(r.reference) for r in store.iter_query()] == before == ["ci/app:2"]
    assert store.verify_chain() == len(events)  # rebuild appends nothing
    store.pull("ci/app:2", tmp_path / "out")
    assert read_tree(tmp_path / "out") == {"x": b"1", "z": b"3"}


def test_store_survives_reopen(store: Store, tmp_path: Path) -> None:
    rec = store.push("ci/app:1", [make_tree(tmp_path / "d", TREE)]).record
    store.close()
    with Store.from_config(store.settings, create=False) as again:
        assert again.show("ci/app:1").digest == rec.digest
        assert again.verify().ok
        assert again.verify_chain() == len(again.events())


@pytest.mark.usefixtures("clean_env")
def test_open_without_create_refuses_missing_store(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no store"):
        Store.open(tmp_path / "nothing", create=False)


def test_a_page_iterates_its_versions_and_takes_filters_by_keyword_only(
    store: Store, tmp_path: Path
) -> None:
    """SPEC section 6: ``store.query(...)`` is one page, and iterating it yields its versions.
    A positional argument is refused: it once was the namespace, and read as the set of
    readable namespaces it silently answered nothing."""
    src = make_tree(tmp_path / "src", {"a.txt": "alpha"})
    store.push("ci/app:1", [src])
    store.push("qa/app:1", [src])
    page = store.query(namespace="ci")
    assert [str(v.reference) for v in page] == ["ci/app:1"]
    with pytest.raises(TypeError):
        store.query("ci")  # type: ignore[call-arg]


def test_an_upload_into_a_malformed_namespace_is_refused_before_anything_is_written(
    store: Store,
) -> None:
    with pytest.raises(InvalidName):
        store.create_upload(namespace="Not/A Namespace", length=None, metadata={}, actor="t")
    with pytest.raises(InvalidName):
        store.blob_upload("t", "Not/A Namespace")
    assert store.stats()["uploads_open"] == 0
