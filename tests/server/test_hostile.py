"""Hostile and malformed requests: always a 4xx problem, never a 5xx.

The module's servers run with small limits (64 MiB uploads, 1 MiB manifests,
a 2 s body idle timeout and a 6 s total body timeout) so that the limits can
be crossed quickly. Malformed identifiers, ranges, bodies and documents go to
the served app in this process (``server``); what depends on the bytes on the
wire goes to a real server process (``live_server``): raw request targets and
heads, header values outside ASCII (the in-process transport re-encodes them
as UTF-8), bodies streamed without a length (in process a body arrives whole),
slow clients and huge headers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any

import cbor2
import httpx
import pytest

from artifactstore.model.cbor import canonical_dumps
from tests.server.conftest import (
    InProcessServer,
    Server,
    assert_problem,
    digests_of,
    make_manifest,
    push,
    put_manifest,
    raw_http,
    upload_blob,
)

MiB = 1024 * 1024
MAX_UPLOAD = 64 * MiB
MAX_MANIFEST = 1 * MiB
MAX_METADATA = 64 * 1024
IDLE_TIMEOUT = 2.0
TOTAL_TIMEOUT = 6.0
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {
        "ARTIFACTSTORE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "ARTIFACTSTORE_MAX_MANIFEST_BYTES": str(MAX_MANIFEST),
        "ARTIFACTSTORE_MAX_METADATA_BYTES": str(MAX_METADATA),
        "ARTIFACTSTORE_BODY_IDLE_TIMEOUT": f"{IDLE_TIMEOUT}s",
        "ARTIFACTSTORE_BODY_TOTAL_TIMEOUT": f"{TOTAL_TIMEOUT}s",
    }


def store_package(server: InProcessServer | Server) -> dict[str, Any]:
    """Commit one package: a 1000-byte file and an empty one."""
    data = bytes(range(250)) * 4
    with server.client() as http:
        _, body = push(http, "hostile/pkg:1.0", {"data.bin": data, "empty": b""})
    b3, sha = digests_of(data)
    return {"data": data, "blake3": b3, "sha256": sha, "package": body}


@pytest.fixture(scope="module")
def stored(server: InProcessServer) -> dict[str, Any]:
    """The package on the in-process server."""
    return store_package(server)


@pytest.fixture(scope="module")
def live_stored(live_server: Server) -> dict[str, Any]:
    """The package on the server process."""
    return store_package(live_server)


def latin1(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as raw bytes, so that values outside ASCII reach the server as sent."""
    return [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]


def assert_status_in(response: httpx.Response, *allowed: int) -> None:
    """An allowed status; every error is a problem document."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert_problem(response, response.status_code)


# --- digests -------------------------------------------------------------------------

HEX = "ab" * 32
BAD_DIGESTS = [
    "blake3:XYZ",
    "md5:" + "a" * 32,
    "sha1:" + "a" * 40,
    "blake3:" + HEX.upper(),
    "blake3:" + HEX[:63],
    "blake3:" + HEX + "a",
    "sha256:" + "g" * 64,
    "blake3" + HEX,
    ":" + HEX,
    "BLAKE3:" + HEX,
    "blake3:" + HEX + "%00",
    "blake3:%00" + HEX[:62],
    "..%2F..%2Fetc%2Fpasswd",
    "blake3:..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "blake3:" + HEX + "%2F..",
    "blake3:" + "a" * 5000,
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_bad_digest_in_path(http: httpx.Client, digest: str) -> None:
    for method in ("GET", "HEAD"):
        r = http.request(method, f"/v1/blobs/{digest}")
        assert_status_in(r, 404, 422)
    assert_status_in(http.get(f"/v1/blobs/{digest}", headers={"Range": "bytes=0-0"}), 404, 422)


@pytest.mark.parametrize("digest", [*BAD_DIGESTS, ""])
def test_bad_digest_in_query(http: httpx.Client, digest: str) -> None:
    r = http.post(f"/v1/blobs?namespace=hostile&digest={digest}", content=b"some bytes")
    assert_status_in(r, 422)
    session = http.post("/v1/uploads", headers={**TUS, "Upload-Length": "3"})
    url = session.headers["location"]
    http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "0"}, content=b"abc")
    assert_status_in(http.post(f"{url}/complete?digest={digest}"), 422)


def test_empty_digest_segment(http: httpx.Client) -> None:
    for method in ("GET", "HEAD", "DELETE"):
        r = http.request(method, "/v1/blobs/")
        assert_status_in(r, 404, 405)
        assert "location" not in r.headers  # no redirect elsewhere


def test_unknown_blob_in_both_algorithms(http: httpx.Client) -> None:
    for digest in ("blake3:" + "0" * 64, "sha256:" + "f" * 64):
        assert_problem(http.get(f"/v1/blobs/{digest}"), 404, "blob_not_found")


# --- ranges --------------------------------------------------------------------------

HUGE = "9" * 40
RANGES: list[tuple[str, set[int]]] = [
    ("bytes=-0", {416}),
    ("bytes=5-2", {200}),
    ("bytes=0-1,3-4", {422}),
    ("bytes=0-1, 3-4", {422}),
    ("bytes=-1,-2", {422}),
    ("items=0-1", {200}),
    ("bytes=", {200}),
    ("bytes=-", {200}),
    ("bytes=--1", {200}),
    ("bytes=1-2-3", {200}),
    ("bytes=a-b", {200}),
    ("bytes=0x1-0x2", {200}),
    ("bytes=+1-2", {200}),
    ("bytes = 0-1", {200}),
    ("bytes=0-0", {206}),
    (f"bytes={HUGE}-", {416}),
    (f"bytes=0-{HUGE}", {206}),
    (f"bytes=-{HUGE}", {206}),
    (f"bytes={HUGE}-{HUGE}", {416}),
    ("bytes=" + "9" * 5000 + "-", {416}),
    ("bytes=0-" + "9" * 5000, {206}),
    ("bytes=1000-", {416}),
    ("bytes=999-", {206}),
    (",".join(["bytes=0-0"] * 2000), {422}),
]


@pytest.mark.parametrize(("header", "allowed"), RANGES)
def test_range_games(
    http: httpx.Client, stored: dict[str, Any], header: str, allowed: set[int]
) -> None:
    data = stored["data"]
    for url in (
        f"/v1/blobs/{stored['blake3']}",
        "/v1/packages/hostile/pkg/1.0/files/data.bin",
    ):
        r = http.get(url, headers={"Range": header})
        assert_status_in(r, *allowed)
        if r.status_code == 200:
            assert r.content == data
        elif r.status_code == 206:
            m = r.headers["content-range"].removeprefix("bytes ").split("/")
            first, last = (int(x) for x in m[0].split("-"))
            assert m[1] == str(len(data))
            assert r.content == data[first : last + 1]
        elif r.status_code == 416:
            assert r.headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0"])
def test_range_of_empty_file(http: httpx.Client, stored: dict[str, Any], header: str) -> None:
    r = http.get("/v1/packages/hostile/pkg/1.0/files/empty", headers={"Range": header})
    assert_status_in(r, 416)
    assert r.headers["content-range"] == "bytes */0"
    assert http.get("/v1/packages/hostile/pkg/1.0/files/empty").content == b""


# --- uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [
        "-1",
        "abc",
        "11",
        "99999999999999999999",
        "9" * 5000,
        "",
        "+0",
        "0x0",
        "1e3",
        "0.0",
        "\u00b2",
        "\u00b9",
        "0 0",
        None,
    ],
)
def test_upload_offset_games(live_http: httpx.Client, offset: str | None) -> None:
    http = live_http  # header bytes outside ASCII, as sent
    r = http.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"})
    url = r.headers["location"]
    headers = {**TUS, **OFFSET}
    if offset is not None:
        headers["Upload-Offset"] = offset
    r = http.patch(url, headers=latin1(headers), content=b"abc")
    assert_status_in(r, 409, 422)
    assert int(http.head(url, headers=TUS).headers["upload-offset"]) == 0


@pytest.mark.parametrize(
    "content_range",
    [
        "bytes 5-2/*",
        "bytes 0-",
        "bytes */10",
        "bytes 0-" + "9" * 5000 + "/*",
        "bytes " + "9" * 30 + "-" + "9" * 31 + "/*",
        "bytes -1-3/*",
        "items 0-2/*",
    ],
)
def test_content_range_games(http: httpx.Client, content_range: str) -> None:
    url = http.post("/v1/uploads", headers={"Upload-Length": "10"}).headers["location"]
    r = http.patch(
        url,
        headers={"Content-Type": "application/octet-stream", "Content-Range": content_range},
        content=b"abc",
    )
    assert_status_in(r, 409, 422)


@pytest.mark.parametrize(
    "length", ["-1", "abc", "1.5", "\u00b2", "9" * 30, "", str(MAX_UPLOAD + 1), str(10 * 1024**3)]
)
def test_upload_length_games(live_http: httpx.Client, length: str) -> None:
    http = live_http  # header bytes outside ASCII, as sent
    r = http.post("/v1/uploads", headers=latin1({**TUS, "Upload-Length": length}))
    assert_status_in(r, 413, 422)
    if length.isascii() and length.isdigit() and len(length) < 19 and int(length) > MAX_UPLOAD:
        assert_problem(r, 413, "limit_exceeded")


def test_more_bytes_than_declared(http: httpx.Client) -> None:
    url = http.post("/v1/uploads", headers={**TUS, "Upload-Length": "10"}).headers["location"]
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Offset": "0"}, content=b"x" * 11)
    assert_status_in(r, 413)
    assert int(http.head(url, headers=TUS).headers["upload-offset"]) <= 10
    r = http.patch(url, headers={**TUS, **OFFSET, "Upload-Length": "5"}, content=b"")
    assert_status_in(r, 409, 413, 422)


def test_deferred_length_over_the_limit(http: httpx.Client) -> None:
    url = http.post("/v1/uploads", headers={**TUS, "Upload-Defer-Length": "1"}).headers["location"]
    r = http.patch(
        url,
        headers={**TUS, **OFFSET, "Upload-Offset": "0", "Upload-Length": str(10 * 1024**3)},
        content=b"abc",
    )
    assert_problem(r, 413, "limit_exceeded")
    for defer in ("0", "2", "yes"):
        r = http.post("/v1/uploads", headers={**TUS, "Upload-Defer-Length": defer})
        assert_status_in(r, 422)
    r = http.post("/v1/uploads", headers={**TUS, "Upload-Defer-Length": "1", "Upload-Length": "5"})
    assert_status_in(r, 422)


@pytest.mark.parametrize(
    "metadata",
    [
        "namespace",
        "namespace !!!",
        "namespace " + "Q0k=" * 2 + ",namespace Y2k=",
        "a b c",
        "k\u00e9y dmFs",
        ",,,",
        "namespace QkFE",
        "namespace Li4vLi4v",
    ],
)
def test_upload_metadata_games(live_http: httpx.Client, metadata: str) -> None:
    http = live_http  # header bytes outside ASCII, as sent
    r = http.post(
        "/v1/uploads",
        headers=latin1({**TUS, "Upload-Length": "1", "Upload-Metadata": metadata}),
    )
    assert_status_in(r, 201, 422)


@pytest.mark.parametrize(
    "checksum",
    ["sha256", "sha256 !!!", "crc32 AAAA", "md4 AAAA", "sha256 " + "A" * 5000, "sha256 ="],
)
def test_upload_checksum_games(http: httpx.Client, checksum: str) -> None:
    url = http.post("/v1/uploads", headers={**TUS, "Upload-Length": "3"}).headers["location"]
    r = http.patch(
        url,
        headers={**TUS, **OFFSET, "Upload-Offset": "0", "Upload-Checksum": checksum},
        content=b"abc",
    )
    assert_status_in(r, 400, 422, 460)
    assert http.head(url, headers=TUS).headers["upload-offset"] == "0"


@pytest.mark.parametrize(
    "upload_id", ["short", "a" * 65, "..%2F..%2Fetc", "abc%00defgh", "x" * 5000]
)
def test_bad_upload_ids(http: httpx.Client, upload_id: str) -> None:
    for method in ("GET", "HEAD", "PATCH", "DELETE"):
        r = http.request(
            method, f"/v1/uploads/{upload_id}", headers={**TUS, **OFFSET, "Upload-Offset": "0"}
        )
        assert_status_in(r, 404, 422)
    assert_status_in(http.post(f"/v1/uploads/{upload_id}/complete"), 404, 422)


def test_declared_length_over_limit(http: httpx.Client) -> None:
    r = http.post("/v1/uploads", headers={**TUS, "Upload-Length": str(10 * 1000**3)})
    assert_problem(r, 413, "limit_exceeded")
    r = http.options("/v1/uploads")
    assert r.headers["tus-max-size"] == str(MAX_UPLOAD)


def test_one_shot_over_limit_is_refused_before_the_body(live_server: Server) -> None:
    """Only the headers are sent: the 413 must come without the server waiting for a body."""
    server = live_server
    start = time.monotonic()
    response = raw_http(
        server.port,
        b"POST /v1/blobs?namespace=hostile HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/octet-stream\r\n"
        + f"Content-Length: {10 * 1024**3}\r\n\r\n".encode(),
        timeout=IDLE_TIMEOUT * 3,
    )
    assert response.startswith(b"HTTP/1.1 413 "), response[:300]
    assert b"limit_exceeded" in response
    assert time.monotonic() - start < IDLE_TIMEOUT  # not a body timeout


def test_one_shot_body_past_limit_without_length(live_http: httpx.Client) -> None:
    http = live_http  # a body streamed without a length, cut off as it arrives

    def body() -> Any:
        chunk = b"\0" * MiB
        for _ in range(MAX_UPLOAD // MiB + 2):
            yield chunk

    with contextlib.suppress(httpx.TransportError):  # the server may close mid-body
        r = http.post("/v1/blobs?namespace=hostile", content=body())
        assert_problem(r, 413, "limit_exceeded")
    assert http.get("/health").status_code == 200


# --- slow clients --------------------------------------------------------------------


def trickle(port: int, head: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send ``head``, then one body byte every ``every`` seconds; returns the answer and when."""
    start = time.monotonic()
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(head)
        s.settimeout(every)
        while time.monotonic() - start < limit:
            try:
                s.sendall(b"x")
            except OSError:
                break
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out, time.monotonic() - start


SLOW_POST = (
    b"POST /v1/blobs?namespace=hostile HTTP/1.1\r\nHost: t\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
)


def test_slow_loris_idle(live_server: Server) -> None:
    """A byte every 3 s: past the 2 s idle timeout, so cut off after about 2 s."""
    server = live_server
    answer, took = trickle(server.port, SLOW_POST, every=3.0, limit=20.0)
    assert took < IDLE_TIMEOUT + 4, took
    if answer:  # a 408 problem, or just the closed connection
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"body_timeout" in answer


def test_slow_loris_total(live_server: Server) -> None:
    """A byte every 0.5 s never trips the idle timeout; the total timeout ends it."""
    server = live_server
    answer, took = trickle(server.port, SLOW_POST, every=0.5, limit=30.0)
    assert TOTAL_TIMEOUT - 1 < took < TOTAL_TIMEOUT + 4, took
    if answer:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_slow_patch_keeps_what_arrived(live_server: Server, live_http: httpx.Client) -> None:
    server, http = live_server, live_http
    url = http.post("/v1/uploads", headers={**TUS, "Upload-Length": "1000"}).headers["location"]
    path = url.removeprefix(server.base_url)
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    _, took = trickle(server.port, head + b"y" * 100, every=3.0, limit=20.0)
    assert took < IDLE_TIMEOUT + 4
    # The session is usable again at once (its claim was released) at the kept offset.
    offset = int(http.head(url, headers=TUS).headers["upload-offset"])
    assert 100 <= offset <= 102
    r = http.patch(
        url, headers={**TUS, **OFFSET, "Upload-Offset": str(offset)}, content=b"z" * (1000 - offset)
    )
    assert r.status_code == 204, r.text


# --- manifests -------------------------------------------------------------------------


def put_raw(
    http: httpx.Client, body: bytes, content_type: str, version: str = "9.9"
) -> httpx.Response:
    return http.put(
        f"/v1/packages/hostile/bad/{version}", content=body, headers={"Content-Type": content_type}
    )


def good_map(version: str = "9.9") -> dict[str, Any]:
    return make_manifest(f"hostile/bad:{version}", {"f": b"hostile manifest"}).to_map()


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def test_broken_cbor(http: httpx.Client) -> None:
    upload_blob(http, b"hostile manifest", "hostile")
    good = canonical_dumps(good_map())
    non_canonical = cbor2.dumps(good_map())  # cbor2's default key order is insertion order
    assert non_canonical != good
    bodies = {
        "empty": b"",
        "truncated": good[:-5],
        "trailing": good + b"\x00",
        "not a map": canonical_dumps([1, 2, 3]),
        "non-canonical": non_canonical,
        "indefinite": b"\xbf" + good[1:] + b"\xff",
        "tagged": b"\xd8\x20" + good,
        "deep": b"\x81" * 100_000 + b"\x01",
        "huge length": b"\xbb\xff\xff\xff\xff\xff\xff\xff\xff",
        "huge string": b"\x7b\x00\x00\x00\x00\xff\xff\xff\xff",
        "garbage": os.urandom(1000),
    }
    for label, body in bodies.items():
        r = put_raw(http, body, "application/cbor")
        assert 400 <= r.status_code < 500, (label, r.status_code, r.text[:300])
        assert_problem(r, r.status_code)
        assert r.status_code in (413, 415, 422), (label, r.status_code)
    assert put_raw(http, good, "application/cbor").status_code == 201


def test_broken_json(http: httpx.Client) -> None:
    upload_blob(http, b"hostile manifest", "hostile")
    m = good_map("9.8")
    text = make_manifest("hostile/bad:9.8", {"f": b"hostile manifest"}).to_json()
    wrong_types: list[dict[str, Any]] = []
    for key, value in (
        ("files", {}),
        ("metadata", []),
        ("variant", 5),
        ("created", 0),
        ("annotations", {"k": 1}),
        ("schema", "v0"),
        ("package", "hostile/bad"),
    ):
        wrong_types.append({**m, key: value})
    file_wrong = [dict(m["files"][0]) for _ in range(4)]
    file_wrong[0]["size"] = -1
    file_wrong[1]["size"] = "16"
    file_wrong[2]["digests"] = {"blake3": "blake3:" + "0" * 63, "sha256": "x"}
    file_wrong[3]["path"] = "../../etc/passwd"
    for entry in file_wrong:
        wrong_types.append({**m, "files": [entry]})
    bodies: dict[str, bytes] = {
        "empty": b"",
        "truncated": text[:-5].encode(),
        "duplicate keys": text.replace(
            '{"annotations":', '{"annotations":{},"annotations":', 1
        ).encode(),
        "nan": text.replace('"metadata":{}', '"metadata":{"x":NaN}').encode(),
        "bad utf-8": text.encode() + b"\xff",
        "array": b"[]",
        "deep": b"[" * 500_000,
        "deep objects": b'{"a":' * 100_000,
        "numbers": b'{"metadata":' + b"9" * 100_000 + b"}",
        **{f"wrong type {i}": json.dumps(w).encode() for i, w in enumerate(wrong_types)},
    }
    for label, body in bodies.items():
        r = put_raw(http, body, "application/json", "9.8")
        assert r.status_code in (413, 422), (label, r.status_code, r.text[:300])
        assert_problem(r, r.status_code)
    assert put_raw(http, text.encode(), "application/json", "9.8").status_code == 201


def test_manifest_over_the_size_limit(live_http: httpx.Client) -> None:
    http = live_http  # the last body is streamed without a length
    body = b'{"pad":"' + b"x" * (MAX_MANIFEST + 10) + b'"}'
    assert_problem(put_raw(http, body, "application/json"), 413, "limit_exceeded")
    # Ten megabytes of nesting is refused by size before anyone parses it.
    assert_problem(
        put_raw(http, b"[" * (10 * 1000 * 1000), "application/json"), 413, "limit_exceeded"
    )
    assert_problem(
        put_raw(http, b"\x81" * (10 * 1000 * 1000), "application/cbor"), 413, "limit_exceeded"
    )

    def chunked() -> Any:  # no Content-Length: the limit still holds while streaming
        for _ in range(MAX_MANIFEST // 65536 + 4):
            yield b" " * 65536

    assert_problem(
        http.put(
            "/v1/packages/hostile/bad/9.9",
            content=chunked(),
            headers={"Content-Type": "application/json"},
        ),
        413,
        "limit_exceeded",
    )


@pytest.mark.parametrize("depth", [17, 30, 100])
def test_deeply_nested_metadata(http: httpx.Client, depth: int) -> None:
    upload_blob(http, b"hostile manifest", "hostile")
    m = good_map(f"d{depth}")
    m["package"]["version"] = f"d{depth}"
    m["metadata"] = {"deep": nested(depth)}
    for body, content_type in (
        (json.dumps(m).encode(), "application/json"),
        (canonical_dumps(m), "application/cbor"),
    ):
        r = http.put(
            f"/v1/packages/hostile/bad/d{depth}",
            content=body,
            headers={"Content-Type": content_type},
        )
        assert_status_in(r, 413, 422)


def test_oversized_metadata(http: httpx.Client) -> None:
    upload_blob(http, b"hostile manifest", "hostile")
    metadata = {"k": "v" * (MAX_METADATA + 10)}
    m = make_manifest("hostile/bad:big", {"f": b"hostile manifest"}, metadata=metadata)
    r = http.put("/v1/packages/hostile/bad/big", json=m.to_map())
    assert_status_in(r, 413, 422)
    many = {f"k{i}": i for i in range(MAX_METADATA // 8)}
    m = make_manifest("hostile/bad:many", {"f": b"hostile manifest"}, metadata=many)
    assert_status_in(put_manifest(http, m), 413, 422)


def test_wrong_manifest_content_type(http: httpx.Client) -> None:
    body = make_manifest("hostile/bad:9.9", {"f": b"x"}).to_json().encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = put_raw(http, body, content_type)
        assert_status_in(r, 415, 422)


# --- paths and names -----------------------------------------------------------------

TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "data.bin%00",
    "data.bin%00.txt",
    "%00",
    "..%5C..%5Cetc%5Cpasswd",
    "data.bin%5C..",
    "%2Fetc%2Fpasswd",
    "%2F%2Fetc%2Fpasswd",
    "C:%5Cwindows%5Cwin.ini",
    "empty/../data.bin",
    "./data.bin",
    "data.bin/.",
    "data.bin/",
    "DATA.BIN",
    "data.bin%20",
    "%E2%80%AEdata.bin",
    "data.bin%0A",
    "x" * 5000,
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_in_file_urls(
    live_server: Server, live_http: httpx.Client, live_stored: dict[str, Any], path: str
) -> None:
    server, http, stored = live_server, live_http, live_stored  # raw request targets
    # Raw request target: no client-side normalisation of dot segments.
    target = f"/v1/packages/hostile/pkg/1.0/files/{path}"
    response = raw_http(
        server.port, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"404", b"422"), (path, response[:300])
    body = response.partition(b"\r\n\r\n")[2]
    assert b"root:" not in body and b"[fonts]" not in body
    assert stored["data"] not in body
    r = http.get(target)  # and through httpx (which does normalise)
    assert r.status_code < 500
    if r.status_code == 200:
        assert r.content == stored["data"], path
        assert r.url.path.endswith("/files/data.bin")


@pytest.mark.parametrize(
    "url",
    [
        "/v1/packages/CI/app/1.0",
        "/v1/packages/ci_/app/1.0",
        "/v1/packages/-ci/app/1.0",
        "/v1/packages/" + "a" * 65 + "/app/1.0",
        "/v1/packages/ci/" + "a" * 129 + "/1.0",
        "/v1/packages/ci/App/1.0",
        "/v1/packages/ci/a..b/1.0",
        "/v1/packages/ci/app/-1.0",
        "/v1/packages/ci/app/.hidden",
        "/v1/packages/ci/app/" + "1" * 129,
        "/v1/packages/ci/app/1.0%00",
        "/v1/packages/ci/app/1.0%2F..",
        "/v1/packages/ci%2F..%2Fother/app/1.0",
        "/v1/packages/ci/app/1%3A0",
        "/v1/packages/%C3%A9/app/1.0",
    ],
)
def test_invalid_names_in_urls(http: httpx.Client, url: str) -> None:
    for method in ("GET", "DELETE"):
        assert_status_in(http.request(method, url), 404, 422)
    r = http.put(url, content=b"{}", headers={"Content-Type": "application/json"})
    assert_status_in(r, 404, 422)
    assert_status_in(http.get(url + "/files/a"), 404, 422)
    assert_status_in(http.get(url + "/archive"), 404, 422)


@pytest.mark.parametrize(
    "params",
    [
        {"namespace": "BAD"},
        {"namespace": "a" * 65},
        {"name": "Bad Name"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "9" * 5000},
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"cursor": "9" * 5000},
        {"created_after": "yesterday"},
        {"meta.": "x"},
        {"meta." + "k" * 5000: "v"},
        {"variant": "../x"},
    ],
)
def test_query_parameter_games(http: httpx.Client, params: dict[str, str]) -> None:
    assert_status_in(http.get("/v1/packages", params=params), 200, 422)


@pytest.mark.parametrize("schema_id", ["UPPER", "a" * 129, "..%2Fx", "a%00b", "with space"])
def test_invalid_schema_ids(http: httpx.Client, schema_id: str) -> None:
    assert_status_in(http.get(f"/v1/schemas/{schema_id}"), 404, 422)
    assert_status_in(http.put(f"/v1/schemas/{schema_id}", json={"type": "object"}), 404, 422)


def test_hostile_schemas(http: httpx.Client) -> None:
    bodies = [
        b"",
        b"{",
        b'{"type":"object","type":"array"}',
        b"[" * 100_000,
        b'{"$ref":"http://169.254.169.254/latest/meta-data/"}',
        b'{"pattern":"(a+)+$"}',
        b'{"type":"nonsense"}',
        b" " * (300 * 1024),
    ]
    for i, body in enumerate(bodies):
        r = http.put(
            f"/v1/schemas/hostile.s{i}", content=body, headers={"Content-Type": "application/json"}
        )
        assert_status_in(r, 201, 413, 422)


# --- protocol -------------------------------------------------------------------------


def test_huge_header(live_server: Server, live_http: httpx.Client) -> None:
    server, http = live_server, live_http  # the bounds of server/wire.py
    for head in (
        b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(80))
        + b"\r\n",
        b"GET /health?" + b"q" * (70 * 1024) + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    ):
        answer = raw_http(server.port, head)
        status = answer.split(b"\r\n", 1)[0]
        assert status.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), answer[:300]
    # Megabytes of header are cut off, not buffered; the server lives on.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
        with contextlib.suppress(OSError):
            for _ in range(20 * 16):
                s.sendall(b"c" * 65536)
        with contextlib.suppress(OSError):
            answer = s.recv(65536)
            assert answer == b"" or answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))
    # Headers just under the limit are fine.
    ok = http.get("/health", headers={"X-Fine": "f" * (32 * 1024)})
    assert ok.status_code == 200
    assert http.get("/health").status_code == 200


def test_unknown_routes(http: httpx.Client) -> None:
    for url in (
        "/nope",
        "/v1",
        "/v1/",
        "/v2/",
        "/v1/blobs/blake3:" + "0" * 64 + "/extra",
        "/health/",
    ):
        r = http.get(url)
        assert_problem(r, 404, "route_not_found")


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("DELETE", "/v1/blobs/blake3:" + "0" * 64, {"GET", "HEAD"}),
        ("DELETE", "/v1/blobs", {"POST", "PUT"}),
        ("PUT", "/v1/uploads", {"OPTIONS", "POST"}),
        ("POST", "/v1/uploads/abcdefghijkl", {"DELETE", "GET", "HEAD", "PATCH"}),
        ("GET", "/v1/uploads/abcdefghijkl/complete", {"POST"}),
        ("PATCH", "/v1/packages/ci/app/1.0", {"DELETE", "GET", "PUT"}),
        ("PUT", "/v1/packages/ci/app/1.0/files/a.txt", {"GET", "HEAD"}),
        ("POST", "/v1/packages/ci/app/1.0/archive", {"GET"}),
        ("DELETE", "/v1/packages", {"GET"}),
        ("DELETE", "/v1/schemas/x", {"GET", "PUT"}),
        ("POST", "/v1/events", {"GET"}),
        ("GET", "/v1/admin/gc", {"POST"}),
        ("POST", "/health", {"GET"}),
        ("POST", "/metrics", {"GET"}),
    ],
)
def test_wrong_method(http: httpx.Client, method: str, url: str, allowed: set[str]) -> None:
    r = http.request(method, url)
    assert_problem(r, 405, "method_not_allowed")
    listed = {m.strip() for m in r.headers["allow"].split(",") if m.strip()}
    assert allowed <= listed, (listed, allowed)
    assert method not in listed


def test_server_survived(
    server: InProcessServer,
    http: httpx.Client,
    live_server: Server,
    live_http: httpx.Client,
) -> None:
    """After all of the above: still alive, still ready, and no 5xx in their access logs.

    (In process, an exception of the app also fails the test that caused it.)"""
    assert live_server.process is not None and live_server.process.poll() is None
    assert server.running
    for srv, client in ((server, http), (live_server, live_http)):
        assert client.get("/ready").status_code == 200
        errors = [line for line in srv.access_log() if int(line.get("status", 0)) >= 500]
        assert errors == [], errors[:5]
        assert "Traceback" not in srv.log()
