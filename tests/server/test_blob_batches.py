"""POST /v1/blobs/batch (docs/api.md): many small blobs in one tar stream, stored in packs.

Happy path in both configurations (SQLite + files, PostgreSQL + S3): every
member is a blob readable by digest, the batch is one pack object and one
``blobs.stored`` event, the namespace holds every blob. Then the hostile
input: anything that is not a POSIX tar of regular files named by their
digests is refused whole (422), oversized members, too many members and
oversized bodies get 413, and a refused batch leaves no row and no object.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from artifactstore.controlplane.db import tables as t
from artifactstore.dataplane.blobs import PACK_MAX_BLOB
from artifactstore.model.identity import Digest
from artifactstore.store import Store
from tests.server.conftest import InProcessServer, assert_problem, digests_of, upload_blob

pytestmark = pytest.mark.configs("embedded", "scaleout")

MAX_MEMBERS = 50
TAR = {"Content-Type": "application/x-tar"}


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ARTIFACTSTORE_MAX_BATCH_MEMBERS": str(MAX_MEMBERS)}


def tar_of(
    members: Iterable[tuple[str, bytes]],
    fmt: int = tarfile.USTAR_FORMAT,
    last: bytes = tarfile.REGTYPE,
) -> bytes:
    """A tar of regular files, then (unless ``last`` is a regular file) one of type ``last``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if last != tarfile.REGTYPE:
            info = tarfile.TarInfo(digests_of(b"")[0])
            info.type = last
            if last in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "/etc/passwd"
            tar.addfile(info)
    return out.getvalue()


def named(*blobs: bytes) -> list[tuple[str, bytes]]:
    return [(digests_of(b)[0], b) for b in blobs]


def post_batch(http: httpx.Client, body: bytes, namespace: str = "ci") -> httpx.Response:
    return http.post("/v1/blobs/batch", params={"namespace": namespace}, content=body, headers=TAR)


def objects(server: InProcessServer, prefix: str) -> list[str]:
    with server.open_store() as store:
        return sorted(store.plane.backend.list(prefix))


def recorded(server: InProcessServer, blobs: Iterable[bytes]) -> set[str]:
    names = [digests_of(b)[0] for b in blobs]
    with server.open_store() as store, store.db.read() as conn:
        rows = conn.execute(select(t.blobs.c.blake3).where(t.blobs.c.blake3.in_(names)))
        return {r.blake3 for r in rows}


def test_a_batch_is_one_pack_and_every_member_a_readable_blob(
    server: InProcessServer, http: httpx.Client
) -> None:
    blobs = [os.urandom(n) for n in (0, 1, 511, 512, 513, 4096, PACK_MAX_BLOB)]
    packs_before = objects(server, "packs/")
    members = named(*blobs) + named(blobs[2])  # a duplicate: stored once, listed twice
    response = post_batch(http, tar_of(members))
    assert response.status_code == 200, response.text
    listed = response.json()["blobs"]
    assert [b["digest"] for b in listed] == [name for name, _ in members]
    assert [b["sha256"] for b in listed] == [digests_of(d)[1] for _, d in members]
    assert [b["size"] for b in listed] == [len(d) for _, d in members]
    new_packs = sorted(set(objects(server, "packs/")) - set(packs_before))
    assert len(new_packs) == 1
    for data in blobs:
        b3, sha = digests_of(data)
        for digest in (b3, sha):
            got = http.get(f"/v1/blobs/{digest}", params={"namespace": "ci"})
            assert got.status_code == 200 and got.content == data
    with server.open_store() as store, store.db.read() as conn:
        names = [digests_of(b)[0] for b in blobs]
        nb = t.namespace_blobs
        held = conn.execute(
            select(nb.c.blake3).where(nb.c.namespace == "ci", nb.c.blake3.in_(names))
        )
        assert {r.blake3 for r in held} == set(names)
        loc = t.storage_locations
        reps = conn.execute(
            select(loc.c.representation, loc.c.key).where(loc.c.blake3.in_(names))
        ).all()
        assert {(r.representation, r.key) for r in reps} == {("packed", new_packs[0])}
        events = conn.execute(
            select(func.count()).select_from(t.events).where(t.events.c.type == "blobs.stored")
        ).scalar_one()
        assert events >= 1
        assert store.verify().ok


def test_a_batch_of_blobs_the_store_holds_stores_no_pack(
    server: InProcessServer, http: httpx.Client
) -> None:
    data = os.urandom(1000)
    upload_blob(http, data, "qa")  # stored, held by qa only
    before = objects(server, "packs/")
    response = post_batch(http, tar_of(named(data)), "ci")
    assert response.status_code == 200, response.text
    assert objects(server, "packs/") == before  # proof of possession: the namespace claims it
    with server.open_store() as store, store.db.read() as conn:
        nb = t.namespace_blobs
        held = conn.execute(select(nb.c.namespace).where(nb.c.blake3 == digests_of(data)[0]))
        assert {r.namespace for r in held} == {"ci", "qa"}


def test_pax_and_gnu_tars_are_accepted(http: httpx.Client) -> None:
    one, two = os.urandom(300), os.urandom(700)
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(digests_of(one)[0])
        info.size = len(one)
        info.pax_headers = {"comment": "a pax record", "mtime": "1.5"}
        tar.addfile(info, io.BytesIO(one))
    for body in (pax.getvalue(), tar_of(named(two), tarfile.GNU_FORMAT)):
        response = post_batch(http, body)
        assert response.status_code == 200, response.text


def test_a_digest_mismatch_refuses_the_whole_batch(
    server: InProcessServer, http: httpx.Client
) -> None:
    good = [os.urandom(200) for _ in range(3)]
    bad = os.urandom(200)
    liar = digests_of(os.urandom(200))[0]
    before = objects(server, "")
    body = tar_of([*named(*good), (liar, bad)])
    problem = assert_problem(post_batch(http, body), 422, "digest_mismatch")
    assert liar in problem["detail"]
    assert recorded(server, [*good, bad]) == set()
    assert objects(server, "") == before  # the cancelled pack left nothing


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.DIRTYPE, "directory"),
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_members_that_are_not_regular_files_are_refused(
    server: InProcessServer, http: httpx.Client, kind: bytes, what: str
) -> None:
    good = os.urandom(100)
    body = tar_of(named(good), last=kind)
    problem = assert_problem(post_batch(http, body), 422)
    assert what in problem["detail"]
    assert recorded(server, [good]) == set()


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "blobs/" + "a" * 64,
        "blake3:" + "A" * 64,
        "blake3:" + "0" * 63,
        "md5:" + "0" * 32,
        "blake3:" + "0" * 64 + "/x",
        "",
    ],
)
def test_member_names_must_be_digests(http: httpx.Client, name: str) -> None:
    problem = assert_problem(post_batch(http, tar_of([(name, b"abc")])), 422)
    assert "member" in problem["detail"]


def test_hostile_streams_are_refused(server: InProcessServer, http: httpx.Client) -> None:
    blob = os.urandom(3000)
    good = tar_of(named(blob))
    header_end = 512
    corrupt = bytearray(good)
    corrupt[10] ^= 0xFF  # the header checksum no longer matches
    bodies = {
        "empty": b"",
        "json": b'{"not": "a tar"}',
        "random": os.urandom(4096),
        "gzip": gzip.compress(good),
        "cut in the header": good[:300],
        "cut in the data": good[: header_end + 1000],
        "no end marker": good[: header_end + 3072],
        "bad checksum": bytes(corrupt),
        "garbage after the end": good + b"trailing",
        "v7 tar (no ustar magic)": good[:257] + b"\0" * 8 + good[265:],
    }
    for why, body in bodies.items():
        response = post_batch(http, body)
        assert_problem(response, 422)
        assert response.status_code == 422, why
    assert recorded(server, [blob]) == set()


def test_oversized_members_and_batches_get_413(http: httpx.Client) -> None:
    big = os.urandom(PACK_MAX_BLOB + 1)
    problem = assert_problem(post_batch(http, tar_of(named(big))), 413, "limit_exceeded")
    assert "/v1/blobs" in problem["detail"] and "/v1/uploads" in problem["detail"]
    many = named(*(os.urandom(8) for _ in range(MAX_MEMBERS + 1)))
    problem = assert_problem(post_batch(http, tar_of(many)), 413, "limit_exceeded")
    assert str(MAX_MEMBERS) in problem["detail"]
    assert post_batch(http, tar_of(many[:MAX_MEMBERS])).status_code == 200
    huge = http.post(
        "/v1/blobs/batch",
        params={"namespace": "ci"},
        headers={**TAR, "Content-Length": str(2**63)},
        content=b"",
    )
    assert huge.status_code in (400, 413), huge.text


def test_an_invalid_namespace_is_refused(http: httpx.Client) -> None:
    response = post_batch(http, tar_of(named(b"abc")), "Not A Namespace")
    assert response.status_code == 422, response.text


def test_a_batch_over_the_namespace_quota_stores_nothing(
    server: InProcessServer, http: httpx.Client
) -> None:
    assert http.put("/v1/namespaces/tight", json={"quota_bytes": 5000}).status_code == 200
    blobs = [os.urandom(2000) for _ in range(3)]
    before = objects(server, "")
    assert_problem(post_batch(http, tar_of(named(*blobs)), "tight"), 413, "quota_exceeded")
    assert recorded(server, blobs) == set()
    assert objects(server, "") == before
    assert post_batch(http, tar_of(named(*blobs[:2])), "tight").status_code == 200


def test_with_packs_off_members_become_whole_objects(tmp_path: Path) -> None:
    blobs = [os.urandom(n) for n in (10, 3000)]
    with Store.open(tmp_path / "home", pack_max_bytes=0) as store:
        batch = store.blob_batch("test", "ci")
        batch.write(tar_of(named(*blobs)))
        got = batch.finish()
        assert [str(d.blake3) for d in got] == [digests_of(b)[0] for b in blobs]
        assert list(store.plane.backend.list("packs/")) == []
        for data in blobs:
            found = store.find_blob(Digest.parse(digests_of(data)[0]), None, head=False)
            assert found is not None and found.place.offset is None
            assert b"".join(store.plane.read(found.place)) == data
