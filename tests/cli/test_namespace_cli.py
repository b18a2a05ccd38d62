"""namespace show / set through the real console script, in local and in remote mode."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, make_tree
from tests.server.conftest import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("namespace-server")
    srv = Server(workdir / "home", workdir, {})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(params=["local", "remote"])
def ns_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """The CLI on a fresh data directory, or on the module's server (a namespace of its own)."""
    work = tmp_path / "work"
    work.mkdir()
    cli = Cli(tmp_path / "home", work)
    if request.param == "remote":
        server: Server = request.getfixturevalue("server")
        cli.env["ARTIFACTSTORE_URL"] = server.base_url
        cli.env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return cli


def settings(cli: Cli, ns: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(cli.ok("namespace", "show", ns, "--json").out)
    return body


def push(cli: Cli, ref: str, files: dict[str, bytes]) -> None:
    cli.ok("push", ref, make_tree(cli.cwd / ref.replace("/", "_").replace(":", "_"), files))


def test_show_and_set_keep_what_is_not_given(ns_cli: Cli) -> None:
    cli = ns_cli
    ns = "cli-" + os.urandom(4).hex()  # remote runs share one server
    push(cli, f"{ns}/app:1", {"a.bin": os.urandom(3000)})
    assert settings(cli, ns) == {
        "anonymous_read": False,
        "quota_bytes": None,
        "movable_tags": [],
        "trusted_keys": [],
        "require_signature": False,
        "used_bytes": 3000,
    }
    shown = cli.ok("namespace", "show", ns).out
    assert "quota           (none)" in shown and "2.9 KiB (3000 bytes)" in shown
    done = cli.ok("namespace", "set", ns, "--quota", "6kB")
    assert f"namespace {ns}: quota 5.9 KiB" in done.stderr
    cli.ok("namespace", "set", ns, "--movable-tag", "latest", "--movable-tag", "stable")
    body = json.loads(cli.ok("namespace", "set", ns, "--anonymous-read", "--json").out)
    assert body == {
        "anonymous_read": True,
        "quota_bytes": 6000,
        "movable_tags": ["latest", "stable"],
        "trusted_keys": [],
        "require_signature": False,
        "used_bytes": 3000,
    }
    human = cli.ok("namespace", "show", ns).out.splitlines()
    assert human == [
        f"namespace {ns}",
        "  quota           5.9 KiB (6000 bytes)",
        "  used            2.9 KiB (3000 bytes), 50.0% of the quota",
        "  movable tags    latest, stable",
        "  anonymous read  on",
        "  require signed  no",
        "  trusted keys    (none)",
    ]
    cli.ok("namespace", "set", ns, "--quota", "1.5KiB", "--no-movable-tags")
    body = settings(cli, ns)
    assert (body["quota_bytes"], body["movable_tags"], body["anonymous_read"]) == (1536, [], True)
    assert (
        "195.3% of the quota (over it: new bytes are refused)"
        in cli.ok("namespace", "show", ns).out
    )
    refused = cli.fails(1, "push", f"{ns}/app:2", make_tree(cli.cwd / "more", {"b": b"b"}))
    assert "(quota_exceeded)" in refused.stderr and "--quota" in refused.stderr
    cli.ok("namespace", "set", ns, "--quota", "none", "--no-anonymous-read")
    body = settings(cli, ns)
    assert (body["quota_bytes"], body["anonymous_read"]) == (None, False)
    cli.ok("push", f"{ns}/app:2", cli.cwd / "more")


def test_movable_tag_moves_on_push(ns_cli: Cli) -> None:
    cli = ns_cli
    ns = "tag-" + os.urandom(4).hex()
    cli.ok("namespace", "set", ns, "--movable-tag", "latest")
    push(cli, f"{ns}/app:latest", {"old.txt": b"old"})
    cli.ok("push", f"{ns}/app:latest", make_tree(cli.cwd / "new", {"new.txt": b"new"}))
    shown = json.loads(cli.ok("show", f"{ns}/app:latest", "--json").out)
    assert [f["path"] for f in shown["manifest"]["files"]] == ["new.txt"]
    push(cli, f"{ns}/app:1", {"a.txt": b"1"})
    changed = cli.fails(1, "push", f"{ns}/app:1", cli.cwd / "new")
    assert "(version_exists)" in changed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quota", "10XB"], "invalid size '10XB'"),
        (["--quota", "-1"], "invalid size '-1'"),
        (["--quota", "1.5"], "invalid size '1.5'"),
        (["--quota", "lots"], "invalid size 'lots'"),
        (["--quota", "99999999999999999999"], "is more than 9223372036854775807 bytes"),
        (["--quota", "9EiB"], "is more than"),
        (["--movable-tag", "bad tag"], "invalid version 'bad tag'"),
        (["--movable-tag", "latest", "--no-movable-tags"], "not both"),
        ([], "nothing to change"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(ns_cli: Cli, args: list[str], message: str) -> None:
    result = ns_cli.fails(2, "namespace", "set", "ci", *args)
    assert message in result.stderr, result.stderr
    if args[:1] == ["--quota"]:
        assert "Invalid value for '--quota'" in result.stderr


def test_bad_namespace_names_exit_2(ns_cli: Cli) -> None:
    assert "invalid namespace" in ns_cli.fails(2, "namespace", "show", "Bad_NS").stderr
    assert "invalid namespace" in ns_cli.fails(2, "namespace", "set", "a/b", "--quota", "1").stderr
