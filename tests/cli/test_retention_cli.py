"""retention and hold commands, local mode, through the real console script."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from artifactstore.cli.main import cli as cli_group
from tests.conftest import Cli, make_tree


def _push(cli: Cli, ref: str, **meta: str) -> None:
    src = make_tree(cli.cwd / ref.replace("/", "_").replace(":", "_"), {"f.txt": ref})
    cli.ok("push", ref, src, *(f"--meta={k}={v}" for k, v in meta.items()))


def test_holds_block_rm_until_each_is_released(cli: Cli) -> None:
    _push(cli, "ci/app:1")
    first = json.loads(cli.ok("hold", "set", "ci/app:1", "--reason", "case 17", "--json").out)
    second = cli.ok("hold", "set", "ci/app:1", "--reason", "audit")
    assert re.search(r"hold #\d+ placed on ci/app:1", second.stderr)
    refused = cli.fails(1, "rm", "ci/app:1")
    assert f"#{first['id']}" in refused.stderr and "case 17" in refused.stderr
    assert "(legal_hold)" in refused.stderr
    listed = json.loads(cli.ok("hold", "list", "--json").out)
    assert [h["reason"] for h in listed] == ["case 17", "audit"]
    ambiguous = cli.fails(1, "hold", "release", "ci/app:1", "--reason", "done")
    assert "--id" in ambiguous.stderr
    cli.ok("hold", "release", "ci/app:1", "--reason", "closed", "--id", str(first["id"]))
    assert "audit" in cli.fails(1, "rm", "ci/app:1").stderr
    cli.ok("hold", "release", "ci/app:1", "--reason", "audit over")
    assert cli.ok("hold", "list").stderr.strip() == "no legal holds"
    history = cli.ok("hold", "list", "ci/app:1", "--all").out
    assert "released" in history and "closed" in history and "audit over" in history
    cli.ok("rm", "ci/app:1")
    cli.fails(2, "hold", "set", "not-a-ref", "--reason", "x")
    cli.fails(2, "hold", "set", "ci/app:1")  # --reason is required


def test_retention_set_show_apply(cli: Cli) -> None:
    for i in range(4):
        _push(cli, f"ci/app:{i}", branch="main" if i == 0 else "dev")
    cli.ok("retention", "set", "ci", "--keep-last", "2", "--keep-where", "branch=main")
    shown = json.loads(cli.ok("retention", "show", "ci/app", "--json").out)
    assert shown["default"] == {"keep_last": 2, "keep_days": None, "keep_where": {"branch": "main"}}
    assert shown["effective"]["scope"] == "namespace" and shown["lock"] is None
    assert "keep_last=2" in cli.ok("retention", "show", "ci").out
    plan = cli.ok("retention", "apply", "--dry-run").out.splitlines()
    assert plan == [
        "keep    ci/app:3  keep_last=2 (newest #1)",
        "keep    ci/app:2  keep_last=2 (newest #2)",
        "delete  ci/app:1  no rule keeps it",
        "keep    ci/app:0  keep_where branch=main",
    ]
    dry = json.loads(cli.ok("retention", "apply", "ci", "--dry-run", "--json").out)
    assert dry["dry_run"] and dry["deleted"] == 1
    assert len(json.loads(cli.ok("ls", "--json").out)) == 4  # the dry run deleted nothing
    done = json.loads(cli.ok("retention", "apply", "--json").out)
    assert [d["reference"] for d in done["decisions"] if d["action"] == "delete"] == ["ci/app:1"]
    assert {r["reference"] for r in json.loads(cli.ok("ls", "--json").out)} == {
        "ci/app:0",
        "ci/app:2",
        "ci/app:3",
    }
    cli.ok("retention", "set", "ci/app", "--clear")  # no package policy: a no-op
    cli.ok("retention", "set", "ci", "--clear")
    assert json.loads(cli.ok("retention", "show", "ci", "--json").out)["default"] is None
    cli.fails(2, "retention", "set", "ci")  # no rule
    cli.fails(2, "retention", "set", "ci", "--clear", "--keep-last", "1")
    cli.fails(2, "retention", "set", "ci", "--keep-days", "0")
    cli.fails(2, "retention", "set", "Bad_NS", "--keep-last", "1")
    cli.fails(2, "retention", "set", "ci", "--keep-where", "novalue")


def test_the_lock_cannot_be_shortened_or_removed_from_the_cli(cli: Cli) -> None:
    _push(cli, "ci/app:1")
    cli.fails(1, "retention", "lock", "ci", "--keep-days", "30")  # no --yes, no terminal
    assert json.loads(cli.ok("retention", "show", "ci", "--json").out)["lock"] is None
    cli.ok("retention", "lock", "ci", "--keep-days", "30", "--yes")
    shorter = cli.fails(1, "retention", "lock", "ci", "--keep-days", "29", "--yes")
    assert "(retention_locked)" in shorter.stderr and "only grow" in shorter.stderr
    refused = cli.fails(1, "rm", "ci/app:1")
    assert "(retention_locked)" in refused.stderr and "30 days" in refused.stderr
    cli.ok("retention", "set", "ci", "--keep-last", "1")
    cli.ok("retention", "set", "ci", "--clear")  # clears the policy, not the lock
    cli.ok("retention", "lock", "ci", "--keep-days", "60", "--yes")
    assert json.loads(cli.ok("retention", "show", "ci", "--json").out)["lock"]["keep_days"] == 60
    # No command can take a lock back.
    group = cli_group.get_command(click.Context(cli_group), "retention")
    assert isinstance(group, click.Group)
    assert sorted(group.commands) == ["apply", "lock", "set", "show"]
    lock_options = {o for p in group.commands["lock"].params for o in p.opts}
    assert lock_options == {"namespace", "--keep-days", "--yes"}


def test_apply_keeps_held_and_locked_versions(cli: Cli, tmp_path: Path) -> None:
    for i in range(3):
        _push(cli, f"ci/app:{i}")
        _push(cli, f"qa/app:{i}")
    cli.ok("hold", "set", "ci/app:0", "--reason", "keep")
    cli.ok("retention", "set", "ci", "--keep-last", "1")
    cli.ok("retention", "set", "qa", "--keep-last", "1")
    cli.ok("retention", "lock", "qa", "--keep-days", "1", "--yes")
    report = json.loads(cli.ok("retention", "apply", "--json").out)
    reasons = {d["reference"]: d["reason"] for d in report["decisions"]}
    assert [d["reference"] for d in report["decisions"] if d["action"] == "delete"] == ["ci/app:1"]
    assert reasons["ci/app:0"].startswith("legal hold #")
    assert reasons["qa/app:0"] == "retention lock (1 day)"
