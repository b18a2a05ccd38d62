"""A pull is all or nothing, never overwrites unasked, and trusts no manifest it cannot hash.

Every target is checked before a byte is fetched: a symbolic link, a file
where the package has a directory, a directory where it has a file, or (unless
``force``) an existing file refuses the whole pull and leaves the output
directory as it was. The same code writes local and remote pulls
(``client/files.py``); a remote pull also checks the manifest against the
package digest the server names, here against a real server that lies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from artifactstore.client.remote import RemoteStore
from artifactstore.errors import Conflict, DigestMismatch, IntegrityError, InvalidInput
from artifactstore.model.manifest import Manifest
from artifactstore.store import Store
from tests.conftest import Cli, flip_stored_byte, http_server, make_tree
from tests.server.conftest import make_manifest

TREE: dict[str, bytes | str] = {"a.txt": "a\n", "sub/b.txt": "b\n", "z.txt": "z\n"}
PULLED = {"a.txt": b"a\n", "sub/b.txt": b"b\n", "z.txt": b"z\n"}


@pytest.fixture
def pushed(store: Store, tmp_path: Path) -> Store:
    store.push("ci/app:1", [make_tree(tmp_path / "src", TREE)])
    return store


def snapshot(root: Path) -> dict[str, object]:
    """Everything under ``root`` (symbolic links as links, not followed), by relative path."""
    out: dict[str, object] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def files_of(root: Path) -> dict[str, object]:
    return {k: v for k, v in snapshot(root).items() if v != "dir"}


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the output directory that a symbolic link in it points to."""
    return make_tree(tmp_path / "elsewhere", {"secret": "do not touch\n", "dir/x": "x\n"})


# --- everything is checked before anything is written ----------------------------------------


@pytest.mark.parametrize(
    ("where", "message"),
    [("z.txt", "z.txt exists"), ("sub", "sub is a symbolic link")],
    ids=["at-a-file", "at-a-directory"],
)
def test_a_symbolic_link_in_the_way_refuses_the_whole_pull(
    pushed: Store, tmp_path: Path, victim: Path, where: str, message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim / ("secret" if where == "z.txt" else "dir"), out / where)
    before, outside = snapshot(out), snapshot(victim)
    with pytest.raises(Conflict, match=message):
        pushed.pull("ci/app:1", out)
    assert snapshot(out) == before  # not even a.txt, which sorts before the link
    assert snapshot(victim) == outside


def test_an_existing_file_is_kept_unless_forced(pushed: Store, tmp_path: Path) -> None:
    out = make_tree(tmp_path / "out", {"a.txt": "mine\n", "sub/b.txt": "mine too\n"})
    fetched: list[int] = []
    with pytest.raises(Conflict, match=r"a\.txt exists \(and 1 more\).*--force") as caught:
        pushed.pull("ci/app:1", out, progress=fetched.append)
    assert "\n" not in caught.value.detail
    assert fetched == []  # refused before a byte was read
    assert files_of(out) == {"a.txt": b"mine\n", "sub/b.txt": b"mine too\n"}

    pushed.pull("ci/app:1", out, force=True)
    assert files_of(out) == PULLED


def test_force_replaces_a_symbolic_link_itself_never_its_target(
    pushed: Store, tmp_path: Path, victim: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim / "secret", out / "z.txt")
    outside = snapshot(victim)
    pushed.pull("ci/app:1", out, force=True)
    assert files_of(out) == PULLED and not (out / "z.txt").is_symlink()
    assert snapshot(victim) == outside


@pytest.mark.parametrize("force", [False, True], ids=["plain", "forced"])
@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"sub": "a file\n"}, "sub is a file where the package has a directory"),
        ({"z.txt/inside": "x\n"}, "z.txt is a directory where the package has a file"),
    ],
    ids=["file-for-directory", "directory-for-file"],
)
def test_what_force_cannot_replace(
    pushed: Store, tmp_path: Path, tree: dict[str, str], message: str, force: bool
) -> None:
    out = make_tree(tmp_path / "out", tree)
    before = snapshot(out)
    with pytest.raises(Conflict, match=message):
        pushed.pull("ci/app:1", out, force=force)
    assert snapshot(out) == before


def test_an_output_that_is_not_a_directory(pushed: Store, tmp_path: Path) -> None:
    plain = make_tree(tmp_path, {"plain": "x"}) / "plain"
    with pytest.raises(InvalidInput, match="not a directory"):
        pushed.pull("ci/app:1", plain)
    with pytest.raises(InvalidInput, match=r"(?i)not a directory"):
        pushed.pull("ci/app:1", plain / "below")
    assert plain.read_text() == "x"


# --- moving into place ------------------------------------------------------------------------


def test_a_new_directory_appears_whole(pushed: Store, tmp_path: Path) -> None:
    out = tmp_path / "new" / "deep" / "out"
    pushed.pull("ci/app:1", out)
    assert files_of(out) == PULLED
    assert sorted(os.listdir(out.parent)) == ["out"]  # no staging directory left beside it


def test_a_damaged_pull_into_a_new_directory_leaves_nothing(pushed: Store, tmp_path: Path) -> None:
    z = next(f for f in pushed.show("ci/app:1").manifest.files if f.path.value == "z.txt")
    flip_stored_byte(pushed, str(z.blake3))
    with pytest.raises(DigestMismatch):
        pushed.pull("ci/app:1", tmp_path / "new" / "deep" / "out")
    assert not (tmp_path / "new").exists()  # nor the directories made for it


def test_a_file_that_appears_during_the_pull_undoes_what_was_moved(
    pushed: Store, tmp_path: Path
) -> None:
    """Someone writes z.txt after the check: the renames already done are undone."""
    out = make_tree(tmp_path / "out", {"keep.txt": "kept\n"})

    def racer(_n: int) -> None:
        (out / "z.txt").write_text("theirs\n")

    with pytest.raises(Conflict, match="appeared"):
        pushed.pull("ci/app:1", out, progress=racer)
    assert snapshot(out) == {"keep.txt": b"kept\n", "z.txt": b"theirs\n"}


def test_a_forced_pull_that_fails_restores_the_files_it_replaced(
    pushed: Store, tmp_path: Path
) -> None:
    out = make_tree(tmp_path / "out", {"a.txt": "mine\n"})

    def racer(_n: int) -> None:
        (out / "z.txt").mkdir(exist_ok=True)  # force never replaces a directory

    with pytest.raises(Conflict, match="appeared"):
        pushed.pull("ci/app:1", out, progress=racer, force=True)
    assert snapshot(out) == {"a.txt": b"mine\n", "z.txt": "dir"}


# --- the command line -------------------------------------------------------------------------


def test_cli_pull_refusals_are_one_line_with_their_exit_code(cli: Cli, tmp_path: Path) -> None:
    cli.ok("push", "ci/app:1", make_tree(tmp_path / "src", TREE))
    out = make_tree(tmp_path / "out", {"a.txt": "mine\n"})
    refused = cli.fails(1, "pull", "ci/app:1", "-o", out)
    assert "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert files_of(out) == {"a.txt": b"mine\n"}
    cli.ok("pull", "ci/app:1", "-o", out, "--force")
    assert files_of(out) == PULLED

    blocked = make_tree(tmp_path / "blocked", {"sub": "a file\n"})
    assert "is a file where" in cli.fails(1, "pull", "ci/app:1", "-o", blocked).stderr
    assert files_of(blocked) == {"sub": b"a file\n"}
    cli.fails(2, "pull", "ci/app:1", "-o", blocked / "sub")  # -o names a file


# --- a server that lies -----------------------------------------------------------------------


def lying_handler(
    versions: dict[str, dict[str, Any]], blobs: dict[str, bytes]
) -> type[BaseHTTPRequestHandler]:
    """Answers each version with canned JSON and serves the blobs it is given: what a
    compromised or buggy registry could send."""
    routes: dict[str, tuple[str, bytes]] = {
        f"/v1/packages/{ref.replace(':', '/')}": ("application/json", json.dumps(v).encode())
        for ref, v in versions.items()
    }
    routes.update({f"/v1/blobs/{d}": ("application/octet-stream", b) for d, b in blobs.items()})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kind, body = routes.get(self.path, ("text/plain", b""))
            self.send_response(200 if self.path in routes else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


def version_body(manifest: Manifest, named: Manifest) -> dict[str, Any]:
    """The JSON a server sends for a version: ``manifest``, under ``named``'s identity."""
    digests = named.digests()
    return {
        "reference": f"{named.namespace}/{named.name}:{named.version}",
        "digest": str(digests.blake3),
        "sha256": str(digests.sha256),
        "committed_at": "2024-01-01T00:00:00Z",
        "actor": "token:1",
        "size": manifest.total_size,
        "file_count": len(manifest.files),
        "manifest": manifest.to_map(),
    }


HONEST = {"a.txt": b"the real thing\n"}
EVIL = {"a.txt": b"#!/bin/sh\nsomething else\n"}


@pytest.fixture
def remote_cli(tmp_path: Path) -> Iterator[tuple[Cli, str]]:
    """The CLI in remote mode against a lying server, and the server's URL."""
    honest = make_manifest("ci/app:1", HONEST)
    truth = make_manifest("ci/app:3", HONEST)
    evil = make_manifest("ci/app:1", EVIL)
    other = make_manifest("ci/other:2", EVIL)
    handler = lying_handler(
        {
            # The files of another manifest, under the honest one's package digest.
            "ci/app:1": version_body(evil, honest),
            # Another package's genuine manifest and digest, for the version asked.
            "ci/app:2": {**version_body(other, other), "reference": "ci/app:2"},
            "ci/app:3": version_body(truth, truth),  # the truth, for contrast
        },
        {str(evil.files[0].blake3): EVIL["a.txt"], str(honest.files[0].blake3): HONEST["a.txt"]},
    )
    work = tmp_path / "work"
    work.mkdir()
    cli = Cli(tmp_path / "no-home", work)
    with http_server(handler) as url:
        cli.env["ARTIFACTSTORE_URL"] = url
        yield cli, url


def test_a_manifest_that_does_not_hash_to_the_package_digest_is_refused(
    remote_cli: tuple[Cli, str], tmp_path: Path
) -> None:
    cli, url = remote_cli
    out = tmp_path / "out"
    result = cli.fails(3, "pull", "ci/app:1", "-o", out)
    assert "package digest" in result.stderr and "verified" not in result.stderr
    assert not out.exists()
    cli.fails(3, "cat", "ci/app:1", "a.txt")
    with RemoteStore(url) as remote, pytest.raises(DigestMismatch):
        remote.pull("ci/app:1", out)
    assert not out.exists()


def test_another_packages_manifest_is_refused(remote_cli: tuple[Cli, str], tmp_path: Path) -> None:
    cli, url = remote_cli
    assert "ci/other:2" in cli.fails(3, "pull", "ci/app:2", "-o", tmp_path / "out").stderr
    with RemoteStore(url) as remote, pytest.raises(IntegrityError, match="ci/other:2"):
        remote.show("ci/app:2")


def test_an_honest_answer_is_pulled(remote_cli: tuple[Cli, str], tmp_path: Path) -> None:
    cli, _url = remote_cli
    cli.ok("pull", "ci/app:3", "-o", tmp_path / "out")
    assert files_of(tmp_path / "out") == HONEST
