"""What one tenant's requests may learn about another's: caches, metrics, existence checks.

- Bytes fetched with credentials are ``Cache-Control: private`` (with ``Vary:
  Authorization``): a shared cache must not hand them to another caller.
  Anonymous reads of an anonymous-read namespace may stay ``public``.
- ``/metrics`` answers 401 without a token; store-wide figures need a global
  admin or a ``metrics`` token; any other token sees its namespaces' gauges.
- A writer may ask (``HEAD /v1/blobs/{digest}?namespace=NS``) whether its own
  namespace holds a blob, which is what a push asks, and learns nothing about
  other namespaces (``test_permissions.py`` pushes with a write-only token).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.matrix import StoreConfigs
from tests.server.conftest import assert_problem, push, upload_blob
from tests.server.inprocess import InProcessServer
from tests.server_auth.test_permissions import (
    SERVER_ENV,
    _client,
    _token,
    in_process_server,
)

pytestmark = pytest.mark.configs("embedded", "scaleout")

A_BYTES = b"tenant a's file " * 64
B_BYTES = b"tenant b's secret " * 64


@dataclass
class Tenants:
    server: InProcessServer
    a_reader: str
    a_writer: str
    b_writer: str
    metrics: str
    a_blob: str
    b_blob: str


@pytest.fixture(scope="module")
def tenants(
    tmp_path_factory: pytest.TempPathFactory, store_configs: StoreConfigs
) -> Iterator[Tenants]:
    env = {**store_configs.new().env(), **SERVER_ENV}
    with in_process_server(tmp_path_factory.mktemp("tenants"), env) as srv:
        _, a_rw = _token(srv, "a-rw", ["a:read", "a:write"])
        _, b_rw = _token(srv, "b-rw", ["b:read", "b:write"])
        with _client(srv, a_rw) as a:
            push(a, "a/app:1", {"a.bin": A_BYTES})
        with _client(srv, b_rw) as b:
            push(b, "b/app:1", {"b.bin": B_BYTES})
        with _client(srv, srv.admin) as admin:
            a_blob = admin.get("/v1/packages/a/app/1").json()["manifest"]["files"][0]
            b_blob = admin.get("/v1/packages/b/app/1").json()["manifest"]["files"][0]
        yield Tenants(
            srv,
            a_reader=_token(srv, "a-reader", ["a:read"])[1],
            a_writer=_token(srv, "a-writer", ["a:write"])[1],
            b_writer=b_rw,
            metrics=_token(srv, "scraper", ["metrics"])[1],
            a_blob=a_blob["digests"]["blake3"],
            b_blob=b_blob["digests"]["blake3"],
        )


# --- cache headers ---------------------------------------------------------------------------


def _byte_urls(t: Tenants) -> list[str]:
    return [
        f"/v1/blobs/{t.a_blob}?namespace=a",
        "/v1/packages/a/app/1/files/a.bin",
        "/v1/packages/a/app/1/archive",
    ]


def _cache_policy(r: httpx.Response) -> tuple[str, set[str]]:
    assert r.status_code in (200, 304), (r.status_code, r.text[:300])
    directives = {d.strip() for d in r.headers["cache-control"].split(",")}
    scope = "private" if "private" in directives else "public" if "public" in directives else ""
    assert "authorization" in r.headers["vary"].lower()
    return scope, directives - {scope}


def test_bytes_fetched_with_a_token_are_private(tenants: Tenants) -> None:
    with _client(tenants.server, tenants.a_reader) as c:
        for url in _byte_urls(tenants):
            for method in ("GET", "HEAD"):
                if url.endswith("/archive") and method == "HEAD":
                    continue
                scope, rest = _cache_policy(c.request(method, url))
                assert scope == "private", (method, url)
                if not url.endswith("/archive"):
                    assert rest == {"max-age=31536000", "immutable"}
        etag = c.get(_byte_urls(tenants)[0]).headers["etag"]
        again = c.get(_byte_urls(tenants)[0], headers={"If-None-Match": etag})
        assert again.status_code == 304 and _cache_policy(again)[0] == "private"


def test_anonymous_reads_of_an_open_namespace_may_be_public(tenants: Tenants) -> None:
    srv = tenants.server
    with _client(srv, srv.admin) as admin:
        assert admin.put("/v1/namespaces/a", json={"anonymous_read": True}).status_code == 200
    try:
        with _client(srv, None) as anon, _client(srv, tenants.a_reader) as reader:
            for url in _byte_urls(tenants):
                assert _cache_policy(anon.get(url))[0] == "public", url
                assert _cache_policy(reader.get(url))[0] == "private", url
    finally:
        with _client(srv, srv.admin) as admin:
            admin.put("/v1/namespaces/a", json={"anonymous_read": False})


# --- /metrics --------------------------------------------------------------------------------


def _metrics(t: Tenants, token: str | None) -> httpx.Response:
    with _client(t.server, token) as c:
        return c.get("/metrics")


def test_metrics_need_a_token(tenants: Tenants) -> None:
    assert_problem(_metrics(tenants, None), 401, "unauthenticated")
    assert_problem(_metrics(tenants, "ast_" + "a" * 16 + "_" + "B" * 43), 401, "unauthenticated")


def test_global_figures_need_admin_or_a_metrics_token(tenants: Tenants) -> None:
    for token in (tenants.server.admin, tenants.metrics):
        text = _metrics(tenants, token).text
        assert "\nartifactstore_blobs " in text
        assert "artifactstore_http_requests_total{" in text
        assert 'artifactstore_namespace_used_bytes{namespace="a"}' in text
        assert 'artifactstore_namespace_used_bytes{namespace="b"}' in text


def test_a_tenant_sees_only_its_namespaces_figures(tenants: Tenants) -> None:
    before = _metrics(tenants, tenants.a_reader)
    assert before.status_code == 200
    text = before.text
    assert f'artifactstore_namespace_used_bytes{{namespace="a"}} {len(A_BYTES)}' in text
    assert 'namespace="b"' not in text
    # Nothing store-wide: the blob count would say whether b's upload was already held.
    for name in ("artifactstore_blobs", "artifactstore_blob_bytes", "artifactstore_http_"):
        assert name not in text, name
    # A token that reads nothing sees no figure at all.
    writer_only = _metrics(tenants, tenants.a_writer)
    assert writer_only.status_code == 200 and "artifactstore_" not in writer_only.text


# --- existence checks ------------------------------------------------------------------------


def test_a_writer_may_ask_whether_its_namespace_holds_a_blob(tenants: Tenants) -> None:
    with _client(tenants.server, tenants.a_writer) as c:
        held = c.head(f"/v1/blobs/{tenants.a_blob}?namespace=a")
        assert held.status_code == 200 and held.headers["content-length"] == str(len(A_BYTES))
        # Held by b only: absent, exactly as an unknown digest.
        assert c.head(f"/v1/blobs/{tenants.b_blob}?namespace=a").status_code == 404
        assert c.head(f"/v1/blobs/blake3:{'0' * 64}?namespace=a").status_code == 404
        # No namespace named: the writer reads none, so nothing is visible.
        assert c.head(f"/v1/blobs/{tenants.a_blob}").status_code == 404
        # Another namespace, or the bytes themselves: not a writer's.
        assert c.head(f"/v1/blobs/{tenants.b_blob}?namespace=b").status_code == 403
        assert_problem(c.get(f"/v1/blobs/{tenants.a_blob}?namespace=a"), 403, "forbidden")
        # After uploading b's bytes itself (proof of possession), a holds them too.
        upload_blob(c, B_BYTES, "a")
        assert c.head(f"/v1/blobs/{tenants.b_blob}?namespace=a").status_code == 200
