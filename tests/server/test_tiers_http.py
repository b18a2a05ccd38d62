"""The restore flow end to end over HTTP, and the tier command in remote mode."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_tree, read_tree
from tests.server.conftest import Server, assert_problem, digests_of, push
from tests.server.test_remote_cli import RemoteCli

pytestmark = pytest.mark.configs("embedded", "scaleout")

RESTORE_DELAY = 1.5
FILES = {"report/index.html": b"<h1>evidence</h1>", "data.bin": bytes(range(256)) * 400}


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ARTIFACTSTORE_RESTORE_DELAY": f"{RESTORE_DELAY}s"}


@pytest.fixture(scope="module")
def server(live_server: Server) -> Server:
    """A real process: the tier command runs as a subprocess against it (the restore
    flow could run in process, but a second server would only add a start)."""
    return live_server


@pytest.fixture(scope="module")
def cli(server: Server, tmp_path_factory: pytest.TempPathFactory) -> RemoteCli:
    return RemoteCli(server, tmp_path_factory.mktemp("remote"))


def _wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_restore_flow(http: httpx.Client) -> None:
    push(http, "ev/case:1", FILES)
    version = "/v1/packages/ev/case/1"
    blob = digests_of(FILES["data.bin"])[0]
    moved = http.post(version + "/tier", json={"to": "cold"})
    assert moved.status_code == 200, moved.text
    assert {(b["tier"], b["restore_status"]) for b in moved.json()["blobs"]} == {
        ("cold", "archived")
    }
    # Every way of reading the bytes answers 409 restore_required; metadata and HEAD work.
    for url in (version + "/files/data.bin", version + "/archive", f"/v1/blobs/{blob}"):
        body = assert_problem(http.get(url), 409, "restore_required")
        assert body["restore_status"] == "archived"
        assert blob in body["missing"]
    ranged = http.get(f"/v1/blobs/{blob}", headers={"Range": "bytes=0-9"})
    assert_problem(ranged, 409, "restore_required")
    assert http.head(f"/v1/blobs/{blob}").status_code == 200
    assert http.get(version).status_code == 200

    # The SPEC's route restores one blob; the version route restores the rest.
    started = time.monotonic()
    one = http.post(f"/v1/blobs/{blob}/restore")
    assert one.status_code == 202, one.text
    assert [b["restore_status"] for b in one.json()["blobs"]] == ["restoring"]
    rest = http.post(version + "/restore")
    assert rest.status_code == 202
    assert {b["restore_status"] for b in rest.json()["blobs"]} == {"restoring"}
    early = assert_problem(http.get(f"/v1/blobs/{blob}"), 409, "restore_required")
    assert early["restore_status"] == "restoring"

    # The server's background job completes them: no read is needed.
    def all_hot() -> bool:
        blobs = httpx.get(http.base_url.join(version + "/tier")).json()["blobs"]
        return {b["tier"] for b in blobs} == {"hot"}

    _wait_until(all_hot)
    assert time.monotonic() - started >= RESTORE_DELAY - 0.2  # not before the delay
    assert http.get(version + "/files/data.bin").content == FILES["data.bin"]
    assert http.get(f"/v1/blobs/{blob}", headers={"Range": "bytes=0-9"}).status_code == 206
    # Restoring a hot blob again is a no-op answered 200.
    again = http.post(f"/v1/blobs/{blob}/restore")
    assert again.status_code == 200 and again.json()["changed"] == []


def test_tier_bad_input(http: httpx.Client) -> None:
    push(http, "ev/bad:1", {"a.txt": b"a"})
    version = "/v1/packages/ev/bad/1"
    for body in (b"{}", b'{"to": "glacier"}', b'{"to": "cold", "x": 1}', b"[]", b'{"to": 1}'):
        r = http.post(version + "/tier", content=body, headers={"Content-Type": "application/json"})
        assert_problem(r, 422)
    broken = http.post(
        version + "/tier", content=b'{"to": "co', headers={"Content-Type": "application/json"}
    )
    assert_problem(broken, 422)
    huge = http.post(version + "/tier", content=b" " * (1 << 20))
    assert_problem(huge, 413)
    assert_problem(http.post("/v1/packages/ev/nope/1/tier", json={"to": "cold"}), 404)
    assert_problem(http.post("/v1/packages/ev/nope/1/restore"), 404)
    assert_problem(http.get("/v1/packages/ev/../1/tier"), 404)
    assert_problem(http.post("/v1/blobs/blake3:" + "0" * 64 + "/restore"), 404)
    assert_problem(http.post("/v1/blobs/blake3:xyz/restore"), 422)
    assert_problem(http.post("/v1/blobs/md5:" + "0" * 32 + "/restore"), 422)
    # Nothing moved.
    blobs = http.get(version + "/tier").json()["blobs"]
    assert [b["tier"] for b in blobs] == ["hot"]


def test_tier_command_remote(cli: RemoteCli, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "dist", {k: v.decode("latin-1") for k, v in FILES.items()})
    cli.ok("push", "ev/cli:1", tree)
    cli.ok("tier", "move", "ev/cli:1", "--to", "cold")
    status = cli.json("tier", "status", "ev/cli:1")
    assert {b["tier"] for b in status} == {"cold"}
    refused = cli("pull", "ev/cli:1", "-o", tmp_path / "early")
    assert refused.code == 1 and "restore_required" in refused.stderr
    assert not (tmp_path / "early").exists()
    started = time.monotonic()
    cli.ok("tier", "restore", "ev/cli:1", "--wait")
    assert time.monotonic() - started >= RESTORE_DELAY - 0.2
    cli.ok("pull", "ev/cli:1", "-o", tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(tree)
    bad = cli("tier", "move", "ev/cli:1", "--to", "glacier")
    assert bad.code == 2 and "glacier" in bad.stderr
