"""The servers the HTTP benchmarks measure, and how one client speaks to each.

A ``Target`` is a server under test on loopback: a process started on a fresh,
empty data directory, and the requests that upload and read a blob in its
protocol. ``Ours`` is ``artifactstore serve`` (uvicorn or granian), ``Registry``
the CNCF distribution registry (Debian ``docker-registry``). Every target is
driven by the same client implementation, httpx with HTTP/1.1 keep-alive
(``new_client``), and every upload body is a ``Source`` streamed as 1 MiB
slices.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol, cast

import httpx
from bench._common import child_env, remove, venv_cli
from bench._services import free_port, start_service, stop_service

REGISTRY_REPO = "bench/http"
OFFSET_TYPE = "application/offset+octet-stream"
OCTETS = "application/octet-stream"
READY_TIMEOUT = 60.0
HTTP_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


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


# --------------------------------------------------------------------------- client


def check_status(r: httpx.Response, *expected: int) -> httpx.Response:
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


def new_client(headers: Mapping[str, str] | None = None) -> httpx.Client:
    """The one client implementation for every target: httpx, HTTP/1.1 keep-alive;
    ``headers`` go with every request (a target's ``headers``: its credentials)."""
    return httpx.Client(
        timeout=HTTP_TIMEOUT, trust_env=False, follow_redirects=False, headers=headers
    )


def warm(client: httpx.Client, target: Target) -> None:
    """Open the client's keep-alive connection, untimed (a dead server fails the trial)."""
    with contextlib.suppress(httpx.HTTPError):
        client.get(target.base + target.ready_path())


# --------------------------------------------------------------------------- targets


class Target:
    """A server under test on loopback: its process, store and protocol."""

    key = ""
    label = ""
    follows_location = False
    """Whether each PATCH of a chunked upload answers with the URL of the next."""

    def __init__(self, work: Path, logs: Path) -> None:
        self.work = work
        self.logs = logs
        self.data = work / f"data-{self.key}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.base = ""
        self.starts = 0
        self.headers: dict[str, str] = {}
        """Sent with every request to this target (our server's token)."""

    def measures(self, step: str) -> bool:
        """Whether this target takes part in ``step`` (every real server takes part in all)."""
        return True

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

    def chunk_headers(self, offset: int, length: int) -> dict[str, str]:
        """The headers that place one PATCH of a chunked upload."""
        raise NotImplementedError

    def _patch_chunks(
        self, client: httpx.Client, location: str, src: Source, chunk: int, status: int
    ) -> str:
        """PATCH ``src`` to ``location`` in ``chunk``-byte requests; returns the upload's URL.

        With ``follows_location`` each answer's ``Location`` is where the next
        chunk goes (the registry's protocol); else the URL stays the same.
        """
        for offset in range(0, src.size, chunk):
            n = min(chunk, src.size - offset)
            r = client.patch(
                location,
                content=stream_body(src, offset, n),
                headers={**self.chunk_headers(offset, n), "Content-Length": str(n)},
            )
            check_status(r, status)
            if self.follows_location:
                location = str(httpx.URL(self.base).join(r.headers["location"]))
        return location

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
                check_status(r, 200)
            got = 0
            for piece in r.iter_raw():
                got += len(piece)
            header = r.headers.get("docker-content-digest")
        if got != size:
            raise RuntimeError(f"{self.label}: downloaded {got} bytes, expected {size}")
        if sha is not None and header != f"sha256:{sha}":
            raise RuntimeError(f"{self.label}: download has digest {header}, expected {sha}")


class Ours(Target):
    """``artifactstore serve`` on a fresh ARTIFACTSTORE_HOME: every request carries the
    admin token it prints on its first start (``auth``), or ``--no-auth``."""

    def __init__(
        self,
        work: Path,
        logs: Path,
        server: str,
        workers: int,
        option: str = "--server",
        *,
        auth: bool = True,
    ) -> None:
        self.key = server
        self.label = f"ours ({server})"
        self.server = server
        self.workers = workers
        self.option = option
        self.auth = auth
        super().__init__(work, logs)

    @property
    def auth_label(self) -> str:
        return "(a token on every request)" if self.auth else "--no-auth"

    def start(self) -> None:
        """Start as every target does, then take the admin token it printed."""
        self.headers = {}
        super().start()
        if not self.auth:
            return
        log = (self.logs / f"{self.key}.log").read_text(encoding="utf-8", errors="replace")
        tokens = re.findall(r"ARTIFACTSTORE_TOKEN=(ast_\S+)", log)
        if not tokens:
            raise RuntimeError(f"{self.label} printed no admin token:\n{log[-2000:]}")
        self.headers = {"Authorization": f"Bearer {tokens[-1]}"}

    def argv(self) -> list[str]:
        return [
            str(venv_cli("artifactstore")),
            "serve",
            *([] if self.auth else ["--no-auth"]),
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

    def oneshot_digest(self, sha: str) -> str:
        """The ``?digest=`` a one-shot upload names (the registry's kind: SHA-256)."""
        return f"sha256:{sha}"

    def upload_oneshot(self, client: httpx.Client, src: Source, sha: str) -> str:
        r = client.post(
            f"{self.base}/v1/blobs",
            params={"digest": self.oneshot_digest(sha)},
            content=stream_body(src, 0, src.size),
            headers={"Content-Length": str(src.size), "Content-Type": OCTETS},
        )
        body = check_status(r, 201).json()
        if body["sha256"] != f"sha256:{sha}" or body["size"] != src.size:
            raise RuntimeError(f"{self.label}: stored {body}, expected sha256:{sha}")
        return str(body["digest"])

    def chunk_headers(self, offset: int, length: int) -> dict[str, str]:
        return {"Content-Type": OFFSET_TYPE, "Upload-Offset": str(offset)}

    def upload_chunked(self, client: httpx.Client, src: Source, sha: str, chunk: int) -> str:
        r = check_status(
            client.post(f"{self.base}/v1/uploads", headers={"Upload-Length": str(src.size)}),
            201,
        )
        location = str(httpx.URL(self.base).join(r.headers["location"]))
        location = self._patch_chunks(client, location, src, chunk, 204)
        # The session completed itself with the last byte; this checks the digest
        # (as the registry's closing PUT ?digest= does) and returns both digests.
        r = check_status(
            client.post(f"{location}/complete", params={"digest": f"sha256:{sha}"}), 200
        )
        return str(r.json()["digest"])

    def upload_small(self, client: httpx.Client, data: bytes, sha: str) -> str:
        r = client.post(
            f"{self.base}/v1/blobs",
            params={"digest": f"sha256:{sha}"},
            content=data,
            headers={"Content-Type": OCTETS},
        )
        return str(check_status(r, 201).json()["digest"])

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
    follows_location = True

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
        r = check_status(client.post(f"{self.base}/v2/{REGISTRY_REPO}/blobs/uploads/"), 202)
        return str(httpx.URL(self.base).join(r.headers["location"]))

    def _close_upload(self, r: httpx.Response, sha: str) -> str:
        check_status(r, 201)
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

    def chunk_headers(self, offset: int, length: int) -> dict[str, str]:
        return {"Content-Type": OCTETS, "Content-Range": f"{offset}-{offset + length - 1}"}

    def upload_chunked(self, client: httpx.Client, src: Source, sha: str, chunk: int) -> str:
        location = self._patch_chunks(client, self._start_upload(client), src, chunk, 202)
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
