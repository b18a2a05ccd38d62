"""Every backend passes the conformance suite; the local backend's own promises on top."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from artifactstore.dataplane import layout
from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.errors import StorageError
from artifactstore.model.identity import Digest
from artifactstore.testing.backend_contract import BackendContract
from artifactstore.testing.targets import (
    ContractTarget,
    local_target,
    memory_target,
    put,
    s3_target,
)
from tests.dataplane.s3server import S3Server


@pytest.fixture(params=["memory", "local-fsync", "local-nofsync", "s3"])
def contract_target(request: pytest.FixtureRequest, tmp_path: Path) -> ContractTarget:
    if request.param == "memory":
        return memory_target()
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return s3_target(server.bucket, server.endpoint, f"contract-{uuid.uuid4().hex}")
    return local_target(tmp_path / "storage", fsync=request.param == "local-fsync")


class TestBackendContract(BackendContract):
    pass


# --- local backend only -------------------------------------------------------------


def _staging(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "a/../../x",
        "/abs",
        "/etc/passwd",
        "a//b",
        "a/",
        "",
        ".",
        "a/./b",
        "..",
        "tmp",
        "tmp/x",
        "a\\..\\..\\x",
        "a\\b",
        "a\0b",
        "\0",
    ],
)
def test_local_refuses_keys_outside_its_root(tmp_path: Path, key: str) -> None:
    root = tmp_path / "storage"
    backend = LocalBackend(root)
    with pytest.raises(StorageError):
        backend.stat(key)
    with pytest.raises(StorageError):
        b"".join(backend.read(key))
    with pytest.raises(StorageError):
        backend.delete(key)
    batch = backend.batch()
    writer = batch.writer()
    writer.write(b"escape attempt")
    with pytest.raises(StorageError):
        writer.commit(key)
        batch.commit()
    batch.cancel()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["storage"]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["tmp"]
    assert list(backend.list()) == []


def test_local_objects_are_plain_files_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    backend = LocalBackend(root)
    assert backend.properties.local_root == root
    data = b"zero-copy"
    key = layout.blob_key(Digest("sha256", hashlib.sha256(data).hexdigest()))
    batch = backend.batch()
    writer = batch.writer()
    writer.write(data)
    writer.commit(key)
    batch.commit()
    assert root.joinpath(*key.split("/")).read_bytes() == data
    assert backend.path(key) == root.joinpath(*key.split("/"))


def test_local_commit_onto_a_key_prefix_fails_instead_of_acknowledging(tmp_path: Path) -> None:
    # A file system cannot hold both "p" and "p/q"; the commit must not claim it did.
    root = tmp_path / "storage"
    backend = LocalBackend(root)
    put(backend, "p/q", b"inner")
    batch = backend.batch()
    writer = batch.writer()
    writer.write(b"outer")
    writer.commit("p")
    with pytest.raises(StorageError):
        batch.commit()
    assert backend.stat("p") is None
    assert backend.stat("p/q") == len(b"inner")
    assert _staging(root) == []


def test_sweep_staging_removes_old_staging_files_only(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    backend = LocalBackend(root)
    published = backend.batch()
    writer = published.writer()
    writer.write(b"published")
    writer.commit("kept/object")
    published.commit()
    old_published = root / "kept" / "object"
    os.utime(old_published, (time.time() - 86_400, time.time() - 86_400))

    batch = backend.batch()
    crashed = batch.writer()
    crashed.write(b"left by a crash")
    (old_name,) = _staging(root)
    day_ago = time.time() - 86_400
    os.utime(root / "tmp" / old_name, (day_ago, day_ago))
    in_flight = batch.writer()
    in_flight.write(b"still being written")
    (fresh_name,) = set(_staging(root)) - {old_name}

    assert backend.sweep_staging(older_than=3600) == 1
    assert _staging(root) == [fresh_name]
    assert old_published.read_bytes() == b"published"
    assert list(backend.list()) == ["kept/object"]
    assert backend.sweep_staging(older_than=3600) == 0

    in_flight.commit("fresh/object")
    batch.commit()  # the swept writer never committed; the fresh one publishes
    assert backend.stat("fresh/object") == len(b"still being written")
    crashed.cancel()  # its file is already gone: still fine
    batch.cancel()
    assert _staging(root) == []


def _mapped(data: bytes) -> memoryview:
    """``data`` in mapped memory: page-aligned, as the ingest's buffers are."""
    buffer = mmap.mmap(-1, len(data))
    buffer[:] = data
    return memoryview(buffer)


def _write(backend: LocalBackend, pieces: Iterable[bytes | memoryview]) -> int:
    """Write one object of ``pieces``, check it reads back whole; bytes sent with O_DIRECT."""
    batch = backend.batch()
    writer = batch.writer()
    written = []
    for piece in pieces:
        writer.write(piece)
        written.append(bytes(piece))
    data = b"".join(written)
    key = layout.blob_key(Digest("sha256", hashlib.sha256(data).hexdigest()))
    writer.commit(key)
    batch.commit()
    assert b"".join(backend.read(key)) == data
    assert backend.stat(key) == len(data)
    return writer.direct_bytes


def _big_pieces(n: int) -> list[bytes | memoryview]:
    return [_mapped(random.Random(i).randbytes(4 << 20)) for i in range(n)]


def test_local_writes_large_aligned_pieces_directly(tmp_path: Path) -> None:
    """Past 16 MiB, page-aligned pieces skip the page cache; the rest is buffered, and
    the object is the same bytes whichever way each piece went."""
    backend = LocalBackend(tmp_path / "storage", fsync=True)
    # Then a piece that may or may not go direct (a bytes object's data: devices
    # differ in the memory alignment they need) and an odd tail, which never does.
    direct = _write(backend, [*_big_pieces(8), b"x" * (1 << 20), b"tail"])
    if not backend._direct:
        pytest.skip(f"the file system under {tmp_path} refuses O_DIRECT")
    assert direct in (4 * (4 << 20), 4 * (4 << 20) + (1 << 20)), "past 16 MiB, and only there"


def test_local_buffers_what_cannot_go_direct(tmp_path: Path) -> None:
    """Odd offsets, small objects and no-fsync backends never use O_DIRECT."""
    big = _big_pieces(6)
    if _write(LocalBackend(tmp_path / "control", fsync=True), big) == 0:
        pytest.skip(f"the file system under {tmp_path} refuses O_DIRECT")
    assert _write(LocalBackend(tmp_path / "a", fsync=True), [b"odd", *big]) == 0
    assert _write(LocalBackend(tmp_path / "b", fsync=True), big[:4]) == 0
    assert _write(LocalBackend(tmp_path / "c", fsync=False), big) == 0


@contextlib.contextmanager
def _no_descriptors_left() -> Iterator[None]:
    """Every descriptor number this process may open is taken, until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    held: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        with pytest.raises(OSError) as exhausted:
            os.open(os.devnull, os.O_RDONLY)
        assert exhausted.value.errno == errno.EMFILE
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_local_writes_buffered_when_no_descriptor_is_left_for_o_direct(tmp_path: Path) -> None:
    """Out of descriptors when the direct one would open: that object is written
    buffered and whole, and the next object goes direct again."""
    backend = LocalBackend(tmp_path / "storage", fsync=True)
    if _write(backend, _big_pieces(6)) == 0:
        pytest.skip(f"the file system under {tmp_path} refuses O_DIRECT")

    def starved(pieces: list[bytes | memoryview]) -> Iterator[bytes | memoryview]:
        yield from pieces[:4]  # the first 16 MiB are always buffered
        with _no_descriptors_left():
            yield from pieces[4:]

    assert _write(backend, starved(_big_pieces(7))) == 0
    assert _write(backend, _big_pieces(6)) > 0, "only EINVAL/EOPNOTSUPP turn O_DIRECT off"


_CRASH_CHILD = r"""
import hashlib, mmap, os, random, sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from artifactstore.dataplane import layout
from artifactstore.dataplane.backends.local import LocalBackend
from artifactstore.model.identity import Digest

backend = LocalBackend(Path(sys.argv[1]), fsync=True)
rng = random.Random(int(sys.argv[2]))
small = [random.Random(i).randbytes(4096 * (i + 1)) for i in range(20)]  # repeats: dedup hits
piece = mmap.mmap(-1, 4 << 20)  # page-aligned: past 16 MiB an object's pieces go O_DIRECT
print("ready", flush=True)
n = 0
while True:
    contents = [os.urandom((24 if n % 3 == 0 else 2) << 20)]
    if n % 2:  # more than the syncfs threshold: the bulk path
        contents += rng.sample(small, 9)
    batch = backend.batch()
    keys = []
    for data in contents:
        writer = batch.writer()
        step = len(piece) if len(data) > len(piece) else 65536
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            piece[: len(chunk)] = chunk
            writer.write(memoryview(piece)[: len(chunk)])
        key = layout.blob_key(Digest("sha256", hashlib.sha256(data).hexdigest()))
        writer.commit(key)
        keys.append(key)
    batch.commit()
    print(" ".join(keys), flush=True)
    n += 1
"""


@pytest.mark.slow
def test_local_key_never_holds_a_partial_object(tmp_path: Path) -> None:
    """SIGKILL a writer at random instants; every key holds exactly its content."""
    root = tmp_path / "storage"
    rng = random.Random(20240601)
    acknowledged: set[str] = set()
    # At least 32 kills, then more (at most 200, with longer windows) until enough commits
    # were acknowledged to mean anything: on a loaded machine a short window may see none.
    backend = LocalBackend(root)
    for trial in range(200):
        big = any(backend.stat(k) == 24 << 20 for k in acknowledged)
        if trial >= 32 and len(acknowledged) >= 10 and big:
            break
        child = subprocess.Popen(
            [sys.executable, "-c", _CRASH_CHILD, str(root), str(trial)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        if child.stdout.readline() != "ready\n":
            child.kill()
            pytest.fail(f"the writer did not start: {child.communicate()[1]}")
        time.sleep(rng.uniform(0.0, 0.35 if trial < 32 else 1.5))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err
        for line in out.splitlines():
            acknowledged.update(line.split())

    published = set(backend.list())
    assert acknowledged <= published, "a commit that returned did not keep its objects"
    assert len(acknowledged) >= 10, "too few commits completed for the test to mean anything"
    assert any(backend.stat(k) == 24 << 20 for k in acknowledged), "no O_DIRECT-sized object"
    for key in published:
        digest = layout.digest_from_key(key)
        assert digest is not None and digest.algorithm == "sha256", key
        content = b"".join(backend.read(key))
        assert hashlib.sha256(content).hexdigest() == digest.hex, f"{key} is partial or wrong"
        assert backend.stat(key) == len(content)
    backend.sweep_staging(older_than=0)
    assert _staging(root) == []
    assert set(backend.list()) == published
