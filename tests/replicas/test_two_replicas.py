"""Two replicas over one database and one storage (issue 18): what one does, the other
sees at once, and neither keeps state in memory that could make the pair wrong.

Each test names its own packages, so the module shares one pair of servers.
``ARTIFACTSTORE_REPLICA_ROUNDS`` (default 3) sets how many rounds the racing tests run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

from artifactstore.model.manifest import Manifest
from tests.conftest import make_tree, read_tree
from tests.replicas.conftest import LIMIT, Replicas
from tests.server.conftest import (
    Server,
    assert_problem,
    make_manifest,
    put_manifest,
    upload_blob,
)

# Read at import: the autouse clean_env fixture removes ARTIFACTSTORE_* before each test.
ROUNDS = int(os.environ.get("ARTIFACTSTORE_REPLICA_ROUNDS", "3"))
BAD = "ast_" + "z" * 16 + "_" + "q" * 43


def _pulled(pair: Replicas, ref: str, out: Path, server: Server) -> dict[str, bytes]:
    result = pair.cli("pull", ref, "-o", out, server=server)
    assert result.code == 0, result
    return read_tree(out)


def _commit_at_once(
    clients: dict[str, httpx.Client], manifests: dict[str, Manifest]
) -> dict[str, httpx.Response]:
    """PUT each side's manifest through its client, both released at the same instant."""
    barrier = threading.Barrier(len(clients))
    answers: dict[str, httpx.Response] = {}

    def commit(side: str) -> None:
        barrier.wait()
        answers[side] = put_manifest(clients[side], manifests[side])

    threads = [threading.Thread(target=commit, args=(side,)) for side in clients]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    return answers


def test_push_on_a_pull_on_b(replicas: Replicas, tmp_path: Path) -> None:
    files = {"bin/tool": b"tool " * 1000, "README": b"hello from A\n"}
    src = make_tree(tmp_path / "src", files)
    assert replicas.cli("push", "ci/app:1.0", src, server=replicas.a).code == 0
    assert _pulled(replicas, "ci/app:1.0", tmp_path / "out", replicas.b) == files


def test_concurrent_commit_of_one_version_exactly_one_wins(replicas: Replicas) -> None:
    """The same version with different content, committed at once on A and on B."""
    for round_ in range(2 * ROUNDS):
        ref = f"ci/race:{round_}"
        manifests = {
            side: make_manifest(ref, {"data.bin": f"{side} {round_}".encode() * 100})
            for side in ("a", "b")
        }
        servers = {"a": replicas.a, "b": replicas.b}
        clients = {side: servers[side].client(replicas.admin) for side in servers}
        try:
            for side in servers:
                upload_blob(clients[side], f"{side} {round_}".encode() * 100)
            answers = _commit_at_once(clients, manifests)
            codes = sorted(r.status_code for r in answers.values())
            assert codes == [201, 409], {
                s: (r.status_code, r.text[:300]) for s, r in answers.items()
            }
            winner = next(s for s, r in answers.items() if r.status_code == 201)
            loser = next(s for s in answers if s != winner)
            assert_problem(answers[loser], 409)
            # Both replicas show the winner's content.
            for client in clients.values():
                shown = client.get(f"/v1/packages/ci/race/{round_}")
                assert shown.status_code == 200, shown.text
                digest = shown.json()["manifest"]["files"][0]["digests"]["blake3"]
                assert digest == str(manifests[winner].files[0].blake3)
        finally:
            for client in clients.values():
                client.close()


def test_upload_session_continued_on_the_other_replica(replicas: Replicas) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    half = len(data) // 2
    tus = {"Tus-Resumable": "1.0.0"}
    octets = {**tus, "Content-Type": "application/offset+octet-stream"}
    with replicas.a.client(replicas.admin) as a, replicas.b.client(replicas.admin) as b:
        created = a.post(
            "/v1/uploads",
            params={"namespace": "ci"},
            headers={**tus, "Upload-Length": str(len(data))},
        )
        assert created.status_code == 201, created.text
        path = httpx.URL(created.headers["Location"]).path
        first = a.patch(path, content=data[:half], headers={**octets, "Upload-Offset": "0"})
        assert first.status_code == 204, first.text
        assert b.head(path, headers=tus).headers["upload-offset"] == str(half)
        rest = b.patch(path, content=data[half:], headers={**octets, "Upload-Offset": str(half)})
        assert rest.status_code == 204, rest.text
        status = b.get(path).json()
        assert status["state"] == "completed", status
        for client in (a, b):
            got = client.get(f"/v1/blobs/{status['digest']}", params={"namespace": "ci"})
            assert got.status_code == 200 and got.content == data


def test_revocation_on_a_is_refused_on_b_at_once(replicas: Replicas) -> None:
    with replicas.a.client(replicas.admin) as a:
        made = a.post("/v1/tokens", json={"name": "short-lived", "scopes": ["ci:read"]})
        assert made.status_code == 201, made.text
        token_id, secret = made.json()["id"], made.json()["secret"]
        with replicas.b.client(secret) as b:
            for _ in range(3):  # B has verified it, and may remember that
                assert b.get("/v1/packages", params={"namespace": "ci"}).status_code == 200
            assert a.delete(f"/v1/tokens/{token_id}").status_code in (200, 204)
            assert_problem(b.get("/v1/packages", params={"namespace": "ci"}), 401)


def _newest_failure(pair: Replicas) -> object:
    with psycopg.connect(pair.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT max(id) FROM auth_failures").fetchone()
        return None if row is None else row[0]


def test_failed_authentications_count_across_replicas(replicas: Replicas) -> None:
    with psycopg.connect(replicas.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM auth_failures")  # the other tests' failures
    with replicas.a.client(BAD) as a, replicas.b.client(BAD) as b:
        codes = [(a if i % 2 == 0 else b).get("/v1/packages").status_code for i in range(LIMIT + 2)]
        assert codes == [401] * LIMIT + [429, 429], codes
        # Each replica now knows the address is over: more failures cost no write.
        newest = _newest_failure(replicas)
        assert [c.get("/v1/packages").status_code for c in (a, b, a, b)] == [429] * 4
        assert _newest_failure(replicas) == newest
        # A valid token from the same address is still served, on both.
        for replica in (replicas.a, replicas.b):
            with replica.client(replicas.admin) as ok:
                assert ok.get("/v1/packages").status_code == 200


def test_gc_on_a_while_pushes_land_on_b(replicas: Replicas, tmp_path: Path) -> None:
    """``gc --grace 0s`` in a loop against the shared database and storage while B takes
    pushes that reuse each other's blobs and drop older versions: every acknowledged
    push pulls byte-identical afterwards and ``verify --all`` is clean."""
    stop = threading.Event()
    gc_runs: list[int] = []

    def collect() -> None:
        while not stop.is_set():
            gc_runs.append(replicas.cli("gc", "--grace", "0s").code)

    pool = [f"shared-{i}|".encode() * (50 + 97 * i) for i in range(6)]
    pushed: dict[str, dict[str, bytes]] = {}
    collector = threading.Thread(target=collect)
    collector.start()
    try:
        with replicas.b.client(replicas.admin) as b:
            for i in range(8 * ROUNDS):
                files = {f"f{j}.bin": pool[(i + j) % len(pool)] for j in range(3)}
                files["own.bin"] = f"own {i}".encode()
                manifest = make_manifest(f"ci/gcrace:{i}", files)
                for _attempt in range(20):
                    for data in files.values():
                        upload_blob(b, data)
                    answer = put_manifest(b, manifest)
                    if answer.status_code != 409 and "missing" not in answer.text:
                        break  # a blob collected between upload and commit: upload again
                assert answer.status_code == 201, answer.text
                pushed[f"ci/gcrace:{i}"] = files
                if i >= 4:  # older versions go, so their blobs become garbage
                    old = f"ci/gcrace:{i - 4}"
                    assert b.delete(f"/v1/packages/ci/gcrace/{i - 4}").status_code in (200, 204)
                    del pushed[old]
    finally:
        stop.set()
        collector.join(120)
    assert len(gc_runs) >= 2 and set(gc_runs) == {0}, gc_runs
    for ref, files in pushed.items():
        out = tmp_path / ref.replace("/", "_").replace(":", "_")
        assert _pulled(replicas, ref, out, replicas.a) == files
    verified = replicas.cli("verify", "--all")
    assert verified.code == 0, verified


def test_sigkill_a_mid_push_the_client_completes_against_b(
    replicas: Replicas, tmp_path: Path
) -> None:
    size = 48 * 1024 * 1024
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    with big.open("wb") as f:
        for i in range(size // 65536):
            f.write(i.to_bytes(8, "big") * 8192)
    sent = threading.Event()
    stall = threading.Event()

    def body() -> Iterator[bytes]:
        with big.open("rb") as f:
            for _ in range(16):  # 16 MiB, then the client stalls until A is dead
                yield f.read(1024 * 1024)
        sent.set()
        stall.wait(60)

    def push_to_a() -> None:
        client = replicas.a.client(replicas.admin)
        with client, contextlib.suppress(httpx.HTTPError):  # the kill cuts it
            client.post("/v1/blobs", params={"namespace": "ci"}, content=body())

    thread = threading.Thread(target=push_to_a, daemon=True)
    thread.start()
    assert sent.wait(30), "the body did not reach A"
    replicas.a.kill()
    stall.set()
    thread.join(30)
    try:
        result = replicas.cli("push", "ci/big:1", big.parent, server=replicas.b)
        assert result.code == 0, result
        out = _pulled(replicas, "ci/big:1", tmp_path / "out", replicas.b)
        assert out == {"big.bin": big.read_bytes()}
        verified = replicas.cli("verify", "--all")  # the cut upload left nothing damaged
        assert verified.code == 0, verified
    finally:
        replicas.a.start()  # the module's later tests (and teardown) expect A
