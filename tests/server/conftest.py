"""The server HTTP tests talk to, shared per test module.

``server`` is the app ``serve --no-auth`` runs, in this process
(:class:`tests.server.inprocess.InProcessServer`): no socket, no process
start. ``live_server`` is a real ``artifactstore serve --no-auth`` process on
loopback (:class:`Server`), for what only a real server shows: raw sockets
and request framing, slow clients, header bounds (``server/wire.py``),
SIGKILL, zero-copy sends, and clients in other processes (the CLI, tuspy,
RemoteStore). Both have the same interface, and both read the module's
``server_env`` fixture (override it in a module to change the settings); a
module that needs a real process for all its tests overrides ``server`` to
return ``live_server``. Each is started once per module, the live one only
if a test asks for it (a start costs 1-2 s). Tests that kill the server call
:meth:`Server.restart`, which brings it back on the same port and data
directory, so later tests of the module still have a server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from artifactstore.model.identity import Digest, Reference
from artifactstore.model.manifest import FileEntry, Manifest, media_type_for
from artifactstore.model.paths import PackagePath
from artifactstore.store import Store
from tests.conftest import ARTIFACTSTORE, Cli, tls
from tests.matrix import STORE_VARIABLES, StoreConfigs, store_overrides
from tests.server.inprocess import InProcessServer, LogFile, bearer

__all__ = [
    "InProcessServer",
    "Server",
    "assert_problem",
    "digests_of",
    "entry_for",
    "free_port",
    "make_manifest",
    "push",
    "put_manifest",
    "raw_http",
    "upload_blob",
]

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server(LogFile):
    """One server process: its URL, data directory, environment and stderr log.

    ``no_auth`` is ``serve --no-auth``; without it the first start over a new database
    prints the bootstrap admin token (:attr:`admin`) to the log.
    """

    def __init__(
        self,
        home: Path,
        workdir: Path,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        *,
        no_auth: bool = True,
    ) -> None:
        self.args = list(args)  # more options of ``serve``
        self.no_auth = no_auth
        self.home = home
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
        self.env.update({"ARTIFACTSTORE_HOME": str(home), **env})
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(ARTIFACTSTORE),
                    "serve",
                    *(["--no-auth"] if self.no_auth else []),
                    "--workers",  # one process: tests read its metrics, logs and caches
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(f"{self.base_url}/health", timeout=2.0, verify=tls())
                if ready.status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"server did not answer /health within {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after 10 s."""
        if self.process is None:
            return
        proc, self.process = self.process, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: the crash a restart must survive."""
        if self.process is None:
            return
        proc, self.process = self.process, None
        proc.kill()
        proc.wait(10)

    def restart(self, *, hard: bool = True) -> None:
        """Kill (or stop) the server and start it again on the same port and data directory."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    # --- helpers --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def admin(self) -> str:
        """The bootstrap admin token's secret, as the first start printed it."""
        match = re.search(r"ARTIFACTSTORE_TOKEN=(ast_\S+)", self.log())
        assert match is not None, "no admin token: --no-auth, or not this server's database"
        return match.group(1)

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        """An httpx client of the server (``token``: as a bearer of that token)."""
        return httpx.Client(base_url=self.base_url, timeout=60.0, verify=tls(), **bearer(token, kw))

    def open_store(self, **overrides: Any) -> Store:
        """The store this server serves, opened beside it (its database and storage)."""
        return Store.open(self.home, **{**store_overrides(self.env), **overrides})

    def local_cli(self, cwd: Path) -> Cli:
        """The CLI in local mode on the store this server serves, run from ``cwd``."""
        runner = Cli(self.home, cwd)
        runner.env.update({k: v for k, v in self.env.items() if k in STORE_VARIABLES})
        return runner


@contextlib.contextmanager
def serving(tmp_path: Path, env: Mapping[str, str]) -> Iterator[Server]:
    """A started ``serve`` with its data under ``tmp_path/home``, stopped on the way out."""
    server = Server(tmp_path / "home", tmp_path, env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem document with our keys, whose ``status`` is the HTTP status."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    for key in ("type", "title", "status", "detail", "code"):
        assert key in body, (key, body)
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["type"].endswith(body["code"])
    if code is not None:
        assert body["code"] == code, body
    assert response.headers.get("x-request-id"), "no X-Request-Id"
    return body


def raw_http(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh socket and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and _complete(out):
                    break
        return out


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """Settings of this module's servers (override in a module to change them)."""
    return {}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    server_env: dict[str, str],
    store_configs: StoreConfigs,
) -> Iterator[InProcessServer | Server]:
    """The module's server, in this process (a module may return ``live_server`` instead)."""
    workdir = tmp_path_factory.mktemp("server")
    srv = InProcessServer(workdir / "home", workdir, {**store_configs.new().env(), **server_env})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory,
    server_env: dict[str, str],
    store_configs: StoreConfigs,
) -> Iterator[Server]:
    """The module's real server process (its own data directory)."""
    workdir = tmp_path_factory.mktemp("live-server")
    srv = Server(workdir / "home", workdir, {**store_configs.new().env(), **server_env})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def http(server: InProcessServer | Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def live_http(live_server: Server) -> Iterator[httpx.Client]:
    with live_server.client() as client:
        yield client


# --- building packages over HTTP ---------------------------------------------------------


def digests_of(data: bytes) -> tuple[str, str]:
    """(blake3, sha256) content addresses of ``data``."""
    return (
        f"blake3:{blake3.blake3(data).hexdigest()}",
        f"sha256:{hashlib.sha256(data).hexdigest()}",
    )


def entry_for(path: str, data: bytes, media_type: str = "application/octet-stream") -> FileEntry:
    b3, sha = digests_of(data)
    return FileEntry(PackagePath(path), len(data), media_type, Digest.parse(b3), Digest.parse(sha))


def post_blob(client: httpx.Client, data: bytes, namespace: str = "ci") -> httpx.Response:
    """A one-shot upload, whatever the server answers."""
    return client.post("/v1/blobs", params={"namespace": namespace}, content=data)


def upload_blob(client: httpx.Client, data: bytes, namespace: str = "ci") -> dict[str, Any]:
    response = post_blob(client, data, namespace)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def make_manifest(
    ref: str,
    files: Mapping[str, bytes],
    *,
    metadata: Mapping[str, Any] | None = None,
    variant: str | None = None,
    created: str = "2024-01-01T00:00:00Z",
) -> Manifest:
    r = Reference.parse(ref)
    assert r.version is not None
    return Manifest.build(
        r.namespace,
        r.name,
        r.version,
        [entry_for(p, d, media_type_for(p)) for p, d in files.items()],
        created=created,
        producer="tests",
        variant=variant,
        metadata=dict(metadata or {}),
    )


def put_manifest(client: httpx.Client, manifest: Manifest, *, cbor: bool = True) -> httpx.Response:
    url = f"/v1/packages/{manifest.namespace}/{manifest.name}/{manifest.version}"
    if cbor:
        return client.put(
            url, content=manifest.to_cbor(), headers={"Content-Type": "application/cbor"}
        )
    return client.put(url, content=manifest.to_json(), headers={"Content-Type": "application/json"})


def push(
    client: httpx.Client,
    ref: str,
    files: Mapping[str, bytes],
    *,
    metadata: Mapping[str, Any] | None = None,
    variant: str | None = None,
) -> tuple[Manifest, dict[str, Any]]:
    """Upload the files' bytes, then commit the manifest; returns it and the 201 body."""
    manifest = make_manifest(ref, files, metadata=metadata, variant=variant)
    for data in files.values():
        upload_blob(client, data, str(manifest.namespace))
    response = put_manifest(client, manifest)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return manifest, body
