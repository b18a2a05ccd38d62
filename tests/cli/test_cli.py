"""The CLI as a user runs it: the real ``artifactstore`` executable in a subprocess.

Exit codes (SPEC section 5, ``cli/exit_codes.py``): 0 success, 1 operation
failed, 2 usage error, 3 integrity failure. ``Cli`` asserts that no
invocation ever prints a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, make_tree, read_tree

DIST: dict[str, bytes | str] = {
    "report/index.html": "<html><body>all green ✓</body></html>\n",
    "report/junit.xml": "<testsuite tests='3'/>\n",
    "app.bin": bytes(range(256)) * 64,
    "empty.txt": b"",
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["build"],
    "properties": {
        "build": {
            "type": "object",
            "required": ["number"],
            "properties": {"number": {"type": "integer"}},
        }
    },
}


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def refs(listing: bytes) -> list[str]:
    return [item["reference"] for item in json.loads(listing)]


def test_user_story(cli: Cli) -> None:
    work = cli.cwd
    make_tree(work / "dist", DIST)

    # Push a CI build with metadata.
    pushed = cli.ok(
        "push", "ci/app:1.4.2", "dist/", "--meta", "branch=main", "--meta", "commit=abc123"
    )
    assert "ci/app:1.4.2 pushed" in pushed.out
    digest = pushed.out.split("digest ")[1].split()[0]
    assert digest.startswith("blake3:")

    # Find it.
    assert "ci/app:1.4.2" in cli.ok("ls", "ci", "--where", "branch=main").out
    none = cli.ok("ls", "ci", "--where", "branch=dev")
    assert none.out == "" and "no versions match" in none.stderr
    (item,) = json.loads(cli.ok("ls", "ci", "--where", "branch=main", "--json").stdout)
    assert item["reference"] == "ci/app:1.4.2" and item["digest"] == digest
    assert item["metadata"] == {"branch": "main", "commit": "abc123"}
    assert item["file_count"] == len(DIST)

    shown = cli.ok("show", "ci/app:1.4.2").out
    assert digest in shown and "branch=main" in shown and "report/index.html" in shown
    doc = json.loads(cli.ok("show", "ci/app:1.4.2", "--json").stdout)
    assert doc["digest"] == digest
    assert [f["path"] for f in doc["manifest"]["files"]] == sorted(DIST)

    # Get the bytes back.
    cli.ok("pull", "ci/app:1.4.2", "-o", "out/")
    assert read_tree(work / "out") == read_tree(work / "dist")
    for rel in ("report/index.html", "app.bin"):
        assert cli.ok("cat", "ci/app:1.4.2", rel).stdout == (work / "dist" / rel).read_bytes()

    # Typed metadata: a registered schema validates pushes that name it.
    write_json(work / "schema.json", SCHEMA)
    assert "registered" in cli.ok("schema", "register", "ci.build.v1", "schema.json").stderr
    make_tree(work / "dist2", {**DIST, "app.bin": b"rebuilt"})
    good = write_json(work / "good.json", {"build": {"number": 42}})
    cli.ok("push", "ci/app:1.4.3", "dist2", "--variant", "ci.build.v1", "--meta-file", good)
    bad = write_json(work / "bad.json", {"build": {"number": "forty-two"}})
    refused = cli.fails(
        1, "push", "ci/app:1.4.4", "dist2", "--variant", "ci.build.v1", "--meta-file", bad
    )
    assert "/build/number" in refused.stderr
    assert refs(cli.ok("ls", "ci/app", "--json").stdout) == ["ci/app:1.4.3", "ci/app:1.4.2"]

    # Delete, then reclaim the bytes only 1.4.2 used (app.bin; the rest is shared).
    cli.ok("rm", "ci/app:1.4.2")
    cli.fails(1, "show", "ci/app:1.4.2")
    blob_files = sorted((cli.home / "storage" / "blobs").rglob("*"))
    assert "would collect 1 blobs" in cli.ok("gc", "--dry-run", "--grace", "0s").stderr
    assert sorted((cli.home / "storage" / "blobs").rglob("*")) == blob_files
    report = json.loads(cli.ok("gc", "--grace", "0s", "--json").stdout)
    assert len(report["collected"]) == 1 and report["bytes_freed"] == len(DIST["app.bin"])
    cli.ok("pull", "ci/app:1.4.3", "-o", "out2")
    assert read_tree(work / "out2") == read_tree(work / "dist2")

    # Integrity and history.
    cli.ok("verify", "--all")
    assert "event chain verified" in cli.ok("events", "--verify-chain").stderr
    listing = cli.ok("ls", "--json").stdout
    assert "replayed" in cli.ok("rebuild").stderr
    assert cli.ok("ls", "--json").stdout == listing

    lines = cli.ok("events", "--json").out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("package.committed") == 2
    assert types.count("package.deleted") == 1 and types.count("blob.collected") == 1
    assert "schema.registered" in types
    assert all(e["actor"].startswith("local:") for e in events)
    tail = [
        json.loads(line)
        for line in cli.ok("events", "--json", "--after", "3", "--limit", "2").out.splitlines()
    ]
    assert [e["seq"] for e in tail] == [4, 5]


# --- exit codes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("push", "--bogus", "ci/app:1", "."),  # unknown option
        ("push", "ci/app:1"),  # missing PATH argument
        ("push", "ci/app:1", "nowhere"),  # a PATH that does not exist
        ("token", "create", "--name", "ci"),  # neither --scope nor --admin
        ("show",),  # missing REF
        ("verify",),  # neither REF nor --all
        ("verify", "ci/app:1", "--all"),  # both
        ("show", "Bad/Name:1"),  # invalid namespace
        ("show", "ci/app"),  # no version
        ("cat", "ci/app", "x"),
        ("push", "ci/app", "."),
        ("events", "--after", "-1"),
        ("nonsense",),  # unknown command
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2(cli: Cli, args: tuple[str, ...]) -> None:
    assert "error" in cli.fails(2, *args).stderr.lower()


def test_operation_failure_on_missing_store_exits_1(cli: Cli) -> None:
    result = cli.fails(1, "show", "ci/app:1")
    assert "no store" in result.stderr
    assert not cli.home.exists()  # reading never creates a store


def test_help_and_version(cli: Cli) -> None:
    assert "push" in cli.ok("--help").out
    assert "version" in cli.ok("--version").out


def test_every_option_has_help() -> None:
    """``--help`` explains every option of every command (the group is lazy: walk it
    through ``get_command``, not ``.commands``)."""
    import click

    from artifactstore.cli.main import cli

    ctx = click.Context(cli)

    def options(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Parameter]]:
        yield from ((prefix, p) for p in group.params)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            if isinstance(command, click.Group):
                yield from options(command, f"{prefix} {name}")
            else:
                yield from ((f"{prefix} {name}", p) for p in command.params)

    seen = [(name, p) for name, p in options(cli, "artifactstore") if isinstance(p, click.Option)]
    assert any(name == "artifactstore serve" for name, _ in seen)
    missing = [f"{name} {max(p.opts, key=len)}" for name, p in seen if not p.help]
    assert missing == []


def test_every_command_is_found_where_the_lazy_group_looks() -> None:
    import importlib

    from artifactstore.cli.main import COMMAND_MODULES, cli

    defined = {}
    for module in set(COMMAND_MODULES.values()):
        for command in importlib.import_module(f"artifactstore.cli.commands.{module}").COMMANDS:
            defined[command.name] = module
    assert defined == COMMAND_MODULES
    ctx = cli.make_context("artifactstore", ["--help"], resilient_parsing=True)
    assert all(cli.get_command(ctx, name) is not None for name in COMMAND_MODULES)


def test_a_local_push_can_stage_before_the_control_plane_is_imported() -> None:
    """A push hashes and stages its files while SQLAlchemy imports in another
    thread (``Store`` opens its control plane there): nothing that runs before,
    the Store facade included, may import it."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import artifactstore.cli.main, artifactstore.cli.commands.packages\n"
        "import artifactstore.store, artifactstore.dataplane.files\n"
        "import artifactstore.dataplane.backends\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout
