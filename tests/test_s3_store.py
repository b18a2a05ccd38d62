"""A store whose hot storage is S3 (issue 18): the library, and real servers sharing one bucket.

Nothing of the store's bytes touches the data directory: blobs, packs and
upload sessions live in the bucket, so a second server on the same bucket
and database continues an upload the first one began.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import time
import uuid
from pathlib import Path

import blake3
import httpx
import pytest

from artifactstore.client.remote import RemoteStore
from artifactstore.config import Settings
from artifactstore.controlplane.uploads import CLAIM_SECONDS
from artifactstore.dataplane.backends import open_data_plane
from artifactstore.dataplane.backends.s3 import PART_SIZE, S3Backend
from artifactstore.dataplane.backends.s3_staging import S3Staging
from artifactstore.errors import InvalidInput
from artifactstore.store import Store
from tests.conftest import ARTIFACTSTORE
from tests.dataplane.s3server import S3Server
from tests.s3 import s3_url
from tests.server.conftest import Server
from tests.server.test_tus import CHECKPOINT, TUS_BYTES, kill_mid_patch, open_session, upload_offset

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


def _tree(root: Path) -> dict[str, bytes]:
    """A file larger than a part and checkpoint (8 MiB), and many small ones."""
    rng = random.Random(18)
    files = {"big.bin": rng.randbytes(PART_SIZE + 3 * MiB + 7)}
    files.update({f"small/{i:03d}.txt": rng.randbytes(rng.randrange(0, 2000)) for i in range(300)})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _assert_tree(root: Path, files: dict[str, bytes]) -> None:
    got = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(files)
    for rel, data in files.items():
        assert got[rel] == data, f"{rel} differs"


def _stored(server: S3Server, prefix: str, under: str) -> list[str]:
    backend = S3Backend(server.bucket, prefix, endpoint=server.endpoint, region="us-east-1")
    return sorted(backend.list(under))


def test_open_data_plane_stages_uploads_in_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path / "home", storage_url=s3_url(s3_server, "plane"))
    plane, staging = open_data_plane(settings)
    try:
        assert isinstance(staging, S3Staging)
        assert staging.backend is plane.backends[0]
    finally:
        plane.close()


@pytest.mark.parametrize(
    ("hot", "cold"),
    [("same", "same"), ("outer", "outer/inner"), ("outer/inner", "outer"), ("", "cold")],
)
def test_cold_must_not_overlap_hot_in_one_bucket(
    s3_server: S3Server, tmp_path: Path, hot: str, cold: str
) -> None:
    settings = Settings.load(
        home=tmp_path / "home",
        storage_url=s3_url(s3_server, hot),
        cold_storage_url=s3_url(s3_server, cold).replace("&region=us-east-1", ""),
    )
    with pytest.raises(InvalidInput, match="COLD_STORAGE_URL must differ"):
        open_data_plane(settings)


def test_cold_may_sit_beside_hot(s3_server: S3Server, tmp_path: Path) -> None:
    settings = Settings.load(
        home=tmp_path / "home",
        storage_url=s3_url(s3_server, "side/hot"),
        cold_storage_url=s3_url(s3_server, "side/hotter"),
    )
    plane, _ = open_data_plane(settings)  # "hot" is a string prefix of "hotter", not a folder's
    try:
        hot, cold = plane.backends[0], plane.cold
        assert isinstance(hot, S3Backend) and isinstance(cold, S3Backend)
        assert (hot.prefix, cold.prefix) == ("side/hot/", "side/hotter/")
    finally:
        plane.close()


def test_a_library_store_on_s3(s3_server: S3Server, tmp_path: Path) -> None:
    prefix = f"hot-{uuid.uuid4().hex}"
    files = _tree(tmp_path / "tree")
    home = tmp_path / "home"
    with Store.open(home, storage_url=s3_url(s3_server, prefix)) as store:
        store.push("ci/app:1", [tmp_path / "tree"])
        store.pull("ci/app:1", tmp_path / "out")
        _assert_tree(tmp_path / "out", files)
        report = store.verify()
        assert report.ok and report.blobs_checked > 0
        assert _stored(s3_server, prefix, "blobs/")  # the bytes are in the bucket
        store.delete("ci/app:1")
        collected = store.gc(grace=0)
        assert collected.collected
    assert not (home / "storage").exists(), "a store on S3 keeps no bytes in its directory"
    assert _stored(s3_server, prefix, "blobs/") == []
    assert _stored(s3_server, prefix, "packs/") == []
    assert _stored(s3_server, prefix, "uploads/") == []


def _cli(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [str(ARTIFACTSTORE), *args, "--json"], env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_servers_on_one_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    """Push through one server, pull through another; a tus upload begun on one is
    finished on the other; ``verify --all`` is clean and ``gc`` empties the bucket."""
    prefix = f"served-{uuid.uuid4().hex}"
    home = tmp_path / "home"
    env = {"ARTIFACTSTORE_STORAGE_URL": s3_url(s3_server, prefix)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = Server(home, tmp_path / "a", env)
    two = Server(home, tmp_path / "b", env)
    files = _tree(tmp_path / "tree")
    one.start()
    try:
        two.start()
        with RemoteStore(one.base_url) as remote:
            remote.push("ci/app:1", [tmp_path / "tree"])
        with RemoteStore(two.base_url) as remote:
            remote.pull("ci/app:1", tmp_path / "out")
        _assert_tree(tmp_path / "out", files)

        data = random.Random(7).randbytes(PART_SIZE + 2 * MiB + 11)
        half = PART_SIZE + MiB  # past one checkpoint: two segments, then a third
        url = open_session(one, len(data))
        with one.client() as http:
            first = http.patch(
                url, content=data[:half], headers={**TUS_BYTES, "Upload-Offset": "0"}
            )
            assert first.status_code == 204, first.text
        with two.client() as http:
            assert int(http.head(url, headers=TUS).headers["upload-offset"]) == half
            rest = http.patch(
                url, content=data[half:], headers={**TUS_BYTES, "Upload-Offset": str(half)}
            )
            assert rest.status_code == 204, rest.text
            status = http.get(url).json()
            assert status["state"] == "completed", status
            assert status["digest"] == f"blake3:{blake3.blake3(data).hexdigest()}"
            got = http.get(f"/v1/blobs/sha256:{hashlib.sha256(data).hexdigest()}")
            assert got.status_code == 200
            assert got.content == data
        assert _stored(s3_server, prefix, "uploads/") == []

        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
        cli_env.update({"ARTIFACTSTORE_HOME": str(home), **env})
        verified = _cli(cli_env, "verify", "--all")
        assert verified["ok"] is True and verified["damaged"] == [], verified
        with RemoteStore(two.base_url) as remote:
            remote.delete("ci/app:1")
        swept = _cli(cli_env, "gc", "--grace", "0s")
        assert swept["collected"], swept
    finally:
        one.stop()
        two.stop()
    assert _stored(s3_server, prefix, "blobs/") == []
    assert not (home / "storage").exists()


def test_a_push_of_small_files_makes_few_requests(s3_server: S3Server, tmp_path: Path) -> None:
    """1,000 small files go into packs: a handful of PUTs, not one per file."""
    prefix = f"packs-{uuid.uuid4().hex}"
    rng = random.Random(1000)
    files = {f"f/{i:04d}.txt": rng.randbytes(rng.randrange(1, 3000)) for i in range(1000)}
    for rel, data in files.items():
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_bytes(data)
    with Store.open(tmp_path / "home", storage_url=s3_url(s3_server, prefix)) as store:
        hot = store.plane.backends[0]
        assert isinstance(hot, S3Backend)
        sent: list[str] = []
        hot.client.meta.events.register(
            "before-send.s3", lambda request, **_: sent.append(request.method)
        )
        store.push("ci/small:1", [tmp_path / "tree"])
        writes = [m for m in sent if m in ("PUT", "POST")]
        # Measured: one HEAD and one PUT (a single pack); without packs, 2,000 requests.
        assert len(writes) <= 10, f"a push of 1,000 small files made {len(writes)} writes"
        assert len(sent) <= 20, f"a push of 1,000 small files made {len(sent)} requests"
        store.pull("ci/small:1", tmp_path / "out")
        _assert_tree(tmp_path / "out", files)
        store.delete("ci/small:1")
        store.gc(grace=0)
    assert _stored(s3_server, prefix, "packs/") == []


def test_sigkill_mid_patch_resumes_from_the_last_checkpoint_in_the_bucket(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """A server SIGKILLed mid-PATCH: the session resumes at its last checkpoint (a segment
    S3 acknowledged), completes byte-identical, and leaves no open multipart upload."""
    prefix = f"killed-{uuid.uuid4().hex}"
    env = {
        "ARTIFACTSTORE_STORAGE_URL": s3_url(s3_server, prefix),
        "ARTIFACTSTORE_UPLOAD_CHECKPOINT_BYTES": str(CHECKPOINT),
    }
    server = Server(tmp_path / "home", tmp_path, env)
    data = random.Random(9).randbytes(12 * MiB + 5)
    first = 7 * MiB
    server.start()
    try:
        url = open_session(server, len(data))
        kill_mid_patch(server, url, data, first, TUS_BYTES)

        resumed = upload_offset(url)
        assert first - 2 * CHECKPOINT <= resumed <= first, resumed
        finish = {**TUS_BYTES, "Upload-Offset": str(resumed)}
        deadline = time.monotonic() + CLAIM_SECONDS + 30
        while True:  # the killed request's claim lapses within CLAIM_SECONDS
            rest = httpx.patch(url, content=data[resumed:], headers=finish, timeout=60)
            if rest.status_code != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert rest.status_code == 204, rest.text
        with server.client() as http:
            got = http.get(f"/v1/blobs/sha256:{hashlib.sha256(data).hexdigest()}")
            assert got.status_code == 200 and got.content == data
    finally:
        server.stop()
    hot = S3Backend(s3_server.bucket, prefix, endpoint=s3_server.endpoint, region="us-east-1")
    assert [k for k in hot.list() if k.startswith("uploads/")] == []
    assert hot.staging() == [], "the killed request's multipart upload is aborted"


def test_presigned_downloads_redirect_to_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    """With PRESIGN_DOWNLOADS a whole blob's GET answers 307 to a presigned URL (Range
    honoured there); a packed blob and a HEAD are still answered by the server; a pull
    follows the redirect."""
    prefix = f"presigned-{uuid.uuid4().hex}"
    env = {
        "ARTIFACTSTORE_STORAGE_URL": s3_url(s3_server, prefix),
        "ARTIFACTSTORE_PRESIGN_DOWNLOADS": "60s",
    }
    server = Server(tmp_path / "home", tmp_path, env)
    files = {"big.bin": random.Random(3).randbytes(2 * MiB), "small.txt": b"packed"}
    for rel, data in files.items():
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_bytes(data)
    big = f"/v1/blobs/sha256:{hashlib.sha256(files['big.bin']).hexdigest()}"
    small = f"/v1/blobs/sha256:{hashlib.sha256(files['small.txt']).hexdigest()}"
    # A local push packs the small file (a remote one uploads each blob whole).
    with Store.open(tmp_path / "home", storage_url=env["ARTIFACTSTORE_STORAGE_URL"]) as store:
        store.push("ci/app:1", [tmp_path / "tree"])
    server.start()
    try:
        with server.client() as http:
            moved = http.get(big)
            assert moved.status_code == 307, moved.text
            location = moved.headers["location"]
            assert location.startswith(f"{s3_server.endpoint}/{s3_server.bucket}/{prefix}/blobs/")
            assert "Signature=" in location
            assert httpx.get(location).content == files["big.bin"]
            ranged = httpx.get(location, headers={"Range": "bytes=10-19"})
            assert ranged.status_code == 206 and ranged.content == files["big.bin"][10:20]
            assert http.head(big).status_code == 200  # HEAD stays with the server
            packed = http.get(small)
            assert packed.status_code == 200 and packed.content == files["small.txt"]
        with RemoteStore(server.base_url) as remote:
            remote.pull("ci/app:1", tmp_path / "out")
        _assert_tree(tmp_path / "out", files)
    finally:
        server.stop()


def test_presign_downloads_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="PRESIGN_DOWNLOADS must be from 0 to 7 days"):
        Settings.load(home=tmp_path, presign_downloads=8 * 86400.0)
