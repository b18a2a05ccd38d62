"""/v1/log/... over HTTP against a real ``serve``: what it answers verifies offline, hostile
parameters get 422 problems, the periodic checkpoints land outside the database, and the
CLI's remote mode proves and audits through the routes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from artifactstore.dataplane.backends import open_backend
from artifactstore.model.tlog import Checkpoint, ConsistencyProof, InclusionProof
from artifactstore.provenance import keys, verify_checkpoint, verify_consistency, verify_inclusion
from artifactstore.provenance.checkpoint import parse_checkpoint, sign_checkpoint
from artifactstore.store import Store
from tests.s3 import S3Server, s3_url
from tests.server.conftest import Server, assert_problem, push
from tests.server.test_remote_cli import RemoteCli

pytestmark = pytest.mark.configs("embedded", "scaleout")

INTERVAL = 0.3


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory, config: str) -> Path:
    return tmp_path_factory.mktemp(f"checkpoints-{config}")


@pytest.fixture(scope="module")
def server_env(checkpoint_dir: Path) -> dict[str, str]:
    return {
        "ARTIFACTSTORE_LOG_CHECKPOINT_INTERVAL": str(INTERVAL),
        "ARTIFACTSTORE_LOG_CHECKPOINT_URL": f"file://{checkpoint_dir}",
        "ARTIFACTSTORE_LOG_ORIGIN": "registry.example/log",
    }


@pytest.fixture(scope="module")
def filled(live_server: Server) -> int:
    """Some packages in the server's log; returns its size."""
    with live_server.client() as client:
        for i in range(5):
            push(client, f"ci/app:{i}", {"a.txt": f"{i}\n".encode()})
        return len(client.get("/v1/events", params={"limit": 1000}).json()["events"])


def _public(client: httpx.Client) -> keys.PublicKey:
    body = client.get("/v1/log/key").json()
    assert body["name"] == "registry.example/log"
    return keys.public_key_from_pem(body["public_key"].encode())


def test_what_the_routes_answer_verifies_offline(live_http: httpx.Client, filled: int) -> None:
    response = live_http.get("/v1/log/checkpoint")
    assert response.headers["content-type"].startswith("text/plain")
    cp = verify_checkpoint(response.text, _public(live_http))
    assert cp.origin == "registry.example/log" and cp.size >= filled
    events = live_http.get("/v1/events", params={"limit": 1000}).json()["events"]
    for seq in (1, 3, cp.size):
        body = live_http.get("/v1/log/proof/inclusion", params={"seq": seq, "size": cp.size})
        proof = InclusionProof.from_json(body.json())
        assert proof.leaf_index == seq - 1
        verify_inclusion(events[seq - 1]["hash"], proof, cp)
    default = live_http.get("/v1/log/proof/inclusion", params={"seq": 1}).json()
    assert default["tree_size"] >= cp.size
    old = Checkpoint(cp.origin, 2, _root_at(live_http, 2, cp))
    body = live_http.get("/v1/log/proof/consistency", params={"old": 2, "new": cp.size}).json()
    verify_consistency(old, cp, ConsistencyProof.from_json(body))


def _root_at(client: httpx.Client, size: int, cp: Checkpoint) -> bytes:
    """The root of the first ``size`` entries, recomputed from the events (RFC 9162)."""
    from artifactstore.model.tlog import entry_of
    from artifactstore.provenance import merkle

    events = client.get("/v1/events", params={"limit": size}).json()["events"]
    return merkle.MemoryTree(merkle.leaf_hash(entry_of(e["hash"])) for e in events).root()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("inclusion", {}),
        ("inclusion", {"seq": "0"}),
        ("inclusion", {"seq": "-1"}),
        ("inclusion", {"seq": "x"}),
        ("inclusion", {"seq": "1.5"}),
        ("inclusion", {"seq": str(2**64)}),
        ("inclusion", {"seq": "9" * 400}),
        ("inclusion", {"seq": "1000000"}),
        ("inclusion", {"seq": "3", "size": "2"}),
        ("inclusion", {"seq": "1", "size": "1000000"}),
        ("inclusion", {"seq": "1", "size": "0"}),
        ("consistency", {}),
        ("consistency", {"old": "0"}),
        ("consistency", {"old": "3", "new": "2"}),
        ("consistency", {"old": "1", "new": "1000000"}),
        ("consistency", {"old": "1000000"}),
        ("consistency", {"old": "nan"}),
    ],
)
def test_hostile_parameters_get_422(
    live_http: httpx.Client, filled: int, path: str, params: dict[str, str]
) -> None:
    assert filled < 1000
    assert_problem(live_http.get(f"/v1/log/proof/{path}", params=params), 422)


def test_periodic_checkpoints_are_written_outside_the_database(
    live_http: httpx.Client, filled: int, checkpoint_dir: Path
) -> None:
    size = int(live_http.get("/v1/log/checkpoint").text.split("\n")[1])
    written = checkpoint_dir / f"checkpoint-{size}.txt"
    deadline = time.monotonic() + 30
    while not written.exists() and time.monotonic() < deadline:
        time.sleep(INTERVAL)
    assert verify_checkpoint(written.read_text(), _public(live_http)).size == size


def test_the_remote_cli_proves_and_audits(live_server: Server, filled: int, tmp_path: Path) -> None:
    cli = RemoteCli(live_server, tmp_path)
    old = tmp_path / "old.txt"
    cli.ok("log", "checkpoint", "--out", old)
    with live_server.client() as client:
        push(client, "ci/app:later", {"b.txt": b"later\n"})
    new = tmp_path / "new.txt"
    cli.ok("log", "checkpoint", "--out", new)
    proved: dict[str, Any] = cli.json("log", "prove", "--seq", "2", "--checkpoint", old)
    assert proved["verified"] is True
    assert cli.json("log", "consistency", old, new)["verified"] is True
    assert cli.json("log", "audit", old, new)["ok"] is True
    # a checkpoint of a history the server does not have: same size, another root
    lines = old.read_text().split("\n")
    other = Checkpoint(lines[0], int(lines[1]), b"\x07" * 32)
    fake_key, fake_pub = keys.generate(), tmp_path / "fake.pub"
    fake_pub.write_bytes(fake_key.public.pem())
    forked = tmp_path / "forked.txt"
    forked.write_text(sign_checkpoint(other, fake_key))
    pem = tmp_path / "log.pub"
    pem.write_text(cli.json("log", "key")["public_key"])
    result = cli("log", "audit", old, forked, "--key", pem, "--key", fake_pub)
    assert result.code == 3 and "forked.txt" in result.stderr and "old.txt (size" in result.stderr
    assert cli("log", "audit", forked).code == 3  # not signed by the server's key
    # The server's current checkpoint is the reference: an auditor who holds only another
    # key proves nothing against it, even for a saved checkpoint that key signed.
    resigned = tmp_path / "resigned.txt"
    resigned.write_text(sign_checkpoint(parse_checkpoint(old.read_text())[0], fake_key))
    result = cli("log", "audit", resigned, "--key", fake_pub, "--json")
    assert result.code == 3
    report = json.loads(result.stdout)
    assert report["problems"][0].startswith("the server's current checkpoint: signature_invalid")
    assert "not checked" in report["checkpoints"][0]["problem"]


def test_publish_to_s3(clean_env: None, tmp_path: Path, s3_server: S3Server) -> None:
    url = s3_url(s3_server, "checkpoints-test")
    with Store.open(tmp_path / "home", log_checkpoint_url=url) as store:
        store.log_publish()
        (tmp_path / "f").write_text("x")
        store.push("ci/app:1", [tmp_path / "f"])
        first = store.log_publish()
        assert first["written"] == f"checkpoint-{first['tree_size']}.txt"
        assert store.log_publish()["written"] is None  # one per size
        sink = open_backend(url, "test", fsync=False, name="checkpoints")
        note = b"".join(sink.read(first["written"])).decode()
        public = keys.public_key_from_pem(store.log_key().pem.encode())
        assert verify_checkpoint(note, public).size == first["tree_size"]
        assert sorted(sink.list("checkpoint-")) == ["checkpoint-0.txt", first["written"]]
