"""HTTP benchmark (issue 4): our server against the CNCF distribution registry.

Starts ``artifactstore serve`` (uvicorn and granian, each a fresh store) and,
in the same run, the CNCF distribution registry (Debian ``docker-registry``,
filesystem storage in a temp dir), both on loopback, both fsyncing as they do
by default, and measures with one client implementation (httpx) for both:

* a large blob (1 GiB) pushed one-shot and in 8 MiB chunks, then downloaded;
* 5,000 blobs of 4 KiB pushed by 8 concurrent clients, then 1,000 HEADs and
  1,000 GETs of them (Python clients: on a 2-core box these are client-bound);
* the same HEAD and GET of one small blob under a C/Go load generator
  (``wrk`` for GET, ``hey`` for HEAD: Debian's wrk 4.1 waits forever for the
  body of a HEAD response, so it cannot measure HEADs);
* the server's peak RSS during a 4 GiB upload (VmRSS of its process tree,
  polled every 50 ms).

A "raw sink" target (a raw-socket server that discards uploads and
``sendfile``s downloads) is measured too, interleaved like the others. For
uploads it is the client's ceiling: when ours and the registry both sit near
it, the client is the bottleneck and the ratio says little about the servers.
For downloads it is only a reference (one Python thread per connection; the
registry and granian have beaten it): httpx's reading is the limit there.

Every round starts fresh servers on fresh, empty stores; each step runs over
all targets back to back, in an order that rotates from round to round.
Absolute figures drift on the shared 2-vCPU VMs: the result that counts is
the ratio ours/registry of best-of-N trials in one run.

    .venv/bin/python bench/http.py                  # full: 1 GiB, 5,000 small, 4 GiB RSS
    .venv/bin/python bench/http.py --quick          # 256 MiB, 1,000 small, 1 GiB RSS
    .venv/bin/python bench/http.py --servers uvicorn --only large,rss --json out.json
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``http`` package, which httpx
# imports: drop bench/ (the script's own directory) from the import path before
# anything imports ``http``, and put the repo root there for ``bench._common``.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(_BENCH_DIR.parent))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Sequence  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any, Protocol, TypeVar, cast  # noqa: E402

import httpx  # noqa: E402
from bench._common import (  # noqa: E402
    CHUNK,
    MB,
    CpuMeter,
    GiB,
    KiB,
    MiB,
    PeakRssSampler,
    Series,
    check_free_space,
    child_env,
    command_line,
    compile_package,
    fmt_num,
    format_machine,
    free_port,
    load_average,
    machine_info,
    pick_scratch_parent,
    prefault_page_cache,
    process_tree,
    remove,
    render_table,
    repo_revision,
    reset_hwm,
    scratch_dir,
    settle,
    start_service,
    stop_service,
    tree_cpu_seconds,
    tree_hwm_bytes,
    tree_pss_bytes,
    tree_rss_bytes,
    venv_cli,
    write_json,
    write_random_file,
)

GROUPS = ("large", "small", "load", "rss")
OUR_SERVERS = ("uvicorn", "granian")
REGISTRY_REPO = "bench/http"
SMALL_SIZE = 4 * KiB
OFFSET_TYPE = "application/offset+octet-stream"
OCTETS = "application/octet-stream"

TARGET_RATIO = 1.0
TARGET_PEAK_RSS_MB = 200.0
BUSY_WARN_PCT = 15.0
"""Share of the CPUs used by other processes above which the run is flagged."""

READY_TIMEOUT = 60.0
HTTP_TIMEOUT = httpx.Timeout(600.0, connect=10.0)

T = TypeVar("T")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    """Parsed command line."""

    size: int
    chunk: int
    small: int
    heads: int
    concurrency: int
    load_seconds: int
    rss_size: int
    trials: int
    servers: tuple[str, ...]
    workers: int
    only: frozenset[str]
    peer: bool
    sink: bool
    scratch: Path | None
    json_path: Path | None
    prefault: bool


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line; ``--quick`` only changes the defaults of the sizes and durations."""
    p = argparse.ArgumentParser(
        description="HTTP benchmark: our server (uvicorn, granian) vs the CNCF registry.",
    )
    p.add_argument("--size-mib", type=int, help="large blob in MiB (default 1024)")
    p.add_argument("--chunk-mib", type=int, default=8, help="chunked upload PATCH size (8)")
    p.add_argument("--small", type=int, help="4 KiB blobs to push (default 5000)")
    p.add_argument("--heads", type=int, default=1000, help="HEADs and GETs of small blobs")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients/connections")
    p.add_argument("--load-seconds", type=int, help="duration of each wrk / hey run (default 10)")
    p.add_argument(
        "--rss-gib", type=int, help="upload size for the peak-RSS step in GiB (default 4)"
    )
    p.add_argument("--quick", action="store_true", help="256 MiB, 1,000 small, 1 GiB RSS, 5 s")
    p.add_argument("--trials", type=int, default=3, help="rounds; best of N is reported")
    p.add_argument(
        "--servers",
        default=",".join(OUR_SERVERS),
        help="our ASGI servers to measure, comma list of uvicorn,granian (default both)",
    )
    p.add_argument("--workers", type=int, default=1, help="our server's --workers (1)")
    p.add_argument(
        "--only",
        default="all",
        help="comma list of: large (1 GiB up one-shot, chunked, down), small (4 KiB "
        "pushes, HEADs, GETs with Python clients), load (wrk GET, hey HEAD), rss "
        "(peak RSS during the big upload), all",
    )
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip the registry")
    p.add_argument(
        "--no-sink",
        dest="sink",
        action="store_false",
        help="skip the raw-sink rows (discards uploads: the client's ceiling; "
        "sendfiles downloads: a reference)",
    )
    p.add_argument(
        "--scratch",
        type=Path,
        help="parent dir for the GBs of temporary data (default $TMPDIR if it is on "
        "the repo's disk); everything is removed at the end",
    )
    p.add_argument("--json", type=Path, dest="json_path", help="also write figures here")
    p.add_argument(
        "--no-prefault",
        dest="prefault",
        action="store_false",
        help="do not write-and-delete a page-cache file before each upload "
        "(see prefault_page_cache in bench/_common.py)",
    )
    a = p.parse_args(argv)
    only: set[str] = set()
    for word in filter(None, (w.strip() for w in a.only.split(","))):
        if word == "all":
            only.update(GROUPS)
        elif word in GROUPS:
            only.add(word)
        else:
            p.error(f"--only: unknown group {word!r}")
    servers = tuple(dict.fromkeys(filter(None, (w.strip() for w in a.servers.split(",")))))
    for s in servers:
        if s not in OUR_SERVERS:
            p.error(f"--servers: unknown server {s!r} (uvicorn, granian)")
    size_mib = a.size_mib if a.size_mib is not None else (256 if a.quick else 1024)
    small = a.small if a.small is not None else (1000 if a.quick else 5000)
    load_seconds = a.load_seconds if a.load_seconds is not None else (5 if a.quick else 10)
    rss_gib = a.rss_gib if a.rss_gib is not None else (1 if a.quick else 4)
    if min(size_mib, a.chunk_mib, small, a.heads, a.concurrency, load_seconds, a.trials) <= 0:
        p.error("sizes, counts, durations and --trials must be positive")
    if rss_gib < 0 or a.workers <= 0:
        p.error("--rss-gib must be >= 0 and --workers positive")
    return Config(
        size=size_mib * MiB,
        chunk=a.chunk_mib * MiB,
        small=small,
        heads=a.heads,
        concurrency=a.concurrency,
        load_seconds=load_seconds,
        rss_size=rss_gib * GiB,
        trials=a.trials,
        servers=servers,
        workers=a.workers,
        only=frozenset(only),
        peer=a.peer,
        sink=a.sink,
        scratch=a.scratch,
        json_path=a.json_path,
        prefault=a.prefault,
    )


def size_label(n: int) -> str:
    """1 GiB, 256 MiB, 4 KiB."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit:,} {name}"
    return f"{n:,} B"


# --------------------------------------------------------------------------- bodies


class Source(Protocol):
    """Bytes to upload, streamed as 1 MiB memoryview slices (never one big ``bytes``).

    PERF-NOTES: httpx re-slices a large ``bytes`` body after each send
    (quadratic copying); 1 MiB slices with an explicit Content-Length do not.
    The slices reuse one buffer: httpx (h11) copies each slice into the bytes
    it sends before it asks for the next one.
    """

    size: int

    def slices(self, offset: int, length: int) -> Iterator[memoryview]: ...


class FileSource:
    """A file read with 1 MiB ``readinto`` (from the page cache: it is read once first)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def slices(self, offset: int, length: int) -> Iterator[memoryview]:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            left = length
            while left > 0:
                n = f.readinto(view[: min(CHUNK, left)])
                if not n:
                    raise RuntimeError(f"{self.path} is shorter than {offset + length} bytes")
                yield view[:n]
                left -= n

    def stamp(self, nonce: bytes) -> None:
        """Overwrite the first bytes: new content (new digests), same pages in the cache."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, nonce, 0)
        finally:
            os.close(fd)


class GeneratedSource:
    """``size`` bytes made of one random 1 MiB block, each copy stamped with its index.

    Needs no disk and no page cache, so a 4 GiB upload measures the server's
    memory, not ours; no two MiB are equal, and ``seed`` makes streams differ.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self._block = bytearray(os.urandom(CHUNK))
        self._block[8:16] = seed.to_bytes(8, "big")

    def slices(self, offset: int, length: int) -> Iterator[memoryview]:
        buf = bytearray(self._block)
        view = memoryview(buf)
        pos, end = offset, offset + length
        while pos < end:
            index, within = divmod(pos, CHUNK)
            buf[0:8] = index.to_bytes(8, "big")
            n = min(CHUNK - within, end - pos)
            yield view[within : within + n]
            pos += n


def stream_body(src: Source, offset: int, length: int) -> Iterable[bytes]:
    """``length`` bytes of ``src`` from ``offset`` as an httpx request body.

    httpx is typed for ``bytes`` parts but sends any buffer (h11 joins them
    into the bytes it writes), which is what spares a 1 MiB copy per slice.
    """
    return cast("Iterable[bytes]", src.slices(offset, length))


def source_sha256(src: Source) -> str:
    """Hex SHA-256 of a whole source (untimed: the registry needs it up front)."""
    h = hashlib.sha256()
    for piece in src.slices(0, src.size):
        h.update(piece)
    return h.hexdigest()


# --------------------------------------------------------------------------- targets


def _check(r: httpx.Response, *expected: int) -> httpx.Response:
    """Raise with the server's words unless the status is one of ``expected``."""
    if r.status_code not in expected:
        try:
            text = r.text[:300]
        except httpx.ResponseNotRead:
            text = ""
        raise RuntimeError(
            f"{r.request.method} {r.request.url.path} answered {r.status_code} "
            f"(expected {'/'.join(map(str, expected))}): {text}"
        )
    return r


def new_client() -> httpx.Client:
    """The one client implementation for every target: httpx, HTTP/1.1 keep-alive."""
    return httpx.Client(timeout=HTTP_TIMEOUT, trust_env=False, follow_redirects=False)


class Target:
    """A server under test on loopback: its process, store and protocol."""

    key = ""
    label = ""
    steps: tuple[str, ...] = ()

    def __init__(self, work: Path, logs: Path) -> None:
        self.work = work
        self.logs = logs
        self.data = work / f"data-{self.key}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.base = ""
        self.starts = 0

    # ------------------------------------------------------------ process

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return child_env([])

    def ready_path(self) -> str:
        raise NotImplementedError

    def prepare(self) -> None:
        """Create the (empty) data directory and any config."""
        self.data.mkdir()

    def start(self) -> None:
        """A fresh data dir and a new process; returns once it answers ``ready_path``."""
        self.stop()
        remove(self.data)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prepare()
        self.starts += 1
        log = self.logs / f"{self.key}.log"
        with open(log, "ab") as f:
            f.write(f"---- start {self.starts}: {' '.join(self.argv())}\n".encode())
        self.proc = start_service(self.argv(), self.env(), log, cwd=self.work)
        deadline = time.monotonic() + READY_TIMEOUT
        with new_client() as client:
            while True:
                if self.proc.poll() is not None:
                    tail = log.read_bytes()[-2000:].decode("utf-8", "replace")
                    raise RuntimeError(f"{self.label} exited {self.proc.returncode}:\n{tail}")
                try:
                    if client.get(self.base + self.ready_path()).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.label} did not answer within {READY_TIMEOUT} s")
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process group and delete the data (called on every exit path)."""
        if self.proc is not None:
            stop_service(self.proc)
            self.proc = None
        remove(self.data)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ------------------------------------------------------------ protocol

    def upload_oneshot(self, client: httpx.Client, src: Source, sha: str) -> str:
        raise NotImplementedError

    def upload_chunked(self, client: httpx.Client, src: Source, sha: str, chunk: int) -> str:
        raise NotImplementedError

    def upload_small(self, client: httpx.Client, data: bytes, sha: str) -> str:
        raise NotImplementedError

    def blob_url(self, ref: str) -> str:
        raise NotImplementedError

    def download(self, client: httpx.Client, ref: str, size: int, sha: str | None) -> None:
        """GET the whole blob, counting the bytes; check size and Docker-Content-Digest.

        The pieces are taken as the socket delivers them (``iter_raw()``): asked
        for 1 MiB pieces, httpx re-chunks through a buffer, and that copying
        capped this client at 650-1,100 MB/s whatever the server (measured:
        median 767 MB/s against 1,892 MB/s without re-chunking, same server,
        same blob), so the download ratios measured the client, not the servers.
        """
        with client.stream("GET", self.blob_url(ref)) as r:
            if r.status_code != 200:
                r.read()
                _check(r, 200)
            got = 0
            for piece in r.iter_raw():
                got += len(piece)
            header = r.headers.get("docker-content-digest")
        if got != size:
            raise RuntimeError(f"{self.label}: downloaded {got} bytes, expected {size}")
        if sha is not None and header != f"sha256:{sha}":
            raise RuntimeError(f"{self.label}: download has digest {header}, expected {sha}")


class Ours(Target):
    """``artifactstore serve --no-auth`` on a fresh ARTIFACTSTORE_HOME."""

    steps = (
        "oneshot",
        "chunked",
        "download",
        "curl_download",
        "small",
        "head",
        "get",
        "wrk_get",
        "hey_head",
    )

    def __init__(
        self, work: Path, logs: Path, server: str, workers: int, option: str = "--server"
    ) -> None:
        self.key = server
        self.label = f"ours ({server})"
        self.server = server
        self.workers = workers
        self.option = option
        super().__init__(work, logs)

    def argv(self) -> list[str]:
        return [
            str(venv_cli("artifactstore")),
            "serve",
            "--no-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            self.option,
            self.server,
        ]

    def env(self) -> dict[str, str]:
        # Every other ARTIFACTSTORE_* variable dropped: defaults, fsync on.
        return child_env(["ARTIFACTSTORE_"], ARTIFACTSTORE_HOME=str(self.data))

    def ready_path(self) -> str:
        return "/health"

    def upload_oneshot(self, client: httpx.Client, src: Source, sha: str) -> str:
        r = client.post(
            f"{self.base}/v1/blobs",
            params={"digest": f"sha256:{sha}"},
            content=stream_body(src, 0, src.size),
            headers={"Content-Length": str(src.size), "Content-Type": OCTETS},
        )
        body = _check(r, 201).json()
        if body["sha256"] != f"sha256:{sha}" or body["size"] != src.size:
            raise RuntimeError(f"{self.label}: stored {body}, expected sha256:{sha}")
        return str(body["digest"])

    def upload_chunked(self, client: httpx.Client, src: Source, sha: str, chunk: int) -> str:
        r = _check(
            client.post(f"{self.base}/v1/uploads", headers={"Upload-Length": str(src.size)}),
            201,
        )
        location = str(httpx.URL(self.base).join(r.headers["location"]))
        for offset in range(0, src.size, chunk):
            n = min(chunk, src.size - offset)
            r = client.patch(
                location,
                content=stream_body(src, offset, n),
                headers={
                    "Content-Type": OFFSET_TYPE,
                    "Upload-Offset": str(offset),
                    "Content-Length": str(n),
                },
            )
            _check(r, 204)
        # The session completed itself with the last byte; this checks the digest
        # (as the registry's closing PUT ?digest= does) and returns both digests.
        r = _check(client.post(f"{location}/complete", params={"digest": f"sha256:{sha}"}), 200)
        return str(r.json()["digest"])

    def upload_small(self, client: httpx.Client, data: bytes, sha: str) -> str:
        r = client.post(
            f"{self.base}/v1/blobs",
            params={"digest": f"sha256:{sha}"},
            content=data,
            headers={"Content-Type": OCTETS},
        )
        return str(_check(r, 201).json()["digest"])

    def blob_url(self, ref: str) -> str:
        return f"{self.base}/v1/blobs/{ref}"


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
health:
  storagedriver:
    enabled: false
"""
"""Debian's /etc/docker/registry/config.yml minus auth, the storage health
check, upload purging and access logs; the same in-memory blob-descriptor cache."""


def with_digest(location: str, sha: str) -> str:
    """The upload URL plus ``digest=``, keeping its ``_state`` query.

    (httpx's ``params=`` replaces a URL's query instead of adding to it.)
    """
    return f"{location}{'&' if '?' in location else '?'}digest=sha256:{sha}"


class Registry(Target):
    """The CNCF distribution registry (``docker-registry serve CONFIG``)."""

    key = "registry"
    label = "registry"
    steps = Ours.steps

    def __init__(self, work: Path, logs: Path, binary: str) -> None:
        super().__init__(work, logs)
        self.binary = binary
        self.config = work / "registry.yml"

    def prepare(self) -> None:
        super().prepare()
        self.config.write_text(
            REGISTRY_CONFIG.format(root=self.data, port=self.port, secret=secrets.token_hex(16)),
            encoding="utf-8",
        )

    def argv(self) -> list[str]:
        return [self.binary, "serve", str(self.config)]

    def env(self) -> dict[str, str]:
        return child_env(["REGISTRY_"])  # no stray REGISTRY_* override of the config

    def ready_path(self) -> str:
        return "/v2/"

    def _start_upload(self, client: httpx.Client) -> str:
        r = _check(client.post(f"{self.base}/v2/{REGISTRY_REPO}/blobs/uploads/"), 202)
        return str(httpx.URL(self.base).join(r.headers["location"]))

    def _close_upload(self, r: httpx.Response, sha: str) -> str:
        _check(r, 201)
        if r.headers.get("docker-content-digest") != f"sha256:{sha}":
            raise RuntimeError(f"registry stored {r.headers.get('docker-content-digest')}")
        return f"sha256:{sha}"

    def upload_oneshot(self, client: httpx.Client, src: Source, sha: str) -> str:
        location = self._start_upload(client)
        r = client.put(
            with_digest(location, sha),
            content=stream_body(src, 0, src.size),
            headers={"Content-Length": str(src.size), "Content-Type": OCTETS},
        )
        return self._close_upload(r, sha)

    def upload_chunked(self, client: httpx.Client, src: Source, sha: str, chunk: int) -> str:
        location = self._start_upload(client)
        for offset in range(0, src.size, chunk):
            n = min(chunk, src.size - offset)
            r = client.patch(
                location,
                content=stream_body(src, offset, n),
                headers={
                    "Content-Type": OCTETS,
                    "Content-Range": f"{offset}-{offset + n - 1}",
                    "Content-Length": str(n),
                },
            )
            location = str(httpx.URL(self.base).join(_check(r, 202).headers["location"]))
        r = client.put(with_digest(location, sha), content=b"")
        return self._close_upload(r, sha)

    def upload_small(self, client: httpx.Client, data: bytes, sha: str) -> str:
        # Registry 2.8 has no single-request upload (POST ?digest= answers 202 and
        # stores nothing): POST then PUT is its shortest push of a blob.
        location = self._start_upload(client)
        r = client.put(
            with_digest(location, sha),
            content=data,
            headers={"Content-Type": OCTETS},
        )
        return self._close_upload(r, sha)

    def blob_url(self, ref: str) -> str:
        return f"{self.base}/v2/{REGISTRY_REPO}/blobs/{ref}"


SINK_SCRIPT = r"""
import os, socket, sys, threading

def serve(conn, path):
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    head = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            raw, _, rest = head.partition(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            head = rest[length:]
            left = length - min(length, len(rest))
            while left > 0:
                n = conn.recv_into(view[: min(left, len(buf))])
                if not n:
                    return
                left -= n
            if method == "GET" and target == "/blob":
                size = os.path.getsize(path)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % size)
                with open(path, "rb") as f:
                    sent = 0
                    while sent < size:
                        sent += os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)
            else:
                status = b"200 OK" if method in ("GET", "HEAD") else b"201 Created"
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")

def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, path), daemon=True).start()

main()
"""


class Sink(Target):
    """A raw-socket server that discards bodies (the client's upload ceiling), sendfiles GETs."""

    key = "sink"
    label = "raw sink"
    steps = ("oneshot", "download", "curl_download")

    def __init__(self, work: Path, logs: Path, big: Path) -> None:
        super().__init__(work, logs)
        self.big = big

    def argv(self) -> list[str]:
        return [sys.executable, "-c", SINK_SCRIPT, str(self.port), str(self.big)]

    def ready_path(self) -> str:
        return "/ready"

    def upload_oneshot(self, client: httpx.Client, src: Source, sha: str) -> str:
        r = client.post(
            f"{self.base}/upload",
            content=stream_body(src, 0, src.size),
            headers={"Content-Length": str(src.size), "Content-Type": OCTETS},
        )
        _check(r, 201)
        return "blob"

    def blob_url(self, ref: str) -> str:
        return f"{self.base}/blob"


def serve_server_option(cli: Path) -> str:
    """The ``serve`` option that picks uvicorn or granian, read from ``serve --help``.

    (It was ``--server``, then ``--asgi``: the benchmark follows the CLI.)
    """
    try:
        out = subprocess.run(
            [str(cli), "serve", "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"`{cli} serve --help` failed ({e}): run `make install` first") from e
    m = re.search(r"(--[\w-]+)\s+\[[^\]]*uvicorn[^\]]*\]", out.stdout)
    if out.returncode != 0 or m is None:
        raise SystemExit(
            f"`{cli} serve --help` shows no option choosing uvicorn/granian "
            f"(exit {out.returncode}):\n{out.stdout}{out.stderr}"
        )
    return m.group(1)


# --------------------------------------------------------------------------- clients


def warm(client: httpx.Client, target: Target) -> None:
    """Open the client's keep-alive connection, untimed (a dead server fails the trial)."""
    with contextlib.suppress(httpx.HTTPError):
        client.get(target.base + target.ready_path())


def run_parallel(
    clients: Sequence[httpx.Client], items: Sequence[T], fn: Callable[[httpx.Client, T], None]
) -> float:
    """Item i goes to client i % n, one thread per client; seconds until all are done.

    The clock starts when every thread is ready; the first failure stops all
    threads and is raised.
    """
    n = len(clients)
    ready = threading.Barrier(n + 1)
    failed = threading.Event()

    def work(k: int) -> None:
        ready.wait()
        try:
            for item in items[k::n]:
                if failed.is_set():
                    return
                fn(clients[k], item)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(n, thread_name_prefix="client") as pool:
        futures = [pool.submit(work, k) for k in range(n)]
        try:
            ready.wait()
            start = time.perf_counter()
            for f in futures:
                f.result()
        except BaseException:
            failed.set()  # Ctrl-C or a failure: the other threads stop after one request
            raise
        return time.perf_counter() - start


@dataclass(frozen=True)
class LoadResult:
    """One wrk or hey run: successful requests per second and how many there were."""

    rate: float
    requests: int
    note: str


def run_wrk(wrk: str, url: str, connections: int, seconds: int) -> LoadResult:
    """``wrk -t2 -cN -dSs URL`` (GET); fails on any non-2xx/3xx response."""
    threads = min(2, connections)
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        stdin=subprocess.DEVNULL,
    )
    text = out.stdout + out.stderr
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if out.returncode != 0 or rate is None or total is None:
        raise RuntimeError(f"wrk failed (exit {out.returncode}):\n{text[-1000:]}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if bad is not None:
        raise RuntimeError(f"wrk: {bad.group(1)} non-2xx/3xx responses from {url}")
    errors = re.search(r"Socket errors: (.*)", text)
    return LoadResult(float(rate.group(1)), int(total.group(1)), errors.group(1) if errors else "")


def run_hey(hey: str, url: str, method: str, connections: int, seconds: int) -> LoadResult:
    """``hey -c N -z Ss -m METHOD URL``; fails on any non-200 response."""
    out = subprocess.run(
        [hey, "-c", str(connections), "-z", f"{seconds}s", "-m", method, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        stdin=subprocess.DEVNULL,
    )
    text = out.stdout + out.stderr
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    if out.returncode != 0 or total is None or not codes:
        raise RuntimeError(f"hey failed (exit {out.returncode}):\n{text[-1000:]}")
    if set(codes) != {200}:
        raise RuntimeError(f"hey: status codes {codes} from {method} {url}")
    # Requests cut off by the deadline show up as errors; more than that is a failure.
    errors = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", text)
    n_errors = sum(int(x) for x in re.findall(r"\[(\d+)\]", errors.group(1))) if errors else 0
    if n_errors > connections:
        raise RuntimeError(f"hey: {n_errors} errors from {method} {url}:\n{errors}")
    ok = codes[200]
    return LoadResult(ok / float(total.group(1)), ok, f"{n_errors} cut off" if n_errors else "")


# --------------------------------------------------------------------------- series


@dataclass
class HttpSeries(Series):
    """A Series plus what the server spent: CPU seconds and work units per trial."""

    server_cpu_s: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)
    """Bytes (rates in MB/s) or requests/blobs (rates per second) of each trial."""
    seconds: list[float] = field(default_factory=list)

    def cpu_per_unit(self) -> float | None:
        """Server CPU per GiB (byte rates) or per request, in µs; over all trials."""
        if not self.server_cpu_s or not sum(self.work):
            return None
        per = sum(self.server_cpu_s) / sum(self.work)
        return per * GiB if self.unit == "MB/s" else per * 1e6

    def cpu_unit(self) -> str:
        return "CPU s/GiB" if self.unit == "MB/s" else "CPU us/req"

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["server_cpu_s"] = self.server_cpu_s
        out["work"] = self.work
        out["seconds"] = self.seconds
        out["server_cpu_per_unit"] = self.cpu_per_unit()
        out["server_cpu_unit"] = self.cpu_unit()
        return out


STEP_GROUPS = {
    "oneshot": "large",
    "chunked": "large",
    "download": "large",
    "curl_download": "large",
    "small": "small",
    "head": "small",
    "get": "small",
    "wrk_get": "load",
    "hey_head": "load",
}

STEP_UNITS = {
    "oneshot": "MB/s",
    "chunked": "MB/s",
    "download": "MB/s",
    "curl_download": "MB/s",
    "small": "blobs/s",
    "head": "req/s",
    "get": "req/s",
    "wrk_get": "req/s",
    "hey_head": "req/s",
}


@dataclass
class RssResult:
    """Peak RSS of one server's process tree during one big upload."""

    target: str
    mode: str
    idle_bytes: int = 0
    peak_sampled_bytes: int = 0
    peak_hwm_bytes: int = 0
    largest_hwm_bytes: int = 0
    """VmHWM of the biggest single process of the tree."""
    pss_after_bytes: int = 0
    """Summed PSS right after the upload: shared (forked) pages counted once."""
    samples: int = 0
    processes: int = 0
    mb_per_s: float | None = None
    error: str | None = None


# --------------------------------------------------------------------------- bench


class HttpBench:
    """The data, the targets and one method per step; ``run`` interleaves the rounds."""

    def __init__(self, cfg: Config, work: Path) -> None:
        self.cfg = cfg
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()
        self.big = FileSource(work / "big.bin", cfg.size)
        self.skipped: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.ours: list[Ours] = [Ours(work, self.logs, s, cfg.workers) for s in cfg.servers]
        self.registry: Registry | None = None
        self.sink: Sink | None = None
        self.wrk = shutil.which("wrk")
        self.hey = shutil.which("hey")
        self.curl = shutil.which("curl")
        self.small_blobs: list[tuple[bytes, str]] = []
        self.refs: dict[str, dict[str, str]] = {}
        """Per target, what the round stored: 'chunked' -> ref, 'small0' -> ref."""
        self.series: dict[str, HttpSeries] = {}
        self.rss: list[RssResult] = []
        self.contents: dict[str, tuple[bytes, str]] = {}
        """This round's large contents: mode -> (nonce, sha256 hex)."""

    # ---------------------------------------------------------------- setup

    @property
    def targets(self) -> list[Target]:
        out: list[Target] = [*self.ours]
        if self.registry is not None:
            out.append(self.registry)
        if self.sink is not None:
            out.append(self.sink)
        return out

    def find_tools(self) -> None:
        """Decide which targets and load generators can run; say why any are skipped."""
        cli = venv_cli("artifactstore")
        option = serve_server_option(cli)
        for o in self.ours:
            o.option = option
        binary = shutil.which("docker-registry")
        if not self.cfg.peer:
            self.skipped["registry"] = "--no-peer"
        elif binary is None:
            self.skipped["registry"] = (
                "docker-registry not found; install the CNCF distribution registry with "
                "`apt-get install -y docker-registry` (Debian package); ratios are n/a"
            )
        else:
            self.registry = Registry(self.work, self.logs, binary)
            self.versions["registry"] = self._version([binary, "--version"])
        if self.cfg.sink and "large" in self.cfg.only:
            self.sink = Sink(self.work, self.logs, self.big.path)
        if "large" in self.cfg.only:
            if self.curl is None:
                self.skipped["curl_download"] = "curl not found; `apt-get install -y curl`"
            else:
                self.versions["curl"] = self._version([self.curl, "--version"])
        if "load" in self.cfg.only:
            if self.wrk is None:
                self.skipped["wrk_get"] = "wrk not found; `apt-get install -y wrk`"
            else:
                self.versions["wrk"] = self._version([self.wrk, "-v"]).split(" [")[0]
            if self.hey is None:
                self.skipped["hey_head"] = "hey not found; `apt-get install -y hey`"
            else:
                self.versions["hey"] = "hey " + self._version(
                    ["dpkg-query", "-W", "-f", "${Version}", "hey"]
                )
        for t in self.targets:
            for step in t.steps:
                if STEP_GROUPS[step] not in self.cfg.only:
                    continue
                unit = STEP_UNITS[step]
                self.series[f"{t.key}.{step}"] = HttpSeries(
                    f"{t.label}: {self.step_label(step)}", unit
                )

    @staticmethod
    def _version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        lines = (out.stdout + out.stderr).strip().splitlines()
        return lines[0] if lines else "?"

    def step_label(self, step: str) -> str:
        c = self.cfg
        n = c.concurrency
        return {
            "oneshot": f"upload {size_label(c.size)} one-shot",
            "chunked": f"upload {size_label(c.size)} in {size_label(c.chunk)} PATCHes",
            "download": f"download {size_label(c.size)}",
            "curl_download": f"download {size_label(c.size)} (curl)",
            "small": f"push {c.small:,} x 4 KiB, {n} Python clients",
            "head": f"HEAD x {c.heads:,}, {n} Python clients",
            "get": f"GET 4 KiB x {c.heads:,}, {n} Python clients",
            "wrk_get": f"GET 4 KiB, wrk -t2 -c{n} -d{c.load_seconds}s",
            "hey_head": f"HEAD, hey -c {n} -z {c.load_seconds}s",
        }[step]

    def prepare_data(self) -> None:
        """The large file (page-cached) and the small blobs (in memory)."""
        if "large" in self.cfg.only:
            secs = write_random_file(self.big.path, self.cfg.size)
            settle()
            print(f"data:     {size_label(self.cfg.size)} random file ({secs:.1f} s to write)")
        if self.cfg.only & {"small", "load"}:
            count = self.cfg.small if "small" in self.cfg.only else 1
            self.small_blobs = []
            for _ in range(count):
                data = os.urandom(SMALL_SIZE)
                self.small_blobs.append((data, hashlib.sha256(data).hexdigest()))
            print(f"data:     {count:,} random blobs of 4 KiB in memory")

    def _prefault(self, nbytes: int) -> None:
        if self.cfg.prefault:
            prefault_page_cache(self.work, nbytes)

    # ---------------------------------------------------------------- trials

    def _servers_cpu(self) -> float:
        return sum(tree_cpu_seconds(t.pid) for t in self.targets if t.proc is not None)

    def _trial(
        self,
        target: Target,
        step: str,
        fn: Callable[[], tuple[float, float]],
        sample_rss: bool = False,
    ) -> None:
        """Run one trial of ``step`` on ``target``: fn returns (rate, work units).

        Records the server's CPU time (its process tree, from /proc) and, for
        the large steps, its peak RSS; prints the share of CPU other processes
        took meanwhile (the servers' own CPU is not "other").
        """
        key = f"{target.key}.{step}"
        s = self.series[key]
        if s.error is not None or step in self.skipped:
            return
        cpu0, all0 = tree_cpu_seconds(target.pid), self._servers_cpu()
        meter = CpuMeter()
        t0 = time.perf_counter()
        sampler: PeakRssSampler | None = None
        try:
            if sample_rss:
                reset_hwm(process_tree(target.pid))
                with PeakRssSampler(target.pid) as sampler:
                    value, work = fn()
            else:
                value, work = fn()
        except (RuntimeError, httpx.HTTPError) as e:
            s.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"    {s.name}: FAILED\n      {e}", flush=True)
            return
        elapsed = time.perf_counter() - t0
        share = meter.read()
        cpu = tree_cpu_seconds(target.pid) - cpu0
        servers = self._servers_cpu() - all0
        others = share.others_pct - 100 * servers / (elapsed * (os.cpu_count() or 1))
        others = min(100.0, max(0.0, others))  # tick granularity: short trials overshoot
        s.values.append(value)
        s.server_cpu_s.append(round(cpu, 3))
        s.work.append(work)
        s.seconds.append(round(elapsed, 3))
        s.others_cpu_pct.append(round(others, 1))
        extra = f"server CPU {cpu:6.2f} s, others {others:3.0f}% CPU"
        if share.steal_pct >= 1:
            extra += f", steal {share.steal_pct:.0f}%"
        if sampler is not None:
            peak = max(sampler.peak_bytes, tree_hwm_bytes(process_tree(target.pid)))
            s.peak_rss_bytes.append(peak)
            extra += f", peak RSS {peak / MB:,.0f} MB"
        print(f"    {s.name:<52} {fmt_num(value):>8} {s.unit:<8} {extra}", flush=True)

    def _round_content(self, mode: str, round_no: int) -> tuple[bytes, str]:
        """A nonce for the big file and the SHA-256 of the file so stamped (cached per round)."""
        if mode not in self.contents:
            nonce = f"{mode}-{round_no}-".encode() + os.urandom(16)
            self.big.stamp(nonce)
            self.contents[mode] = (nonce, source_sha256(self.big))
        return self.contents[mode]

    def step_upload(self, targets: Sequence[Target], mode: str, round_no: int) -> None:
        """One-shot or chunked upload of this round's content to each target."""
        nonce, sha = self._round_content(mode, round_no)
        size = self.cfg.size
        for t in targets:
            if mode not in t.steps:
                continue
            self.big.stamp(nonce)
            self._prefault(size + 256 * MiB)
            with new_client() as client:
                warm(client, t)

                def go(t: Target = t, client: httpx.Client = client) -> tuple[float, float]:
                    start = time.perf_counter()
                    if mode == "oneshot":
                        ref = t.upload_oneshot(client, self.big, sha)
                    else:
                        ref = t.upload_chunked(client, self.big, sha, self.cfg.chunk)
                    secs = time.perf_counter() - start
                    self.refs.setdefault(t.key, {})[mode] = ref
                    return size / secs / MB, size

                self._trial(t, mode, go, sample_rss=True)
            settle()

    def _large_ref(self, t: Target) -> tuple[str, str] | None:
        """The large blob ``t`` stored last this round (chunked, else one-shot): mode, ref."""
        refs = self.refs.get(t.key, {})
        mode = "chunked" if "chunked" in refs else "oneshot"
        return (mode, refs[mode]) if mode in refs else None

    def step_download(self, targets: Sequence[Target]) -> None:
        """GET of the blob each target stored last (chunked, else one-shot)."""
        size = self.cfg.size
        for t in targets:
            if "download" not in t.steps:
                continue
            stored = self._large_ref(t)
            if stored is None:
                continue
            mode, ref = stored
            sha = None if isinstance(t, Sink) else self.contents[mode][1]
            with new_client() as client:
                warm(client, t)

                def go(
                    t: Target = t,
                    client: httpx.Client = client,
                    ref: str = ref,
                    sha: str | None = sha,
                ) -> tuple[float, float]:
                    start = time.perf_counter()
                    t.download(client, ref, size, sha)
                    return size / (time.perf_counter() - start) / MB, size

                self._trial(t, "download", go, sample_rss=True)

    def step_curl_download(self, targets: Sequence[Target]) -> None:
        """The same GET with curl into /dev/null: a client whose per-byte cost is small.

        httpx reads about 2 GB/s here whatever the server (the raw sink, the
        registry and ours all reach it), so its download figure measures the
        client; curl reads several times faster and shows the servers apart.
        The httpx step has already checked the digest of what each served.
        """
        if self.curl is None:
            return
        size = self.cfg.size
        for t in targets:
            stored = self._large_ref(t)
            if "curl_download" not in t.steps or stored is None:
                continue
            argv = [self.curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
            url = t.blob_url(stored[1])

            def go(argv: list[str] = argv, url: str = url, t: Target = t) -> tuple[float, float]:
                start = time.perf_counter()
                out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=600)
                secs = time.perf_counter() - start
                if out.stdout.strip() != f"200 {size}":
                    raise RuntimeError(f"{t.label}: curl got {out.stdout!r} {out.stderr!r}")
                return size / secs / MB, size

            self._trial(t, "curl_download", go, sample_rss=True)

    def _clients(self, t: Target) -> list[httpx.Client]:
        clients = [new_client() for _ in range(self.cfg.concurrency)]
        for c in clients:
            warm(c, t)
        return clients

    def step_small(self, targets: Sequence[Target]) -> None:
        """Push every small blob with N concurrent Python clients."""
        blobs = self.small_blobs
        for t in targets:
            if "small" not in t.steps:
                continue
            refs: list[str] = [""] * len(blobs)
            clients = self._clients(t)

            def push(client: httpx.Client, i: int, t: Target = t, refs: list[str] = refs) -> None:
                data, sha = blobs[i]
                refs[i] = t.upload_small(client, data, sha)

            def go(
                clients: list[httpx.Client] = clients, push: Callable[..., None] = push
            ) -> tuple[float, float]:
                secs = run_parallel(clients, range(len(blobs)), push)
                return len(blobs) / secs, len(blobs)

            try:
                self._trial(t, "small", go)
            finally:
                for c in clients:
                    c.close()
            if all(refs):
                self.refs.setdefault(t.key, {}).update({f"small{i}": r for i, r in enumerate(refs)})

    def _small_refs(self, t: Target) -> list[str]:
        refs = self.refs.get(t.key, {})
        return [refs[f"small{i}"] for i in range(len(self.small_blobs)) if f"small{i}" in refs]

    def _ensure_one_small(self, t: Target) -> str | None:
        """A stored small blob to read (pushed untimed when the small step did not run)."""
        refs = self._small_refs(t)
        if refs:
            return refs[0]
        data, sha = self.small_blobs[0]
        try:
            with new_client() as client:
                ref = t.upload_small(client, data, sha)
        except (RuntimeError, httpx.HTTPError) as e:
            print(f"    {t.label}: could not push a small blob: {e}")
            return None
        self.refs.setdefault(t.key, {})["small0"] = ref
        return ref

    def step_reads(self, targets: Sequence[Target], method: str) -> None:
        """HEAD or GET of --heads small blobs (cycling) with N concurrent Python clients."""
        step = "head" if method == "HEAD" else "get"
        count = self.cfg.heads
        for t in targets:
            if step not in t.steps:
                continue
            refs = self._small_refs(t)
            if not refs:
                continue
            urls = [t.blob_url(refs[i % len(refs)]) for i in range(count)]
            clients = self._clients(t)

            def one(client: httpx.Client, url: str) -> None:
                r = _check(client.request(method, url), 200)
                if int(r.headers.get("content-length", -1)) != SMALL_SIZE or (
                    method == "GET" and len(r.content) != SMALL_SIZE
                ):
                    raise RuntimeError(f"{method} {url}: wrong length")

            def go(
                clients: list[httpx.Client] = clients, urls: list[str] = urls
            ) -> tuple[float, float]:
                secs = run_parallel(clients, urls, one)
                return len(urls) / secs, len(urls)

            try:
                self._trial(t, step, go)
            finally:
                for c in clients:
                    c.close()

    def step_load(self, targets: Sequence[Target], step: str) -> None:
        """wrk GET or hey HEAD of one small blob for --load-seconds."""
        for t in targets:
            if step not in t.steps or step in self.skipped:
                continue
            ref = self._ensure_one_small(t)
            if ref is None:
                continue
            url = t.blob_url(ref)

            def go(url: str = url) -> tuple[float, float]:
                c, secs = self.cfg.concurrency, self.cfg.load_seconds
                if step == "wrk_get":
                    assert self.wrk is not None
                    res = run_wrk(self.wrk, url, c, secs)
                else:
                    assert self.hey is not None
                    res = run_hey(self.hey, url, "HEAD", c, secs)
                return res.rate, res.requests

            self._trial(t, step, go)

    # ---------------------------------------------------------------- rounds

    def run_rounds(self) -> None:
        """Fresh servers per round; every step over all targets, rotating the order."""
        groups = self.cfg.only
        if not groups & {"large", "small", "load"}:
            return
        targets = self.targets
        for r in range(self.cfg.trials):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            print(f"  round {r + 1}/{self.cfg.trials} (order: {', '.join(t.key for t in order)})")
            self.refs = {}
            self.contents = {}
            try:
                order = [t for t in order if self._start(t)]
                if "large" in groups:
                    self.step_upload(order, "oneshot", r)
                    self.step_upload(order, "chunked", r)
                    self.step_download(order)
                    self.step_curl_download(order)
                if "small" in groups:
                    self.step_small(order)
                    self.step_reads(order, "HEAD")
                    self.step_reads(order, "GET")
                if "load" in groups:
                    self.step_load(order, "wrk_get")
                    self.step_load(order, "hey_head")
            finally:
                for t in targets:
                    t.stop()
                settle()

    def _start(self, t: Target) -> bool:
        """Start a fresh server; if it fails, say why and fail its series (not the run)."""
        try:
            t.start()
        except RuntimeError as e:
            print(f"    {t.label}: FAILED to start\n      {e}", flush=True)
            for key, s in self.series.items():
                if key.startswith(f"{t.key}.") and s.error is None:
                    s.error = f"server did not start: {str(e).splitlines()[0]}"
            t.stop()
            return False
        return True

    def run_rss(self) -> None:
        """Peak RSS of each server's process tree during one big upload per mode."""
        if "rss" not in self.cfg.only or self.cfg.rss_size <= 0:
            return
        size = self.cfg.rss_size
        print(f"  peak RSS during a {size_label(size)} upload (VmRSS of the tree every 50 ms)")
        sources = {
            "oneshot": GeneratedSource(size, seed=1),
            "chunked": GeneratedSource(size, seed=2),
        }
        shas = {mode: source_sha256(src) for mode, src in sources.items()}
        targets: list[Target] = [*self.ours]
        if self.registry is not None:
            targets.append(self.registry)
        for t in targets:
            try:
                if not self._start(t):
                    continue
                for mode, src in sources.items():
                    res = RssResult(target=t.key, mode=mode)
                    self.rss.append(res)
                    self._prefault(size + 256 * MiB)
                    pids = process_tree(t.pid)
                    res.idle_bytes = tree_rss_bytes(pids)
                    res.processes = len(pids)
                    reset_hwm(pids)
                    try:
                        with new_client() as client, PeakRssSampler(t.pid) as sampler:
                            start = time.perf_counter()
                            if mode == "oneshot":
                                t.upload_oneshot(client, src, shas[mode])
                            else:
                                t.upload_chunked(client, src, shas[mode], self.cfg.chunk)
                            secs = time.perf_counter() - start
                    except (RuntimeError, httpx.HTTPError) as e:
                        res.error = str(e).splitlines()[0]
                        print(f"    {t.label} {mode}: FAILED\n      {e}")
                        continue
                    res.peak_sampled_bytes = sampler.peak_bytes
                    res.samples = sampler.samples
                    pids = process_tree(t.pid)
                    res.peak_hwm_bytes = tree_hwm_bytes(pids)
                    res.largest_hwm_bytes = max(tree_hwm_bytes([p]) for p in pids)
                    res.pss_after_bytes = tree_pss_bytes(pids)
                    res.mb_per_s = size / secs / MB
                    print(
                        f"    {t.label:<16} {mode:<8} peak {res.peak_sampled_bytes / MB:6,.0f} MB "
                        f"(VmHWM {res.peak_hwm_bytes / MB:,.0f} MB, PSS "
                        f"{res.pss_after_bytes / MB:,.0f} MB, idle "
                        f"{res.idle_bytes / MB:,.0f} MB, {res.processes} process(es), "
                        f"{res.samples} samples), {res.mb_per_s:,.0f} MB/s",
                        flush=True,
                    )
                    settle()
            finally:
                t.stop()
                settle()

    def stop_all(self) -> None:
        for t in self.targets:
            t.stop()

    def log_problems(self, limit: int = 5) -> list[str]:
        """Server-side trouble the clients did not see: tracebacks, 5xx, error lines.

        The logs live in the scratch dir, which is removed at the end, so the
        script reports what they hold before that.
        """
        bad = re.compile(r'Traceback|"status": 5\d\d|level=(?:error|fatal|panic)|\bERROR\b')
        out: list[str] = []
        for log in sorted(self.logs.glob("*.log")):
            hits = [
                line.strip()
                for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                if bad.search(line)
            ]
            if hits:
                out.append(f"{log.name}: {len(hits)} line(s), first: {hits[0][:300]}")
                out.extend(f"    {h[:300]}" for h in hits[1:limit])
        return out

    # ---------------------------------------------------------------- report

    def best(self, target: str, step: str) -> float | None:
        s = self.series.get(f"{target}.{step}")
        return None if s is None else s.best

    def ratios(self) -> list[dict[str, Any]]:
        """Ours over the registry (best vs best) per step and server, and the RSS target."""
        rows: list[dict[str, Any]] = []
        for o in self.ours:
            for step in Ours.steps:
                if f"{o.key}.{step}" not in self.series:
                    continue
                mine, theirs = self.best(o.key, step), self.best("registry", step)
                value = None if mine is None or not theirs else mine / theirs
                rows.append(
                    _target(
                        f"{o.key}: {step}", o.key, step, value, TARGET_RATIO, higher_is_better=True
                    )
                )
            peaks = [r.peak_sampled_bytes for r in self.rss if r.target == o.key and not r.error]
            rows.append(
                _target(
                    f"{o.key}: peak RSS MB",
                    o.key,
                    "rss",
                    max(peaks) / MB if peaks else None,
                    TARGET_PEAK_RSS_MB,
                    higher_is_better=False,
                )
            )
        return rows

    def _cell(self, target: str, step: str) -> str:
        s = self.series.get(f"{target}.{step}")
        if s is None:
            return "n/a"
        if s.best is None:
            if s.error:
                return "FAILED"
            return "skipped" if step in self.skipped else "-"
        return f"{fmt_num(s.best)} {s.unit}"

    def report(self) -> str:
        """Per-server comparison tables, the RSS table, then every trial."""
        out: list[str] = []
        ratios = {(r["server"], r["step"]): r for r in self.ratios()}
        ceiling = self.sink is not None
        for o in self.ours:
            rows: list[list[str]] = []
            for step in Ours.steps:
                if (o.key, step) not in ratios:
                    continue
                r = ratios[(o.key, step)]
                row = [
                    self.step_label(step),
                    self._cell(o.key, step),
                    self._cell("registry", step),
                    fmt_num(r["value"], 2) if r["value"] is not None else "n/a",
                    f">= {TARGET_RATIO:.2f}",
                    r["status"],
                ]
                if ceiling:
                    row.insert(3, self._cell("sink", step) if step in Sink.steps else "")
                rows.append(row)
            r = ratios[(o.key, "rss")]
            reg = [x.peak_sampled_bytes for x in self.rss if x.target == "registry" and not x.error]
            rss_row = [
                f"peak server RSS, {size_label(self.cfg.rss_size)} upload",
                "-" if r["value"] is None else f"{fmt_num(r['value'])} MB",
                f"{fmt_num(max(reg) / MB)} MB" if reg else "n/a",
                "",
                f"< {TARGET_PEAK_RSS_MB:.0f} MB",
                r["status"],
            ]
            if ceiling:
                rss_row.insert(3, "")
            if self.rss:
                rows.append(rss_row)
            header = ["measurement (best of trials)", "ours", "registry", "ours/registry"]
            if ceiling:
                header.insert(3, "raw sink")
            header += ["target", ""]
            out.append(f"ours = artifactstore serve {o.option} {o.key} --workers {o.workers}")
            out.append(render_table(header, rows))
            out.append("")
        if self.rss:
            rows = [
                [
                    f"{r.target} {r.mode}",
                    r.error or f"{r.peak_sampled_bytes / MB:,.0f}",
                    f"{r.peak_hwm_bytes / MB:,.0f}",
                    f"{r.largest_hwm_bytes / MB:,.0f}",
                    f"{r.pss_after_bytes / MB:,.0f}",
                    f"{r.idle_bytes / MB:,.0f}",
                    str(r.processes),
                    fmt_num(r.mb_per_s),
                ]
                for r in self.rss
            ]
            out.append(f"peak RSS during one {size_label(self.cfg.rss_size)} upload")
            out.append(
                render_table(
                    [
                        "server, mode",
                        "peak MB (50 ms VmRSS)",
                        "VmHWM MB",
                        "largest process",
                        "PSS MB after",
                        "idle MB",
                        "procs",
                        "MB/s",
                    ],
                    rows,
                )
            )
            out.append("")
        rows = []
        for s in self.series.values():
            cpu = s.cpu_per_unit()
            rows.append(
                [
                    s.name,
                    f"{fmt_num(s.best)} {s.unit}" if s.values else _short(s.error or "-"),
                    " ".join(fmt_num(v) for v in s.values),
                    "-" if cpu is None else f"{cpu:,.{2 if s.unit == 'MB/s' else 0}f}",
                    s.cpu_unit(),
                    "-" if s.max_rss_bytes is None else fmt_num(s.max_rss_bytes / MB),
                    " ".join(f"{x:.0f}" for x in s.others_cpu_pct),
                ]
            )
        out.append("all trials (in order); server CPU = its process tree's user+system time")
        out.append(
            render_table(
                [
                    "target: measurement",
                    "best",
                    "trials",
                    "server CPU",
                    "per",
                    "peak RSS MB",
                    "others CPU %",
                ],
                rows,
            )
        )
        return "\n".join(out)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _target(
    name: str, server: str, step: str, value: float | None, target: float, higher_is_better: bool
) -> dict[str, Any]:
    if value is None:
        status = "n/a"
    elif (value >= target) if higher_is_better else (value < target):
        status = "PASS"
    else:
        status = "FAIL"
    return {
        "name": name,
        "server": server,
        "step": step,
        "value": value,
        "target": target,
        "higher_is_better": higher_is_better,
        "status": status,
    }


def main(argv: list[str] | None = None) -> int:
    """Set up scratch space, run the rounds and the RSS step, print and save the figures."""
    cfg = parse_args(argv)
    compile_package()
    started = time.perf_counter()
    parent = pick_scratch_parent(cfg.scratch)
    stores = len(cfg.servers) + (1 if cfg.peer else 0)
    need = 0
    if "large" in cfg.only:
        need += cfg.size * (1 + 2 * stores)
    if "rss" in cfg.only:
        need += 2 * cfg.rss_size
    check_free_space(parent, need + 1 * GiB)
    with scratch_dir(parent, "bench-http-") as work:
        info = machine_info(work)
        print("HTTP benchmark (issue 4)")
        print(f"command:  {command_line()}")
        print(format_machine(info))
        print(f"revision: {repo_revision()}")
        print(f"load:     {load_average()} (1/5/15 min) at start")
        run_meter = CpuMeter()
        bench = HttpBench(cfg, work)
        try:
            bench.find_tools()
            for key, why in bench.skipped.items():
                print(f"skip {key}: {why}")
            for name, version in bench.versions.items():
                print(f"{name + ':':<9} {version}")
            print(f"client:   httpx {httpx.__version__}, 1 MiB memoryview body slices")
            bench.prepare_data()
            print(
                f"trials:   {cfg.trials} rounds (fresh servers and stores each), best of "
                f"{cfg.trials}; page-cache prefault {'on' if cfg.prefault else 'off'}"
            )
            bench.run_rounds()
            bench.run_rss()
        finally:
            bench.stop_all()
        problems = bench.log_problems()
        elapsed = time.perf_counter() - started
        share = run_meter.read()
        print()
        print(bench.report())
        print(
            f"\nCPU used by everything but this script, wrk/hey and the servers: "
            f"{_max_others(bench):.0f}% at most in one trial of 1 s or more "
            f"(per-trial shares above)"
        )
        if _max_others(bench) > BUSY_WARN_PCT:
            print(
                "WARNING: the machine was busy with other work; CPU-bound figures and "
                "ratios are unreliable. Rerun when `uptime` shows a load near 0."
            )
        print("server logs: " + ("no tracebacks, 5xx or error lines" if not problems else ""))
        for line in problems:
            print(f"  {line}")
        print(f"units: MB = 10^6 bytes; wall time of the whole run {elapsed:.0f} s")
        if cfg.json_path is not None:
            write_json(
                cfg.json_path,
                {
                    "benchmark": "http",
                    "command": command_line(),
                    "revision": repo_revision(),
                    "machine": asdict(info),
                    "config": {
                        "size_bytes": cfg.size,
                        "chunk_bytes": cfg.chunk,
                        "small": cfg.small,
                        "heads": cfg.heads,
                        "concurrency": cfg.concurrency,
                        "load_seconds": cfg.load_seconds,
                        "rss_bytes": cfg.rss_size,
                        "trials": cfg.trials,
                        "servers": list(cfg.servers),
                        "workers": cfg.workers,
                        "only": sorted(cfg.only),
                        "prefault": cfg.prefault,
                    },
                    "versions": bench.versions,
                    "skipped": bench.skipped,
                    "results": {k: s.to_json() for k, s in bench.series.items()},
                    "rss": [asdict(r) for r in bench.rss],
                    "ratios": bench.ratios(),
                    "server_log_problems": problems,
                    "elapsed_s": round(elapsed, 1),
                    "run_others_cpu_pct": round(share.others_pct, 1),
                    "max_trial_others_cpu_pct": round(_max_others(bench), 1),
                },
            )
            print(f"figures written to {cfg.json_path}")
    return 0


def _max_others(bench: HttpBench) -> float:
    """Highest others-CPU share over the trials that lasted 1 s or more.

    /proc/stat counts in 10 ms ticks: the share of a 20 ms trial means little.
    """
    shares = [
        x
        for s in bench.series.values()
        for x, secs in zip(s.others_cpu_pct, s.seconds, strict=True)
        if secs >= 1.0
    ]
    return max(shares, default=0.0)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have stopped every server and removed the scratch dir.
        print("\ninterrupted: servers stopped, temporary data removed", file=sys.stderr)
        sys.exit(130)
