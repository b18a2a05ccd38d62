"""Signatures over HTTP: the routes, the commit header, require, hostile input, and the CLI in
remote mode against a real server process."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from artifactstore.model.envelope import MAX_ENVELOPE_BYTES, SIGNATURE_HEADER, signature_header
from artifactstore.model.trust import TrustEntry
from artifactstore.provenance.dsse import PackageRef, sign_package, verify_manifest
from artifactstore.provenance.keys import generate, write_key_pair
from tests.cli.remote import run_remote
from tests.conftest import make_tree
from tests.server.conftest import (
    Server,
    assert_problem,
    make_manifest,
    push,
    put_manifest,
    upload_blob,
)

URL = "/v1/packages/ci/app/{}/signatures"


def _policy(http: httpx.Client, ns: str, *keys: object, require: bool) -> None:
    entries = [TrustEntry.of(k.public.raw).to_json() for k in keys]  # type: ignore[attr-defined]
    body = {"trusted_keys": entries, "require_signature": require}
    assert http.put(f"/v1/namespaces/{ns}", json=body).status_code == 200


def test_add_list_and_show_signatures(http: httpx.Client) -> None:
    manifest, _ = push(http, "ci/app:1", {"a.txt": b"signed over http"})
    key = generate()
    envelope = sign_package(PackageRef.of(manifest), key)
    assert http.get(URL.format(1)).json() == {"items": []}
    added = http.post(URL.format(1), json=envelope.to_json())
    assert added.status_code == 201 and added.json() == envelope.to_json()
    assert http.post(URL.format(1), json=envelope.to_json()).status_code == 200  # no-op
    assert http.get(URL.format(1)).json() == {"items": [envelope.to_json()]}
    detail = http.get("/v1/packages/ci/app/1").json()
    assert detail["signatures"] == [envelope.to_json()]
    cbor = http.get("/v1/packages/ci/app/1", headers={"Accept": "application/cbor"}).content
    assert verify_manifest(envelope, cbor, [key.public]).signed_by == (key.key_id,)


def test_the_signature_travels_with_the_commit(http: httpx.Client) -> None:
    key, stranger = generate(), generate()
    _policy(http, "signed", key, require=True)
    files = {"a.txt": b"commit with signature"}
    for data in files.values():
        upload_blob(http, data, "signed")
    manifest = make_manifest("signed/app:1", files)
    url = "/v1/packages/signed/app/1"
    cbor = {"Content-Type": "application/cbor"}
    refused = http.put(url, content=manifest.to_cbor(), headers=cbor)
    assert_problem(refused, 422, "signature_required")
    wrong = sign_package(PackageRef.of(manifest), stranger)
    refused = http.put(
        url, content=manifest.to_cbor(), headers={**cbor, SIGNATURE_HEADER: signature_header(wrong)}
    )
    assert_problem(refused, 422, "signature_invalid")
    assert "untrusted key" in refused.json()["detail"]
    other = sign_package(PackageRef.of(make_manifest("signed/app:2", files)), key)
    refused = http.put(
        url, content=manifest.to_cbor(), headers={**cbor, SIGNATURE_HEADER: signature_header(other)}
    )
    assert "subject mismatch" in refused.json()["detail"]
    assert http.get(url).status_code == 404  # nothing was committed
    good = sign_package(PackageRef.of(manifest), key)
    headers = [*cbor.items(), (SIGNATURE_HEADER, signature_header(wrong))]
    headers.append((SIGNATURE_HEADER, signature_header(good)))
    # Under require, every envelope recorded must be by a trusted key: the stranger's refuses.
    assert_problem(http.put(url, content=manifest.to_cbor(), headers=headers), 422)
    ok = http.put(
        url, content=manifest.to_cbor(), headers={**cbor, SIGNATURE_HEADER: signature_header(good)}
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["digest"] == f"blake3:{PackageRef.of(manifest).blake3}"
    assert http.get(url + "/signatures").json()["items"] == [good.to_json()]
    # A later signature by an untrusted key is refused too, a flipped trusted one as well.
    assert_problem(http.post(url + "/signatures", json=wrong.to_json()), 422, "signature_invalid")
    body = good.to_json()
    sig = base64.b64decode(body["signatures"][0]["sig"])
    body["signatures"][0]["sig"] = base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()
    flipped = http.post(url + "/signatures", json=body)
    assert_problem(flipped, 422, "signature_invalid")
    assert "bad signature" in flipped.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 422),
        (b'{"a": 1, "a": 1}', 422),
        (b"[]", 422),
        (b'{"payloadType": "x", "payload": "e30=", "signatures": [{"sig": "AA=="}]}', 422),
        (
            b'{"payloadType": "application/vnd.in-toto+json", "payload": "%%", "signatures": []}',
            422,
        ),
        (b"\xff\xfe", 422),
        (b"[" * 100_000, 413),
        (b'{"payload": "' + b"A" * MAX_ENVELOPE_BYTES + b'"}', 413),
    ],
)
def test_hostile_envelopes_are_refused_cleanly(
    http: httpx.Client, body: bytes, status: int
) -> None:
    files = {"a.txt": b"target of hostile input"}
    upload_blob(http, files["a.txt"])
    assert put_manifest(http, make_manifest("ci/app:9", files)).status_code in (200, 201)
    response = http.post(URL.format(9), content=body, headers={"Content-Type": "application/json"})
    assert_problem(response, status)
    assert http.get(URL.format(9)).json() == {"items": []}


def test_hostile_headers_and_paths(http: httpx.Client) -> None:
    files = {"a.txt": b"hostile headers"}
    manifest, _ = push(http, "ci/app:10", files)
    url = "/v1/packages/ci/app/10"
    for value in ("%%%", base64.urlsafe_b64encode(b"{not json").decode(), "A" * 100_000):
        response = http.put(
            url,
            content=manifest.to_cbor(),
            headers={"Content-Type": "application/cbor", SIGNATURE_HEADER: value},
        )
        assert 400 <= response.status_code < 500, response.text
    for path in (
        "/v1/packages/ci/app/..%2F..%2Fetc/signatures",
        "/v1/packages/ci/../app/10/signatures",
        "/v1/packages/CI/app/10/signatures",
        "/v1/packages/ci/app/nope/signatures",
    ):
        assert 400 <= http.get(path).status_code < 500
        assert 400 <= http.post(path, json={}).status_code < 500


# --- the CLI in remote mode --------------------------------------------------------------------


def test_remote_cli_round_trip(live_server: Server, tmp_path: Path) -> None:
    token: dict[str, str] = {}  # the module's live server runs --no-auth

    def run(*args: str | Path, code: int = 0) -> str:
        result = run_remote(tmp_path, live_server.base_url, tuple(map(str, args)), **token)
        assert result.code == code, result
        assert "Traceback" not in result.stderr
        return result.stderr + result.out

    key, other = tmp_path / "release.key", tmp_path / "other.key"
    write_key_pair(generate(), key)
    write_key_pair(generate(), other)
    src = make_tree(tmp_path / "src", {"a.txt": b"remote signed"})
    run("push", "rs/app:1", src, "--sign", key)
    run("verify", "rs/app:1", "--key", key.with_suffix(".pub"))
    assert "unknown key" in run("verify", "rs/app:1", "--key", other.with_suffix(".pub"), code=3)
    run("sign", "rs/app:1", "--key", other)
    run("verify", "rs/app:1", "--key", other.with_suffix(".pub"))
    run("namespace", "trust", "rs", key.with_suffix(".pub"), "--require")
    report = json.loads(run("verify", "rs/app:1", "--key", other.with_suffix(".pub"), "--json"))
    assert len(report["signature"]["trusted_signers"]) == 1
    assert "signature_required" in run("push", "rs/app:2", src, code=3)
    assert "untrusted key" in run("push", "rs/app:2", src, "--sign", other, code=3)
    run("push", "rs/app:2", src, "--sign", key)
    shown = json.loads(
        run_remote(tmp_path, live_server.base_url, ("show", "rs/app:2", "--json"), **token).out
    )
    assert len(shown["signatures"]) == 1
    other.chmod(0o644)
    assert "chmod 600" in run("sign", "rs/app:2", "--key", other, code=1)
    run("namespace", "trust", "rs", key.with_suffix(".pub"), "--expires", "2020-01-01")
    assert "expired trust" in run("push", "rs/app:3", src, "--sign", key, code=3)
