"""docs/deploy.md's nginx configuration works: taken from the page, in front of two replicas.

The ``nginx`` block of the page is extracted as written; only the replica
addresses, the listening address and the certificate paths are substituted
(each must occur exactly once, so a change of the page that the test would
miss fails it instead). Two ``serve`` processes share one PostgreSQL database
and one storage directory. Through nginx (TLS): pushes land on both
replicas, a 48 MiB upload streams through and pulls back identical, the
event stream delivers a commit live (a buffering proxy would hold it back),
the CLI pushes and pulls, and the replicas log the client's address from
``X-Forwarded-For``, not the proxy's. nginx comes from Debian (``make
test-deps``); without it the test skips, and fails under CI.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from httpx_sse import EventSource

from tests import pg
from tests.cli.remote import run_remote
from tests.server.conftest import Server, free_port, push

DOC = Path(__file__).parent.parent / "docs" / "deploy.md"
#: The address the test client connects from: not a trusted proxy, unlike nginx's 127.0.0.1.
CLIENT_ADDRESS = "127.0.0.3"
#: What the client claims to be in its own X-Forwarded-For: the replicas must not believe it.
FORGED = "203.0.113.9"
LARGE = 48 << 20


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "nginx is not installed (Debian package nginx: run 'make test-deps' as root)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this fails instead of skipping)")
        pytest.skip(message)
    return found


def doc_config() -> str:
    """The page's one ``nginx`` block."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/deploy.md should hold exactly one nginx block"
    return str(blocks[0])


def _substitute(config: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert config.count(old) == 1, f"{old!r} should occur once in deploy.md's nginx block"
        config = config.replace(old, new)
    return config


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "artifacts.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Nginx:
    """nginx running the page's configuration inside a minimal main configuration."""

    def __init__(self, workdir: Path, replicas: list[int]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.cert, key = _certificate(workdir)
        site = _substitute(
            doc_config(),
            {
                "server 10.0.0.11:8000": f"server 127.0.0.1:{replicas[0]}",
                "server 10.0.0.12:8000": f"server 127.0.0.1:{replicas[1]}",
                "listen 443 ssl;": f"listen 127.0.0.1:{self.port} ssl;",
                "/etc/ssl/certs/artifacts.example.org.pem": str(self.cert),
                "/etc/ssl/private/artifacts.example.org.key": str(key),
            },
        )
        (workdir / "artifactstore.conf").write_text(site)
        temp = {kind: workdir / kind for kind in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir()
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the test's files
        (workdir / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n  access_log {workdir}/access.log;\n"
            + "".join(f"  {kind}_temp_path {path};\n" for kind, path in temp.items()).replace(
                "body_temp_path", "client_body_temp_path"
            )
            + f"  include {workdir}/artifactstore.conf;\n}}\n"
        )
        self.process = subprocess.Popen(
            [_nginx(), "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "stderr.log").open("wb"),
        )
        deadline = time.monotonic() + 15
        while True:
            assert self.process.poll() is None, self.errors()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, self.errors()
                time.sleep(0.05)
        self.base_url = f"https://127.0.0.1:{self.port}"

    def errors(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in (self.workdir / "stderr.log", self.workdir / "error.log")
            if p.exists()
        )

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.cert))
        transport = httpx.HTTPTransport(verify=context, local_address=CLIENT_ADDRESS)
        forged = {"X-Forwarded-For": FORGED}
        return httpx.Client(
            base_url=self.base_url, transport=transport, timeout=60.0, headers=forged
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Nginx, list[Server]]]:
    _nginx()
    with pg.new_database() as database:
        env = {
            "ARTIFACTSTORE_DATABASE_URL": database,
            "ARTIFACTSTORE_STORAGE_URL": f"file://{tmp_path / 'shared' / 'storage'}",
            "ARTIFACTSTORE_COLD_STORAGE_URL": f"file://{tmp_path / 'shared' / 'cold'}",
            "ARTIFACTSTORE_TRUSTED_PROXIES": "127.0.0.1",
        }
        replicas = []
        for i in (1, 2):
            (tmp_path / f"r{i}").mkdir()
            replicas.append(Server(tmp_path / f"r{i}" / "home", tmp_path / f"r{i}", env))
        try:
            for srv in replicas:
                srv.start()
            (tmp_path / "nginx").mkdir()
            proxy = Nginx(tmp_path / "nginx", [srv.port for srv in replicas])
            try:
                yield proxy, replicas
            finally:
                proxy.stop()
        finally:
            for srv in replicas:
                srv.stop()


def _streamed(total: int, seed: bytes) -> Iterator[bytes]:
    block = hashlib.shake_256(seed).digest(1 << 20)
    for _ in range(total // len(block)):
        yield block


def _expected_digest(total: int, seed: bytes) -> str:
    h = hashlib.sha256()
    for chunk in _streamed(total, seed):
        h.update(chunk)
    return h.hexdigest()


def test_nginx_config_of_the_docs(layout: tuple[Nginx, list[Server]], tmp_path: Path) -> None:
    proxy, replicas = layout
    with proxy.client() as c:
        assert c.get("/ready").json()["status"] == "ready"

        # The stream first: a commit made through the proxy must arrive while it is open.
        seen: list[str] = []
        opened = threading.Event()

        def follow() -> None:
            with proxy.client() as s, s.stream("GET", "/v1/events/stream") as r:
                assert r.status_code == 200, r.read()
                opened.set()
                for event in EventSource(r).iter_sse():
                    seen.append(event.data)
                    if "streamed" in event.data:
                        return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert opened.wait(15), proxy.errors()

        pushed = {}
        for i in range(6):
            ref = f"ci/app:1.{i}"
            pushed[ref] = {"f.bin": secrets.token_bytes(4096), "g.txt": ref.encode() * 20}
            push(c, ref, pushed[ref])
        push(c, "ci/streamed:1", {"s.txt": b"live"})
        follower.join(15)
        assert not follower.is_alive(), f"the commit did not arrive through the proxy: {seen}"

        for ref, files in pushed.items():
            name, version = ref.split(":")
            for path, data in files.items():
                assert c.get(f"/v1/packages/{name}/{version}/files/{path}").content == data

        # A large upload streams through (no body size limit, no spooling) and back.
        seed = secrets.token_bytes(8)
        up = c.post(
            "/v1/blobs",
            params={"namespace": "ci"},
            content=_streamed(LARGE, seed),
            headers={"Content-Length": str(LARGE)},
        )
        assert up.status_code in (200, 201), up.text
        assert up.json()["size"] == LARGE
        digest = hashlib.sha256()
        with c.stream("GET", f"/v1/blobs/{up.json()['digest']}") as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                digest.update(chunk)
        assert digest.hexdigest() == _expected_digest(LARGE, seed)
        assert up.json()["sha256"].removeprefix("sha256:") == digest.hexdigest()

    # Both replicas served, and each logged the client's address: not nginx's, and not
    # the one the client forged in its own X-Forwarded-For.
    for srv in replicas:
        served = [r for r in srv.access_log() if r.get("path", "").startswith("/v1/")]
        assert served, f"replica {srv.port} got no request through the proxy"
        assert {r["client"] for r in served} == {CLIENT_ADDRESS}, served[:3]

    # The CLI through the proxy (trusting the test's certificate).
    src = tmp_path / "cli-src"
    src.mkdir()
    (src / "a.bin").write_bytes(secrets.token_bytes(10_000))
    trust = {"SSL_CERT_FILE": str(proxy.cert)}
    pushed_cli = run_remote(tmp_path, proxy.base_url, ("push", "ci/cli:1", str(src)), **trust)
    assert pushed_cli.code == 0, pushed_cli
    pulled = run_remote(tmp_path, proxy.base_url, ("pull", "ci/cli:1", "-o", "out"), **trust)
    assert pulled.code == 0, pulled
    assert (tmp_path / "out" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
