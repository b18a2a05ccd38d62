"""The remote push sends its missing small files in batches (``POST /v1/blobs/batch``).

Against a real server process: a push of many small files and a few large
ones ends with the right version and blobs in a handful of requests and one
pack; a server without the batch route (an older one, played by a relay that
answers 404 for it) gets them one by one; the progress bar counts every
byte once either way. Last, SIGKILL at random moments of a batch upload
never leaves a row that points at a missing pack.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from artifactstore.client.batches import BATCH_FILES, BATCH_MEMBER_MAX
from artifactstore.client.remote import RemoteStore
from artifactstore.controlplane.db import tables as t
from tests.conftest import http_server, make_tree, read_tree
from tests.server.conftest import Server, digests_of
from tests.server.test_blob_batches import tar_of

pytestmark = pytest.mark.configs("embedded", "scaleout")

SMALL = 1200  # more than one batch's files
TRIALS = int(os.environ.get("ARTIFACTSTORE_BATCH_CRASH_TRIALS", "2"))  # make soak: 20


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ARTIFACTSTORE_GC_GRACE": "0"}


def posts(server: Server, route: str, method: str = "POST") -> int:
    return sum(
        1 for e in server.access_log() if e.get("method") == method and e.get("route") == route
    )


def requests_of(server: Server) -> int:
    return len([e for e in server.access_log() if e.get("route")])


def small_tree(root: Path, files: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"d{i % 7}/f{i}.bin": os.urandom(rng.randint(0, 3000)) for i in range(files)}


def test_a_remote_push_sends_small_files_in_few_requests(
    live_server: Server, tmp_path: Path
) -> None:
    files = small_tree(tmp_path, SMALL, 1)
    files["big/a.bin"] = os.urandom(BATCH_MEMBER_MAX + 1)
    files["big/b.bin"] = os.urandom(2 * BATCH_MEMBER_MAX)
    src = make_tree(tmp_path / "src", files)
    total = sum(len(d) for d in files.values())
    with live_server.open_store() as store:
        packs_before = set(store.plane.backend.list("packs/"))
    batches, ones = posts(live_server, "/v1/blobs/batch"), posts(live_server, "/v1/blobs")
    heads = posts(live_server, "/v1/blobs/{digest}", "HEAD")
    counted = [0]
    lock = threading.Lock()

    def progress(n: int) -> None:
        with lock:
            counted[0] += n

    with RemoteStore(live_server.base_url, state_path=tmp_path / "state.json") as remote:
        result = remote.push("ci/batched:1", [src], progress=progress)
        assert result.created and result.blobs_stored == len(files)
        remote.pull("ci/batched:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == files
    assert counted[0] == total
    sent = posts(live_server, "/v1/blobs/batch") - batches
    assert sent == -(-SMALL // BATCH_FILES)  # 2 batches for 1,200 files
    assert posts(live_server, "/v1/blobs") - ones == 2  # the large files, one each
    # No HEAD per file: the first commit's 409 named every missing blob.
    assert posts(live_server, "/v1/blobs/{digest}", "HEAD") == heads
    with live_server.open_store() as store:
        new_packs = set(store.plane.backend.list("packs/")) - packs_before
        assert len(new_packs) == sent
        assert store.verify().ok
    before = requests_of(live_server)
    with RemoteStore(live_server.base_url, state_path=tmp_path / "state.json") as remote:
        again = remote.push("ci/batched:2", [src])  # everything there: nothing sent
    assert again.blobs_stored == 0
    assert requests_of(live_server) - before == 1  # the commit alone


@pytest.fixture
def older_server(live_server: Server) -> Iterator[str]:
    """The live server behind a relay that answers 404 for the batch route, as a server
    from before it did; the relay's URL."""
    target = live_server.base_url

    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/v1/blobs/batch"):
                problem = (
                    b'{"type": "about:blank", "title": "Not found", "status": 404, '
                    b'"detail": "no route", "code": "route_not_found"}'
                )
                self.send_response(404)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(problem)))
                self.end_headers()
                self.wfile.write(problem)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = httpx.request(
                self.command, target + self.path, headers=headers, content=body, timeout=60
            )
            self.send_response(answer.status_code)
            for k, v in answer.headers.items():
                if k.lower() not in (
                    "transfer-encoding",
                    "content-length",
                    "content-encoding",
                    "connection",
                ):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.content)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _relay

        def log_message(self, *_args: object) -> None:
            pass

    with http_server(Relay) as url:
        yield url


def test_an_older_server_gets_small_files_one_by_one(
    live_server: Server, older_server: str, tmp_path: Path
) -> None:
    files = small_tree(tmp_path, 40, 2)
    src = make_tree(tmp_path / "src", files)
    ones = posts(live_server, "/v1/blobs")
    counted = [0]
    lock = threading.Lock()

    def progress(n: int) -> None:
        with lock:
            counted[0] += n

    with RemoteStore(older_server, state_path=tmp_path / "state.json") as remote:
        remote.push("ci/older:1", [src], progress=progress)
        remote.pull("ci/older:1", tmp_path / "out")
    assert read_tree(tmp_path / "out") == files
    assert counted[0] == sum(len(d) for d in files.values())
    assert posts(live_server, "/v1/blobs") - ones == len({digests_of(d)[0] for d in files.values()})


def check_spans(server: Server) -> None:
    """Every recorded location's object is stored, and long enough for its span (a row
    never points at a missing or partial pack). Cheaper than verify() per trial on S3."""
    b, loc = t.blobs, t.storage_locations
    with server.open_store() as store:
        with store.db.read() as conn:
            rows = conn.execute(
                select(loc.c.key, loc.c.pack_offset, b.c.size).join(b, b.c.blake3 == loc.c.blake3)
            ).all()
        ends: dict[str, int] = {}
        for r in rows:
            ends[r.key] = max(ends.get(r.key, 0), (r.pack_offset or 0) + r.size)
        for key, end in ends.items():
            size = store.plane.stat(key)
            assert size is not None and size >= end, (key, size, end)


@pytest.mark.slow
def test_sigkill_mid_batch_leaves_no_row_without_its_pack(
    live_server: Server, tmp_path: Path
) -> None:
    """Kill the server at random moments of batch uploads (while the body arrives, while
    the pack is sealed, while rows are recorded): after a restart, every recorded blob's
    span is stored, and every batch the server acknowledged is readable."""
    rng = random.Random(int(os.environ.get("ARTIFACTSTORE_BATCH_CRASH_SEED", "18")))
    acknowledged: list[bytes] = []

    def batch_body() -> tuple[bytes, list[bytes]]:
        blobs = [os.urandom(rng.randint(500, 2500)) for _ in range(2000)]
        return tar_of([(digests_of(b)[0], b) for b in blobs]), blobs

    # An uncut batch first: how long one takes on this machine now.
    body, blobs = batch_body()
    start = time.monotonic()
    with live_server.client() as http:
        answer = http.post("/v1/blobs/batch", params={"namespace": "ci"}, content=body)
    assert answer.status_code == 200, answer.text
    acknowledged += blobs
    took = time.monotonic() - start
    for trial in range(TRIALS):
        body, blobs = batch_body()
        delay = rng.uniform(0, took * 1.2)
        print(f"trial {trial}: kill after {delay:.3f} s of {took:.3f} s")
        outcome: list[int] = []

        def send(body: bytes = body, outcome: list[int] = outcome) -> None:
            try:
                with live_server.client() as http:
                    r = http.post("/v1/blobs/batch", params={"namespace": "ci"}, content=body)
                outcome.append(r.status_code)
            except httpx.TransportError:
                outcome.append(0)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(delay)
        live_server.kill()
        sender.join(60)
        if outcome == [200]:
            acknowledged += blobs
        live_server.start()
        check_spans(live_server)
    with live_server.client() as http:
        for data in acknowledged[:: len(acknowledged) // 50]:
            got = http.get(f"/v1/blobs/{digests_of(data)[0]}", params={"namespace": "ci"})
            assert got.status_code == 200 and got.content == data
    with live_server.open_store() as store:
        assert store.verify().ok  # every byte re-read and re-hashed, once
