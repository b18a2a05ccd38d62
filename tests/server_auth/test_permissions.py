"""Tokens and namespace permissions against the server with authentication on.

The module's server is the app ``serve`` runs, in this process
(:class:`tests.server.inprocess.InProcessServer`, with its bootstrap admin
token); the test that pushes with the CLI uses a real server process
(``live_server``). The permission matrix is generated from
``server.auth.ROUTE_SCOPES``: a route added without an entry fails
``create_app``, and an entry without a sample request here fails
:func:`test_every_route_has_a_sample_request`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from artifactstore.client.remote import RemoteStore
from artifactstore.server.auth import ROUTE_SCOPES
from tests.conftest import ARTIFACTSTORE, http_server, tls
from tests.matrix import StoreConfigs
from tests.server.conftest import free_port, push
from tests.server.inprocess import InProcessServer
from tests.stored import Stored

pytestmark = pytest.mark.configs("embedded", "scaleout")

# --- the server ------------------------------------------------------------------------------


@dataclass
class AuthServer:
    url: str
    home: Path
    log: Path
    process: subprocess.Popen[bytes]
    admin: str
    env: dict[str, str]  # the server's environment: where its store is

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=tls(), **kw)


def _start(home: Path, log: Path, extra_env: dict[str, str]) -> AuthServer:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env.update({"ARTIFACTSTORE_HOME": str(home), **extra_env})
    out = log.open("ab")
    process = subprocess.Popen(
        [str(ARTIFACTSTORE), "serve", "--workers", "1", "--host", "127.0.0.1", "--port", str(port)],
        stdout=out,
        stderr=out,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1, verify=tls()).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")
    match = re.search(r"ARTIFACTSTORE_TOKEN=(ast_\S+)", log.read_text())
    assert match is not None, "the first start must print an admin token"
    return AuthServer(url, home, log, process, match.group(1), env)


SERVER_ENV = {"ARTIFACTSTORE_AUTH_FAILURES_PER_MINUTE": "100000", "ARTIFACTSTORE_GC_GRACE": "1h"}


def _stop(server: AuthServer) -> None:
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def in_process_server(root: Path, env: Mapping[str, str] = SERVER_ENV) -> Iterator[InProcessServer]:
    """The app ``serve`` runs with authentication on, in this process, over ``root/home``."""
    srv = InProcessServer(root / "home", root, env, no_auth=False)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_configs: StoreConfigs
) -> Iterator[InProcessServer]:
    env = {**store_configs.new().env(), **SERVER_ENV}
    with in_process_server(tmp_path_factory.mktemp("authserver"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, store_configs: StoreConfigs
) -> Iterator[AuthServer]:
    """A server process, for the CLI (its own data directory and database)."""
    root = tmp_path_factory.mktemp("live-authserver")
    srv = _start(root / "home", root / "server.log", {**store_configs.new().env(), **SERVER_ENV})
    yield srv
    _stop(srv)


def _client(server: AuthServer | InProcessServer, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return server.client(headers=headers, timeout=30)


def _token(
    server: AuthServer | InProcessServer, name: str, scopes: list[str], **extra: object
) -> tuple[str, str]:
    with _client(server, server.admin) as c:
        r = c.post("/v1/tokens", json={"name": name, "scopes": scopes, **extra})
        assert r.status_code == 201, r.text
        body = r.json()
        return body["id"], body["secret"]


def _push(server: AuthServer, token: str, ref: str, tree: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTSTORE_")}
    env.update({"ARTIFACTSTORE_URL": server.url, "ARTIFACTSTORE_TOKEN": token})
    env["XDG_CACHE_HOME"] = str(tree.parent / "cache")
    return subprocess.run(
        [str(ARTIFACTSTORE), "push", ref, str(tree)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# --- the world the matrix runs in ---------------------------------------------------------------


@dataclass
class World:
    tokens: dict[str, str | None]  # principal kind -> secret (None: no credentials)
    digest: str
    upload_id: str
    spare_token_id: str


PRINCIPALS = (
    "none",
    "bad",
    "expired",
    "revoked",
    "read",
    "write",
    "delete",
    "other_admin",
    "global_admin",
)


@pytest.fixture(scope="module")
def world(server: InProcessServer) -> World:
    _, writer = _token(server, "setup", ["ci:write", "ci:read"])
    with _client(server, writer) as c:
        for version in ("1", "2"):  # the matrix deletes version 2; version 1 stays for later
            push(c, f"ci/app:{version}", {"a.txt": b"hi"})  # the blob, then the manifest
    with _client(server, server.admin) as c:
        digest = c.get("/v1/packages/ci/app/1").json()["manifest"]["files"][0]["digests"]["blake3"]
        c.put("/v1/schemas/ci.build.v1", json={"type": "object"})
        upload = c.post("/v1/uploads?namespace=ci", headers={"Upload-Length": "3"})
        upload_id = upload.headers["Location"].rsplit("/", 1)[1]
    _, expired = _token(server, "expired", ["ci:read"], expires_in=0.001)
    revoked_id, revoked = _token(server, "revoked", ["ci:read"])
    with _client(server, server.admin) as c:
        assert c.delete(f"/v1/tokens/{revoked_id}").status_code == 200
    spare_id, _ = _token(server, "spare", ["ci:read"])
    tokens: dict[str, str | None] = {
        "none": None,
        "bad": "ast_" + "a" * 16 + "_" + "B" * 43,
        "expired": expired,
        "revoked": revoked,
        "read": _token(server, "reader", ["ci:read"])[1],
        "write": _token(server, "writer", ["ci:write"])[1],
        "delete": _token(server, "deleter", ["ci:delete"])[1],
        "other_admin": _token(server, "qa-admin", ["qa:admin"])[1],
        "global_admin": server.admin,
    }
    time.sleep(0.01)  # the expired token is past its lifetime
    return World(tokens, digest, upload_id, spare_id)


def _sample(method: str, path: str, w: World) -> tuple[str, dict[str, object]]:
    """A concrete request for a route template (bodies are valid where it matters little)."""
    url = (
        path.replace("{digest}", w.digest)
        .replace("{ns}", "ci")
        .replace("{name}", "app")
        .replace("{version}", "1")
        .replace("{path:path}", "a.txt")
        .replace("{upload_id}", w.upload_id)
        .replace("{schema_id}", "ci.build.v1")
        .replace("{token_id}", w.spare_token_id)
    )
    if method == "DELETE" and path == "/v1/packages/{ns}/{name}/{version}":
        url = url.removesuffix("/1") + "/2"
    if ROUTE_SCOPES[(method, path)][1] == "query:namespace":
        url += "?namespace=ci"
    url += {"/v1/log/proof/inclusion": "?seq=1", "/v1/log/proof/consistency": "?old=1"}.get(
        path, ""
    )
    kwargs: dict[str, object] = {}
    if method in ("PUT", "POST", "PATCH"):
        kwargs["content"] = b"{}"
        kwargs["headers"] = {"Content-Type": "application/json"}
    if path == "/v1/uploads/{upload_id}" and method == "PATCH":
        kwargs["headers"] = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        }
        kwargs["content"] = b"x"
    # Retention and holds: bodies that succeed for an allowed caller, and touch nothing
    # later rows need (the lock goes on a namespace of its own: it is irreversible).
    if path.endswith("/holds") and method == "POST":
        kwargs["content"] = b'{"reason": "permission matrix"}'
    if path.endswith("/holds") and method == "DELETE":
        url += "?reason=permission+matrix"
    if path == "/v1/namespaces/{ns}/retention" and method == "PUT":
        kwargs["content"] = b'{"package": "app", "policy": {"keep_last": 100}}'
    if path == "/v1/namespaces/{ns}/retention/lock":
        url = url.replace("/ci/", "/matrix-lock/")
        kwargs["content"] = b'{"keep_days": 1}'
    if path == "/v1/retention/apply":
        url += "?dry_run=true"
    if path == "/v1/events/stream":  # an allowed stream would never end: refused after auth
        kwargs["headers"] = {"Last-Event-ID": "not-a-seq"}
    return url, kwargs


def _allowed(action: str, ns_source: str, principal: str) -> bool:
    if action == "public" or principal == "global_admin":
        return True
    if principal in ("none", "bad", "expired", "revoked"):
        return False
    if action == "authenticated":
        return True
    if action == "exists":  # HEAD of a blob: whether the namespace holds it
        return principal in ("read", "write")
    if action == "admin":
        return False  # global-admin routes, or admin of ci (qa:admin is not)
    return principal == action  # ci:read reads, ci:write writes, ci:delete deletes


def test_every_route_has_a_sample_request(world: World) -> None:
    for method, path in ROUTE_SCOPES:
        url, _ = _sample(method, path, world)
        assert "{" not in url, f"no sample value for a parameter of {method} {path}"


# Mutating routes run last so that earlier rows see the world intact.
_ORDER = sorted(ROUTE_SCOPES, key=lambda k: (k[0] == "DELETE", k[0] != "GET", k))


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize(("method", "path"), _ORDER, ids=[f"{m} {p}" for m, p in _ORDER])
def test_permission_matrix(
    server: InProcessServer, world: World, method: str, path: str, principal: str
) -> None:
    action, source = ROUTE_SCOPES[(method, path)]
    url, kwargs = _sample(method, path, world)
    with _client(server, world.tokens[principal]) as c:
        response = c.request(method, url, **kwargs)  # type: ignore[arg-type]
    assert response.status_code < 500, response.text
    if _allowed(action, source, principal):
        assert response.status_code not in (401, 403), (principal, response.text)
    elif principal in ("none", "bad", "expired", "revoked"):
        assert response.status_code == 401, (principal, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    else:  # valid token without the scope; upload sessions of another namespace are absent
        expected = {403, 404} if path.startswith("/v1/uploads/{") else {403}
        assert response.status_code in expected, (principal, response.text)


def test_head_follows_get(server: InProcessServer, world: World) -> None:
    for principal in ("none", "read", "other_admin"):
        with _client(server, world.tokens[principal]) as c:
            get = c.get(f"/v1/blobs/{world.digest}?namespace=ci")
            head = c.head(f"/v1/blobs/{world.digest}?namespace=ci")
        assert head.status_code == get.status_code


# --- blob visibility ------------------------------------------------------------------------------


def test_a_digest_is_not_a_capability(live_server: AuthServer, tmp_path: Path) -> None:
    server = live_server  # the pushes are the CLI's, in a process of their own
    _, a_token = _token(server, "a-bot", ["a:write", "a:read"])
    _, b_token = _token(server, "b-bot", ["b:write", "b:read"])
    secret_bytes = b"only b has these bytes " * 100
    tree = _tree(tmp_path / "b", {"secret.bin": secret_bytes})
    assert _push(server, b_token, "b/pkg:1", tree).returncode == 0
    with _client(server, server.admin) as c:
        entry = c.get("/v1/packages/b/pkg/1").json()["manifest"]["files"][0]
    blake, sha = entry["digests"]["blake3"], entry["digests"]["sha256"]
    with _client(server, a_token) as a:
        absent = a.get("/v1/blobs/blake3:" + "0" * 64 + "?namespace=a")
        for url in (
            f"/v1/blobs/{blake}?namespace=a",
            f"/v1/blobs/{sha}?namespace=a",
            f"/v1/blobs/{blake}",
        ):
            for method in ("HEAD", "GET"):
                r = a.request(method, url)
                assert r.status_code == 404, (method, url)
            ranged = a.get(url, headers={"Range": "bytes=0-9"})
            assert ranged.status_code == 404
            assert ranged.json()["code"] == absent.json()["code"]
        assert a.get("/v1/packages/b/pkg/1/files/secret.bin").status_code == 403
        assert a.get("/v1/packages/b/pkg/1/archive").status_code == 403
        assert a.get("/v1/packages/b/pkg/1").status_code == 403
        assert a.get("/v1/packages?namespace=b").status_code == 403
        assert all(i["namespace"] == "a" for i in a.get("/v1/packages").json()["items"])
        # Referencing b's blob by digest alone does not work either.
        put = a.put(
            "/v1/packages/a/steal/1",
            json={
                "schema": "artifactstore.manifest.v1",
                "package": {"namespace": "a", "name": "steal", "version": "1"},
                "files": [
                    {
                        "path": "x",
                        "size": entry["size"],
                        "media_type": "application/octet-stream",
                        "digests": entry["digests"],
                    }
                ],
                "variant": None,
                "metadata": {},
                "annotations": {},
                "created": "2026-01-01T00:00:00Z",
                "producer": "test",
            },
        )
        assert put.status_code == 409 and put.json()["missing"] == [blake]
    # Proof of possession: a pushes the same bytes; stored once, now visible to a.
    assert (
        _push(
            server, a_token, "a/pkg:1", _tree(tmp_path / "a", {"mine.bin": secret_bytes})
        ).returncode
        == 0
    )
    with _client(server, a_token) as a:
        assert a.head(f"/v1/blobs/{blake}?namespace=a").status_code == 200
        assert (
            a.get(f"/v1/blobs/{blake}?namespace=a", headers={"Range": "bytes=0-9"}).content
            == secret_bytes[:10]
        )
    # Stored once: one object holds the bytes (a pack of b's push: small files are batched).
    stored = Stored.at(server.home, server.env)
    keys = stored.keys()
    assert len([k for k in keys if secret_bytes in stored.read(k)]) == 1


def test_a_write_only_token_pushes_with_the_cli(live_server: AuthServer, tmp_path: Path) -> None:
    _, writer = _token(live_server, "ci-pusher", ["ci:write"])
    files = {"bin/tool": b"tool " * 1000, "README": b"read me"}
    first = _push(live_server, writer, "ci/tool:1", _tree(tmp_path / "one", files))
    assert first.returncode == 0, first.stderr
    # Again with the same bytes: the existence checks say "held" and nothing is re-sent.
    uploads = _uploads(live_server)
    assert uploads >= 1  # both files in one batch
    second = _push(live_server, writer, "ci/tool:2", _tree(tmp_path / "two", files))
    assert second.returncode == 0, second.stderr
    assert _uploads(live_server) == uploads
    with _client(live_server, live_server.admin) as admin:
        for version in ("1", "2"):
            assert admin.get(f"/v1/packages/ci/tool/{version}").status_code == 200


def _uploads(server: AuthServer) -> int:
    """Upload requests in the server's access log so far."""
    lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
    return sum(
        1
        for e in lines
        if e.get("method") == "POST"
        and e.get("route") in ("/v1/blobs", "/v1/blobs/batch", "/v1/uploads")
    )


def _refusing_head_proxy(upstream: str, refused: list[str]) -> type[BaseHTTPRequestHandler]:
    """A proxy to ``upstream`` that answers every blob ``HEAD`` 403, as a server did
    before writers could ask about their namespace's blobs (``refused`` lists them)."""
    client = httpx.Client(base_url=upstream, verify=tls(), timeout=60)
    hop = {"host", "content-length", "connection", "transfer-encoding", "content-encoding"}

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            headers: Mapping[str, str] = {}
            if self.command == "HEAD" and self.path.startswith("/v1/blobs/"):
                refused.append(self.path)
                status, body = 403, b""
            else:
                sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = client.request(
                    self.command,
                    self.path,
                    content=sent,
                    headers={k: v for k, v in self.headers.items() if k.lower() not in hop},
                )
                status, headers, body = answer.status_code, answer.headers, answer.content
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in hop:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        def log_message(self, *_args: object) -> None:
            pass

    return Proxy


def test_a_write_only_push_needs_no_existence_check(
    live_server: AuthServer, tmp_path: Path
) -> None:
    """Against a server that answers a writer's ``HEAD`` 403 (one from before writers
    could ask), the push works: it never asks, the commit's 409 names what to send."""
    _, writer = _token(live_server, "legacy-pusher", ["legacy:write"])
    files = {"bin/tool": b"legacy " * 1000, "README": b"read me"}
    refused: list[str] = []
    with (
        http_server(_refusing_head_proxy(live_server.url, refused)) as url,
        RemoteStore(url, token=writer, state_path=tmp_path / "sessions.json") as remote,
    ):
        result = remote.push("legacy/tool:1", [_tree(tmp_path / "tree", files)])
    assert refused == []  # no HEAD was sent ...
    assert result.created and result.blobs_stored == len(files)  # ... and each blob was
    with _client(live_server, live_server.admin) as admin:
        assert admin.get("/v1/packages/legacy/tool/1").status_code == 200


def test_revocation_is_effective_on_the_next_request(server: InProcessServer) -> None:
    token_id, secret = _token(server, "short-lived", ["ci:read"])
    with _client(server, secret) as c:
        assert c.get("/v1/packages?namespace=ci").status_code == 200
        with _client(server, server.admin) as admin:
            assert admin.delete(f"/v1/tokens/{token_id}").status_code == 200
        assert c.get("/v1/packages?namespace=ci").status_code == 401


def test_basic_auth_carries_the_token_as_password(server: InProcessServer, world: World) -> None:
    creds = base64.b64encode(f"anyone:{world.tokens['read']}".encode()).decode()
    with _client(server, None) as c:
        r = c.get("/v1/packages/ci/app/1", headers={"Authorization": f"Basic {creds}"})
    assert r.status_code == 200


def test_no_existence_leak_to_callers_without_read(server: InProcessServer, world: World) -> None:
    with _client(server, world.tokens["other_admin"]) as c:
        real = c.get("/v1/packages/ci/app/1")
        missing = c.get("/v1/packages/ci/nothing/9")
        no_ns = c.get("/v1/packages/nosuchns/app/1")
    assert real.status_code == missing.status_code == 403
    assert real.json()["detail"] == missing.json()["detail"]
    assert no_ns.status_code == 403


def test_anonymous_read_when_the_namespace_allows_it(server: InProcessServer, world: World) -> None:
    anon = _client(server, None)
    assert anon.get("/v1/packages/ci/app/1").status_code == 401
    with _client(server, server.admin) as admin:
        assert admin.put("/v1/namespaces/ci", json={"anonymous_read": True}).status_code == 200
    try:
        assert anon.get("/v1/packages/ci/app/1").status_code == 200
        assert anon.put("/v1/packages/ci/app/2", content=b"{}").status_code == 401
    finally:
        with _client(server, server.admin) as admin:
            admin.put("/v1/namespaces/ci", json={"anonymous_read": False})
    assert anon.get("/v1/packages/ci/app/1").status_code == 401


def test_actor_of_every_mutation_survives_rebuild(server: InProcessServer, world: World) -> None:
    with _client(server, server.admin) as c:
        events = c.get("/v1/events?limit=1000").json()["events"]
    assert all(e["actor"] for e in events)
    actors = {e["actor"] for e in events if e["type"] == "package.committed"}
    assert any(a.startswith("token:setup#") for a in actors)
    server.stop()  # a clean shutdown, as SIGTERM
    try:
        with server.open_store(create=False) as store:
            before = [(e.seq, e.actor) for e in store.events()]
            store.rebuild()
            rebuilt = [(r.reference, r.actor) for r in store.iter_query()]
            assert [(e.seq, e.actor) for e in store.events()] == before
            assert "ci/app:1" in {str(ref) for ref, _ in rebuilt}
            assert all(actor.startswith("token:") for _, actor in rebuilt)
    finally:
        server.start()


def test_secrets_never_reach_logs_errors_metrics_or_events(
    server: InProcessServer, world: World
) -> None:
    secrets = [s for s in world.tokens.values() if s] + [server.admin]
    with _client(server, world.tokens["read"]) as c:
        c.get("/v1/packages?namespace=ci")
        c.put("/v1/packages/ci/app/9", content=b"{}")
        bad = c.get(
            "/v1/packages/ci/app/1", headers={"Authorization": "Bearer " + secrets[0] + "x"}
        )
        assert secrets[0] not in bad.text
    with _client(server, server.admin) as admin:
        metrics = admin.get("/metrics").text
        events = json.dumps(admin.get("/v1/events?limit=1000").json())
        tokens = admin.get("/v1/tokens").text
    log = server.log()
    for secret in secrets:
        private = secret.split("_", 2)[2]
        assert private not in metrics and private not in events and private not in tokens
        # The server log shows the bootstrap admin token once, at first start, by design.
        assert log.count(private) == (1 if secret == server.admin else 0)
