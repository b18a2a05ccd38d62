"""Hostile and malformed input through the real CLI: refused with a clear message, no traceback.

Usage errors (malformed arguments) exit 2, refused operations exit 1. Every
refusal leaves the store as it was: most cases run against one shared store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from artifactstore.config import Settings
from artifactstore.store import Store
from tests.conftest import Cli, make_tree

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """A store holding ci/app:1 (a.txt, dir/b.txt) and schema ci.build.v1."""
    root = tmp_path_factory.mktemp("shared")
    with Store.from_config(Settings(home=root / "home")) as store:
        store.push("ci/app:1", [make_tree(root / "dist", {"a.txt": "one", "dir/b.txt": "two"})])
        store.register_schema("ci.build.v1", SCHEMA)
    (root / "work").mkdir()
    return Cli(root / "home", root / "work")


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "dist", {"file.txt": "content"})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- references ---------------------------------------------------------------------------


def test_repush_with_different_content_is_refused(shared: Cli, tmp_path: Path) -> None:
    changed = make_tree(tmp_path / "d", {"a.txt": "ONE", "dir/b.txt": "two"})
    result = shared.fails(1, "push", "ci/app:1", changed)
    assert "immutable" in result.stderr and "ci/app:1" in result.stderr


@pytest.mark.parametrize(
    "ref",
    [
        "CI/app:1",  # uppercase namespace
        "ci/..:1",
        f"ci/{'a' * 200}:1",
        f"{'n' * 65}/app:1",
        "ci/app:.hidden",
        "ci/app:",
        "ci/app:1/2",
        "",
    ],
    ids=[
        "uppercase",
        "dotdot",
        "long-name",
        "long-namespace",
        "dot-version",
        "no-version",
        "slash",
        "empty",
    ],
)
def test_invalid_reference_is_a_usage_error(shared: Cli, dist: Path, ref: str) -> None:
    result = shared.fails(2, "push", ref, dist)
    assert "invalid" in result.stderr


def test_longest_valid_names_are_accepted(shared: Cli, dist: Path) -> None:
    ref = f"{'n' * 64}/{'a' * 128}:{'v' * 128}"
    shared.ok("push", ref, dist)
    assert shared.ok("cat", ref, "file.txt").stdout == b"content"


def test_missing_path_is_a_usage_error(shared: Cli, tmp_path: Path) -> None:
    """A PATH argument that does not exist is a bad argument (SPEC section 5: exit 2)."""
    result = shared.fails(2, "push", "ci/app:2", tmp_path / "nowhere")
    assert "does not exist" in result.stderr


# --- trees that cannot become a package -----------------------------------------------------


def _external_symlink(d: Path) -> None:
    make_tree(d.parent / "secret", {"id_rsa": "PRIVATE"})
    os.symlink(d.parent / "secret" / "id_rsa", d / "key")


def _symlink_cycle(d: Path) -> None:
    os.symlink("b", d / "a")
    os.symlink("a", d / "b")


def _non_utf8_name(d: Path) -> None:
    (d / os.fsdecode(b"bad\xff.txt")).write_bytes(b"x")


HOSTILE: dict[str, tuple[Callable[[Path], object], str]] = {
    "symlink-outside": (_external_symlink, "outside"),
    "broken-symlink": (lambda d: os.symlink(d / "missing", d / "dangling"), "broken"),
    "directory-loop": (lambda d: os.symlink(".", d / "self"), "loop"),
    "symlink-cycle": (_symlink_cycle, "loop"),
    "case-collision": (lambda d: make_tree(d, {"A.txt": "1", "a.txt": "2"}), "case-insensitive"),
    "file-vs-directory": (lambda d: make_tree(d, {"Docs": "1", "docs/x": "2"}), "directory"),
    "reserved-con": (lambda d: make_tree(d, {"CON": "x"}), "reserves"),
    "reserved-aux": (lambda d: make_tree(d, {"sub/aux.txt": "x"}), "reserves"),
    "trailing-dot": (lambda d: make_tree(d, {"name.": "x"}), "dot"),
    "backslash": (lambda d: make_tree(d, {"a\\b": "x"}), "character"),
    "non-utf8-name": (_non_utf8_name, "UTF-8"),
    "fifo": (lambda d: os.mkfifo(d / "pipe"), "not a regular file"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tree_is_refused(shared: Cli, tmp_path: Path, case: str) -> None:
    build, message = HOSTILE[case]
    tree = make_tree(tmp_path / "dist", {"ok.txt": "fine"})
    build(tree)
    result = shared.fails(1, "push", f"ci/hostile:{case}", tree)
    assert message in result.stderr
    shared.fails(1, "show", f"ci/hostile:{case}")  # nothing was committed


def test_symlink_outside_accepted_when_asked(shared: Cli, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "dist", {"ok.txt": "fine"})
    _external_symlink(tree)
    shared.ok("push", "ci/follow:1", tree, "--follow-symlinks")
    assert shared.ok("cat", "ci/follow:1", "key").stdout == b"PRIVATE"


def test_symlink_inside_the_tree_is_accepted(shared: Cli, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "dist", {"real/data.txt": "data"})
    os.symlink("real/data.txt", tree / "alias.txt")
    os.symlink("real", tree / "linked")
    shared.ok("push", "ci/inside:1", tree)
    doc = json.loads(shared.ok("show", "ci/inside:1", "--json").stdout)
    assert [f["path"] for f in doc["manifest"]["files"]] == [
        "alias.txt",
        "linked/data.txt",
        "real/data.txt",
    ]
    assert len({f["digests"]["blake3"] for f in doc["manifest"]["files"]}) == 1


def test_symlink_fan_out_stops_at_the_file_limit(cli: Cli, tmp_path: Path) -> None:
    """Two aliases per level double the tree each level: 2**20 files from 21 directories."""
    tree = make_tree(tmp_path / "dist", {"d20/f": "x"})
    for level in range(20):
        (tree / f"d{level}").mkdir()
        for alias in ("a", "b"):
            os.symlink(f"../d{level + 1}", tree / f"d{level}" / alias)
    cli.env["ARTIFACTSTORE_MAX_FILES"] = "100"
    assert "limit" in cli.fails(1, "push", "ci/fanout:1", tree).stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories")
def test_unreadable_directory(shared: Cli, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "dist", {"locked/secret": "x"})
    (tree / "locked").chmod(0)
    try:
        assert "cannot read" in shared.fails(1, "push", "ci/locked:1", tree).stderr
    finally:
        (tree / "locked").chmod(0o755)


# --- metadata -------------------------------------------------------------------------------


def test_meta_without_equals_is_a_usage_error(shared: Cli, dist: Path) -> None:
    result = shared.fails(2, "push", "ci/app:2", dist, "--meta", "branch")
    assert "KEY=VALUE" in result.stderr


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"branch": ', "invalid JSON"),
        ('{"k": 1, "k": 2}', "duplicate key"),
        ("[1, 2]", "JSON object"),
        ('"just a string"', "JSON object"),
        (_nested(20), "deeper"),
        (_nested(100_000), "deeper"),
        ('{"big": "' + "x" * (2 * 1024 * 1024) + '"}', "limit"),
        ('{"n": NaN}', "NaN"),
    ],
    ids=["broken", "duplicate", "array", "string", "deep", "very-deep", "huge", "nan"],
)
def test_bad_meta_file_is_refused(
    shared: Cli, dist: Path, tmp_path: Path, text: str, message: str
) -> None:
    meta = write(tmp_path / "meta.json", text)
    result = shared.fails(1, "push", "ci/app:2", dist, "--meta-file", meta)
    assert message in result.stderr


def test_missing_meta_file_is_a_usage_error(shared: Cli, dist: Path, tmp_path: Path) -> None:
    result = shared.fails(2, "push", "ci/app:2", dist, "--meta-file", tmp_path / "absent.json")
    assert "absent.json" in result.stderr and "No such file" in result.stderr


def test_unregistered_variant_says_how_to_register(shared: Cli, dist: Path) -> None:
    result = shared.fails(1, "push", "ci/app:2", dist, "--variant", "ci.unknown.v1")
    assert "artifactstore schema register ci.unknown.v1" in result.stderr


# --- schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_id", "text", "message"),
    [
        ("bad.type.v1", '{"type": 12}', "not a valid JSON Schema"),
        ("bad.array.v1", "[1]", "JSON object"),
        ("bad.json.v1", '{"type": ', "invalid JSON"),
        ("bad.draft.v1", '{"$schema": "http://json-schema.org/draft-07/schema#"}', "2020-12"),
        ("ci.build.v1", '{"type": "object"}', "immutable"),  # a different schema, same id
    ],
    ids=["bad-type", "array", "broken-json", "old-draft", "re-register"],
)
def test_bad_schema_is_refused(
    shared: Cli, tmp_path: Path, schema_id: str, text: str, message: str
) -> None:
    result = shared.fails(1, "schema", "register", schema_id, write(tmp_path / "s.json", text))
    assert message in result.stderr


# --- reading what is not there ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cat", "ci/app:1", "nope.txt"), "no file"),
        (("cat", "ci/app:1", "../a.txt"), "'..'"),
        (("pull", "ci/app:404", "-o", "out"), "does not exist"),
        (("show", "ci/app:404"), "does not exist"),
        (("rm", "ci/app:404"), "does not exist"),
        (("show", "ci/nothing:1"), "does not exist"),
    ],
    ids=[
        "cat-absent-path",
        "cat-traversal",
        "pull-absent",
        "show-absent",
        "rm-absent",
        "show-package",
    ],
)
def test_absent_things(shared: Cli, args: tuple[str, ...], message: str) -> None:
    result = shared.fails(1, *args)
    assert message in result.stderr
    assert not (shared.cwd / "out").exists()


def test_a_refused_push_leaves_no_bytes_behind(cli: Cli, dist: Path) -> None:
    """The CLI stages the files before it opens the store; a push refused after
    that (here: an unknown variant) cancels what it staged."""
    cli.fails(1, "push", "ci/app:2", dist, "--variant", "ci.unknown.v1")
    left = [p for p in (cli.home / "storage").rglob("*") if not p.is_dir()]
    assert (cli.home / "storage" / "tmp").is_dir()  # the push did stage there
    assert left == []
