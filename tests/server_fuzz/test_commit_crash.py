"""SIGKILL ``artifactstore serve`` while 8 clients commit manifests (SPEC sections 8 and 11).

The server writes concurrent commits in shared transactions (group commit,
``services/commits.py``) and answers each only after its batch committed.
Each trial starts the server, lets 8 clients commit small manifests as fast as
they can (``PUT /v1/packages/...``), and SIGKILLs the server's process group
after a random delay, mid-batch as likely as not. With the server stopped, the
library opens the store: the chain verifies and is gapless, and every commit
a client saw acknowledged (201) is there with the digest it was told; a commit
the kill cut off is either absent or whole (the log holds no partial batch).

``ARTIFACTSTORE_COMMIT_CRASH_SEED`` replays a run (the seed and each delay are printed).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from artifactstore.model.events import PackageCommitted
from artifactstore.store import Store
from tests.controlplane.test_commit_group import entry, manifest
from tests.matrix import StoreConfig
from tests.server_fuzz.conftest import ServerProcess, free_port

pytestmark = pytest.mark.configs("embedded", "scaleout")

TRIALS = 3
WRITERS = 8
SEED = int(os.environ.get("ARTIFACTSTORE_COMMIT_CRASH_SEED") or random.randrange(2**32))
DATA = b"the one blob every crash-test manifest references\n"


def _writer(url: str, n: int, trial: int, stop: threading.Event, acked: dict[str, str]) -> None:
    """Commit until the server is gone; record each acknowledged reference's digest."""
    with httpx.Client(base_url=url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            m = manifest(f"crash/w{n}:t{trial}-{i}", [entry(DATA)], f"writer {n}")
            try:
                r = client.put(
                    f"/v1/packages/crash/w{n}/t{trial}-{i}",
                    content=m.to_json(),
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError:
                return  # cut off by the kill: not acknowledged
            assert r.status_code == 201, r.text
            acked[f"crash/w{n}:t{trial}-{i}"] = r.json()["digest"]
            i += 1


def test_sigkill_mid_batch_loses_no_acknowledged_commit(
    tmp_path: Path, store_config: StoreConfig
) -> None:
    print(f"commit crash seed={SEED} (replay: ARTIFACTSTORE_COMMIT_CRASH_SEED)")
    rng = random.Random(SEED)
    server = ServerProcess(
        tmp_path / "home", free_port(), tmp_path / "server.log", store_config.env()
    )
    acked: dict[str, str] = {}
    try:
        for trial in range(TRIALS):
            server.start()
            r = httpx.post(f"{server.url}/v1/blobs", params={"namespace": "crash"}, content=DATA)
            assert r.status_code in (200, 201), r.text
            stop = threading.Event()
            before = len(acked)
            threads = [
                threading.Thread(target=_writer, args=(server.url, n, trial, stop, acked))
                for n in range(WRITERS)
            ]
            for t in threads:
                t.start()
            delay = rng.uniform(0.5, 2.0)
            time.sleep(delay)
            server.kill()
            stop.set()
            for t in threads:
                t.join(60)
            print(f"trial {trial}: kill after {delay:.2f} s, {len(acked) - before} acknowledged")
    finally:
        server.stop()

    assert acked, "no commit was acknowledged before the kills: nothing was tested"
    store = Store.open(tmp_path / "home", create=False, **store_config.overrides())
    try:
        count = store.verify_chain()
        log = store.events()
        assert [e.seq for e in log] == list(range(1, count + 1))
        committed = [e for e in log if e.type == PackageCommitted.type]
        for ref, digest in acked.items():
            assert str(store.show(ref).digest) == digest, ref
        for e in committed:  # acknowledged or cut off after its batch committed: whole
            record = store.show(e.subject)
            assert [str(f.blake3) for f in record.manifest.files] == [str(entry(DATA).blake3)]
        shared = len(committed) - len({e.time for e in committed})
        print(f"{len(committed)} commits, {shared} written in a batch with an earlier one")
    finally:
        store.close()
