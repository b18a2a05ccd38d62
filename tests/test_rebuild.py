"""The views are a function of the log: rebuild (and reopening) reproduces them row for row."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from artifactstore.config import Settings
from artifactstore.controlplane.db.tables import VIEW_TABLES
from artifactstore.errors import (
    Conflict,
    HoldNotFound,
    InvalidMetadata,
    Locked,
    PackageNotFound,
    SchemaExists,
    SchemaNotFound,
    VersionExists,
)
from artifactstore.model.retention import (
    RetentionPolicy,
)
from artifactstore.provenance.keys import generate
from artifactstore.store import Store
from tests.conftest import make_tree

REFS = ("ci/app:1", "ci/app:2", "ci/lib:1", "qa/app:1")
PATHS = ("a.txt", "dir/b.bin", "dir/sub/c", "données/résumé.txt")
#: Contents shared between pushes (so blobs are deduplicated and outlive single packages).
SHARED = (b"", b"shared one", b"shared two", b"x" * 3000)
SCHEMA_IDS = ("ci.build.v1", "qa.report.v2")
SCHEMAS = (
    {"type": "object", "properties": {"n": {"type": "integer"}}},
    {"type": "object", "required": ["branch"]},
)

Views = dict[str, list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Push:
    ref: str
    #: path -> index into SHARED, or None for bytes no other push has.
    files: dict[str, int | None]
    metadata: dict[str, Any]
    variant: str | None


@dataclass(frozen=True)
class Repush:
    """Push an earlier push's exact tree and metadata again."""

    index: int


@dataclass(frozen=True)
class Delete:
    ref: str


@dataclass(frozen=True)
class Register:
    schema_id: str
    schema: int


@dataclass(frozen=True)
class Gc:
    pass


@dataclass(frozen=True)
class Hold:
    ref: str


@dataclass(frozen=True)
class Release:
    ref: str


@dataclass(frozen=True)
class Policy:
    """Set (keep_last) or clear (None) the retention policy of a namespace or package."""

    namespace: str
    package: str | None
    keep_last: int | None


@dataclass(frozen=True)
class Apply:
    pass


@dataclass(frozen=True)
class Lock:
    days: float


@dataclass(frozen=True)
class Sign:
    """Sign a version with one of two keys (signing again is a no-op)."""

    ref: str
    key: int


Op = Push | Repush | Delete | Register | Gc | Hold | Release | Policy | Apply | Lock | Sign

metadata_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["main", "dev", "ünïcode"]),
    st.booleans(),
    st.just({"deep": [1, {"k": None}]}),
)
ops = st.one_of(
    st.builds(
        Push,
        ref=st.sampled_from(REFS),
        files=st.dictionaries(
            st.sampled_from(PATHS), st.none() | st.integers(0, len(SHARED) - 1), max_size=4
        ),
        metadata=st.dictionaries(st.sampled_from(["n", "branch", "nested"]), metadata_values),
        variant=st.none() | st.sampled_from(SCHEMA_IDS),
    ),
    st.builds(Repush, index=st.integers(0, 50)),
    st.builds(Delete, ref=st.sampled_from(REFS)),
    st.builds(Register, schema_id=st.sampled_from(SCHEMA_IDS), schema=st.integers(0, 1)),
    st.just(Gc()),
    st.builds(Hold, ref=st.sampled_from(REFS)),
    st.builds(Release, ref=st.sampled_from(REFS)),
    st.builds(
        Policy,
        namespace=st.sampled_from(["ci", "qa"]),
        package=st.none() | st.just("app"),
        keep_last=st.none() | st.integers(1, 2),
    ),
    st.just(Apply()),
    st.builds(Lock, days=st.sampled_from([1.0, 2.5])),
    st.builds(Sign, ref=st.sampled_from(REFS), key=st.integers(0, 1)),
)
#: Signing keys of the Sign operations (made once: key generation is not what is tested).
KEYS = (generate(), generate())


def dump_views(store: Store) -> Views:
    """Every view table, every row, in a total order."""
    with store.db.read() as conn:
        return {
            table.name: [tuple(row) for row in conn.execute(select(table).order_by(*table.columns))]
            for table in VIEW_TABLES
        }


class Runner:
    """Applies operations to a store and keeps the expected live versions."""

    def __init__(self, store: Store, scratch: Path) -> None:
        self.store = store
        self.scratch = scratch
        self.pushed: list[tuple[str, Path, dict[str, Any], str | None]] = []
        self.live: dict[str, str] = {}  # ref -> package digest
        self.fresh = 0

    def tree(self, files: dict[str, int | None]) -> Path:
        self.fresh += 1
        contents = {
            p: SHARED[i] if i is not None else f"fresh {self.fresh} {p}".encode()
            for p, i in files.items()
        }
        return make_tree(self.scratch / f"src{self.fresh}", contents)

    def push(self, ref: str, src: Path, metadata: dict[str, Any], variant: str | None) -> None:
        try:
            result = self.store.push(ref, [src], metadata=metadata, variant=variant)
        except VersionExists:
            assert ref in self.live
            return
        except (SchemaNotFound, InvalidMetadata):
            return
        digest = str(result.record.digest)
        assert result.created == (ref not in self.live)
        assert self.live.setdefault(ref, digest) == digest
        self.pushed.append((ref, src, metadata, variant))

    def apply(self, op: Op) -> None:
        match op:
            case Push(ref, files, metadata, variant):
                self.push(ref, self.tree(files), metadata, variant)
            case Repush(index) if self.pushed:
                self.push(*self.pushed[index % len(self.pushed)])
            case Delete(ref):
                try:
                    self.store.delete(ref)
                except PackageNotFound:
                    assert ref not in self.live
                except Locked:  # a legal hold or the retention lock
                    assert ref in self.live
                else:
                    del self.live[ref]
            case Hold(ref):
                with suppress(PackageNotFound):
                    self.store.place_hold(ref, f"hold on {ref}")
            case Release(ref):
                with suppress(PackageNotFound, HoldNotFound, Conflict):
                    self.store.release_hold(ref, "released")
            case Policy(namespace, package, keep_last):
                policy = None if keep_last is None else RetentionPolicy.of(keep_last=keep_last)
                self.store.set_retention(namespace, package, policy)
            case Apply():
                for decision in self.store.apply_retention().deleted:
                    del self.live[decision.reference]
            case Lock(days):
                with suppress(Locked):  # a shorter lock than the current one
                    self.store.lock_retention("qa", days)
            case Register(schema_id, schema):
                with suppress(SchemaExists):
                    self.store.register_schema(schema_id, SCHEMAS[schema])
            case Gc():
                self.store.gc(grace=0)
            case Sign(ref, key):
                with suppress(PackageNotFound):
                    self.store.sign(ref, KEYS[key])


@contextmanager
def scratch_store() -> Iterator[tuple[Settings, Path]]:
    with tempfile.TemporaryDirectory(prefix="rebuild-") as tmp:
        root = Path(tmp)
        yield Settings(home=root / "home", gc_grace=0.0), root


def check_rebuild(store: Store, expected: Views) -> None:
    assert store.rebuild() == len(store.events())
    assert dump_views(store) == expected


@settings(max_examples=15, deadline=None)
@given(st.lists(ops, min_size=1, max_size=25))
def test_rebuild_reproduces_views(program: list[Op]) -> None:
    with scratch_store() as (config, root):
        with Store.from_config(config) as store:
            runner = Runner(store, root)
            for op in program:
                runner.apply(op)
            live = {str(r.reference): str(r.digest) for r in store.iter_query()}
            assert live == runner.live
            before = dump_views(store)
            check_rebuild(store, before)
            check_rebuild(store, before)  # replaying twice changes nothing either
            assert store.verify().ok
        with Store.from_config(config, create=False) as reopened:
            assert dump_views(reopened) == before
            check_rebuild(reopened, before)
            assert reopened.verify_chain() == len(reopened.events())


def test_rebuild_of_every_table_kind(tmp_path: Path) -> None:
    """A fixed program that leaves rows in every view the store writes today."""
    config = Settings(home=tmp_path / "home", gc_grace=0.0)
    with Store.from_config(config) as store:
        runner = Runner(store, tmp_path)
        for op in (
            Register("ci.build.v1", 0),
            Push("ci/app:1", {"a.txt": 1, "dir/b.bin": None}, {"n": 1}, "ci.build.v1"),
            Push("ci/app:2", {"a.txt": 1, "dir/sub/c": None}, {"branch": "main"}, None),
            Delete("ci/app:1"),
            Gc(),
            Push("ci/app:1", {"a.txt": 2}, {"nested": {"deep": [1]}}, None),  # after a tombstone
            Hold("ci/app:2"),
            Hold("ci/app:2"),
            Policy("ci", None, 1),
            Policy("ci", "app", 2),
            Lock(2.5),
            Apply(),
        ):
            runner.apply(op)
        store.release_hold("ci/app:2", "one of two", hold_id=store.list_holds("ci/app:2")[0].id)
        before = dump_views(store)
        names = ("blobs", "storage_locations", "packages", "versions", "files", "schemas")
        for name in (*names, "holds", "retention_policies"):
            assert before[name], f"view {name} is empty: the program does not exercise it"
        assert before["version_meta"]
        check_rebuild(store, before)
