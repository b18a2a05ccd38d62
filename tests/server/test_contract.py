"""SPEC section 4 over HTTP: every route the app serves, its statuses and headers.

The module's server (GC grace 0, so a collection needs no waiting) is the
served app in this process; the tests that need a real server process use
``live_server``: curl, request bodies streamed by two clients at once, and a
SIGKILL. Each test uploads its own bytes, so the order of the tests and the
GC test in the middle of them do not matter.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import itertools
import json
import logging
import os
import pathlib
import re
import secrets
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from artifactstore.model.events import Event
from artifactstore.model.identity import Digest, Namespace, PackageName, Version
from artifactstore.model.manifest import FileEntry, Manifest
from artifactstore.server.auth import ROUTE_SCOPES
from artifactstore.server.main import app_from_env
from artifactstore.store import Store
from tests.conftest import make_tree
from tests.server.conftest import (
    InProcessServer,
    Server,
    assert_problem,
    digests_of,
    entry_for,
    make_manifest,
    push,
    put_manifest,
    upload_blob,
)
from tests.server.inprocess import serve_app

pytestmark = pytest.mark.configs("embedded", "scaleout")

TUS = {"Tus-Resumable": "1.0.0"}
#: The SPEC section 4 routes this build must serve.
SPEC_ROUTES = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/v1/blobs/{digest}"),
    ("HEAD", "/v1/blobs/{digest}"),
    ("POST", "/v1/blobs"),
    ("OPTIONS", "/v1/uploads"),
    ("POST", "/v1/uploads"),
    ("HEAD", "/v1/uploads/{upload_id}"),
    ("PATCH", "/v1/uploads/{upload_id}"),
    ("POST", "/v1/uploads/{upload_id}/complete"),
    ("DELETE", "/v1/uploads/{upload_id}"),
    ("PUT", "/v1/packages/{ns}/{name}/{version}"),
    ("GET", "/v1/packages/{ns}/{name}/{version}"),
    ("DELETE", "/v1/packages/{ns}/{name}/{version}"),
    ("GET", "/v1/packages/{ns}/{name}/{version}/files/{path}"),
    ("GET", "/v1/packages/{ns}/{name}/{version}/archive"),
    ("GET", "/v1/packages"),
    ("PUT", "/v1/schemas/{schema_id}"),
    ("GET", "/v1/schemas/{schema_id}"),
    ("GET", "/v1/schemas"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/stream"),
    ("POST", "/v1/admin/gc"),
    ("GET", "/v1/log/checkpoint"),
    ("GET", "/v1/log/proof/inclusion"),
    ("GET", "/v1/log/proof/consistency"),
]
OFFSET = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {"ARTIFACTSTORE_GC_GRACE": "0"}


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample of the Prometheus text (0 when absent)."""
    pattern = "^" + re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def http_date(value: str) -> float:
    parsed = email.utils.parsedate_to_datetime(value)
    assert parsed.tzinfo is not None
    return parsed.timestamp()


# --- the in-process app -------------------------------------------------------------------


def test_in_process_app_is_wired_like_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app an in-process server runs is the one ``serve`` runs for the same settings:
    the worker factory ``app_from_env`` builds it from the environment ``run`` leaves."""
    env = {
        "ARTIFACTSTORE_GC_GRACE": "0",
        "ARTIFACTSTORE_GC_INTERVAL": "1h",
        "ARTIFACTSTORE_BODY_IDLE_TIMEOUT": "7s",
        "ARTIFACTSTORE_BODY_TOTAL_TIMEOUT": "70s",
    }
    in_process = InProcessServer(tmp_path / "home", tmp_path, env)
    Store.from_config(in_process.settings(), create=True).close()
    for key in list(os.environ):
        if key.startswith("ARTIFACTSTORE_"):
            monkeypatch.delenv(key)
    for key, value in in_process.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ARTIFACTSTORE_NO_AUTH", "1")
    monkeypatch.chdir(tmp_path)
    served = app_from_env()
    ours = serve_app(in_process.settings(), logging.getLogger("test-wiring"))
    try:
        assert ours.state.store.settings == served.state.store.settings
        assert type(ours.state.auth) is type(served.state.auth)
        assert vars(ours.state.limits) == vars(served.state.limits)
        assert served.state.limits.total_timeout == 70.0
        assert set(vars(ours.state)["_state"]) == set(vars(served.state)["_state"])
        assert [(m.cls, m.args, sorted(m.kwargs)) for m in ours.user_middleware] == [
            (m.cls, m.args, sorted(m.kwargs)) for m in served.user_middleware
        ]
        assert ours.exception_handlers.keys() == served.exception_handlers.keys()
        assert ours.openapi() == served.openapi()
    finally:
        ours.state.store.close()
        served.state.store.close()


# --- operations ------------------------------------------------------------------------


def test_health_ready_openapi(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = http.get("/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    r = http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    served = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    # The routes of SPEC section 4 this build serves (more join as they are built).
    for method, path in SPEC_ROUTES:
        assert (method, path) in served, f"{method} {path} missing from /openapi.json"
    # Every served operation passes the one authorisation table (HEAD shares GET's entry).
    scoped = {(m, t.replace("{path:path}", "{path}")) for m, t in ROUTE_SCOPES}
    for method, path in served:
        key = ("GET" if method == "HEAD" else method, path)
        assert key in scoped, f"{method} {path} has no ROUTE_SCOPES entry"
    # Every declared error answer is a problem document.
    get_blob = doc["paths"]["/v1/blobs/{digest}"]["get"]["responses"]
    assert "application/problem+json" in get_blob["416"]["content"]
    assert "application/problem+json" in get_blob["422"]["content"]


def test_metrics_change_with_traffic(http: httpx.Client) -> None:
    def scrape() -> str:
        r = http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert "version=0.0.4" in r.headers["content-type"]
        return r.text

    before = scrape()
    for name in (
        "artifactstore_http_requests_total",
        "artifactstore_upload_sessions_open",
        "artifactstore_blobs",
        "artifactstore_http_received_bytes_total",
        "artifactstore_http_sent_bytes_total",
    ):
        assert f"# TYPE {name} " in before, name
    health = 'method="GET",route="/health",status="200"'
    data = os.urandom(50_000)
    b3 = upload_blob(http, data)["digest"]
    assert http.get(f"/v1/blobs/{b3}").content == data
    http.get("/health")
    session = http.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"})
    assert session.status_code == 201
    during = scrape()
    assert metric(during, "artifactstore_http_requests_total", health) == (
        metric(before, "artifactstore_http_requests_total", health) + 1
    )
    assert metric(during, "artifactstore_blobs") == metric(before, "artifactstore_blobs") + 1
    assert metric(during, "artifactstore_upload_sessions_open") == (
        metric(before, "artifactstore_upload_sessions_open") + 1
    )
    assert metric(during, "artifactstore_http_received_bytes_total") >= (
        metric(before, "artifactstore_http_received_bytes_total") + len(data)
    )
    assert metric(during, "artifactstore_http_sent_bytes_total") >= (
        metric(before, "artifactstore_http_sent_bytes_total") + len(data)
    )
    assert http.delete(session.headers["Location"], headers=TUS).status_code == 204
    after = scrape()
    assert metric(after, "artifactstore_upload_sessions_open") == metric(
        before, "artifactstore_upload_sessions_open"
    )
    assert 'route="/v1/blobs/{digest}"' in after  # labelled by template, not by digest
    assert b3 not in after


def test_every_route_answers(http: httpx.Client) -> None:
    """Every operation of /openapi.json is routed: never a routing 404/405, never a 5xx."""
    fill = {
        "digest": "blake3:" + "0" * 64,
        "upload_id": "nonexistent-upload-id",
        "ns": "ci",
        "name": "absent",
        "version": "1.0",
        "path": "a/b.txt",
        "schema_id": "absent",
    }
    doc = http.get("/openapi.json").json()
    for template, operations in doc["paths"].items():
        url = re.sub(r"\{([^}]+)\}", lambda m: fill.get(m.group(1), "absent1"), template)
        for method in operations:
            method = method.upper()
            body = b"{}" if method in ("PUT", "POST", "PATCH") else None
            # A live stream never ends: a bad resume point is answered (422) instead.
            stream = template == "/v1/events/stream"
            r = http.request(
                method, url, content=body, headers={"Last-Event-ID": "x"} if stream else {}
            )
            assert r.status_code < 500, (method, url, r.status_code, r.text)
            if method == "HEAD":  # no body to read the code from
                assert r.status_code != 405, (method, url)
            elif r.status_code in (404, 405):
                assert r.json()["code"] not in ("route_not_found", "method_not_allowed"), (
                    method,
                    url,
                    r.text,
                )


def test_request_ids_and_access_log(server: InProcessServer, http: httpx.Client) -> None:
    ids = set()
    responses = [
        http.get("/health"),
        http.get("/v1/blobs/blake3:" + "1" * 64),
        http.get("/v1/nowhere"),
    ]
    for r in responses:
        rid = r.headers.get("x-request-id")
        assert rid and re.fullmatch(r"[0-9a-f]{16}", rid), r.headers
        ids.add(rid)
    assert len(ids) == len(responses)
    expected = {
        responses[0].headers["x-request-id"]: ("GET", "/health", 200),
        responses[1].headers["x-request-id"]: ("GET", "/v1/blobs/{digest}", 404),
        responses[2].headers["x-request-id"]: ("GET", "unmatched", 404),
    }
    deadline = time.monotonic() + 5
    while True:
        lines = {line.get("request_id"): line for line in server.access_log()}
        if all(rid in lines for rid in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for rid, (method, route, status) in expected.items():
        line = lines.get(rid)
        assert line is not None, f"no access-log line for {rid}"
        assert (line["method"], line["route"], line["status"]) == (method, route, status), line


# --- blobs -------------------------------------------------------------------------------


@pytest.fixture(params=["uploaded", "packed"])
def blob(
    request: pytest.FixtureRequest, http: httpx.Client, server: InProcessServer, tmp_path: Path
) -> tuple[bytes, dict[str, Any]]:
    """A 1,000-byte blob: uploaded over HTTP (a whole object), or pushed from a local
    tree between two other small files (a span in the middle of a pack)."""
    data = os.urandom(1000)
    if request.param == "uploaded":
        return data, upload_blob(http, data)
    tree = make_tree(tmp_path / "tree", {"a": os.urandom(300), "b": data, "c": os.urandom(7)})
    with server.open_store() as store:
        store.push(f"ci/packed:{secrets.token_hex(4)}", [tree])
        body = dict(zip(("digest", "sha256"), digests_of(data), strict=True))
        rec = store.find_blob(Digest.parse(body["digest"]))
        assert rec is not None and rec.place.offset == 300, rec
    return data, {**body, "size": len(data)}


def test_one_shot_upload(http: httpx.Client) -> None:
    data = os.urandom(300_000)
    r = http.post("/v1/blobs", params={"namespace": "ci"}, content=data)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body == {
        "digest": f"blake3:{blake3.blake3(data).hexdigest()}",
        "sha256": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "size": len(data),
    }
    assert r.headers["location"] == f"/v1/blobs/{body['digest']}"
    assert http.get(r.headers["location"]).content == data
    # ?digest= in either algorithm is verified and accepted.
    for expected in (body["digest"], body["sha256"]):
        again = http.post("/v1/blobs", params={"namespace": "ci", "digest": expected}, content=data)
        assert again.status_code == 201 and again.json() == body


def test_curl_upload_file_puts_a_one_shot_blob(
    live_server: Server, tmp_path: pathlib.Path, live_http: httpx.Client
) -> None:
    """``curl -T big.iso URL/v1/blobs`` (the README's example) sends a PUT."""
    server, http = live_server, live_http  # curl needs a socket to talk to
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed: apt-get install -y curl")
    data = os.urandom(2 * 1024 * 1024 + 1)
    (tmp_path / "big.iso").write_bytes(data)
    out = subprocess.run(
        [curl, "-sS", "-T", str(tmp_path / "big.iso"), f"{server.base_url}/v1/blobs?namespace=ci"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    body = json.loads(out.stdout)
    assert body == {
        "digest": f"blake3:{blake3.blake3(data).hexdigest()}",
        "sha256": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "size": len(data),
    }
    assert http.get(f"/v1/blobs/{body['digest']}").content == data


def test_one_shot_wrong_digest_is_refused_and_not_stored(http: httpx.Client) -> None:
    data = os.urandom(5000)
    b3, sha = digests_of(data)
    wrong = "blake3:" + blake3.blake3(b"something else").hexdigest()
    r = http.post("/v1/blobs", params={"namespace": "ci", "digest": wrong}, content=data)
    assert_problem(r, 422, "digest_mismatch")
    assert http.head(f"/v1/blobs/{b3}").status_code == 404
    assert http.head(f"/v1/blobs/{sha}").status_code == 404


def test_head_blob_headers(http: httpx.Client, blob: tuple[bytes, dict[str, Any]]) -> None:
    data, body = blob
    r = http.head(f"/v1/blobs/{body['digest']}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["etag"] == f'"{body["digest"]}"'
    sha_b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert r.headers["repr-digest"] == f"sha-256=:{sha_b64}:"
    cache = [p.strip() for p in r.headers["cache-control"].split(",")]
    assert "immutable" in cache and any(p.startswith("max-age=") for p in cache)
    assert r.headers["accept-ranges"] == "bytes"


def test_get_blob_by_either_digest(http: httpx.Client, blob: tuple[bytes, dict[str, Any]]) -> None:
    data, body = blob
    by_b3 = http.get(f"/v1/blobs/{body['digest']}")
    by_sha = http.get(f"/v1/blobs/{body['sha256']}")
    assert by_b3.status_code == by_sha.status_code == 200
    assert by_b3.content == by_sha.content == data
    assert by_b3.headers["etag"] == by_sha.headers["etag"] == f'"{body["digest"]}"'
    assert by_b3.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=-10", 990, 999),
        ("bytes=5-", 5, 999),
        ("bytes=100-199", 100, 199),
        ("bytes=999-999", 999, 999),
        ("bytes=990-5000", 990, 999),  # a last byte past the end is clamped
        ("bytes=-5000", 0, 999),  # a suffix longer than the blob is the whole blob
    ],
)
def test_range(
    http: httpx.Client, blob: tuple[bytes, dict[str, Any]], header: str, start: int, end: int
) -> None:
    data, body = blob
    url = f"/v1/blobs/{body['digest']}"
    r = http.get(url, headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.content == data[start : end + 1]
    head = http.head(url, headers={"Range": header})
    assert head.status_code == 206
    assert head.headers["content-range"] == r.headers["content-range"]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-1000", "bytes=5000-6000"])
def test_range_not_satisfiable(
    http: httpx.Client, blob: tuple[bytes, dict[str, Any]], header: str
) -> None:
    _, body = blob
    r = http.get(f"/v1/blobs/{body['digest']}", headers={"Range": header})
    assert_problem(r, 416, "range_not_satisfiable")
    assert r.headers["content-range"] == "bytes */1000"


def test_multiple_ranges_are_refused_as_documented(
    http: httpx.Client, server: Server, blob: tuple[bytes, dict[str, Any]]
) -> None:
    """SPEC: "one range per request"; the server says so with a 422 problem, never a 5xx."""
    _, body = blob
    r = http.get(f"/v1/blobs/{body['digest']}", headers={"Range": "bytes=0-1,5-6"})
    problem = assert_problem(r, 422, "invalid_input")
    assert "one range" in problem["detail"]
    doc = http.get("/openapi.json").json()
    assert "422" in doc["paths"]["/v1/blobs/{digest}"]["get"]["responses"]


def test_if_none_match(http: httpx.Client, blob: tuple[bytes, dict[str, Any]]) -> None:
    _, body = blob
    etag = f'"{body["digest"]}"'
    for address in (body["digest"], body["sha256"]):
        r = http.get(f"/v1/blobs/{address}", headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == etag
    r = http.get(f"/v1/blobs/{body['digest']}", headers={"If-None-Match": '"blake3:other"'})
    assert r.status_code == 200
    r = http.get(f"/v1/blobs/{body['digest']}", headers={"If-None-Match": f'"x", W/{etag}'})
    assert r.status_code == 304


def test_absent_blob(http: httpx.Client) -> None:
    r = http.get("/v1/blobs/sha256:" + "0" * 64)
    assert_problem(r, 404, "blob_not_found")
    assert http.head("/v1/blobs/blake3:" + "0" * 64).status_code == 404


# --- uploads -----------------------------------------------------------------------------


def new_session(http: httpx.Client, length: int | None, **headers: str) -> str:
    extra = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    r = http.post("/v1/uploads", params={"namespace": "ci"}, headers={**TUS, **extra, **headers})
    assert r.status_code == 201, r.text
    location: str = r.headers["location"]
    return location


def offset_of(http: httpx.Client, url: str) -> int:
    r = http.head(url, headers=TUS)
    assert r.status_code == 200, r.status_code
    assert r.headers["cache-control"] == "no-store"
    return int(r.headers["upload-offset"])


def test_tus_options(http: httpx.Client) -> None:
    r = http.options("/v1/uploads")
    assert r.status_code == 204
    assert r.headers["tus-version"].split(",")[0] == "1.0.0"
    assert r.headers["tus-resumable"] == "1.0.0"
    extensions = set(r.headers["tus-extension"].split(","))
    assert {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    } <= extensions
    assert int(r.headers["tus-max-size"]) > 0
    assert "sha256" in r.headers["tus-checksum-algorithm"].split(",")


def test_upload_session_lifecycle(http: httpx.Client) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    b3, sha = digests_of(data)
    r = http.post(
        "/v1/uploads", params={"namespace": "ci"}, headers={**TUS, "Upload-Length": str(len(data))}
    )
    assert r.status_code == 201
    url = r.headers["location"]
    assert re.search(r"/v1/uploads/[A-Za-z0-9_-]{8,64}$", url), url
    assert r.headers["tus-resumable"] == "1.0.0"
    assert http_date(r.headers["upload-expires"]) > time.time()
    head = http.head(url, headers=TUS)
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["tus-resumable"] == "1.0.0"
    half = len(data) // 2
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "0"}, content=data[:half])
    assert r.status_code == 204, r.text
    assert r.headers["upload-offset"] == str(half)
    assert "artifactstore-digest" not in r.headers
    # A wrong offset: 409 with the current offset, in the header and in the problem.
    for wrong in (0, half - 1, half + 1, len(data)):
        r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": str(wrong)}, content=b"xyz")
        problem = assert_problem(r, 409, "upload_offset_mismatch")
        assert r.headers["upload-offset"] == str(half)
        assert problem["offset"] == half
    assert offset_of(http, url) == half
    # The last byte completes the upload.
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": str(half)}, content=data[half:])
    assert r.status_code == 204, r.text
    assert r.headers["upload-offset"] == str(len(data))
    assert r.headers["artifactstore-digest"] == b3
    status = http.get(url).json()
    assert status["state"] == "completed" and status["digest"] == b3
    assert status["offset"] == status["length"] == len(data)
    assert http.get(f"/v1/blobs/{sha}").content == data
    # Completing again is idempotent; a completed session takes no more bytes.
    done = http.post(f"{url}/complete", params={"digest": sha})
    assert done.status_code == 200
    assert done.json() == {"digest": b3, "sha256": sha, "size": len(data)}
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": str(len(data))}, content=b"x")
    assert_problem(r, 409, "upload_closed")


def test_plain_content_range_and_complete(http: httpx.Client) -> None:
    """Without Tus-Resumable: Content-Range in place of Upload-Offset, then /complete."""
    data = os.urandom(200_000)
    b3, sha = digests_of(data)
    r = http.post("/v1/uploads", params={"namespace": "ci"})
    assert r.status_code == 201
    url = r.headers["location"]
    cut = 123_456
    plain = {"Content-Type": "application/octet-stream"}
    r = http.patch(
        url, headers={**plain, "Content-Range": f"bytes 0-{cut - 1}/*"}, content=data[:cut]
    )
    assert r.status_code == 204, r.text
    assert r.headers["upload-offset"] == str(cut)
    r = http.patch(url, headers={**plain, "Content-Range": f"bytes 5-{cut}/*"}, content=data[5:cut])
    assert_problem(r, 409, "upload_offset_mismatch")
    assert r.headers["upload-offset"] == str(cut)
    r = http.patch(
        url,
        headers={**plain, "Content-Range": f"bytes {cut}-{len(data) - 1}/*"},
        content=data[cut:],
    )
    assert r.status_code == 204
    assert offset_of(http, url) == len(data)
    wrong = "sha256:" + hashlib.sha256(b"nope").hexdigest()
    assert_problem(http.post(f"{url}/complete", params={"digest": wrong}), 422, "digest_mismatch")
    r = http.post(f"{url}/complete", params={"digest": b3})
    assert r.status_code == 200, r.text
    assert r.json() == {"digest": b3, "sha256": sha, "size": len(data)}
    assert http.get(f"/v1/blobs/{b3}").content == data


def test_creation_with_upload(http: httpx.Client) -> None:
    data = os.urandom(70_000)
    b3, _ = digests_of(data)
    # The whole body in the POST: created and completed at once.
    r = http.post(
        "/v1/uploads",
        params={"namespace": "ci"},
        headers={**TUS, **OFFSET, "Upload-Length": str(len(data))},
        content=data,
    )
    assert r.status_code == 201, r.text
    assert r.headers["upload-offset"] == str(len(data))
    assert r.headers["artifactstore-digest"] == b3
    assert http.get(f"/v1/blobs/{b3}").content == data
    # Part of the body in the POST, the rest in a PATCH.
    data = os.urandom(70_000)
    r = http.post(
        "/v1/uploads",
        headers={**TUS, **OFFSET, "Upload-Length": str(len(data))},
        content=data[:1000],
    )
    assert r.status_code == 201
    assert r.headers["upload-offset"] == "1000"
    url = r.headers["location"]
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "1000"}, content=data[1000:])
    assert r.status_code == 204
    assert r.headers["artifactstore-digest"] == digests_of(data)[0]


def test_upload_checksum(http: httpx.Client) -> None:
    data = os.urandom(40_000)
    url = new_session(http, len(data))

    def checksum(chunk: bytes) -> str:
        return "sha256 " + base64.b64encode(hashlib.sha256(chunk).digest()).decode()

    r = http.patch(
        url,
        headers={**TUS, **OFFSET, "Upload-Offset": "0", "Upload-Checksum": checksum(data[:10_000])},
        content=data[:10_000],
    )
    assert r.status_code == 204 and r.headers["upload-offset"] == "10000"
    r = http.patch(
        url,
        headers={**TUS, **OFFSET, "Upload-Offset": "10000", "Upload-Checksum": checksum(b"other")},
        content=data[10_000:20_000],
    )
    assert_problem(r, 460, "checksum_mismatch")
    assert offset_of(http, url) == 10_000
    r = http.patch(
        url,
        headers={
            **TUS,
            **OFFSET,
            "Upload-Offset": "10000",
            "Upload-Checksum": checksum(data[10_000:]),
        },
        content=data[10_000:],
    )
    assert r.status_code == 204
    assert r.headers["artifactstore-digest"] == digests_of(data)[0]
    assert http.get(f"/v1/blobs/{digests_of(data)[0]}").content == data


def test_deferred_length(http: httpx.Client) -> None:
    data = os.urandom(30_000)
    url = new_session(http, None)
    head = http.head(url, headers=TUS)
    assert head.headers["upload-defer-length"] == "1"
    assert "upload-length" not in head.headers
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "0"}, content=data[:10_000])
    assert r.status_code == 204 and "artifactstore-digest" not in r.headers
    r = http.patch(
        url,
        headers={**TUS, **OFFSET, "Upload-Offset": "10000", "Upload-Length": str(len(data))},
        content=data[10_000:],
    )
    assert r.status_code == 204, r.text
    assert r.headers["upload-length"] == str(len(data))
    assert r.headers["artifactstore-digest"] == digests_of(data)[0]
    assert http.get(url).json()["state"] == "completed"


def test_delete_upload(http: httpx.Client) -> None:
    url = new_session(http, 100)
    assert (
        http.patch(
            url, headers={**TUS, **OFFSET, "Upload-Offset": "0"}, content=b"x" * 10
        ).status_code
        == 204
    )
    r = http.delete(url, headers=TUS)
    assert r.status_code == 204 and r.headers["tus-resumable"] == "1.0.0"
    assert http.head(url, headers=TUS).status_code == 404
    assert_problem(http.get(url), 404, "upload_not_found")
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "10"}, content=b"x")
    assert_problem(r, 404, "upload_not_found")
    assert_problem(http.delete(url, headers=TUS), 404, "upload_not_found")


def test_tus_version_and_content_type(http: httpx.Client) -> None:
    old = {"Tus-Resumable": "0.2.2"}
    r = http.post("/v1/uploads", headers={**old, "Upload-Length": "5"})
    assert_problem(r, 412, "tus_version")
    assert r.headers["tus-version"] == "1.0.0"
    url = new_session(http, 5)
    r = http.patch(url, headers={**old, **OFFSET, "Upload-Offset": "0"}, content=b"12345")
    assert_problem(r, 412, "tus_version")
    assert r.headers["tus-version"] == "1.0.0"
    for content_type in ("application/octet-stream", "text/plain", ""):
        r = http.patch(
            url,
            headers={**TUS, "Content-Type": content_type, "Upload-Offset": "0"},
            content=b"12345",
        )
        assert_problem(r, 415, "unsupported_media_type")
    r = http.patch(url, headers={"Content-Type": "text/plain", "Upload-Offset": "0"}, content=b"1")
    assert_problem(r, 415, "unsupported_media_type")
    assert offset_of(http, url) == 0


def test_concurrent_patches_never_interleave(live_server: Server) -> None:
    # Real sockets: in process a request body reaches the app only once it is all read,
    # so the two slow bodies would not arrive at the same time.
    server = live_server
    size = 4 * 1024 * 1024
    first, second = os.urandom(size), os.urandom(size)
    with server.client() as setup:
        url = new_session(setup, size)
    started = threading.Event()
    results: dict[str, httpx.Response] = {}

    def slow(data: bytes) -> Iterator[bytes]:
        for i in range(0, len(data), 256 * 1024):
            yield data[i : i + 256 * 1024]
            started.set()
            time.sleep(0.05)

    def send(name: str, data: bytes) -> None:
        with server.client() as client:
            results[name] = client.patch(
                url,
                headers={**TUS, **OFFSET, "Upload-Offset": "0", "Content-Length": str(size)},
                content=slow(data),
            )

    a = threading.Thread(target=send, args=("first", first))
    a.start()
    assert started.wait(10)
    b = threading.Thread(target=send, args=("second", second))
    b.start()
    a.join(60)
    b.join(60)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [204, 409], {k: (r.status_code, r.text) for k, r in results.items()}
    loser = next(r for r in results.values() if r.status_code == 409)
    assert loser.json()["code"] in ("upload_busy", "upload_offset_mismatch", "upload_closed")
    winner = first if results["first"].status_code == 204 else second
    with server.client() as check:
        status = check.get(url).json()
        assert status["state"] == "completed"
        assert status["digest"] == digests_of(winner)[0]
        assert check.get(f"/v1/blobs/{status['digest']}").content == winner


def test_session_survives_restart(live_server: Server) -> None:
    server = live_server  # SIGKILL: a real process
    data = os.urandom(2 * 1024 * 1024 + 5)
    b3, sha = digests_of(data)
    half = len(data) // 2
    with server.client() as http:
        url = new_session(http, len(data))
        r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "0"}, content=data[:half])
        assert r.status_code == 204
    server.restart()  # SIGKILL, then the same port and data directory
    with server.client() as http:
        assert offset_of(http, url) == half
        r = http.patch(
            url, headers={**TUS, **OFFSET, "Upload-Offset": str(half)}, content=data[half:]
        )
        assert r.status_code == 204, r.text
        assert r.headers["artifactstore-digest"] == b3
        done = http.post(f"{url}/complete", params={"digest": b3})
        assert done.json() == {"digest": b3, "sha256": sha, "size": len(data)}
        assert http.get(f"/v1/blobs/{b3}").content == data


# --- packages ----------------------------------------------------------------------------


def pkg_url(ref: str) -> str:
    ns, rest = ref.split("/")
    name, version = rest.split(":")
    return f"/v1/packages/{ns}/{name}/{version}"


def test_commit_json_and_cbor(http: httpx.Client) -> None:
    files = {"bin/app": os.urandom(3000), "README.md": b"# app\n"}
    for data in files.values():
        upload_blob(http, data)
    manifest = make_manifest("ci/commit:1.0", files, metadata={"branch": "main"})
    r = put_manifest(http, manifest, cbor=True)
    assert r.status_code == 201, r.text
    body = r.json()
    digest = f"blake3:{blake3.blake3(manifest.to_cbor()).hexdigest()}"
    assert body["digest"] == digest and body["created_now"] is True
    assert body["sha256"] == f"sha256:{hashlib.sha256(manifest.to_cbor()).hexdigest()}"
    assert r.headers["location"] == "/v1/packages/ci/commit/1.0"
    assert r.headers["etag"] == f'"{digest}"'
    for cbor in (True, False):  # the identical manifest again, in either form: a no-op
        again = put_manifest(http, manifest, cbor=cbor)
        assert again.status_code == 200, again.text
        assert again.json()["digest"] == digest and again.json()["created_now"] is False
    # A JSON body commits a new version just as well.
    other = make_manifest("ci/commit:1.1", files)
    r = put_manifest(http, other, cbor=False)
    assert r.status_code == 201
    assert r.json()["digest"] == f"blake3:{blake3.blake3(other.to_cbor()).hexdigest()}"


def test_commit_conflicts(http: httpx.Client) -> None:
    push(http, "ci/conflict:1.0", {"a.txt": b"one"})
    changed = make_manifest("ci/conflict:1.0", {"a.txt": b"two"})
    upload_blob(http, b"two")
    assert_problem(put_manifest(http, changed), 409, "version_exists")
    # Missing blobs: the 409 lists exactly the digests the store lacks.
    present, absent1, absent2 = os.urandom(100), os.urandom(100), os.urandom(100)
    upload_blob(http, present)
    m = make_manifest("ci/conflict:2.0", {"p": present, "x": absent1, "y": absent2})
    problem = assert_problem(put_manifest(http, m), 409, "missing_blobs")
    assert sorted(problem["missing"]) == sorted([digests_of(absent1)[0], digests_of(absent2)[0]])
    assert_problem(http.get(pkg_url("ci/conflict:2.0")), 404, "package_not_found")


def test_commit_url_mismatch(http: httpx.Client) -> None:
    manifest = make_manifest("ci/mismatch:1.0", {"a": b"mismatch"})
    upload_blob(http, b"mismatch")
    for url in (
        "/v1/packages/ci/mismatch/2.0",
        "/v1/packages/ci/other/1.0",
        "/v1/packages/qa/mismatch/1.0",
    ):
        r = http.put(url, content=manifest.to_cbor(), headers={"Content-Type": "application/cbor"})
        assert_problem(r, 422, "invalid_manifest")


def test_commit_file_entry_must_match_stored_blob(http: httpx.Client) -> None:
    """A manifest may not claim another size or SHA-256 for a stored blob.

    Otherwise every pull of the version fails its digest check and the tar
    archive breaks off mid-stream: the commit must refuse it (422).
    """
    data = os.urandom(64)
    upload_blob(http, data)
    good = entry_for("f.bin", data)
    wrong_sha = Digest.parse("sha256:" + "0" * 64)
    lies = {
        "size": FileEntry(good.path, good.size + 5, good.media_type, good.blake3, good.sha256),
        "sha": FileEntry(good.path, good.size, good.media_type, good.blake3, wrong_sha),
    }
    for label, entry in lies.items():
        m = Manifest.build(
            Namespace("ci"),
            PackageName("liar"),
            Version(label),
            [entry],
            created="2024-01-01T00:00:00Z",
        )
        r = put_manifest(http, m)
        assert r.status_code in (409, 422), (label, r.status_code, r.text)
        assert_problem(http.get(pkg_url(f"ci/liar:{label}")), 404, "package_not_found")


def test_metadata_schema_violation(http: httpx.Client) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"build": {"type": "object", "properties": {"number": {"type": "integer"}}}},
        "required": ["build"],
    }
    assert http.put("/v1/schemas/contract.build", json=schema).status_code in (200, 201)
    upload_blob(http, b"schema-checked")
    bad = make_manifest(
        "ci/checked:1.0",
        {"a": b"schema-checked"},
        metadata={"build": {"number": "seven"}},
        variant="contract.build",
    )
    problem = assert_problem(put_manifest(http, bad), 422, "metadata_invalid")
    assert problem["pointer"] == "/build/number"
    good = make_manifest(
        "ci/checked:1.0",
        {"a": b"schema-checked"},
        metadata={"build": {"number": 7}},
        variant="contract.build",
    )
    assert put_manifest(http, good).status_code == 201
    unknown = make_manifest("ci/checked:2.0", {"a": b"schema-checked"}, variant="never.registered")
    r = put_manifest(http, unknown)
    assert r.status_code in (404, 422), r.text
    assert_problem(r, r.status_code, "schema_not_found")


def test_get_version_json_cbor_etag(http: httpx.Client) -> None:
    manifest, committed = push(http, "ci/reader:1.0", {"x/y.txt": b"yy", "z": b"zz"})
    url = pkg_url("ci/reader:1.0")
    r = http.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["manifest"] == manifest.to_map()
    assert body["digest"] == committed["digest"]
    for key in ("signatures", "holds", "retention", "sha256", "committed_at", "actor"):
        assert key in body, key
    assert r.headers["etag"] == f'"{committed["digest"]}"'
    assert "accept" in r.headers["vary"].lower()
    cbor = http.get(url, headers={"Accept": "application/cbor"})
    assert cbor.status_code == 200
    assert cbor.headers["content-type"] == "application/cbor"
    assert cbor.content == manifest.to_cbor()
    assert f"blake3:{blake3.blake3(cbor.content).hexdigest()}" == committed["digest"]
    assert http.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert http.get(url, headers={"If-None-Match": '"blake3:nope"'}).status_code == 200


def test_delete_version(http: httpx.Client) -> None:
    push(http, "ci/doomed:1.0", {"a": b"doomed"})
    url = pkg_url("ci/doomed:1.0")
    r = http.delete(url)
    assert r.status_code == 204 and r.content == b""
    assert_problem(http.get(url), 404, "package_not_found")
    assert_problem(http.delete(url), 404, "package_not_found")
    assert_problem(http.get(url + "/files/a"), 404, "package_not_found")


def test_files_route(http: httpx.Client) -> None:
    data = os.urandom(5000)
    push(http, "ci/files:1.0", {"dir/sub/data.bin": data, "notes.txt": b"hello\n"})
    base = pkg_url("ci/files:1.0") + "/files/"
    r = http.get(base + "dir/sub/data.bin")
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"{digests_of(data)[0]}"'
    r = http.get(base + "notes.txt")
    assert r.content == b"hello\n"
    assert r.headers["content-type"].startswith("text/plain")
    r = http.get(base + "dir/sub/data.bin", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == "bytes 100-199/5000"
    r = http.head(base + "dir/sub/data.bin")
    assert r.status_code == 200 and r.headers["content-length"] == "5000"
    assert_problem(http.get(base + "dir/sub/other.bin"), 404, "package_not_found")
    assert_problem(http.get(base + "dir/sub/data.bin", headers={"Range": "bytes=6000-"}), 416)


def test_archive_tar(http: httpx.Client) -> None:
    files = {"a.txt": b"alpha\n", "deep/er/b.bin": os.urandom(10_000), "empty": b""}
    push(http, "ci/archive:1.0", files)
    r = http.get(pkg_url("ci/archive:1.0") + "/archive", params={"format": "tar"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == set(files)
        for name, data in files.items():
            assert members[name].isfile() and members[name].size == len(data)
            extracted = tar.extractfile(members[name])
            assert extracted is not None and extracted.read() == data
    default = http.get(pkg_url("ci/archive:1.0") + "/archive")
    assert default.status_code == 200 and default.content == r.content
    bad = http.get(pkg_url("ci/archive:1.0") + "/archive", params={"format": "zip"})
    assert_problem(bad, 422)


def test_query_and_keyset_pagination(http: httpx.Client) -> None:
    ns = "query"
    refs = []
    for i in range(7):
        branch = "main" if i % 2 == 0 else "dev"
        push(http, f"{ns}/app:1.{i}", {"f": f"query {i}".encode()}, metadata={"branch": branch})
        refs.append(f"{ns}/app:1.{i}")
    push(http, f"{ns}/tool:0.1", {"f": b"tool"}, metadata={"branch": "main"})
    refs.append(f"{ns}/tool:0.1")
    newest_first = list(reversed(refs))

    r = http.get("/v1/packages", params={"namespace": ns})
    assert r.status_code == 200
    assert [i["reference"] for i in r.json()["items"]] == newest_first
    assert r.json()["next_cursor"] is None and "link" not in r.headers

    r = http.get("/v1/packages", params={"namespace": ns, "name": "app", "meta.branch": "main"})
    assert [i["reference"] for i in r.json()["items"]] == [f"{ns}/app:1.{i}" for i in (6, 4, 2, 0)]

    # Keyset pagination: follow Link rel=next until there is none.
    seen: list[str] = []
    url: str | None = f"/v1/packages?namespace={ns}&limit=3"
    pages = 0
    while url is not None:
        page = http.get(url)
        assert page.status_code == 200
        items = page.json()["items"]
        assert len(items) <= 3
        seen += [i["reference"] for i in items]
        pages += 1
        link = page.headers.get("link")
        if link is None:
            assert page.json()["next_cursor"] is None
            url = None
        else:
            m = re.fullmatch(r'<([^>]+)>; rel="next"', link)
            assert m, link
            assert f"cursor={page.json()['next_cursor']}" in m.group(1)
            url = m.group(1)
    assert seen == newest_first and pages == 3
    # The cursor is a keyset position: a commit in between does not shift later pages.
    first = http.get("/v1/packages", params={"namespace": ns, "limit": 2}).json()
    push(http, f"{ns}/late:9.9", {"f": b"late"})
    rest = http.get(
        "/v1/packages", params={"namespace": ns, "limit": 100, "cursor": first["next_cursor"]}
    ).json()
    assert [i["reference"] for i in first["items"] + rest["items"]] == newest_first


def test_a_time_range_pages_by_its_opaque_cursor(http: httpx.Client) -> None:
    """Over HTTP too: a time-range query is paged by (commit time, id), its cursor
    travels in the Link header, and an id cursor is refused for it (422)."""
    ns = "timed"
    refs = [f"{ns}/app:{i}" for i in range(5)]
    for ref in refs:
        push(http, ref, {"f": ref.encode()})
    params: dict[str, Any] = {"namespace": ns, "created_after": "2000-01-01T00:00:00Z", "limit": 2}
    seen: list[str] = []
    url: str | None = "/v1/packages"
    query: dict[str, Any] | None = params
    while url is not None:
        page = http.get(url, params=query)
        assert page.status_code == 200, page.text
        seen += [i["reference"] for i in page.json()["items"]]
        link = page.headers.get("link")
        m = re.fullmatch(r'<([^>]+)>; rel="next"', link) if link else None
        url, query = (m.group(1), None) if m else (None, None)
    assert seen == list(reversed(refs))
    id_cursor = http.get("/v1/packages", params={"namespace": ns, "limit": 2}).json()
    r = http.get("/v1/packages", params={**params, "cursor": id_cursor["next_cursor"]})
    assert_problem(r, 422, "invalid_input")


def test_query_by_variant(http: httpx.Client) -> None:
    schema = {"type": "object"}
    http.put("/v1/schemas/contract.any", json=schema)
    push(http, "variants/a:1", {"f": b"variant a"}, variant="contract.any")
    push(http, "variants/b:1", {"f": b"variant b"})
    r = http.get("/v1/packages", params={"namespace": "variants", "variant": "contract.any"})
    assert [i["reference"] for i in r.json()["items"]] == ["variants/a:1"]


def test_schemas(http: httpx.Client) -> None:
    doc = {"type": "object", "properties": {"x": {"type": "string"}}}
    r = http.put("/v1/schemas/contract.schema", json=doc)
    assert r.status_code == 201 and r.json()["created"] is True
    r = http.put("/v1/schemas/contract.schema", json=doc)
    assert r.status_code == 200 and r.json()["created"] is False
    r = http.put("/v1/schemas/contract.schema", json={"type": "array"})
    assert_problem(r, 409, "schema_exists")
    r = http.get("/v1/schemas/contract.schema")
    assert r.status_code == 200 and r.json() == doc
    listed = http.get("/v1/schemas").json()["items"]
    entry = next(i for i in listed if i["id"] == "contract.schema")
    assert entry["digest"] and entry["registered_at"]
    assert_problem(http.get("/v1/schemas/never.seen"), 404, "schema_not_found")


def test_events_paging(http: httpx.Client) -> None:
    push(http, "events/app:1", {"f": b"event bytes"})
    everything = http.get("/v1/events", params={"limit": 1000}).json()["events"]
    assert len(everything) >= 3
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    for before, after in itertools.pairwise(everything):
        assert after["prev_hash"] == before["hash"]
    for served in everything:  # the Event's one JSON form: it parses, types and verifies
        event = Event.from_json(served)
        assert event.to_json() == served and event.computed_hash() == served["hash"]
        assert event.typed().type == served["type"]
    assert any(
        e["type"] == "package.committed" and "events/app" in e["subject"] for e in everything
    )
    page = http.get("/v1/events", params={"after": 1, "limit": 2}).json()
    assert [e["seq"] for e in page["events"]] == [2, 3]
    assert page["next_after"] == 3
    tail = http.get("/v1/events", params={"after": len(everything)}).json()
    assert tail["events"] == [] and tail["next_after"] == len(everything)
    assert_problem(http.get("/v1/events", params={"limit": 0}), 422, "invalid_request")
    assert_problem(http.get("/v1/events", params={"after": -1}), 422, "invalid_request")


def test_gc(http: httpx.Client) -> None:
    kept = os.urandom(2000)
    push(http, "gc/app:1", {"kept": kept})
    orphan = os.urandom(3000)
    b3 = upload_blob(http, orphan)["digest"]
    dry = http.post("/v1/admin/gc", params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert report["dry_run"] is True and b3 in report["collected"]
    assert digests_of(kept)[0] not in report["collected"]
    assert http.get(f"/v1/blobs/{b3}").content == orphan
    real = http.post("/v1/admin/gc", params={"dry_run": "false"}).json()
    assert real["dry_run"] is False and b3 in real["collected"]
    assert real["bytes_freed"] >= len(orphan)
    assert_problem(http.get(f"/v1/blobs/{b3}"), 404, "blob_not_found")
    assert http.get(pkg_url("gc/app:1") + "/files/kept").content == kept
    types = [e["type"] for e in http.get("/v1/events", params={"limit": 1000}).json()["events"]]
    assert "blob.collected" in types


def test_completing_a_session_whose_blob_gc_took_asks_for_the_bytes_again(
    http: httpx.Client,
) -> None:
    """The last PATCH records the blob; a GC (grace 0 here) may take it before the
    client's /complete. That is the one-shot upload's missing_blobs, not a 404 for
    the session: the client's retry then starts a new session."""
    data = os.urandom(5000)
    b3, _ = digests_of(data)
    r = http.post(
        "/v1/uploads", params={"namespace": "ci"}, headers={**TUS, "Upload-Length": str(len(data))}
    )
    url = r.headers["location"]
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "0"}, content=data)
    assert r.headers["artifactstore-digest"] == b3
    assert b3 in http.post("/v1/admin/gc", params={"dry_run": "false"}).json()["collected"]
    problem = assert_problem(http.post(f"{url}/complete"), 409, "missing_blobs")
    assert problem["missing"] == [b3]
    again = upload_blob(http, data)
    assert again["digest"] == b3 and http.get(f"/v1/blobs/{b3}").content == data


def test_error_bodies_are_problems(http: httpx.Client) -> None:
    cases = [
        http.get("/v1/nowhere"),
        http.delete("/health"),
        http.get("/v1/blobs/md5:abc"),
        http.put("/v1/packages/ci/x/1", content=b"{", headers={"Content-Type": "application/json"}),
        http.get("/v1/packages", params={"limit": "many"}),
        http.post("/v1/uploads", headers={**TUS, "Upload-Length": "-5"}),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert_problem(r, r.status_code)
        json.dumps(r.json())  # plain JSON, nothing exotic
